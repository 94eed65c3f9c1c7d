"""Network travel times on an imported road graph (geo.network) with pgRouting.

Points are snapped to their nearest graph vertex in metres (geography KNN on road_vertices); the straight
leg between a point and its vertex is walked at WALK_MPS and added to the time. Travel is always FROM a
responder / source TO the incident / target, so one-way edges count in that direction.

- `network_etas` (asyncpg, for dispatch): one incident, a few candidates → ETA each. ONE pgr_dijkstra
  one-to-many from the incident over the *reversed* graph (edge a→b becomes b→a with the same costs), which
  is a single shortest-path tree and gives per candidate the time, the road distance and the route.
- `isochrone` (asyncpg, for coverage maps): everything reachable from (or, direction="to", reaching) a point
  within a time budget, via pgr_drivingDistance.
- `travel_times_from_many` (sync SQLAlchemy, for coverage analysis): a sources × targets matrix of seconds via
  one pgr_dijkstraCost many-to-many.
"""

import json
import math
from typing import Any

import numpy as np
from sqlalchemy import Engine, text

from geo.errors import DomainError, NotFound

WALK_MPS = 1.4  # snap legs: from a point to its vertex, on foot
NETWORK_SEARCH_M = 2000.0  # a network is picked automatically only if one of its vertices is this close
MAX_SNAP_M = 2000.0  # a candidate farther than this from every vertex of the network is "off_network"
BBOX_MARGIN_M = 5000.0  # edges loaded for one query: the points' bounding box grown by this (or its own size)
GEOJSON_DECIMALS = 7


class NoRoadNetwork(DomainError):
    """No road network near the point, for a query that needs one."""
    code = "no_road_network"

    def __init__(self, lon: float, lat: float, within_m: float = NETWORK_SEARCH_M):
        """Say how far was searched, and how to import a network."""
        super().__init__(
            f"No road network near this point ({lon:.6f}, {lat:.6f}): no imported road vertex within "
            f"{within_m:.0f} m. Import one with `wangge network import FILE.osm.pbf` "
            "(the demo: `wangge fixtures load --network` loads Karhula, Finland), or use mode=straight.",
            field="lon,lat")


# ---------------------------------------------------------------- SQL pieces

_PICK = """
SELECT n.id, n.name, v.d FROM road_networks n
CROSS JOIN LATERAL (
    SELECT ST_Distance(rv.geom::geography, ST_SetSRID(ST_MakePoint($1, $2), 4326)::geography) AS d
    FROM road_vertices rv WHERE rv.network_id = n.id
    ORDER BY geography(rv.geom) <-> ST_SetSRID(ST_MakePoint($1, $2), 4326)::geography LIMIT 1) v
WHERE v.d <= $3
ORDER BY n.network_type <> 'driving', v.d, n.id
LIMIT 1"""

_NAMED = "SELECT id, name FROM road_networks WHERE name = $1"

_SNAP = """
SELECT t.i, v.id, ST_Distance(v.geom::geography, ST_SetSRID(ST_MakePoint(t.lon, t.lat), 4326)::geography) AS d
FROM unnest(CAST($2 AS float8[]), CAST($3 AS float8[])) WITH ORDINALITY AS t(lon, lat, i)
CROSS JOIN LATERAL (
    SELECT rv.id, rv.geom FROM road_vertices rv WHERE rv.network_id = $1
    ORDER BY geography(rv.geom) <-> ST_SetSRID(ST_MakePoint(t.lon, t.lat), 4326)::geography LIMIT 1) v
ORDER BY t.i"""

# Paths from the incident vertex over the reversed graph: row (node n_i, edge e_i) is travelled n_(i+1) → n_i,
# so an edge is drawn as stored when its target is n_i, and the path reads from the responder at path_seq DESC.
_PATHS = """
WITH p AS (SELECT * FROM pgr_dijkstra($1, $2::bigint, $3::bigint[], directed => true))
SELECT p.end_vid, sum(p.cost) AS cost_s, sum(e.length_m) AS length_m,
       CASE WHEN $5 THEN ST_AsGeoJSON(ST_MakeLine(
           CASE WHEN e.target = p.node THEN e.geom ELSE ST_Reverse(e.geom) END ORDER BY p.path_seq DESC), 7)
       END AS route
FROM p JOIN road_edges e ON e.network_id = $4 AND e.id = p.edge
GROUP BY p.end_vid"""

