"""The planner map of a plan: grids by household deviation, validation findings, the diff against the active
version and buildings; a planner draws a split line or a new boundary and the page posts the edit.

`gather` reads the plan, the shown area (its outline, child outlines, the area picker) and the area's buildings;
`build` renders the shell. Grids, findings and the diff are not inlined: /static/plans.js fetches them from
GET /plans/{id}/grids, /validation and /diff on load and again after every edit, so the page stays small and the
same code redraws it at the new revision without a reload.
"""

import math
from dataclasses import dataclass

import folium
import orjson
import shapely
from branca.colormap import linear
from branca.element import MacroElement
from folium.plugins import Draw
from folium.template import Template
from sqlalchemy import Connection, text

from geo.auth import Caller
from geo.errors import Forbidden, NotFound
from geo.planning import plans
from maps import offline
from maps.html import PAGE_SCRIPT, add_head, esc

SMALL_PLAN_GRIDS = 60  # a plan (in the caller's scope) this small is shown whole; else its first community
BUILDING_CAP = 5000  # buildings drawn (one canvas); a bigger area shows none and says to pick a smaller one
LEVEL_NAMES = {"district": "区", "street": "街道", "community": "社区"}
# Diverging classes of deviation = households / target − 1, in multiples of the tolerance: blues below the
# target, reds above, near-white inside the tolerance band (ColorBrewer RdBu, reversed so "too many" is red).
DEVIATION_COLOURS = list(reversed([linear.RdBu_07.rgb_hex_str(x) for x in linear.RdBu_07.index]))
SEVERITY_COLOURS = {"error": "#d7191c", "warning": "#f28e2b", "fixable": "#7b3294"}
DIFF_COLOURS = {"added": "#1a9850", "removed": "#404040", "changed": "#e66101"}
KIND_LABELS = {"invalid_geometry": "无效几何", "overlap": "重叠", "gap": "缝隙", "outside_community": "越出社区",
               "multipart": "多块", "hole": "孔洞", "households_out_of_band": "户数超出范围",
               "low_compactness": "形状不紧凑", "no_worker": "无网格员"}

AREA_SQL = """
SELECT id, code, name, level, ST_AsGeoJSON(ST_SimplifyPreserveTopology(geom, 1e-6), 6) AS geojson
FROM areas WHERE code = :code AND version_id IS NULL AND level <> 'grid'"""

# Outlines of the area's children (streets of a district, communities of a street), simplified.
CHILDREN_SQL = """
SELECT code, name, level, ST_AsGeoJSON(ST_SimplifyPreserveTopology(geom, 1e-5), 6) AS geojson
FROM areas WHERE parent_id = :id AND version_id IS NULL ORDER BY code"""

# The picker: the area's parent (for a community: its street) and that parent's children.
CHOICES_SQL = """
SELECT c.code, c.name, c.level FROM areas p JOIN areas c ON (c.id = p.id OR c.parent_id = p.id)
WHERE p.code = :parent AND p.version_id IS NULL AND c.version_id IS NULL ORDER BY c.code"""

# Buildings whose point-on-surface lies in the area (the rule households are counted by), as [lat, lon, hh, id].
BUILDINGS_SQL = """
SELECT round(ST_Y(p)::numeric, 6)::float8, round(ST_X(p)::numeric, 6)::float8, b.households, b.id
FROM areas a JOIN buildings b ON b.geom && a.geom CROSS JOIN LATERAL ST_PointOnSurface(b.geom) p
WHERE a.id = :id AND ST_Covers(a.geom, p)
ORDER BY b.id LIMIT :cap"""

DEFAULT_AREA_SQL = """
SELECT count(*) AS grids, min(left(code, 12)) AS first_community, min(left(code, 6)) AS first_district
FROM areas WHERE version_id = :plan AND level = 'grid' AND code LIKE :scope || '%'"""


