"""What the coverage map shows for one area: covered and uncovered households, responder reach (PostGIS
buffers, and road isochrones where a network is loaded), proposed posts, hotspot cells and the coverage curve."""

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import orjson

from geo.analysis import coverage, hotspots, stationing
from geo.auth import Caller
from geo.dispatch import routing
from geo.errors import DomainError, InvalidInput
from geo.incidents.timelimits import TZ

MAX_DISTANCE_M = 5000
COVERED_CAP = 4000  # covered buildings drawn one by one up to this many, else aggregated to cells
HOTSPOT_DAYS = 90
H3_RESOLUTION = {"district": 8, "street": 9, "community": 10, "grid": 10}
DEFAULT_ISO_MINUTES = 3.0

OUTLINES_SQL = """
SELECT a.code, a.name, a.level, ST_AsGeoJSON(ST_SimplifyPreserveTopology(a.geom, 1e-5), 6) AS geojson
FROM areas a
WHERE (a.id = $1 OR (a.parent_id = $1 AND a.level <> 'grid'))
  AND (a.version_id IS NULL OR a.version_id = (SELECT id FROM grid_versions WHERE status = 'active'))
ORDER BY a.id <> $1, a.code"""
REACH_SQL = """
SELECT ST_AsGeoJSON(ST_SimplifyPreserveTopology(
           ST_Union(ST_Buffer(geography(r.position), $2, 'quad_segs=8')::geometry), 1e-5), 6) AS geojson,
       count(*) AS responders
FROM responders r, areas a
WHERE a.id = $1 AND r.status = 'available' AND r.position IS NOT NULL
  AND r.position_at >= now() - make_interval(secs => $3)
  AND r.position && ST_Expand(a.geom, $2 / 50000.0)
  AND ST_DWithin(geography(r.position), geography(a.geom), $2)"""

POINT_SQL = "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) AS p FROM areas WHERE id = $1) x"


@dataclass
class CoverageData:
    """Everything the coverage map shows for one area."""
    area: dict  # code, name, level
    distance_m: float
    outline: dict | None  # GeoJSON geometry of the area
    children: list[dict]  # code, name, level, geometry
    buildings: dict  # uncovered rows [lat, lon, households, distance|None]; covered rows [lat, lon, households, n]
    summary: dict  # buildings, households, covered, share, uncovered...
    responders: dict  # fresh, stale, unavailable (in the area)
    curve: list[dict]
    reach: dict | None  # dissolved discs (GeoJSON geometry)
    reach_responders: int
    today: list[list]  # [lat, lon, id, name] available fresh responders in the area
    posts: dict | None  # geo.stationing.solve result (mclp, proposed, current...)
    posts_note: str | None
    hotspots: dict | None  # geo.hotspots.hotspots result
    hotspots_note: str | None
    isochrones: dict | None  # {"minutes", "network", "area": GeoJSON, "responders"}
    notes: list[str] = field(default_factory=list)


def _aggregate(lat: np.ndarray, lon: np.ndarray, hh: np.ndarray, cap: int) -> tuple[list[list], float | None]:
    """[lat, lon, households, buildings] per building, or per square cell of stationing.square_cells (at
    most `cap` cells; the household-weighted mean point of each)."""
    if len(lat) <= cap:
        return [[round(float(y), 6), round(float(x), 6), int(h), 1]
                for y, x, h in zip(lat, lon, hh, strict=True)], None
    cells, size = stationing.square_cells(lon, lat, cap)
    x, y, h, n = stationing.cell_means(cells, lon, lat, hh)
    return [[round(float(a), 6), round(float(b), 6), int(round(c)), int(d)]
            for a, b, c, d in zip(y, x, h, n, strict=True)], size


# One pgr_drivingDistance from every responder's vertex at once (one graph build, not one per responder); each
# tree is cut at its own budget (the time left after walking from the responder to its vertex). Edges with both
# ends reached in the same tree are buffered and dissolved, as geo.routing.isochrone draws one.
ISOCHRONES_SQL = """
WITH d AS (
    SELECT coalesce(to_jsonb(x)->>'start_vid', to_jsonb(x)->>'from_v')::bigint AS s, x.node, x.agg_cost
    FROM pgr_drivingDistance($1, $2::bigint[], $3::float8, directed => true) x),
b AS (SELECT * FROM unnest($2::bigint[], $4::float8[]) AS t(s, budget)),
ok AS (SELECT d.s, d.node FROM d JOIN b USING (s) WHERE d.agg_cost <= b.budget),
reach AS (SELECT DISTINCT e.id, e.geom FROM road_edges e
          JOIN ok a ON a.node = e.source JOIN ok z ON z.node = e.target AND z.s = a.s
          WHERE e.network_id = $5)
SELECT ST_AsGeoJSON(ST_SimplifyPreserveTopology(ST_Buffer(ST_Collect(geom)::geography, $6)::geometry, 1e-5), 6)
FROM reach"""


