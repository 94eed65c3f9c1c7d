"""Coverage analysis: grid coverage (gaps, overlaps), staffing balance and response coverage of households.

All three are set-based SQL over the active grid version, scoped to the caller's subtree by code prefix.

* Grid coverage: the area's own grids (code prefix) are unioned inside PostGIS; gaps are area − union,
  overlaps the union of pairwise interior intersections, `outside` the part of the grids beyond the area.
  Areas are geodesic m² (geography). Parts smaller than `min_area_m2` are floating-point slivers: they are
  totalled as `sliver_m2` but not listed or counted as gaps/overlaps.
* Staffing: households of each active grid (areas.households) against the grid's worker (areas.worker_id).
* Response coverage: each building (point, or point on surface of a footprint) gets the geodesic distance
  to its nearest *available* responder whose position is fresher than `max_age_s`, in one statement (KNN
  for the planar nearest, which bounds an exact geodesic search, as in geo.areas). Shares for every
  distance of the curve come from those distances; households are the weights.
"""

import asyncio
from dataclasses import dataclass

import numpy as np

from geo.auth import Caller
from geo.errors import InvalidInput, NotFound

READERS = ("supervisor", "planner", "dispatcher")  # and admin
CHILD_LEVEL = {"district": "street", "street": "community", "community": "grid"}
CODE_LENGTH = {"district": 6, "street": 9, "community": 12, "grid": 15}
DEFAULT_MAX_AGE_S = 1800
CURVE_DISTANCES_M = tuple(range(100, 2001, 100))
GEOJSON_DECIMALS = 7

ACTIVE = "(SELECT id FROM grid_versions WHERE status = 'active')"

AREA_SQL = f"""
SELECT id, code, name, level FROM areas
WHERE code = $1 AND starts_with(code, $2) AND (version_id IS NULL OR version_id = {ACTIVE})
LIMIT 1"""


@dataclass(frozen=True)
class AreaRef:
    """An area an analysis runs over."""
    id: int
    code: str
    name: str
    level: str

    def as_json(self) -> dict:
        """Code, name and level, as replies show the area."""
        return {"code": self.code, "name": self.name, "level": self.level}


async def resolve_area(conn, caller: Caller, code: str | None) -> AreaRef:
    """The area to analyse: readers only, inside the caller's subtree (default: the caller's own area)."""
    caller.require_role(*READERS)
    code = code or caller.area_code
    if not code:
        raise InvalidInput("Give area=CODE (a 6, 9, 12 or 15-digit area code).", field="area")
    caller.require_area(code, "area")
    row = await conn.fetchrow(AREA_SQL, code, caller.scope)
    if row is None:
        raise NotFound(f"No area with code {code!r}.", field="area")
    return AreaRef(*row)


# -- grid coverage -------------------------------------------------------------------------------------------