@dataclass
class PlanMapData:
    plan: dict  # geo.plans.get
    area: dict  # code, name, level
    outline: dict | None  # GeoJSON geometry
    children: list[dict]  # code, name, level, geometry
    choices: list[dict]  # code, name, level
    buildings: list[list]  # [lat, lon, households, id]
    buildings_note: str | None
    target: int
    tolerance: float
    scope: str  # the caller's area code ('' = everything): validation and diff cover only it
    read_only: str | None  # why this caller cannot edit here (None: drawing tools shown)


def _default_area(conn: Connection, caller: Caller, plan_id: int) -> str:
    """The caller's area when the plan has few grids there, else the first community with grids."""
    row = conn.execute(text(DEFAULT_AREA_SQL), {"plan": plan_id, "scope": caller.scope}).one()
    if not row.grids:
        raise NotFound(f"Plan {plan_id} has no grids in your area{' ' + caller.area_code if caller.area_code else ''}; "
                       "pick another plan or pass ?area=CODE.", field="area")
    if row.grids <= SMALL_PLAN_GRIDS:
        return caller.area_code[:12] if caller.area_code else row.first_district
    return row.first_community


def gather(conn: Connection, caller: Caller, plan_id: int, area: str | None = None, target: int = 300,
           tolerance: float = 0.15) -> PlanMapData:
    """What the page shell shows of plan `plan_id` around `area` (a district, street or community code)."""
    plan = plans.get(conn, caller, plan_id)  # checks the caller's role and that the plan exists
    code = area or _default_area(conn, caller, plan_id)
    if not caller.can_see(code):
        raise Forbidden(f"Area {code} is outside your area {caller.area_code}; pass an area inside it.", field="area")
    row = conn.execute(text(AREA_SQL), {"code": code}).first()
    if row is None:
        raise NotFound(f"No district, street or community {code}; pass ?area= a code from GET /areas.", field="area")
    children = [{"code": c.code, "name": c.name, "level": c.level, "geometry": orjson.loads(c.geojson)}
                for c in conn.execute(text(CHILDREN_SQL), {"id": row.id}) if c.geojson]
    parent = code[:9] if row.level == "community" else code
    choices = [{"code": c.code, "name": c.name, "level": c.level}
               for c in conn.execute(text(CHOICES_SQL), {"parent": parent}) if caller.can_see(c.code)]
    buildings = [list(b) for b in conn.execute(text(BUILDINGS_SQL), {"id": row.id, "cap": BUILDING_CAP + 1})]
    note = None
    if len(buildings) > BUILDING_CAP:
        buildings = []
        note = (f"此区域建筑超过 {BUILDING_CAP:,} 栋，未绘制 — more than {BUILDING_CAP:,} buildings here: "
                "pick a street or community to see them")
    return PlanMapData(plan=plan, area={"code": row.code, "name": row.name, "level": row.level},
                       outline=orjson.loads(row.geojson) if row.geojson else None, children=children,
                       choices=choices, buildings=buildings, buildings_note=note, target=target,
                       tolerance=tolerance, scope=caller.scope, read_only=_read_only(caller, plan))


def _read_only(caller: Caller, plan: dict) -> str | None:
    if plan["status"] != "draft":
        return f"方案为 {plan['status']}，只读 — plan is {plan['status']}, not a draft: start a new plan to change it"
    if caller.role != "admin" and caller.role not in plans.WRITE_ROLES:
        return f"只读 read-only: role {caller.role} may look but only planners edit"
    return None


def deviation_classes(tolerance: float) -> list[dict]:
    """Seven classes of deviation, bounded at ±1, ±2 and ±3 tolerances: [{lo, hi, colour, label}]."""
    edges = [-math.inf, -3 * tolerance, -2 * tolerance, -tolerance, tolerance, 2 * tolerance, 3 * tolerance, math.inf]
    out = []
    for lo, hi, colour in zip(edges, edges[1:], DEVIATION_COLOURS):
        if math.isinf(lo):
            label = f"< {hi:+.0%}"
        elif math.isinf(hi):
            label = f"> {lo:+.0%}"
        else:
            label = f"{lo:+.0%} … {hi:+.0%}"
        out.append({"lo": None if math.isinf(lo) else lo, "hi": None if math.isinf(hi) else hi,
                    "colour": colour, "label": label})
    out[3]["label"] += " 达标 within tolerance"
    return out


