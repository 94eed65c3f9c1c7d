"""Dispatch: the nearest responders to a point (geodesic KNN, optional road re-ranking) and sending one."""

import functools
import inspect
from dataclasses import dataclass

from sqlalchemy import text

from geo.auth import Caller
from geo.crs import radius_3857
from geo.dispatch.responders import COLUMNS, FRESH, VISIBLE, feature, round_to, session_zone
from geo.errors import Conflict, DomainError, InvalidInput, NotFound
from geo.incidents import intake as incidents
from geo.incidents import workflow
from geo.models import RESPONDER_ROLES, RESPONDER_STATUSES
from geo.sql import Query

MAX_K = 100
MODES = ("straight", "network")


class NetworkUnavailable(DomainError):
    """mode=network asked for, but no road network (or routing module) is loaded."""

    code = "network_unavailable"


@dataclass
class Nearest:
    """A nearest-responders query, the point in WGS84."""
    lon: float  # WGS84
    lat: float
    k: int = 5
    statuses: list[str] | None = None  # default: available
    roles: list[str] | None = None
    max_distance_m: float | None = None
    include_stale: bool = False
    mode: str = "straight"


_FILTERS = f"""r.position IS NOT NULL AND {VISIBLE}
      AND r.status = ANY(CAST(:statuses AS text[]))
      AND (CAST(:roles AS text[]) IS NULL OR r.role = ANY(CAST(:roles AS text[])))
      AND (CAST(:include_stale AS bool) OR {FRESH})"""
_POINT = "ST_SetSRID(ST_MakePoint(CAST(:lon AS float8), CAST(:lat AS float8)), 4326)"
# Sub-selects: computed once per query, not once per row
_POINT_3857 = f"(SELECT ST_Transform({_POINT}, 3857))"
_POINT_GEOGRAPHY = f"(SELECT geography({_POINT}))"

# The planar radius (degrees) that holds every point within :d geodesic metres of the point: 110 km per degree
# of latitude is below the true 110.57 km, and the cos of the far edge widens it for the shorter degrees of
# longitude (NEAREST_SQL's search in degrees).
_RADIUS = ("{d} / (110000.0 * cos(radians(least(89.0, abs(CAST(:lat AS float8)) + {d} / 110000.0)))) "
           "* 1.01 + 1e-9")
_GRID = f"""(SELECT a.code FROM areas a
    WHERE a.level = 'grid' AND a.version_id = (SELECT id FROM grid_versions WHERE status = 'active')
      AND ST_Covers(a.geom, {_POINT})
    ORDER BY a.code LIMIT 1)"""
# Per responder: what its Feature needs (geo.dispatch.responders.feature, built in Python: JSON, time formatting
# and rounding cost the database more than Python) and its geodesic metres on the WGS84 spheroid.
_COLUMNS = f"{COLUMNS}, ST_Distance(geography(r.position), {_POINT_GEOGRAPHY}) AS distance_m"

# One KNN scan (`<->`, GiST) in Web Mercator (responders.position_3857) takes the :m nearest candidates, in that
# order, with their geodesic metres and Mercator distance; ranked() keeps the k nearest by (metres, id). They are
# the k geodesically nearest of all unless someone outside the candidates could be as near as the k-th: such a
# one lies within radius_3857(k-th metres) but beyond the last candidate. proven() checks that; when it fails
# (1 in 1,000 with :m = k + 2), NEAREST_SQL answers instead. The grid covering the point and the database clock come
# back on every row (a row of nulls when no responder passes the filters).
CANDIDATES_SQL = f"""
SELECT {_GRID} AS grid_code, cand.*
FROM (SELECT 1) one
LEFT JOIN LATERAL (
    SELECT {_COLUMNS}, r.position_3857 <-> {_POINT_3857} AS mercator
    FROM responders r
    WHERE {_FILTERS}
    ORDER BY r.position_3857 <-> {_POINT_3857}
    LIMIT CAST(:m AS int)) cand ON true"""

# Planar KNN finds k candidates; the farthest of them, geodesically, bounds the k geodesically nearest. All
# responders within that bound's radius are then sorted by geodesic metres, ties by id.
NEAREST_SQL = f"""
WITH pt AS (SELECT {_POINT} AS g),
cand AS (
    SELECT r.position FROM responders r
    WHERE {_FILTERS}
    ORDER BY r.position <-> {_POINT}
    LIMIT CAST(:k AS int)),
bound AS (
    SELECT least(max(ST_Distance(geography(c.position), geography(pt.g))), CAST(:max_distance AS float8)) AS d
    FROM cand c, pt)
SELECT {_GRID} AS grid_code, near.*
FROM (SELECT 1) one
LEFT JOIN LATERAL (
    SELECT {_COLUMNS}
    FROM responders r, pt, bound
    WHERE {_FILTERS}
      AND ST_DWithin(r.position, pt.g, {_RADIUS.format(d="bound.d")})
      AND ST_Distance(geography(r.position), geography(pt.g)) <= bound.d
    ORDER BY distance_m, r.id
    LIMIT CAST(:k AS int)) near ON true"""