COVERAGE_SQL = f"""
WITH a AS (SELECT id, geom FROM areas WHERE id = $1),
g AS MATERIALIZED (
  SELECT id, left(code, $3) AS child, geom FROM areas
  WHERE level = 'grid' AND version_id = {ACTIVE} AND starts_with(code, $2)),
u AS MATERIALIZED (SELECT coalesce(ST_Union(geom), ST_GeomFromText('POLYGON EMPTY', 4326)) AS geom FROM g),
pairs AS MATERIALIZED (
  SELECT x.child AS xc, y.child AS yc, ST_CollectionExtract(ST_Intersection(x.geom, y.geom), 3) AS geom
  FROM g x JOIN g y ON x.id < y.id AND ST_Intersects(x.geom, y.geom) AND ST_Relate(x.geom, y.geom, '2********')),
parts AS (
  SELECT 'gap' AS kind, d.geom FROM a, u, ST_Dump(ST_Difference(a.geom, u.geom)) d
  UNION ALL
  SELECT 'overlap', d.geom FROM ST_Dump((SELECT ST_Union(geom) FROM pairs)) d
  UNION ALL
  SELECT 'outside', d.geom FROM a, u, ST_Dump(ST_Difference(u.geom, a.geom)) d),
measured AS (SELECT kind, geom, ST_Area(geom::geography) AS m2 FROM parts)
SELECT
  (SELECT ST_Area(geom::geography) FROM a) AS area_m2,
  (SELECT ST_Area(ST_Intersection(a.geom, u.geom)::geography) FROM a, u) AS covered_m2,
  (SELECT count(*) FROM g) AS grids,
  (SELECT count(*) FROM pairs WHERE NOT ST_IsEmpty(geom) AND ST_Area(geom::geography) >= $4) AS overlapping_pairs,
  (SELECT json_agg(json_build_object('kind', kind, 'n', n, 'm2', m2, 'sliver_m2', sliver_m2))
   FROM (SELECT kind, count(*) FILTER (WHERE m2 >= $4) AS n, coalesce(sum(m2) FILTER (WHERE m2 >= $4), 0) AS m2,
                coalesce(sum(m2) FILTER (WHERE m2 < $4), 0) AS sliver_m2
         FROM measured GROUP BY kind) k) AS totals,
  (SELECT json_agg(f) FROM (
     SELECT json_build_object('type', 'Feature', 'geometry', ST_AsGeoJSON(geom, {GEOJSON_DECIMALS})::json,
                              'properties', json_build_object('kind', kind, 'area_m2', round(m2::numeric, 2))) AS f
     FROM (SELECT *, row_number() OVER (PARTITION BY kind ORDER BY m2 DESC) AS rank
           FROM measured WHERE m2 >= $4) r
     WHERE rank <= $5 ORDER BY kind, m2 DESC) fs) AS features,
  (SELECT json_agg(c ORDER BY c->>'code') FROM (
     SELECT json_build_object(
       'code', c.code, 'name', c.name, 'level', c.level,
       'grids', coalesce(gc.grids, 0),
       'area_m2', ST_Area(c.geom::geography),
       'covered_m2', coalesce(ST_Area(ST_Intersection(c.geom, gc.geom)::geography), 0),
       'gap_m2', (SELECT coalesce(sum(m2) FILTER (WHERE m2 >= $4), 0) FROM (
                    SELECT ST_Area(d.geom::geography) AS m2
                    FROM ST_Dump(ST_Difference(c.geom,
                                               coalesce(gc.geom, ST_GeomFromText('POLYGON EMPTY', 4326)))) d) x),
       'overlap_m2', (SELECT coalesce(sum(m2) FILTER (WHERE m2 >= $4), 0) FROM (
                    SELECT ST_Area(d.geom::geography) AS m2
                    FROM ST_Dump((SELECT ST_Union(p.geom) FROM pairs p WHERE p.xc = c.code AND p.yc = c.code)) d) y)
     ) AS c
     FROM areas c
     LEFT JOIN (SELECT child, count(*) AS grids, ST_Union(geom) AS geom FROM g GROUP BY child) gc ON gc.child = c.code
     WHERE $6 AND c.parent_id = $1 AND (c.version_id IS NULL OR c.version_id = {ACTIVE})) cs) AS children
"""


def _share(part: float, whole: float | None) -> float | None:
    return part / whole if whole else None


async def grid_coverage(conn, caller: Caller, code: str | None, min_area_m2: float = 1.0,
                        max_features: int = 1000) -> dict:
    """Share of the area covered by its active grids; gaps, overlaps and spill-over as GeoJSON with m²."""
    area = await resolve_area(conn, caller, code)
    if min_area_m2 < 0:
        raise InvalidInput("`min_area_m2` must be >= 0.", field="min_area_m2")
    child_level = CHILD_LEVEL.get(area.level)
    child_len = CODE_LENGTH[child_level] if child_level else CODE_LENGTH["grid"]
    row = await conn.fetchrow(COVERAGE_SQL, area.id, area.code, child_len, float(min_area_m2), max_features,
                              child_level is not None)
    totals = {t["kind"]: t for t in (_json(row["totals"]) or [])}
    zero = {"n": 0, "m2": 0.0, "sliver_m2": 0.0}
    gap, overlap, outside = (totals.get(k, zero) for k in ("gap", "overlap", "outside"))
    features = _json(row["features"]) or []
    children = []
    for c in _json(row["children"]) or []:
        c["covered_share"] = _share(c["covered_m2"], c["area_m2"])
        children.append(c)
    return {
        "area": area.as_json(),
        "grid_version": "active",
        "min_area_m2": min_area_m2,
        "grids": row["grids"],
        "area_m2": row["area_m2"],
        "covered_m2": row["covered_m2"],
        "covered_share": _share(row["covered_m2"], row["area_m2"]),
        "gap_m2": gap["m2"], "gap_count": gap["n"], "gap_sliver_m2": gap["sliver_m2"],
        "overlap_m2": overlap["m2"], "overlap_count": overlap["n"], "overlap_sliver_m2": overlap["sliver_m2"],
        "overlapping_pairs": row["overlapping_pairs"],
        "outside_m2": outside["m2"], "outside_count": outside["n"],
        "children": children,
        "features": {"type": "FeatureCollection", "features": features,
                     "truncated": any(t["n"] > max_features for t in totals.values())},
        "definitions": {
            "covered_share": "area ∩ union(active grids of the area) / area, geodesic m²",
            "gap": "area − union(grids): parts of the area no grid covers",
            "overlap": "union of pairwise interior intersections of the area's grids",
            "outside": "union(grids) − area: grid parts beyond the area boundary",
            "sliver_m2": f"parts below min_area_m2 ({min_area_m2} m²): floating-point slivers, totalled only",
        },
    }