_ISOCHRONE = """
WITH d AS (SELECT * FROM pgr_drivingDistance($1, $2::bigint, $3::float8, directed => true)),
verts AS (SELECT d.node, d.agg_cost, v.geom FROM d JOIN road_vertices v ON v.network_id = $4 AND v.id = d.node),
reach AS (SELECT e.id, e.geom FROM road_edges e
          JOIN d s ON s.node = e.source JOIN d t ON t.node = e.target
          WHERE e.network_id = $4)
SELECT (SELECT json_agg(json_build_object('id', node, 'lon', ST_X(geom), 'lat', ST_Y(geom), 'time_s', agg_cost)
                        ORDER BY agg_cost) FROM verts),
       (SELECT array_agg(id ORDER BY id) FROM reach),
       (SELECT ST_AsGeoJSON(ST_Collect(geom), 7) FROM reach),
       (SELECT ST_AsGeoJSON(ST_Buffer(ST_Collect(geom)::geography, $5)::geometry, 6) FROM reach)"""


def edges_sql(network_id: int, points: list[tuple[float, float]] | None = None, reverse: bool = False,
              margin_m: float = BBOX_MARGIN_M) -> str:
    """The edge query pgRouting reads: the network's edges, inside the points' box grown by
    max(margin_m, the box's own size); reverse=True swaps every edge's direction (costs stay with the edge)."""
    cols = ("id, target AS source, source AS target" if reverse else "id, source, target")
    sql = (f"SELECT {cols}, cost_s AS cost, reverse_cost_s AS reverse_cost FROM road_edges "
           f"WHERE network_id = {int(network_id)}")
    if points:
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        lat = max(min(abs(sum(ys) / len(ys)), 85.0), 0.0)
        span = max(margin_m, (max(xs) - min(xs)) * 111_320 * math.cos(math.radians(lat)),
                   (max(ys) - min(ys)) * 110_574)
        dy, dx = span / 110_574, span / (111_320 * math.cos(math.radians(lat)))
        box = [float(v) for v in (min(xs) - dx, min(ys) - dy, max(xs) + dx, max(ys) + dy)]
        sql += f" AND geom && ST_MakeEnvelope({box[0]!r}, {box[1]!r}, {box[2]!r}, {box[3]!r}, 4326)"
    return sql


async def pick_network(conn, lon: float, lat: float, network: str | None = None,
                       within_m: float = NETWORK_SEARCH_M) -> tuple[int, str]:
    """(id, name) of `network`, or of the network with a vertex nearest the point (driving networks first)
    within `within_m`; NoRoadNetwork otherwise."""
    if network is not None:
        row = await conn.fetchrow(_NAMED, network)
        if row is None:
            raise NotFound(f"No road network named {network!r}; `wangge network import` loads one.", field="network")
        return row["id"], row["name"]
    row = await conn.fetchrow(_PICK, float(lon), float(lat), float(within_m))
    if row is None:
        raise NoRoadNetwork(lon, lat, within_m)
    return row["id"], row["name"]


async def snap(conn, network_id: int, points: list[tuple[float, float]]) -> list[tuple[int, float]]:
    """(vertex id, distance in metres) of each point's nearest vertex, in order."""
    rows = await conn.fetch(_SNAP, network_id, [float(p[0]) for p in points], [float(p[1]) for p in points])
    return [(r["id"], r["d"]) for r in rows]


