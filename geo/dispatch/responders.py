"""Responders: create, read, list and update; position pings (single and bulk) and position freshness."""

import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import orjson
from sqlalchemy import text

from geo import crs as crs_mod
from geo.auth import Caller
from geo.errors import Conflict, Forbidden, InvalidInput, NotFound, PayloadTooLarge
from geo.incidents.timelimits import TZ
from geo.models import RESPONDER_ROLES, RESPONDER_STATUSES
from geo.sql import Query

MAX_PINGS = 10_000  # per bulk request
MAX_CLOCK_SKEW = timedelta(seconds=120)  # pings may be this far ahead of the server clock, no more
STAFF = ("supervisor", "dispatcher")  # besides admin: who may create and edit responders

# SQL fragments shared with geo.dispatch: scope by home-grid code prefix, and freshness against :max_age (s).
VISIBLE = "coalesce(r.home_grid_code, '') LIKE CAST(:scope AS text) || '%'"
# Caller.own_responder: a grid worker sees only the responder linked to their user.
OWN = "(CAST(:own AS int) IS NULL OR r.user_id = CAST(:own AS int))"
FRESH = "r.position_at >= now() - make_interval(secs => CAST(:max_age AS float8))"
STALE = f"(r.position IS NULL OR r.position_at IS NULL OR NOT ({FRESH}))"
# What every responder Feature is built from (feature()); staleness is STALE, judged here in SQL, once.
COLUMNS = f"""r.id, r.name, r.phone, r.role, r.status, r.department_code, r.home_grid_code, r.user_id,
       r.is_synthetic, r.position_at, ST_X(r.position) AS lon, ST_Y(r.position) AS lat,
       CAST(extract(epoch FROM now() - r.position_at) AS float8) AS age_s, {STALE} AS stale"""


def round_to(value: float, scale: float) -> float:
    """`value` to 1/scale (e.g. 100.0: two decimals): round(value, 2)'s digits at half the cost, since int / 10ⁿ
    is the double nearest the decimal (it differs from round() only within float error of a tie)."""
    return round(value * scale) / scale


@functools.cache
def zone(name: str) -> tzinfo:
    """A session's TimeZone setting as a tzinfo (UTC if Python does not know it)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def session_zone(conn) -> tzinfo:
    """The connection's time zone: times are shown in it, as the database's own JSON shows them."""
    return zone(conn.get_settings().TimeZone)


def feature(row, tz: tzinfo, **extra) -> dict:
    """A responder row (COLUMNS) as its GeoJSON Feature, the one shape /responders and /dispatch/nearest share:
    last position, its time in `tz`, its age and the stale flag, then `extra` properties."""
    at, age = row["position_at"], row["age_s"]
    geometry = None if row["lon"] is None else {
        "type": "Point", "coordinates": [round_to(row["lon"], 1e7), round_to(row["lat"], 1e7)]}
    return {"type": "Feature", "id": row["id"], "geometry": geometry, "properties": {
        "responder_id": row["id"], "name": row["name"], "phone": row["phone"], "role": row["role"],
        "status": row["status"], "department": row["department_code"], "home_grid_code": row["home_grid_code"],
        "user_id": row["user_id"], "position_at": None if at is None else at.astimezone(tz).isoformat(),
        "position_age_s": None if age is None else round_to(age, 10.0), "stale": row["stale"],
        "is_synthetic": row["is_synthetic"], **extra}}


def feature_text(row, tz: tzinfo) -> str:
    """feature() as JSON text."""
    return orjson.dumps(feature(row, tz)).decode()


_GET = Query(text(f"SELECT {COLUMNS} FROM responders r WHERE r.id = CAST(:id AS int) AND {VISIBLE} AND {OWN}"))

_LIST = Query(text(f"""
SELECT {COLUMNS} FROM responders r
WHERE {VISIBLE} AND {OWN}
  AND (CAST(:statuses AS text[]) IS NULL OR r.status = ANY(CAST(:statuses AS text[])))
  AND (CAST(:roles AS text[]) IS NULL OR r.role = ANY(CAST(:roles AS text[])))
  AND (CAST(:area AS text) IS NULL OR r.home_grid_code LIKE CAST(:area AS text) || '%')
  AND (CAST(:minx AS float8) IS NULL OR r.position && ST_MakeEnvelope(CAST(:minx AS float8), CAST(:miny AS float8),
                                                                   CAST(:maxx AS float8), CAST(:maxy AS float8), 4326))
  AND (NOT CAST(:exclude_stale AS bool) OR NOT {STALE})
  AND (CAST(:after AS int) IS NULL OR r.id > CAST(:after AS int))
