"""Optimal stationing with PySAL spopt: MCLP (K posts, most households within D) and LSCP (fewest posts
covering everyone), compared with today's positions of the available, fresh responders in the area.

Problem sizes are kept sane: demand is the area's buildings, aggregated to square cells (household-weighted mean
point) of the smallest size that keeps at most DEMAND_CAP points; candidates are capped the same way.
Distances are straight-line metres in the local UTM zone (error < 0.1% at this scale). Today's positions are
added to the candidates, so for K = today's count the proposal can never be worse than today on the model's
demand. Everything here is synchronous: run it in a threadpool.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np

from geo.errors import InvalidInput

DEMAND_CAP = 600
CANDIDATE_CAP = 300  # spopt builds dense PuLP models: ~600 × 300 solves in seconds
MAX_K = 2000
SOLVER_TIME_LIMIT_S = 20

BUILDINGS_SQL = """
SELECT b.id, b.households,
       ST_X(CASE WHEN GeometryType(b.geom) = 'POINT' THEN b.geom ELSE ST_PointOnSurface(b.geom) END) AS lon,
       ST_Y(CASE WHEN GeometryType(b.geom) = 'POINT' THEN b.geom ELSE ST_PointOnSurface(b.geom) END) AS lat
FROM buildings b, areas a WHERE a.id = $1 AND ST_Covers(a.geom, b.geom) AND b.households > 0
ORDER BY b.id"""

GRID_POINTS_SQL = """
SELECT code, ST_X(p) AS lon, ST_Y(p) AS lat FROM (
  SELECT code, ST_PointOnSurface(geom) AS p FROM areas
  WHERE level = 'grid' AND version_id = (SELECT id FROM grid_versions WHERE status = 'active')
    AND starts_with(code, $1)) g
ORDER BY code"""

CURRENT_SQL = """
SELECT r.id, r.name, ST_X(r.position) AS lon, ST_Y(r.position) AS lat
FROM responders r, areas a
WHERE a.id = $1 AND r.status = 'available' AND r.position IS NOT NULL
  AND r.position_at >= now() - make_interval(secs => $2) AND ST_Covers(a.geom, r.position)