async def network_etas(conn, lon: float, lat: float, candidates: list[tuple[int, float, float]],
                       network: str | None = None, routes: str = "best",
                       max_snap_m: float = MAX_SNAP_M) -> list[dict]:
    """Travel by road from each candidate (responder_id, lon, lat) to the point (lon, lat).

    Returns one dict per candidate, fastest first (unreachable last, in input order):
    responder_id, eta_s (network time + both snap legs at WALK_MPS; None if unreachable),
    network_time_s, network_distance_m (road metres along the fastest path), distance_m (road + snap legs),
    snap_m (candidate → its vertex), target_snap_m, network (name), reachable, reason (None, "off_network" or
    "no_path") and route: a GeoJSON LineString responder → road → incident (routes="best": only the fastest
    candidate's, "all": every reachable one, "none").
    Raises NoRoadNetwork when no network is near the point (and `network` is not given)."""
    if not candidates:
        return []
    network_id, network_name = await pick_network(conn, lon, lat, network)
    points = [(float(lon), float(lat))] + [(float(c[1]), float(c[2])) for c in candidates]
    snaps = await snap(conn, network_id, points)
    (target_vid, target_snap), cand_snaps = snaps[0], snaps[1:]
    on_net = [v for v, d in cand_snaps if d <= max_snap_m and v != target_vid]
    paths = {}
    if on_net:
        near = [p for p, (_, d) in zip(points, snaps, strict=False) if d <= max_snap_m]
        rows = await conn.fetch(_PATHS, edges_sql(network_id, near, reverse=True), target_vid,
                                sorted(set(on_net)), network_id, routes != "none")
        paths = {r["end_vid"]: (r["cost_s"], r["length_m"], r["route"]) for r in rows}
    results = []
    for (rid, clon, clat), (vid, d) in zip(candidates, cand_snaps, strict=False):
        item: dict[str, Any] = {
            "responder_id": rid, "network": network_name, "snap_m": d, "target_snap_m": target_snap,
            "eta_s": None, "network_time_s": None, "network_distance_m": None, "distance_m": None,
            "reachable": False, "reason": None, "route": None}
        if d > max_snap_m:
            item["reason"] = "off_network"
        elif vid == target_vid:
            item.update(network_time_s=0.0, network_distance_m=0.0, reachable=True,
                        _line={"type": "LineString", "coordinates": []})
        elif vid in paths:
            cost, length, line = paths[vid]
            item.update(network_time_s=cost, network_distance_m=length, reachable=True,
                        _line=json.loads(line) if line else None)
        else:
            item["reason"] = "no_path"
        if item["reachable"]:
            item["eta_s"] = item["network_time_s"] + (d + target_snap) / WALK_MPS
            item["distance_m"] = item["network_distance_m"] + d + target_snap
            line = item.get("_line")
            if line is not None:
                line["coordinates"] = [[clon, clat], *line["coordinates"], [float(lon), float(lat)]]
        results.append(item)
    order = sorted(range(len(results)),
                   key=lambda i: (results[i]["eta_s"] is None, results[i]["eta_s"] or 0, i))
    results = [results[i] for i in order]
    for n, item in enumerate(results):
        line = item.pop("_line", None)
        if item["reachable"] and (routes == "all" or (routes == "best" and n == 0)):
            item["route"] = line
    return results


async def isochrone(conn, lon: float, lat: float, max_s: float, network: str | None = None,
                    direction: str = "from", buffer_m: float = 50.0) -> dict:
    """What is reachable by road within max_s seconds FROM the point (direction="to": what reaches it),
    counting the snap leg at WALK_MPS. Returns network, vertex_id, snap_m, vertices [{id, lon, lat, time_s}]
    (time_s includes the snap leg), edge_ids (both ends reachable), edges (GeoJSON MultiLineString or None) and
    area (those edges buffered by buffer_m, GeoJSON or None)."""
    if direction not in ("from", "to"):
        raise ValueError("direction must be 'from' or 'to'")
    network_id, network_name = await pick_network(conn, lon, lat, network)
    [(vid, d)] = await snap(conn, network_id, [(lon, lat)])
    budget = max_s - d / WALK_MPS
    empty = {"network": network_name, "vertex_id": vid, "snap_m": d, "vertices": [], "edge_ids": [],
             "edges": None, "area": None}
    if budget < 0:
        return empty
    reach_m = budget * 40  # ≥ 144 km/h over the budget: the box is never the limit
    sql = edges_sql(network_id, [(lon, lat)], reverse=direction == "to", margin_m=max(reach_m, 1000.0))
    verts, edge_ids, edges, area = await conn.fetchrow(_ISOCHRONE, sql, vid, budget, network_id, float(buffer_m))
    vertices = json.loads(verts) if verts else []
    for v in vertices:
        v["time_s"] += d / WALK_MPS
    return {**empty, "vertices": vertices, "edge_ids": list(edge_ids or []),
            "edges": json.loads(edges) if edges else None, "area": json.loads(area) if area else None}