ORDER BY r.id
LIMIT CAST(:limit AS int)"""))


async def get(conn, caller: Caller, responder_id: int, max_age_s: float) -> str:
    """One responder as Feature JSON text (last position, age, stale flag)."""
    found = await _GET.fetchrow(conn, id=responder_id, scope=caller.scope, own=caller.own_responder, max_age=max_age_s)
    if found is None:
        raise NotFound(f"No responder {responder_id} in your area.", field="id")
    return feature_text(found, session_zone(conn))


@dataclass
class Filters:
    """Which responders a list shows."""
    statuses: list[str] | None = None
    roles: list[str] | None = None
    area: str | None = None
    bbox: tuple[float, float, float, float] | None = None
    include_stale: bool | None = None  # None: stale ones are left out only when listing 'available'


async def list_(conn, caller: Caller, filters: Filters, max_age_s: float, limit: int,
                after: int | None) -> tuple[list[str], int | None]:
    """A page of responders (Feature texts) by id; the id to continue after, if more follow.

    A stale position is never shown as current: it is flagged `stale: true`, and when asking for
    `available` responders the stale ones are left out unless include_stale is true."""
    caller.require_area(filters.area, "area")
    include_stale = filters.include_stale
    if include_stale is None:
        include_stale = not (filters.statuses and "available" in filters.statuses)
    minx, miny, maxx, maxy = filters.bbox or (None, None, None, None)
    rows = await _LIST.fetch(conn, scope=caller.scope, own=caller.own_responder, statuses=filters.statuses,
                             roles=filters.roles, area=filters.area, minx=minx, miny=miny, maxx=maxx, maxy=maxy,
                             exclude_stale=not include_stale, max_age=max_age_s, after=after, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    tz = session_zone(conn)
    return [feature_text(row, tz) for row in rows], (rows[-1]["id"] if more else None)


# -- create and update ------------------------------------------------------------------------------------------

_GRID_EXISTS = Query(text(
    "SELECT 1 FROM areas WHERE level = 'grid' AND code = CAST(:code AS text) "
    "AND version_id = (SELECT id FROM grid_versions WHERE status = 'active')"))
_DEPARTMENT_EXISTS = Query(text("SELECT 1 FROM departments WHERE code = CAST(:code AS text)"))
_USER_EXISTS = Query(text("SELECT 1 FROM users WHERE id = CAST(:id AS int)"))
_USER_TAKEN = Query(text("SELECT id FROM responders WHERE user_id = CAST(:user AS int) AND id <> CAST(:id AS int)"))
_INSERT = Query(text("""
INSERT INTO responders (name, phone, role, department_code, home_grid_code, status, user_id)
VALUES (CAST(:name AS text), CAST(:phone AS text), CAST(:role AS text), CAST(:department AS text),
        CAST(:home_grid_code AS text), CAST(:status AS text), CAST(:user_id AS int))
RETURNING id"""))
_LOCK = Query(text(f"SELECT r.id, r.status, r.user_id FROM responders r WHERE r.id = CAST(:id AS int) AND {VISIBLE} "
                   f"AND {OWN} FOR UPDATE"))
_UPDATE = Query(text("""
UPDATE responders SET
    name = CASE WHEN CAST(:set_name AS bool) THEN CAST(:name AS text) ELSE name END,
    phone = CASE WHEN CAST(:set_phone AS bool) THEN CAST(:phone AS text) ELSE phone END,
    role = CASE WHEN CAST(:set_role AS bool) THEN CAST(:role AS text) ELSE role END,
    department_code = CASE WHEN CAST(:set_department AS bool) THEN CAST(:department AS text) ELSE department_code END,
    home_grid_code = CASE WHEN CAST(:set_home_grid_code AS bool) THEN CAST(:home_grid_code AS text)
                          ELSE home_grid_code END,
    status = CASE WHEN CAST(:set_status AS bool) THEN CAST(:status AS text) ELSE status END,
    user_id = CASE WHEN CAST(:set_user_id AS bool) THEN CAST(:user_id AS int) ELSE user_id END