def _json(value):
    if value is None or not isinstance(value, str | bytes):
        return value
    import orjson

    return orjson.loads(value)


# -- staffing ------------------------------------------------------------------------------------------------

STAFFING_SQL = f"""
SELECT g.code, g.name, g.households, g.kind, g.worker_id, r.name AS worker_name, r.status AS worker_status
FROM areas g LEFT JOIN responders r ON r.id = g.worker_id
WHERE g.level = 'grid' AND g.version_id = {ACTIVE} AND starts_with(g.code, $1) AND starts_with(g.code, $2)
ORDER BY g.code"""


async def staffing(conn, caller: Caller, code: str | None, target: int = 300, tolerance: float = 0.15,
                   limit: int = 20) -> dict:
    """Grids without a worker, households per worker, grids outside the target band, most loaded workers."""
    area = await resolve_area(conn, caller, code)
    if target <= 0:
        raise InvalidInput("`target` must be a positive number of households.", field="target")
    if not 0 <= tolerance < 1:
        raise InvalidInput("`tolerance` must be in [0, 1), e.g. 0.15 for ±15%.", field="tolerance")
    rows = await conn.fetch(STAFFING_SQL, area.code, caller.scope)
    low, high = target * (1 - tolerance), target * (1 + tolerance)

    def grid(r):
        return {"code": r["code"], "name": r["name"], "households": r["households"],
                "kind": r["kind"], "worker_id": r["worker_id"], "worker_name": r["worker_name"]}

    workers: dict[int, dict] = {}
    for r in rows:
        if r["worker_id"] is None:
            continue
        w = workers.setdefault(r["worker_id"], {"id": r["worker_id"], "name": r["worker_name"],
                                                 "status": r["worker_status"], "grids": [], "households": 0})
        w["grids"].append(r["code"])
        w["households"] += r["households"]
    for w in workers.values():
        w["grid_count"] = len(w["grids"])
        w["load"] = w["households"] / target
    households = sum(r["households"] for r in rows)
    staffed = sum(r["households"] for r in rows if r["worker_id"] is not None)
    per_worker = np.array([w["households"] for w in workers.values()], dtype=float)
    over = [grid(r) for r in rows if r["households"] > high]
    under = [grid(r) for r in rows if r["households"] < low]
    ranked = sorted(workers.values(), key=lambda w: (-w["households"], w["id"]))
    return {
        "area": area.as_json(),
        "target": target, "tolerance": tolerance, "band": [low, high],
        "grids": len(rows),
        "households": households,
        "workers": len(workers),
        "grids_without_worker_count": sum(r["worker_id"] is None for r in rows),
        "households_without_worker": households - staffed,
        "households_per_worker": staffed / len(workers) if workers else None,
        "households_per_worker_max": float(per_worker.max()) if len(per_worker) else None,
        "households_per_worker_median": float(np.median(per_worker)) if len(per_worker) else None,
        "households_per_grid": households / len(rows) if rows else None,
        "grids_over_count": len(over), "grids_under_count": len(under),
        "grids_within_count": len(rows) - len(over) - len(under),
        "workers_off_duty": sorted(w["id"] for w in workers.values() if w["status"] == "off_duty"),
        "grids_without_worker": [grid(r) for r in rows if r["worker_id"] is None],
        "grids_over": sorted(over, key=lambda g: (-g["households"], g["code"])),
        "grids_under": sorted(under, key=lambda g: (g["households"], g["code"])),
        "most_overloaded_workers": ranked[:limit],
        "definitions": {
            "band": "target × (1 ± tolerance) households; over: households > band high, under: < band low",
            "households_per_worker": "households of staffed grids / workers (a worker may work several grids)",
            "most_overloaded_workers": "workers ranked by the households of the grids they work; "
                                       "load = households / target",
        },
    }


