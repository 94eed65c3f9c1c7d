"""What the dispatcher's map shows: the grid under the point, the nearest fresh responders as
/dispatch/nearest ranks them, the stale ones nearby, and the road route (mode=network)."""

from dataclasses import dataclass, field

from geo.auth import Caller
from geo.dispatch import nearest as dispatch
from geo.errors import NotFound

GRID_SQL = """
WITH pt AS (SELECT ST_SetSRID(ST_MakePoint($1::float8, $2::float8), 4326) AS g),
near AS (
    SELECT a.code, a.name, a.worker_id, a.geom FROM areas a, pt
    WHERE a.level = 'grid' AND a.version_id = (SELECT id FROM grid_versions WHERE status = 'active')
      AND (starts_with(a.code, $3) OR ST_Covers(a.geom, pt.g))
    ORDER BY a.geom <-> pt.g LIMIT 8)
SELECT n.code, n.name, r.name AS worker, ST_Covers(n.geom, pt.g) AS covers,
       ST_Distance(n.geom::geography, pt.g::geography) AS distance_m,
       ST_AsGeoJSON(ST_SimplifyPreserveTopology(n.geom, 5e-6), 6) AS geojson
FROM near n CROSS JOIN pt LEFT JOIN responders r ON r.id = n.worker_id
ORDER BY ST_Covers(n.geom, pt.g) DESC, ST_Distance(n.geom::geography, pt.g::geography), n.code
LIMIT 1"""


@dataclass
class DispatchData:
    """Everything the dispatcher's map shows for one point."""
    lon: float
    lat: float
    mode: str
    k: int
    grid: dict | None  # code, name, worker, covers, distance_m, geojson (the covering grid, else the nearest)
    candidates: list[dict]  # Feature dicts (fresh, ranked as geo.dispatch returns them)
    stale: list[dict]  # stale Features among the nearest, for display only
    route: dict | None  # GeoJSON LineString of the best candidate's road route (mode=network)
    filters: dict = field(default_factory=dict)  # role, status as asked
    network_note: str | None = None


async def gather(conn, caller: Caller, lon: float, lat: float, k: int = 5, mode: str = "straight",
                 statuses: list[str] | None = None, roles: list[str] | None = None, *, max_age_s: float,
                 speed_mps: float, network_candidates: int = 10) -> DispatchData:
    """Nearest fresh responders (ranked as /dispatch/nearest ranks them), stale ones nearby, the grid."""
    row = await conn.fetchrow(GRID_SQL, float(lon), float(lat), caller.scope)
    grid = dict(row) if row else None
    if grid and grid["covers"] and not caller.can_see(grid["code"]):
        raise NotFound("The point lies in no grid of your area.", field="lon,lat")
    query = dispatch.Nearest(lon=lon, lat=lat, k=k, statuses=statuses, roles=roles, mode=mode)
    found = await dispatch.nearest(conn, caller, query, max_age_s=max_age_s, speed_mps=speed_mps,
                                   network_candidates=network_candidates)
    candidates = found.features
    route = next((c["properties"].pop("route") for c in candidates if c["properties"].get("route")), None)
    for c in candidates:
        c["properties"].pop("route", None)
    # the stale ones as near as the candidates (or the k nearest if no fresh one is found), greyed out
    with_stale = await dispatch.nearest(
        conn, caller, dispatch.Nearest(lon=lon, lat=lat, k=k, statuses=statuses, roles=roles, include_stale=True),
        max_age_s=max_age_s, speed_mps=speed_mps)
    fresh_ids = {c["id"] for c in candidates}
    reach = max((c["properties"].get("straight_distance_m") or c["properties"]["distance_m"] for c in candidates),
                default=float("inf"))
    stale = [f for f in with_stale.features
             if f["properties"].get("stale") and f["id"] not in fresh_ids and f["properties"]["distance_m"] <= reach]
    note = None
    if mode == "network" and candidates and route is None:
        note = "没有可通达的道路路线 no road route found for the candidates"
    return DispatchData(lon, lat, found.mode, query.k, grid, candidates, stale, route,
                        {"role": ",".join(roles or []), "status": ",".join(statuses or ["available"])}, note)