WHERE id = CAST(:id AS int)"""))
FIELDS = ("name", "phone", "role", "department", "home_grid_code", "status", "user_id")


async def _check(conn, caller: Caller, values: dict, responder_id: int = 0) -> None:
    """Clear messages for what the constraints would otherwise reject with a database error."""
    if "role" in values and values["role"] not in RESPONDER_ROLES:
        raise InvalidInput(f"Unknown role {values['role']!r}; use one of: {', '.join(RESPONDER_ROLES)}.", field="role")
    if "status" in values and values["status"] not in RESPONDER_STATUSES:
        raise InvalidInput(f"Unknown status {values['status']!r}; use one of: {', '.join(RESPONDER_STATUSES)}.",
                           field="status")
    if "name" in values and not (values["name"] or "").strip():
        raise InvalidInput("A responder needs a name.", field="name")
    grid = values.get("home_grid_code")
    if grid is not None:
        caller.require_area(grid, "home_grid_code", what="grid")
        if await _GRID_EXISTS.fetchval(conn, code=grid) is None:
            raise InvalidInput(f"No active grid {grid!r}; home_grid_code must be a grid of the active version.",
                               field="home_grid_code")
    elif "home_grid_code" in values and caller.scope:
        raise InvalidInput("Responders you manage need a home grid inside your area (it scopes who sees them).",
                           field="home_grid_code")
    department = values.get("department")
    if department is not None and await _DEPARTMENT_EXISTS.fetchval(conn, code=department) is None:
        raise InvalidInput(f"Unknown department {department!r}.", field="department")
    user = values.get("user_id")
    if user is not None:
        if await _USER_EXISTS.fetchval(conn, id=user) is None:
            raise InvalidInput(f"No user {user}.", field="user_id")
        taken = await _USER_TAKEN.fetchval(conn, user=user, id=responder_id)
        if taken is not None:
            raise InvalidInput(f"User {user} is already linked to responder {taken}.", field="user_id")


async def create(conn, caller: Caller, values: dict, max_age_s: float) -> str:
    """Create a responder (no position yet: it is stale until its first ping); returns its Feature."""
    caller.require_role(*STAFF)
    values = {"status": "available", "home_grid_code": None, **values}
    for required in ("name", "role"):
        if not values.get(required):
            raise InvalidInput(f"A responder needs a {required}.", field=required)
    async with conn.transaction():
        await _check(conn, caller, values)
        responder_id = await _INSERT.fetchval(conn, **{f: values.get(f) for f in FIELDS})
        return await get(conn, Caller(caller.id, caller.name, caller.role, None), responder_id, max_age_s)


async def update(conn, caller: Caller, responder_id: int, values: dict, max_age_s: float) -> str:
    """Change some of name, phone, role, department, home grid, status and linked user.

    Staff may change anything; a grid worker may change only the status of the responder linked to them."""
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise InvalidInput(f"Cannot change {', '.join(sorted(unknown))}.", field=sorted(unknown)[0])
    async with conn.transaction():
        row = await _LOCK.fetchrow(conn, id=responder_id, scope=caller.scope, own=caller.own_responder)
        if row is None:
            raise NotFound(f"No responder {responder_id} in your area.", field="id")
        if caller.role not in ("admin", *STAFF):
            if row["user_id"] != caller.id or set(values) - {"status"}:
                raise Forbidden("Only supervisors and dispatchers edit responders; a responder's own user may "
                                "change its status only.")
        await _check(conn, caller, values, responder_id)
        params = {f: values.get(f) for f in FIELDS} | {f"set_{f}": f in values for f in FIELDS}
        await _UPDATE.fetchval(conn, id=responder_id, **params)
        return await get(conn, Caller(caller.id, caller.name, caller.role, None), responder_id, max_age_s)


# -- position pings ---------------------------------------------------------------------------------------------

@dataclass
class Pings:
    """Columns of a batch of pings; lon/lat in the given crs until `to_wgs84`."""

    responder_id: np.ndarray  # int
    lon: np.ndarray
    lat: np.ndarray
    at: list[datetime | None]
    accuracy_m: list[float | None]
    source: list[str | None]
    crs: list[str]  # per ping (already normalised)

    def __len__(self) -> int:
        """The number of pings."""
        return len(self.responder_id)


def pings_from(items: list[dict], default_crs: str = "EPSG:4326") -> Pings:
    """Columns from ping dicts (responder_id, lon, lat, and optional at, accuracy_m, source, crs)."""
    return Pings(
        responder_id=np.fromiter((p["responder_id"] for p in items), dtype=np.int64, count=len(items)),
        lon=np.fromiter((p["lon"] for p in items), dtype=float, count=len(items)),
        lat=np.fromiter((p["lat"] for p in items), dtype=float, count=len(items)),
        at=[p.get("at") for p in items],
        accuracy_m=[p.get("accuracy_m") for p in items],
        source=[p.get("source") for p in items],
        crs=[crs_mod.normalize_crs(p.get("crs") or default_crs) for p in items],
    )


def _validate(pings: Pings, now: datetime) -> tuple[np.ndarray, np.ndarray, list[datetime]]:
    """WGS84 coordinates (converted per crs, vectorised) and aware times; InvalidInput names the first bad ping."""
    if len(pings) == 0:
        raise InvalidInput("No pings: send a JSON array of pings, or {\"pings\": [...]}.", field="pings")
    if len(pings) > MAX_PINGS:
        raise PayloadTooLarge(f"{len(pings):,} pings in one request; send at most {MAX_PINGS:,} per request.",
                              field="pings")
    bad = np.flatnonzero(~np.isfinite(pings.lon) | ~np.isfinite(pings.lat) | (np.abs(pings.lon) > 180)
                         | (np.abs(pings.lat) > 90))
    if len(bad):
        i = int(bad[0])
        raise InvalidInput(f"Ping {i}: coordinates ({pings.lon[i]}, {pings.lat[i]}) are out of range: lon is "
                           f"-180..180, lat -90..90 (did you swap them?). {len(bad)} such pings.", field=f"pings.{i}")
    lon, lat = pings.lon.copy(), pings.lat.copy()
    names = np.asarray(pings.crs)
    for name in set(pings.crs) - {"EPSG:4326", "EPSG:4490"}:  # CGCS2000 ≈ WGS84 to well under a metre
        rows = names == name
        lon[rows], lat[rows] = crs_mod.to_wgs84(lon[rows], lat[rows], name)
    times = [now if at is None else (at.replace(tzinfo=TZ) if at.tzinfo is None else at) for at in pings.at]
    limit = now + MAX_CLOCK_SKEW
    future = [i for i, at in enumerate(times) if at > limit]
    if future:
        i = future[0]
        raise InvalidInput(
            f"Ping {i} is dated {times[i].isoformat()}, {(times[i] - now).total_seconds():.0f} s in the future "
            f"(server time {now.isoformat()}; allowed clock skew {MAX_CLOCK_SKEW.total_seconds():.0f} s). "
            f"{len(future)} such pings; check the device clock and the time zone of `at`.", field=f"pings.{i}.at")
    bad_accuracy = [i for i, a in enumerate(pings.accuracy_m) if a is not None and not (0 <= a < 1e6)]
    if bad_accuracy:
        raise InvalidInput(f"Ping {bad_accuracy[0]}: accuracy_m must be ≥ 0 metres.",
                           field=f"pings.{bad_accuracy[0]}.accuracy_m")
    return lon, lat, times


# Visible responders of the batch, locked in id order (concurrent batches never deadlock); the rest are unknown.
LOCK_MANY_SQL = f"""
SELECT r.id, r.user_id FROM responders r
WHERE r.id = ANY(CAST(:ids AS int[])) AND {VISIBLE}
ORDER BY r.id FOR UPDATE"""
_LOCK_MANY = Query(text(LOCK_MANY_SQL))

# One set-based statement: append every ping to the track, then move each responder to its newest ping
# of the batch if that is newer than the stored position.
INGEST_SQL = """
WITH p AS (
    SELECT * FROM unnest(CAST(:ids AS int[]), CAST(:ats AS timestamptz[]), CAST(:lons AS float8[]),
                         CAST(:lats AS float8[]), CAST(:accuracies AS float8[]), CAST(:sources AS text[]))
                  AS t(responder_id, at, lon, lat, accuracy_m, source)),
