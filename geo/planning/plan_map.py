"""What the planner map's shell shows of a plan: the area, its outlines, the area picker and its buildings."""

from dataclasses import dataclass

import orjson
from sqlalchemy import Connection, text

from geo.auth import Caller
from geo.errors import NotFound
from geo.planning import plans

SMALL_PLAN_GRIDS = 60  # a plan (in the caller's scope) this small is shown whole; else its first community
BUILDING_CAP = 5000  # buildings drawn (one canvas); a bigger area shows none and says to pick a smaller one

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
    """What the planner map's shell shows."""
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
    caller.require_area(code, "area")
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