# ----------------------------------------------------------------- page

CSS = """
<style>
.leaflet-container, .leaflet-control-layers, .wg-panel { font-family: FONT; }
.wg-panel { background: rgba(255,255,255,0.96); border-radius: 6px; box-shadow: 0 1px 5px rgba(0,0,0,0.35);
  padding: 8px 10px; font-size: 12px; color: #222; line-height: 1.4; }
.wg-panel h1 { font-size: 15px; margin: 0 0 2px 0; }
.wg-panel h4 { margin: 0 0 3px 0; font-size: 12px; }
.wg-panel .muted { color: #777; font-size: 11px; }
.wg-status { width: 330px; }
.wg-sec { border-top: 1px solid #e3e3e3; margin-top: 5px; padding-top: 4px; }
.wg-kv { display: grid; grid-template-columns: auto 1fr; gap: 0 8px; font-variant-numeric: tabular-nums; }
.wg-pass { color: #1a7a3a; font-weight: bold; } .wg-fail { color: #c0161d; font-weight: bold; }
.wg-result { margin-top: 4px; padding: 3px 6px; border-radius: 4px; background: #f3f6fb; }
.wg-result.ok { background: #e5f5e0; color: #1a5e2a; } .wg-result.error { background: #fde0dd; color: #a50f15; }
.wg-pending { margin-top: 5px; padding: 5px 6px; border: 1px dashed #333; border-radius: 4px; background: #fffbe6; }
.wg-panel button { background: #1f4e9e; color: #fff; border: 0; border-radius: 3px; padding: 2px 8px;
  cursor: pointer; font-size: 12px; margin: 3px 4px 0 0; }
.wg-panel button.secondary { background: #888; }
.wg-panel button:disabled { background: #bbb; cursor: default; }
.wg-form { display: flex; gap: 4px; align-items: center; margin-top: 5px; }
.wg-form select { max-width: 230px; font-size: 12px; }
.wg-findings { width: 330px; max-height: 300px; overflow-y: auto; }
.wg-findings table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
.wg-findings td { padding: 1px 3px; } .wg-findings td.n { text-align: right; }
.wg-findings ol { margin: 4px 0 0 0; padding-left: 18px; }
.wg-findings li { cursor: pointer; margin-bottom: 2px; } .wg-findings li:hover { text-decoration: underline; }
.wg-sev { display: inline-block; width: 9px; height: 9px; border-radius: 2px; margin-right: 3px; }
.wg-legend { width: 210px; }
.wg-legend .row { display: flex; align-items: center; gap: 6px; margin: 1px 0; }
.wg-legend .sw { width: 18px; height: 11px; display: inline-block; box-sizing: border-box; border: 1px solid #999; }
.wg-legend .dot { width: 9px; height: 9px; border-radius: 50%; display: inline-block; background: #333; }
.leaflet-tooltip.wg-label { background: transparent; border: 0; box-shadow: none; font-size: 10.5px; color: #111;
  text-shadow: 0 0 2px #fff, 0 0 2px #fff; padding: 0; }
.wg-note { color: #8a4b00; font-size: 11px; margin-top: 3px; }
</style>
"""



class _Page(MacroElement):
    _template = Template("""
        {% macro script(this, kwargs) %}
        wgPlanMap({{ this._parent.get_name() }}, {{ this.tiles }}, {{ this.sketch }}, WG);
        {% endmacro %}
    """)

    def __init__(self, tiles: str, sketch: str):
        super().__init__()
        self._name = "WgPlanMap"
        self.tiles = tiles
        self.sketch = sketch