ORDER BY r.id"""


@dataclass
class Points:
    """Demand points with weights and labels, and where they came from."""
    lon: np.ndarray
    lat: np.ndarray
    weight: np.ndarray
    label: list
    source: str


def aggregate(lon, lat, weight, cap: int, label: list, source: str) -> Points:
    """The points themselves if few enough, else square cells (local metres) of the smallest size, growing by
    15% steps from 25 m, that leaves at most `cap` cells; each cell is its weight-weighted mean point.
    (H3's fixed resolutions step 7× in area, too coarse a jump for a solver budget.)"""
    lon, lat, weight = (np.asarray(a, dtype=float) for a in (lon, lat, weight))
    if len(lon) <= cap:
        return Points(lon, lat, weight, list(label), source)
    cells, size = square_cells(lon, lat, cap)
    mx, my, w, _ = cell_means(cells, lon, lat, weight)
    return Points(mx, my, w, [f"cell {i}" for i in range(len(mx))], f"{source} aggregated to {size:.0f} m cells")


def square_cells(lon: np.ndarray, lat: np.ndarray, cap: int, start_m: float = 25.0,
                 growth: float = 1.15) -> tuple[np.ndarray, float]:
    """Each point's cell index in the square grid (local metres) of the smallest size, growing by `growth`
    from `start_m`, that leaves at most `cap` occupied cells; and that size."""
    xy = projector(float(np.mean(lon)))[0](lon, lat)
    size = start_m
    while True:
        uniq, cells = np.unique(np.floor(xy / size).astype(np.int64), axis=0, return_inverse=True)
        if len(uniq) <= cap:
            return cells.ravel(), size
        size *= growth


def cell_means(cells: np.ndarray, lon: np.ndarray, lat: np.ndarray,
               weight: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per cell: the weight-weighted mean lon and lat (plain mean where a cell has no weight), the summed
    weight and the number of points."""
    ww = weight + 1e-9
    total = np.bincount(cells, weights=ww)
    return (np.bincount(cells, weights=lon * ww) / total, np.bincount(cells, weights=lat * ww) / total,
            np.bincount(cells, weights=weight), np.bincount(cells))


def projector(lon0: float):
    """WGS84 → the UTM zone (north) of lon0, as a function of (lon, lat) arrays → (x, y) metres."""
    from pyproj import Transformer

    zone = int((lon0 + 180) // 6) + 1
    t = Transformer.from_crs(4326, 32600 + zone, always_xy=True)
    return lambda lon, lat: np.column_stack(t.transform(np.asarray(lon), np.asarray(lat))), 32600 + zone


def _nearest(points_xy: np.ndarray, posts_xy: np.ndarray) -> np.ndarray:
    if len(posts_xy) == 0:
        return np.full(len(points_xy), np.inf)
    from scipy.spatial import cKDTree

    return cKDTree(posts_xy).query(points_xy)[0]


def _post_features(lon, lat, labels, kinds, covered) -> dict:
    return {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [round(float(x), 7), round(float(y), 7)]},
         "properties": {"candidate": label, "candidate_kind": kind, "households_covered": int(c)}}
        for x, y, label, kind, c in zip(lon, lat, labels, kinds, covered, strict=False)]}


def solve(buildings, grid_points, current, k: int, distance_m: float, candidates="grid_centroids") -> dict:
    """MCLP and LSCP on the given rows (plain tuples from the three queries above); pure computation."""
    import pulp
    from spopt.locate import LSCP, MCLP

    if not 1 <= k <= MAX_K:
        raise InvalidInput(f"`k` must be between 1 and {MAX_K}.", field="k")
    if not 0 < distance_m <= 50_000:
        raise InvalidInput("`distance` must be in (0, 50000] metres.", field="distance")
    if not buildings:
        raise InvalidInput("The area has no buildings with households to cover.", field="area")
    b_id = np.array([r[0] for r in buildings])
    b_hh = np.array([r[1] for r in buildings], dtype=float)
    b_lon = np.array([r[2] for r in buildings], dtype=float)
    b_lat = np.array([r[3] for r in buildings], dtype=float)
    demand = aggregate(b_lon, b_lat, b_hh, DEMAND_CAP, [int(i) for i in b_id], "buildings")

    # today's positions join the candidates when they fit in half the budget (always when k >= their count
    # for small areas), which makes the proposal at least as good as today for that k
    current_all = current
    current = current if len(current) <= CANDIDATE_CAP // 2 else []
    room = CANDIDATE_CAP - len(current)
    if candidates == "grid_centroids":
        c_lon = [r[1] for r in grid_points]
        c_lat = [r[2] for r in grid_points]
        cand = aggregate(c_lon, c_lat, np.ones(len(c_lon)), room, [r[0] for r in grid_points],
                         "grid centroids (point on surface)")
    else:
        pts = np.asarray(candidates, dtype=float).reshape(-1, 2)
        if len(pts) == 0:
            raise InvalidInput("`candidates` is an empty list.", field="candidates")
        if len(pts) > room:
            raise InvalidInput(f"At most {room} candidate points here; got {len(pts)}.", field="candidates")
        cand = Points(pts[:, 0], pts[:, 1], np.ones(len(pts)), [f"point {i}" for i in range(len(pts))], "given points")
    cur_lon = np.array([r[2] for r in current], dtype=float)
    cur_lat = np.array([r[3] for r in current], dtype=float)
    today_lon = np.array([r[2] for r in current_all], dtype=float)
    today_lat = np.array([r[3] for r in current_all], dtype=float)

    # candidates = the given/centroid posts plus today's positions
    all_lon = np.concatenate([cand.lon, cur_lon])
    all_lat = np.concatenate([cand.lat, cur_lat])
    labels = list(cand.label) + [f"responder {r[0]}" for r in current]
    kinds = ["candidate"] * len(cand.lon) + ["current_position"] * len(current)

    project, epsg = projector(float(np.mean(b_lon)))
    d_xy = project(demand.lon, demand.lat)
    c_xy = project(all_lon, all_lat)
    from scipy.spatial.distance import cdist

    cost = cdist(d_xy, c_xy)
    total = float(demand.weight.sum())
    reach = cost <= distance_m
    solver = pulp.PULP_CBC_CMD(msg=False, timeLimit=SOLVER_TIME_LIMIT_S)

    # MCLP
    p = min(k, cost.shape[1])
    mclp = MCLP.from_cost_matrix(cost, demand.weight, distance_m, p_facilities=p).solve(solver)
    mclp_status = pulp.LpStatus[mclp.problem.status]
    chosen = np.array([j for j, v in enumerate(mclp.fac_vars) if (v.value() or 0) > 0.5], dtype=int)
    model_covered = float(demand.weight[reach[:, chosen].any(axis=1)].sum()) if len(chosen) else 0.0
    today_xy = project(today_lon, today_lat)
    today_reach = cdist(d_xy, today_xy) <= distance_m if len(current_all) else np.zeros((len(d_xy), 0), bool)
    model_current = float(demand.weight[today_reach.any(axis=1)].sum())

    # exact evaluation on every building (projected metres), proposed vs today
    b_xy = project(b_lon, b_lat)
    prop_near = _nearest(b_xy, c_xy[chosen])
    cur_near = _nearest(b_xy, today_xy)
    b_prop = float(b_hh[prop_near <= distance_m].sum())
    b_cur = float(b_hh[cur_near <= distance_m].sum())
    b_total = float(b_hh.sum())
    post_cover = [float(demand.weight[reach[:, j]].sum()) for j in chosen]

    # LSCP over the demand any candidate can reach; the rest is reported as uncoverable
    coverable = reach.any(axis=1)
    uncoverable = float(demand.weight[~coverable].sum())
    lscp: dict[str, Any] = {"status": None, "posts_needed": None, "posts": None,
            "uncoverable_households": uncoverable, "uncoverable_demand_points": int((~coverable).sum())}
    if coverable.any():
        sub = cost[coverable]
        try:
            model = LSCP.from_cost_matrix(sub, distance_m).solve(solver)
            status = pulp.LpStatus[model.problem.status]
            picks = np.array([j for j, v in enumerate(model.fac_vars) if (v.value() or 0) > 0.5], dtype=int)
        except RuntimeError as exc:
            status, picks = f"failed: {exc}", np.array([], dtype=int)
        lscp.update(status="optimal" if status == "Optimal" else status.lower(), posts_needed=int(len(picks)),
                    posts=_post_features(all_lon[picks], all_lat[picks], [labels[j] for j in picks],
                                         [kinds[j] for j in picks],
                                         [demand.weight[reach[:, j]].sum() for j in picks]))
    lscp["covers_everyone"] = uncoverable == 0 and lscp["status"] == "optimal"
    if uncoverable:
        lscp["note"] = (f"Infeasible to cover everyone within {distance_m:g} m: {uncoverable:.0f} households are "
                        "farther than that from every candidate; posts_needed covers the rest. Add candidates "
                        "or raise the distance.")

    def share(x, t):
        return x / t if t else None

    return {
        "k": k, "distance_m": distance_m, "projection": f"EPSG:{epsg}",
        "demand": {"points": len(demand.lon), "source": demand.source, "households": int(total),
                   "buildings": len(b_id)},
        "candidates": {"count": len(labels), "source": cand.source, "given_or_centroids": len(cand.lon),
                       "current_positions": len(current),
                       "current_positions_left_out": len(current_all) - len(current)},
        "mclp": {"status": mclp_status.lower(), "posts": _post_features(
            all_lon[chosen], all_lat[chosen], [labels[j] for j in chosen], [kinds[j] for j in chosen], post_cover)},
        "proposed": {"posts": int(len(chosen)), "households_covered": int(round(b_prop)),
                     "share_covered": share(b_prop, b_total),
                     "model_households_covered": int(round(model_covered)),
                     "model_share_covered": share(model_covered, total)},
        "current": {"responders": len(current_all), "households_covered": int(round(b_cur)),
                    "share_covered": share(b_cur, b_total),
                    "model_households_covered": int(round(model_current)),
                    "model_share_covered": share(model_current, total)},
        "gain_households": int(round(b_prop - b_cur)),
        "lscp": lscp,
        "definitions": {
            "households_covered": "households of buildings within distance_m (projected straight line) of a post",
            "model_households_covered": "the same on the aggregated demand the optimiser sees",
            "current": "available responders in the area with a position fresher than position_max_age_s",
            "candidates": "the given points or grid centroids (capped), plus today's positions",
        },
    }


async def load(conn, area_id: int, area_code: str, max_age_s: float,
               need_grids: bool) -> tuple[list[tuple], list[tuple], list[tuple]]:
    """The area's buildings, grid centroids (if needed) and today's fresh responders, for the solver."""
    buildings = [tuple(r) for r in await conn.fetch(BUILDINGS_SQL, area_id)]
    grid_points = [tuple(r) for r in await conn.fetch(GRID_POINTS_SQL, area_code)] if need_grids else []
    current = [tuple(r) for r in await conn.fetch(CURRENT_SQL, area_id, float(max_age_s))]
    return buildings, grid_points, current