# ---------------------------------------------------------------- sync, for analyses

def travel_times_from_many(engine: Engine, sources: list[tuple[float, float]], targets: list[tuple[float, float]],
                           network: str | None = None, max_snap_m: float = MAX_SNAP_M) -> np.ndarray:
    """Seconds by road from every source (lon, lat) to every target: an array of shape
    (len(sources), len(targets)), np.inf where there is no path or a point is farther than max_snap_m from the
    network; snap legs walked at WALK_MPS. One pgr_dijkstraCost many-to-many over the network picked at the
    first source (or `network`). Coverage: `(matrix.min(axis=0) <= T)` are the targets within T of any source."""
    times = np.full((len(sources), len(targets)), np.inf)
    if not len(sources) or not len(targets):
        return times
    points = [(float(x), float(y)) for x, y in [*sources, *targets]]
    with engine.connect() as conn:
        if network is not None:
            row = conn.execute(text("SELECT id, name FROM road_networks WHERE name = :n"), {"n": network}).first()
            if row is None:
                raise NotFound(f"No road network named {network!r}.", field="network")
        else:
            row = conn.execute(text(_PICK.replace("$1", ":x").replace("$2", ":y").replace("$3", ":m")),
                               {"x": points[0][0], "y": points[0][1], "m": NETWORK_SEARCH_M}).first()
            if row is None:
                raise NoRoadNetwork(*points[0])
        network_id = row[0]
        snaps = conn.execute(text(_SNAP.replace("$1", ":n").replace("$2", ":xs").replace("$3", ":ys")),
                             {"n": network_id, "xs": [p[0] for p in points], "ys": [p[1] for p in points]}).all()
        vid = np.array([r[1] for r in snaps], dtype=np.int64)
        leg = np.array([r[2] for r in snaps]) / WALK_MPS
        ok = np.array([r[2] for r in snaps]) <= max_snap_m
        s_vid, t_vid = vid[: len(sources)], vid[len(sources):]
        s_ok, t_ok = ok[: len(sources)], ok[len(sources):]
        starts, ends = sorted(set(s_vid[s_ok].tolist())), sorted(set(t_vid[t_ok].tolist()))
        found = np.zeros((0, 3))
        if starts and ends:
            near = [p for p, good in zip(points, ok, strict=False) if good]
            rows = conn.execute(text(
                "SELECT start_vid, end_vid, agg_cost FROM pgr_dijkstraCost(:sql, CAST(:s AS bigint[]), "
                "CAST(:t AS bigint[]), directed => true)"),
                {"sql": edges_sql(network_id, near), "s": starts, "t": ends})
            found = np.array([tuple(r) for r in rows], dtype=float).reshape(-1, 3)
    # unique start × end costs, then spread to every (source, target) pair
    s_index = {v: k for k, v in enumerate(starts)}
    t_index = {v: k for k, v in enumerate(ends)}
    grid = np.full((len(starts) + 1, len(ends) + 1), np.inf)  # last row/column: off the network
    if starts and ends:
        grid[[s_index[int(v)] for v in found[:, 0]], [t_index[int(v)] for v in found[:, 1]]] = found[:, 2]
        for v in set(starts) & set(ends):
            grid[s_index[v], t_index[v]] = 0.0
    si = np.array([s_index[v] if g else len(starts) for v, g in zip(s_vid.tolist(), s_ok, strict=False)],
                  dtype=np.int64)
    ti = np.array([t_index[v] if g else len(ends) for v, g in zip(t_vid.tolist(), t_ok, strict=False)], dtype=np.int64)
    times = grid[si][:, ti] + leg[: len(sources), None] + leg[None, len(sources):]
    return times