_CANDIDATES = Query(text(CANDIDATES_SQL))
_NEAREST = Query(text(NEAREST_SQL))


def candidates(k: int) -> int:
    """How many Mercator-nearest candidates to rank for k: enough that proven() almost always holds."""
    return k + 2


def ranked(rows, k: int, max_distance: float | None) -> list:
    """The k nearest responder rows by (geodesic metres, id) within max_distance metres."""
    found = sorted((row for row in rows if row["id"] is not None), key=lambda row: (row["distance_m"], row["id"]))
    return [row for row in found if max_distance is None or row["distance_m"] <= max_distance][:k]


def proven(rows, near, lat: float, k: int, m: int, max_distance: float | None) -> bool:
    """Whether `near` (ranked() of CANDIDATES_SQL's m candidate rows) are the k nearest of all responders."""
    scanned = [row["mercator"] for row in rows if row["id"] is not None]
    if len(scanned) < m:  # the scan ran out: everyone who passes the filters was ranked
        return True
    reach = near[-1]["distance_m"] if len(near) == k else max_distance  # as near as one outside may be to count
    return reach is not None and radius_3857(reach, lat) < max(scanned)


@functools.lru_cache(maxsize=8)
def nearest_feature(row, grid_code: str | None, speed_mps: float, tz) -> dict:
    """A responder row of CANDIDATES_SQL or NEAREST_SQL as /dispatch/nearest returns it: the responder's Feature
    with its geodesic distance, straight-line ETA and whether its home grid is the grid under the point."""
    metres = row["distance_m"]
    return feature(row, tz, distance_m=round_to(metres, 100.0), eta_s=round_to(metres / speed_mps, 10.0),
                   same_grid=grid_code is not None and row["home_grid_code"] == grid_code)


@dataclass
class NearestResult:
    """The ranked responders, the grid covering the point and the mode used."""
    features: list[dict]  # Features, nearest first
    ids: list[int]
    grid_code: str | None  # the active grid covering the point
    mode: str


def checked(query: Nearest) -> Nearest:
    """The query validated (400 naming the field), k clamped to 1..MAX_K."""
    if query.mode not in MODES:
        raise InvalidInput(f"Unknown mode {query.mode!r}; use straight or network.", field="mode")
    for values, allowed, name in ((query.statuses, RESPONDER_STATUSES, "status"),
                                  (query.roles, RESPONDER_ROLES, "role")):
        unknown = [v for v in values or () if v not in allowed]
        if unknown:
            raise InvalidInput(f"Unknown {name} {', '.join(unknown)}; use: {', '.join(allowed)}.", field=name)
    if query.max_distance_m is not None and not query.max_distance_m > 0:
        raise InvalidInput("max_distance is in metres and must be positive.", field="max_distance")
    if not (-180 <= query.lon <= 180 and -90 <= query.lat <= 90):
        raise InvalidInput(f"Coordinates ({query.lon}, {query.lat}) are out of range (did you swap lon and lat?).",
                           field="lon,lat")
    query.k = max(1, min(MAX_K, int(query.k)))
    return query


async def nearest(conn, caller: Caller, query: Nearest, *, max_age_s: float, speed_mps: float,
                  network_candidates: int = 10) -> NearestResult:
    """The k nearest responders to a WGS84 point by geodesic metres (mode=network re-ranks by road time)."""
    query = checked(query)
    k = max(query.k, network_candidates) if query.mode == "network" else query.k
    params = dict(lon=query.lon, lat=query.lat, k=k, scope=caller.scope, statuses=query.statuses or ["available"],
                  roles=query.roles, include_stale=query.include_stale, max_age=max_age_s,
                  max_distance=query.max_distance_m, speed=speed_mps)
    m = candidates(k)
    rows = await _CANDIDATES.fetch(conn, m=m, **params)
    near = ranked(rows, k, query.max_distance_m)
    if not proven(rows, near, query.lat, k, m, query.max_distance_m):
        rows = await _NEAREST.fetch(conn, **params)
        near = ranked(rows, k, None)
    grid_code, tz = rows[0]["grid_code"], session_zone(conn)
    features = [nearest_feature(row, grid_code, speed_mps, tz) for row in near]
    if query.mode == "network":
        features = (await _network_rerank(conn, query, near, features))[:query.k]
    return NearestResult(features, [f["id"] for f in features], grid_code, query.mode)