# -- response coverage ---------------------------------------------------------------------------------------

# One row per building of the area with the geodesic distance (m) to the nearest fresh available responder.
# The planar (degree) KNN nearest bounds the search: within that planar radius widened by 1/cos(lat), the
# geodesic nearest is found exactly.
# The fresh available responders go into a temporary table with its own GiST index (per transaction), so the
# KNN never walks past stale or busy responders in the main index, however few are fresh.
FRESH_TABLE_SQL = (
    "CREATE TEMP TABLE coverage_fresh ON COMMIT DROP AS SELECT id, position FROM responders "
    "WHERE status = 'available' AND position IS NOT NULL AND position_at >= now() - make_interval(secs => $1)",
    "CREATE INDEX ON coverage_fresh USING gist (position)",
    "ANALYZE coverage_fresh",
)

RESPONSE_SQL = """
WITH a AS (SELECT geom FROM areas WHERE id = $1),
b AS (
  SELECT b.id, b.households,
         CASE WHEN GeometryType(b.geom) = 'POINT' THEN b.geom ELSE ST_PointOnSurface(b.geom) END AS p
  FROM buildings b, a WHERE ST_Covers(a.geom, b.geom))
SELECT b.id, b.households, ST_X(b.p) AS lon, ST_Y(b.p) AS lat, near.distance_m
FROM b
LEFT JOIN LATERAL (
  SELECT min(ST_Distance(r.position::geography, b.p::geography)) AS distance_m FROM coverage_fresh r
  WHERE ST_DWithin(r.position, b.p, (
      SELECT r2.position <-> b.p FROM coverage_fresh r2 ORDER BY r2.position <-> b.p LIMIT 1)
    / cos(radians(ST_Y(b.p))) * 1.01)
) near ON true
ORDER BY b.id"""

FRESH_SQL = """SELECT EXISTS (SELECT FROM responders WHERE status = 'available' AND position IS NOT NULL
                                AND position_at >= now() - make_interval(secs => $1))"""

NO_RESPONDER_SQL = """
SELECT b.id, b.households, ST_X(p) AS lon, ST_Y(p) AS lat, NULL::float8 AS distance_m, $2::float8 AS unused
FROM (SELECT b.id, b.households,
             CASE WHEN GeometryType(b.geom) = 'POINT' THEN b.geom ELSE ST_PointOnSurface(b.geom) END AS p
      FROM buildings b, areas a WHERE a.id = $1 AND ST_Covers(a.geom, b.geom)) b
ORDER BY b.id"""

RESPONDERS_SQL = """
SELECT count(*) FILTER (WHERE status = 'available' AND position IS NOT NULL
                        AND position_at >= now() - make_interval(secs => $2)) AS fresh,
       count(*) FILTER (WHERE status = 'available' AND (position IS NULL
                        OR position_at < now() - make_interval(secs => $2))) AS stale,
       count(*) FILTER (WHERE status <> 'available') AS unavailable
FROM responders r, areas a WHERE a.id = $1 AND ST_Covers(a.geom, r.position)"""


def curve(distances: np.ndarray, weights: np.ndarray, steps=CURVE_DISTANCES_M) -> list[dict]:
    """Share of the weight within each distance (unreachable buildings carry distance inf)."""
    total = weights.sum()
    order = np.argsort(distances, kind="stable")
    cum = np.concatenate([[0], np.cumsum(weights[order])])
    points = []
    for d in steps:
        covered = float(cum[np.searchsorted(distances[order], d, side="right")])
        points.append({"distance_m": d, "households_covered": int(covered),
                       "share": float(covered / total) if total else None})
    return points