async def _isochrones(conn, area_id: int, today: list[tuple], minutes: float | None) -> tuple[dict | None, str | None]:
    """Road isochrones around today's responders when a road network lies near the area, dissolved in SQL."""
    lon, lat = await conn.fetchrow(POINT_SQL, area_id)
    try:
        network_id, name = await routing.pick_network(conn, lon, lat)
    except DomainError:
        if minutes:
            return None, "此区域附近没有道路网络 no road network near this area: isochrones need one"
        return None, None
    minutes = minutes or DEFAULT_ISO_MINUTES
    max_s = minutes * 60
    points = [(float(r[2]), float(r[3])) for r in today]
    budgets: dict[int, float] = {}
    for vid, d in (await routing.snap(conn, network_id, points) if points else []):
        if d <= routing.MAX_SNAP_M and max_s - d / routing.WALK_MPS > 0:
            budgets[vid] = max(budgets.get(vid, 0.0), max_s - d / routing.WALK_MPS)
    if not budgets:
        return {"minutes": minutes, "network": name, "area": None, "responders": 0}, None
    edges = routing.edges_sql(network_id, points, margin_m=max(max_s * 40, 1000.0))
    area = await conn.fetchval(ISOCHRONES_SQL, edges, list(budgets), max(budgets.values()), list(budgets.values()),
                               network_id, 40.0)
    return {"minutes": minutes, "network": name, "area": orjson.loads(area) if area else None,
            "responders": len(points)}, None


async def gather(conn, caller: Caller, code: str | None, distance_m: float = 500, k: int | None = None,
                 minutes: float | None = None, *, max_age_s: float, speed_mps: float = 4.2,
                 now: datetime | None = None) -> CoverageData:
    """Everything the coverage map shows for one area (403 outside the caller's area, readers only)."""
    area = await coverage.resolve_area(conn, caller, code)
    if not 0 < distance_m <= MAX_DISTANCE_M:
        raise InvalidInput(f"`distance` must be in (0, {MAX_DISTANCE_M}] metres.", field="distance")
    notes = []
    # proposed posts (MCLP with k = today's responders in the area, unless given) against today's positions:
    # the solver runs in a thread while the connection serves the other queries
    rows = await stationing.load(conn, area.id, area.code, max_age_s, need_grids=True)
    today = rows[2]
    k_used = k or max(1, len(today))
    solving = asyncio.ensure_future(asyncio.to_thread(stationing.solve, *rows, k_used, float(distance_m)))
    ids, hh, lon, lat, dist = await coverage.response_distances(conn, area, max_age_s)
    counts = await conn.fetchrow(coverage.RESPONDERS_SQL, area.id, float(max_age_s))
    outlines = [dict(r) for r in await conn.fetch(OUTLINES_SQL, area.id)]
    reach = await conn.fetchrow(REACH_SQL, area.id, float(distance_m), float(max_age_s))

    covered = dist <= distance_m
    unc = np.flatnonzero(~covered)
    unc = unc[np.argsort(-np.nan_to_num(dist[unc], posinf=1e12), kind="stable")]
    uncovered_rows = [[round(float(lat[i]), 6), round(float(lon[i]), 6), int(hh[i]),
                       None if np.isinf(dist[i]) else round(float(dist[i]))] for i in unc]
    covered_rows, cell = _aggregate(lat[covered], lon[covered], hh[covered], COVERED_CAP)
    total = float(hh.sum())
    summary = {"buildings": int(len(ids)), "households": int(total),
               "households_covered": int(hh[covered].sum()), "buildings_covered": int(covered.sum()),
               "households_uncovered": int(hh[~covered].sum()), "buildings_uncovered": int(len(unc)),
               "share": float(hh[covered].sum() / total) if total else None, "cell_m": cell}

    # hotspot cells of the last 90 days
    now = now or datetime.now(TZ)
    hot, hot_note = None, None
    try:
        hot = await hotspots.hotspots(conn, caller, area.code, start=(now - timedelta(days=HOTSPOT_DAYS)).isoformat(),
                                      end=now.isoformat(), by="h3", resolution=H3_RESOLUTION.get(area.level, 9),
                                      permutations=0, now=now)
    except DomainError as exc:
        hot_note = f"热点未计算 hotspots not computed: {exc}"

    iso, iso_note = await _isochrones(conn, area.id, today, minutes)
    if iso_note:
        notes.append(iso_note)

    posts, posts_note = None, None
    try:
        posts = await solving
        if not k and not today:
            posts_note = "今日无可用且定位新鲜的处置力量，按 k=1 布点 (no fresh responders today: k=1)"
    except DomainError as exc:
        posts_note = f"布点未计算 stationing not computed: {exc}"

    own = next((o for o in outlines if o["code"] == area.code), None)
    return CoverageData(
        area=area.as_json(), distance_m=float(distance_m),
        outline=orjson.loads(own["geojson"]) if own and own["geojson"] else None,
        children=[{"code": o["code"], "name": o["name"], "level": o["level"], "geometry": orjson.loads(o["geojson"])}
                  for o in outlines if o["code"] != area.code and o["geojson"]],
        buildings={"uncovered": uncovered_rows, "covered": covered_rows}, summary=summary,
        responders=dict(counts) if counts else {}, curve=coverage.curve(dist, hh),
        reach=orjson.loads(reach["geojson"]) if reach and reach["geojson"] else None,
        reach_responders=int(reach["responders"]) if reach else 0,
        today=[[round(r[3], 6), round(r[2], 6), r[0], r[1]] for r in today],
        posts=posts, posts_note=posts_note, hotspots=hot, hotspots_note=hot_note, isochrones=iso, notes=notes)