def _legend(d: PlanMapData, classes: list[dict]) -> str:
    rows = "".join(f'<div class="row"><span class="sw" style="background:{c["colour"]}"></span>{esc(c["label"])}'
                   f'</div>' for c in reversed(classes))
    sev = SEVERITY_COLOURS
    diff = "".join(f'<div class="row"><span class="sw" style="background:none;opacity:.7;'
                   f'border:3.5px {style} {DIFF_COLOURS[k]}"></span>{label}</div>' for k, style, label in (
                       ("added", "solid", "新增 added"), ("removed", "dashed", "删除 removed"),
                       ("changed", "solid", "变化 changed")))
    return f"""<div class="wg-panel wg-legend">
<h4>户数偏差 households vs target {d.target}</h4>{rows}
<div class="row"><span class="sw" style="background:#cccccc"></span>无户数 no households</div>
<div class="wg-sec"><h4>校验 findings</h4>
<div class="row"><span class="sw" style="background:{sev['error']};opacity:.75"></span>缝隙/重叠 gap / overlap</div>
<div class="row"><span class="sw" style="background:none;border:2px solid {sev['error']}"></span>错误 error</div>
<div class="row"><span class="sw" style="background:none;border:2px dashed {sev['warning']}"></span>警告 warning</div>
<div class="row"><span class="sw" style="background:none;border:2px dashed {sev['fixable']}"></span>可修复 fixable
sliver</div>
</div>
<div class="wg-sec"><h4>与现行版本比较 diff vs active</h4>{diff}</div>
<div class="wg-sec"><div class="row"><span class="dot"></span>建筑 building (大小 ∝ 户数 households)</div></div>
</div>"""


def build(d: PlanMapData, token: str | None = None) -> folium.Map:
    if d.outline:
        minx, miny, maxx, maxy = shapely.bounds(shapely.from_geojson(orjson.dumps(d.outline).decode())).tolist()
    else:
        minx, miny, maxx, maxy = 116.3, 39.85, 116.45, 39.95
    fmap = offline.new_map(location=[(miny + maxy) / 2, (minx + maxx) / 2],
                           zoom_start=max(10, min(18, int(math.log2(360 / max(maxx - minx, 1e-4)) + 1))),
                           zoom_snap=0.25, zoom_delta=0.5)
    tiles = next(c for c in fmap._children.values() if isinstance(c, folium.TileLayer))
    # the drawn sketch lives in its own group (not in the layer control); plans.js posts it, then clears it
    sketch = folium.FeatureGroup(name="sketch", control=False).add_to(fmap)
    line = {"color": "#000000", "weight": 3, "dashArray": "6 4", "opacity": 0.9}
    if not d.read_only:
        Draw(feature_group=sketch, position="topleft", show_geometry_on_click=False,
             draw_options={"polyline": {"shapeOptions": line},
                           "polygon": {"allowIntersection": False, "showArea": False,
                                       "shapeOptions": {**line, "fillOpacity": 0.1}},
                           "rectangle": False, "circle": False, "marker": False, "circlemarker": False},
             edit_options={"edit": False, "remove": False}).add_to(fmap)
    classes = deviation_classes(d.tolerance)
    config = {
        "plan": d.plan, "area": d.area, "outline": d.outline, "children": d.children, "choices": d.choices,
        "buildings": d.buildings, "buildingsNote": d.buildings_note, "bounds": [minx, miny, maxx, maxy],
        "token": token, "scope": d.scope, "readOnly": d.read_only, "target": d.target, "tolerance": d.tolerance,
        "classes": classes,
        "severity": SEVERITY_COLOURS, "diff": DIFF_COLOURS, "kinds": KIND_LABELS, "levels": LEVEL_NAMES,
        "legend": _legend(d, classes), "mapPath": f"/maps/plans/{d.plan['id']}",
    }
    add_head(fmap, f"{d.plan['name']} · {d.area['name']} 网格规划 — Wangge", CSS, config,
             scripts=(PAGE_SCRIPT, "/static/plans.js"))
    fmap.add_child(_Page(tiles.get_name(), sketch.get_name()))
    return fmap