async def response_distances(conn, area: AreaRef, max_age_s: float):
    """Every building's households and distance to the nearest fresh available responder in the area."""
    fresh = await conn.fetchval(FRESH_SQL, float(max_age_s))
    if fresh:
        async with conn.transaction():
            await conn.execute(FRESH_TABLE_SQL[0], float(max_age_s))
            for sql in FRESH_TABLE_SQL[1:]:
                await conn.execute(sql)
            rows = await conn.fetch(RESPONSE_SQL, area.id)
    else:
        rows = await conn.fetch(NO_RESPONDER_SQL, area.id, float(max_age_s))
    ids = np.array([r["id"] for r in rows], dtype=np.int64)
    households = np.array([r["households"] for r in rows], dtype=float)
    lon = np.array([r["lon"] for r in rows], dtype=float)
    lat = np.array([r["lat"] for r in rows], dtype=float)
    dist = np.array([np.inf if r["distance_m"] is None else r["distance_m"] for r in rows], dtype=float)
    return ids, households, lon, lat, dist


NETWORK_SOURCES_SQL = """
SELECT ST_X(r.position), ST_Y(r.position) FROM responders r, areas a
WHERE a.id = $1 AND r.status = 'available' AND r.position IS NOT NULL
  AND r.position_at >= now() - make_interval(secs => $2) AND r.position && ST_Expand(a.geom, $3)
ORDER BY r.id"""
NETWORK_MARGIN_DEG = 0.05  # responders up to ~5 km outside the area may still reach it by road
CURVE_MINUTES = tuple(range(1, 31))


async def network_times(conn, engine, area: AreaRef, max_age_s: float):
    """Per building of the area: seconds by road from the nearest fresh available responder (inf: none)."""
    rows = await conn.fetch(NO_RESPONDER_SQL, area.id, float(max_age_s))
    ids = np.array([r["id"] for r in rows], dtype=np.int64)
    households = np.array([r["households"] for r in rows], dtype=float)
    lon = np.array([r["lon"] for r in rows], dtype=float)
    lat = np.array([r["lat"] for r in rows], dtype=float)
    sources = [tuple(r) for r in await conn.fetch(NETWORK_SOURCES_SQL, area.id, float(max_age_s), NETWORK_MARGIN_DEG)]
    times = np.full(len(ids), np.inf)
    if sources and len(ids):
        from geo.dispatch import routing

        matrix = await asyncio.to_thread(routing.travel_times_from_many, engine, sources,
                                         list(zip(lon, lat, strict=False)))
        times = matrix.min(axis=0)
    return ids, households, lon, lat, times


async def response_coverage(conn, caller: Caller, code: str | None, distance_m: float = 500,
                            max_age_s: float = DEFAULT_MAX_AGE_S, max_features: int = 1000,
                            steps=CURVE_DISTANCES_M, mode: str = "straight", minutes: float | None = None,
                            engine=None) -> dict:
    """Households within `distance_m` (geodesic, straight line) or, with mode='network', within `minutes` by
    road (pgRouting, from the nearest fresh available responder) of a responder."""
    area = await resolve_area(conn, caller, code)
    if max_age_s <= 0:
        raise InvalidInput("`max_age_s` must be positive.", field="max_age_s")
    if mode == "network":
        if minutes is None or not 0 < minutes <= 120:
            raise InvalidInput("mode=network needs `minutes` in (0, 120].", field="minutes")
        ids, households, lon, lat, value = await network_times(conn, engine, area, max_age_s)
        threshold, steps, key = minutes * 60, [m * 60 for m in CURVE_MINUTES], "travel_time_s"
    else:
        if not 0 < distance_m <= 50_000:
            raise InvalidInput("`distance` must be in (0, 50000] metres.", field="distance")
        ids, households, lon, lat, value = await response_distances(conn, area, max_age_s)
        threshold, key = distance_m, "nearest_responder_m"
    counts = await conn.fetchrow(RESPONDERS_SQL, area.id, float(max_age_s))
    covered = value <= threshold
    total = float(households.sum())
    uncovered = np.flatnonzero(~covered)
    uncovered = uncovered[np.lexsort((ids[uncovered], -np.nan_to_num(value[uncovered], posinf=1e12)))]
    features = [
        {"type": "Feature", "id": int(ids[i]),
         "geometry": {"type": "Point", "coordinates": [round(float(lon[i]), GEOJSON_DECIMALS),
                                                       round(float(lat[i]), GEOJSON_DECIMALS)]},
         "properties": {"building_id": int(ids[i]), "households": int(households[i]),
                        key: None if np.isinf(value[i]) else round(float(value[i]), 1)}}
        for i in uncovered[:max_features]
    ]
    finite = value[np.isfinite(value)]
    points = curve(value, households, steps)
    if mode == "network":
        points = [{"minutes": p.pop("distance_m") / 60, **p} for p in points]
    return {
        "area": area.as_json(),
        "mode": mode,
        "distance_m": distance_m if mode == "straight" else None,
        "minutes": minutes if mode == "network" else None,
        "position_max_age_s": max_age_s,
        "buildings": len(ids),
        "households": int(total),
        "households_covered": int(households[covered].sum()),
        "share_covered": float(households[covered].sum()) / total if total else None,
        "buildings_uncovered": int(len(uncovered)),
        "households_uncovered": int(households[~covered].sum()),
        key: {
            "median": float(np.median(finite)) if len(finite) else None,
            "p90": float(np.percentile(finite, 90)) if len(finite) else None,
            "max": float(finite.max()) if len(finite) else None,
        },
        "responders_in_area": {"available_fresh": counts["fresh"], "available_stale": counts["stale"],
                               "not_available": counts["unavailable"]},
        "curve": points,
        "uncovered": {"type": "FeatureCollection", "features": features,
                      "truncated": len(uncovered) > max_features},
        "definitions": {
            "share_covered": "households of buildings within distance_m (geodesic; mode=network: within minutes by "
                             "road, snap legs walked) of an available responder whose position is at most "
                             "position_max_age_s old / all households of the area's buildings",
            "responders": "every available fresh responder counts, also those just outside the area",
            "curve": "share_covered for each distance (or minute), from the same per-building values",
        },
    }