def _network_etas():
    """geo.routing.network_etas if the road-network module is installed, else None."""
    try:
        from geo.dispatch import routing
    except ImportError:
        return None
    return getattr(routing, "network_etas", None)


async def _network_rerank(conn, query: Nearest, rows, features: list[dict]) -> list[dict]:
    """Road travel times for the straight-line candidates (geo.routing.network_etas), re-ranked by ETA,
    unreachable ones last (then by straight distance and id). The only place that calls the routing module."""
    network_etas = _network_etas()
    if network_etas is None:
        raise NetworkUnavailable("mode=network needs the road network: load it with `wangge fixtures load "
                                 "--network` (or `wangge network import FILE.osm.pbf`), or use mode=straight.",
                                 field="mode")
    if not rows:
        return []
    # routing: candidates (responder_id, lon, lat) → one dict per candidate with responder_id, eta_s (None if
    # unreachable), distance_m (road metres incl. snap legs), route (GeoJSON, the fastest only), reason.
    etas = network_etas(conn, query.lon, query.lat, [(r["id"], r["lon"], r["lat"]) for r in rows])
    if inspect.isawaitable(etas):
        etas = await etas
    by_id = {item["responder_id"]: item for item in etas}
    for item in features:
        props = item["properties"]
        found = by_id.get(item["id"]) or {}
        eta = found.get("eta_s")
        props["straight_distance_m"], props["straight_eta_s"] = props["distance_m"], props["eta_s"]
        props["network_distance_m"] = None if found.get("distance_m") is None else round(found["distance_m"], 1)
        props["eta_s"] = None if eta is None else round(float(eta), 1)
        props["reachable"] = eta is not None
        props["unreachable_reason"] = found.get("reason")
        if found.get("route") is not None:
            props["route"] = found["route"]
    inf = float("inf")
    features.sort(key=lambda f: (f["properties"]["eta_s"] if f["properties"]["eta_s"] is not None else inf,
                                 f["properties"]["distance_m"], f["id"]))
    return features


# -- sending a responder to an incident -----------------------------------------------------------------------

_INCIDENT = Query(text(
    "SELECT id, status, grid_code, suggested_grid_code, ST_X(geom) AS lon, ST_Y(geom) AS lat "
    "FROM incidents WHERE id = CAST(:id AS bigint) FOR UPDATE"))
_RESPONDER = Query(text(f"SELECT r.id, r.status, r.name FROM responders r WHERE r.id = CAST(:id AS int) AND {VISIBLE} "
                        "FOR UPDATE"))
_BUSY = Query(text("UPDATE responders SET status = 'busy' WHERE id = CAST(:id AS int)"))
DISPATCHABLE = ("reported", "filed", "returned")


async def dispatch_incident(conn, caller: Caller, incident_id: int, responder_id: int | None = None,
                            note: str | None = None, *, max_age_s: float, speed_mps: float) -> str:
    """Send a responder (default: the nearest available one with a fresh position) to an incident.

    One transaction: the responder becomes busy (409 unless available) and the incident is dispatched to them
    through the workflow — a 'reported' incident is filed first — each step an event. Returns the incident."""
    caller.require_role(*workflow.STAFF_ROLES)
    async with conn.transaction():
        incident = await _INCIDENT.fetchrow(conn, id=incident_id)
        if incident is None or not caller.can_see(incident["grid_code"] or incident["suggested_grid_code"] or ""):
            raise NotFound(f"No incident {incident_id} in your area.", field="id")
        if incident["status"] not in DISPATCHABLE:
            allowed = workflow.allowed_actions(incident["status"])
            raise Conflict(f"Incident {incident_id} is {incident['status']!r}: it can be dispatched only when "
                           f"reported, filed or returned. Allowed now: {', '.join(allowed) or 'none'}.",
                           field="id")
        if responder_id is None:
            found = await nearest(conn, caller, Nearest(lon=incident["lon"], lat=incident["lat"], k=1),
                                  max_age_s=max_age_s, speed_mps=speed_mps)
            if not found.ids:
                raise Conflict("No available responder with a fresh position in your area; choose one with "
                               "`responder_id`.", field="responder_id")
            responder_id = found.ids[0]
        responder = await _RESPONDER.fetchrow(conn, id=responder_id, scope=caller.scope)
        if responder is None:
            raise NotFound(f"No responder {responder_id} in your area.", field="responder_id")
        if responder["status"] != "available":
            raise Conflict(f"Responder {responder_id} ({responder['name']}) is {responder['status']}, not "
                           "available; choose another (GET /dispatch/nearest lists available ones).",
                           field="responder_id")
        await _BUSY.fetchval(conn, id=responder_id)
        if incident["status"] == "reported":
            await incidents.act(conn, caller, incident_id, "file", note="filed on dispatch")
        return await incidents.act(conn, caller, incident_id, "dispatch", note=note, assignee=responder_id)
