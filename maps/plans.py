"""The planner map of a plan: grids by household deviation, validation findings, the diff against the active
version and buildings; a planner draws a split line or a new boundary and the page posts the edit.

geo.planning.plan_map reads the plan, the shown area (its outline, child outlines, the area picker) and the
area's buildings; `build` here renders the shell. Grids, findings and the diff are not inlined:
/static/plans.js fetches them from GET /plans/{id}/grids, /validation and /diff on load and again after every
edit, so the page stays small and the same code redraws it at the new revision without a reload.
"""

import math

import folium
import orjson
import shapely
from branca.element import MacroElement
from branca.utilities import color_brewer
from folium.plugins import Draw
from folium.template import Template

from geo.planning.plan_map import PlanMapData
from maps import offline
from maps.html import PAGE_SCRIPT, add_head, esc

LEVEL_NAMES = {"district": "区", "street": "街道", "community": "社区"}
# Diverging classes of deviation = households / target − 1, in multiples of the tolerance: blues below the
# target, reds above, near-white inside the tolerance band (ColorBrewer RdBu, reversed so "too many" is red).
DEVIATION_COLOURS = list(reversed(color_brewer("RdBu", 7)))
SEVERITY_COLOURS = {"error": "#d7191c", "warning": "#f28e2b", "fixable": "#7b3294"}
DIFF_COLOURS = {"added": "#1a9850", "removed": "#404040", "changed": "#e66101"}
KIND_LABELS = {"invalid_geometry": "无效几何", "overlap": "重叠", "gap": "缝隙", "outside_community": "越出社区",
               "multipart": "多块", "hole": "孔洞", "households_out_of_band": "户数超出范围",
               "low_compactness": "形状不紧凑", "no_worker": "无网格员"}


def deviation_classes(tolerance: float) -> list[dict]:
    """Seven classes of deviation, bounded at ±1, ±2 and ±3 tolerances: [{lo, hi, colour, label}]."""
    edges = [-math.inf, -3 * tolerance, -2 * tolerance, -tolerance, tolerance, 2 * tolerance, 3 * tolerance, math.inf]
    out: list[dict] = []
    for lo, hi, colour in zip(edges, edges[1:], DEVIATION_COLOURS, strict=False):
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


def build(d: PlanMapData, csrf: str | None = None) -> folium.Map:
    """The planner page shell for `d`; its requests carry `csrf`, the session's CSRF value (api.deps.csrf_value)."""
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
        "csrf": csrf, "scope": d.scope, "readOnly": d.read_only, "target": d.target, "tolerance": d.tolerance,
        "classes": classes,
        "severity": SEVERITY_COLOURS, "diff": DIFF_COLOURS, "kinds": KIND_LABELS, "levels": LEVEL_NAMES,
        "legend": _legend(d, classes), "mapPath": f"/maps/plans/{d.plan['id']}",
    }
    add_head(fmap, f"{d.plan['name']} · {d.area['name']} 网格规划 — Wangge", CSS, config,
             scripts=(PAGE_SCRIPT, "/static/plans.js"))
    fmap.add_child(_Page(tiles.get_name(), sketch.get_name()))
    return fmap