track AS (
    INSERT INTO responder_positions (responder_id, at, accuracy_m, source, geom)
    SELECT responder_id, at, accuracy_m, source, ST_SetSRID(ST_MakePoint(lon, lat), 4326) FROM p
    RETURNING 1),
newest AS (
    SELECT DISTINCT ON (responder_id) responder_id, at, lon, lat FROM p ORDER BY responder_id, at DESC),
moved AS (
    UPDATE responders r SET position = ST_SetSRID(ST_MakePoint(n.lon, n.lat), 4326), position_at = n.at
    FROM newest n
    WHERE r.id = n.responder_id AND (r.position_at IS NULL OR n.at > r.position_at)
    RETURNING 1)
SELECT (SELECT count(*) FROM track), (SELECT count(*) FROM moved), (SELECT count(*) FROM newest)"""
_INGEST = Query(text(INGEST_SQL))


@dataclass
class IngestResult:
    """What a batch of pings did."""
    received: int
    written: int  # rows appended to the track
    positions_updated: int  # responders whose last position moved (the ping was newer than the stored one)
    responders: int


async def ingest(conn, caller: Caller, pings: Pings) -> IngestResult:
    """Write a batch of pings atomically: all of them or, if any responder is unknown to the caller, none."""
    caller.require_role(*STAFF, "grid_worker")
    lon, lat, times = _validate(pings, datetime.now(TZ))
    ids = pings.responder_id
    if ids.min() < -2**31 or ids.max() >= 2**31:
        raise InvalidInput("responder_id out of range.", field="responder_id")
    wanted = np.unique(ids)
    async with conn.transaction():
        rows = await _LOCK_MANY.fetch(conn, ids=wanted.tolist(), scope=caller.scope)
        unknown = np.setdiff1d(wanted, np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)))
        if len(unknown):
            shown = ", ".join(str(i) for i in unknown[:50]) + (" …" if len(unknown) > 50 else "")
            raise NotFound(f"{len(unknown)} unknown responder id(s) (or outside your area): {shown}. "
                           "Nothing was written.", field="responder_id")
        if caller.role == "grid_worker" and any(r[1] != caller.id for r in rows):
            raise Forbidden("Grid workers may send pings only for the responder linked to their own user.")
        written, moved, responders = await _INGEST.fetchrow(
            conn, ids=ids.tolist(), ats=times, lons=lon.tolist(), lats=lat.tolist(),
            accuracies=[None if a is None else float(a) for a in pings.accuracy_m], sources=pings.source)
    return IngestResult(len(pings), written, moved, responders)


async def ping(conn, caller: Caller, responder_id: int, lon: float, lat: float, crs: str = "EPSG:4326",
               at: datetime | None = None, accuracy_m: float | None = None, source: str | None = None,
               max_age_s: float = 1800) -> tuple[str, IngestResult]:
    """One position ping; returns the responder's Feature (its last position may be newer than this ping)."""
    pings = pings_from([{"responder_id": responder_id, "lon": lon, "lat": lat, "at": at, "accuracy_m": accuracy_m,
                         "source": source, "crs": crs}])
    try:
        result = await ingest(conn, caller, pings)
    except NotFound:
        raise NotFound(f"No responder {responder_id} in your area.", field="id") from None
    return await get(conn, caller, responder_id, max_age_s), result


def result_json(result: IngestResult) -> bytes:
    """The reply body of a batch of pings."""
    return orjson.dumps(result.__dict__)


_HISTORY = Query(text(
    "SELECT (SELECT count(*) FROM incidents WHERE assignee_id = CAST(:id AS int)) "
    "+ (SELECT count(*) FROM areas WHERE worker_id = CAST(:id AS int))"))
_DELETE = Query(text("DELETE FROM responders WHERE id = CAST(:id AS int)"))


async def delete(conn, caller: Caller, responder_id: int) -> None:
    """Remove a responder that never worked a grid or an incident; others keep their history (go off duty)."""
    caller.require_role(*STAFF)
    async with conn.transaction():
        if await _LOCK.fetchrow(conn, id=responder_id, scope=caller.scope, own=caller.own_responder) is None:
            raise NotFound(f"No responder {responder_id} in your area.", field="id")
        history = await _HISTORY.fetchval(conn, id=responder_id)
        if history:
            raise Conflict(f"Responder {responder_id} is linked to {history} incidents or grids; deleting would "
                           "erase who did what. Set its status to off_duty instead (PATCH /responders/{id}).",
                           field="id")
        await _DELETE.fetchval(conn, id=responder_id)