# -- chart ---------------------------------------------------------------------------------------------------

def curve_svg(points: list[dict], title: str, marker_m: float | None = None, width: int = 480,
              height: int = 300) -> str:
    """A small self-contained SVG line chart of share covered against distance (or minutes by road)."""
    from xml.sax.saxutils import escape

    key, unit = ("minutes", "min") if points and "minutes" in points[0] else ("distance_m", "m")

    left, right, top, bottom = 52, 16, 30, 42
    pw, ph = width - left - right, height - top - bottom
    xs = [p[key] for p in points] or [0, 1]
    x0, x1 = 0, max(xs)

    def sx(x):
        return left + (x - x0) / ((x1 - x0) or 1) * pw

    def sy(s):
        return top + (1 - s) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="13">{escape(title)}</text>']
    for i in range(6):  # y grid: 0..100 %
        s = i / 5
        out.append(f'<line x1="{left}" y1="{sy(s):.1f}" x2="{left + pw}" y2="{sy(s):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{sy(s) + 4:.1f}" text-anchor="end">{int(s * 100)}%</text>')
    step = (500 if x1 > 1000 else 100) if unit == "m" else 5
    for x in range(0, int(x1) + 1, step):
        out.append(f'<line x1="{sx(x):.1f}" y1="{top + ph}" x2="{sx(x):.1f}" y2="{top + ph + 4}" stroke="#333"/>')
        out.append(f'<text x="{sx(x):.1f}" y="{top + ph + 16}" text-anchor="middle">{x}</text>')
    out.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#333"/>')
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="#333"/>')
    axis = "distance (m)" if unit == "m" else "travel time by road (min)"
    out.append(f'<text x="{left + pw / 2}" y="{height - 6}" text-anchor="middle">{axis}</text>')
    out.append(f'<text transform="translate(12 {top + ph / 2}) rotate(-90)" text-anchor="middle">'
               'households covered</text>')
    if marker_m is not None and x0 <= marker_m <= x1:
        out.append(f'<line x1="{sx(marker_m):.1f}" y1="{top}" x2="{sx(marker_m):.1f}" y2="{top + ph}" '
                   'stroke="#d62728" stroke-dasharray="4 3"/>')
    pts = " ".join(f"{sx(p[key]):.1f},{sy(p['share'] or 0):.1f}" for p in points)
    out.append(f'<polyline points="{pts}" fill="none" stroke="#1f77b4" stroke-width="2"/>')
    for p in points:
        out.append(f'<circle cx="{sx(p[key]):.1f}" cy="{sy(p["share"] or 0):.1f}" r="2.5" fill="#1f77b4">'
                   f'<title>{p[key]:g} {unit}: {100 * (p["share"] or 0):.1f}%</title></circle>')
    out.append("</svg>")
    return "\n".join(out)
