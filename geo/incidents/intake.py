"""Incidents: intake with assignment to grid, worker and department, workflow actions, reads and lists."""

import base64
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg
import orjson
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Integer,
    String,
    and_,
    bindparam,
    case,
    func,
    null,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, aggregate_order_by
from sqlalchemy.orm import aliased

from geo.areas import hierarchy as areas
from geo.auth import Caller
from geo.errors import Forbidden, IllegalTransition, InvalidInput, NotFound
from geo.incidents import workflow
from geo.incidents.timelimits import TZ, due_at, year_problem
from geo.models import Department, Incident, IncidentCategory, IncidentEvent, Responder
from geo.sql import Query, one_of

DUPLICATE_RADIUS_M = 50
DUPLICATE_WINDOW = timedelta(hours=24)
SOURCES = ("resident_app", "hotline", "grid_worker", "patrol", "open311", "import")


@dataclass
class NewIncident:
    """A report to file, its point already in WGS84."""
    category: str
    lon: float  # WGS84, already converted
    lat: float
    description: str | None = None
    source: str = "resident_app"
    input_crs: str = "EPSG:4326"
    reporter_contact: dict | None = None
    idempotency_key: str | None = None
    synthetic: bool = False  # simulated or test traffic (wangge simulate), kept apart like the demo's history
    extra: dict = field(default_factory=dict)


# -- intake ------------------------------------------------------------------------------------------------

_CATEGORY = Query(
    select(IncidentCategory.code, IncidentCategory.department_code, IncidentCategory.time_limit,
           IncidentCategory.time_limit_unit, IncidentCategory.clock)
    .where(IncidentCategory.code == bindparam("code", type_=String), IncidentCategory.active.is_(True))
)
_CATEGORY_CODES = Query(select(IncidentCategory.code).where(IncidentCategory.active.is_(True))
                        .order_by(IncidentCategory.code))
_BY_KEY = Query(
    select(Incident.id).where(Incident.reporter_id == bindparam("reporter", type_=Integer),
                              Incident.idempotency_key == bindparam("key", type_=String))
)

# One round trip, atomic without a transaction around it: point → covering grid of the active version (lowest
# code on shared edges), the likely duplicate (same category, open, within 50 m and 24 h), the incident row and
# its first event. Nothing is written when the grid lies outside the caller's area (no row comes back).
_INSERT = Query(text(f"""
WITH pt AS (SELECT ST_SetSRID(ST_MakePoint(CAST(:lon AS float8), CAST(:lat AS float8)), 4326) AS g),
grid AS (
    SELECT a.id, a.code, a.version_id, a.worker_id FROM areas a, pt
    WHERE a.level = 'grid' AND a.version_id = (SELECT id FROM grid_versions WHERE status = 'active')
      AND ST_Covers(a.geom, pt.g)
    ORDER BY a.code LIMIT 1),
dup AS (
    SELECT i.id FROM incidents i, pt
    WHERE i.category_code = CAST(:category AS text)
      AND i.status IN ({", ".join(f"'{s}'" for s in workflow.OPEN)})
      AND i.reported_at > CAST(:now AS timestamptz) - interval '{int(DUPLICATE_WINDOW.total_seconds())} seconds'
      AND i.geom && ST_Expand(pt.g, 0.001)
      AND ST_DWithin(geography(i.geom), geography(pt.g), {DUPLICATE_RADIUS_M})
    ORDER BY ST_Distance(geography(i.geom), geography(pt.g)), i.id LIMIT 1),
ins AS (
    INSERT INTO incidents (category_code, description, source, reporter_id, reporter_contact, input_crs, status,
                           reported_at, due_at, grid_id, grid_code, grid_version_id, assignee_id, department_code,
                           duplicate_of, idempotency_key, is_synthetic, geom)
    SELECT CAST(:category AS text), CAST(:description AS text), CAST(:source AS text), CAST(:reporter AS int),
           CAST(:contact AS jsonb), CAST(:crs AS text),
           CASE WHEN grid.id IS NULL THEN 'unassigned' ELSE 'reported' END,
           CAST(:now AS timestamptz), CAST(:due AS timestamptz), grid.id, grid.code, grid.version_id,
           grid.worker_id, CAST(:department AS text), (SELECT id FROM dup), CAST(:key AS text),
           CAST(:synthetic AS bool), pt.g
    FROM pt LEFT JOIN grid ON true
    WHERE grid.code IS NULL OR starts_with(grid.code, CAST(:scope AS text))
    RETURNING id, status, duplicate_of),
ev AS (
    INSERT INTO incident_events (incident_id, at, actor_id, action, to_status, note, data)
    SELECT id, CAST(:now AS timestamptz), CAST(:reporter AS int), 'report', status,
           CASE WHEN duplicate_of IS NOT NULL THEN 'likely duplicate of ' || duplicate_of END,
           CAST(:event_data AS jsonb)
    FROM ins)
SELECT id, status FROM ins
"""))

_SUGGEST = Query(
    update(Incident)
    .where(Incident.id == bindparam("id", type_=BigInteger))
    .values(suggested_grid_code=bindparam("code", type_=String),
            suggested_distance_m=bindparam("distance", type_=Float))
)


async def _category(conn, code: str):
    row = await _CATEGORY.fetchrow(conn, code=code)
    if row is None:
        known = [r[0] for r in await _CATEGORY_CODES.fetch(conn)]
        raise InvalidInput(f"Unknown category {code!r}. Known categories: {', '.join(known)} "
                           "(GET /open311/v2/services.json lists them with names).", field="category")
    return row


async def create(conn, caller: Caller, new: NewIncident) -> tuple[str, bool]:
    """File a report; returns (Feature JSON, created). A repeated Idempotency-Key returns the first result,
    also when the repeats race: the unique index makes the losers wait for the first, then replay it."""
    if new.source not in SOURCES:
        raise InvalidInput(f"Unknown source {new.source!r}; use one of: {', '.join(SOURCES)}.", field="source")
    try:
        return await _create(conn, caller, new)
    except asyncpg.UniqueViolationError as exc:
        if not new.idempotency_key or exc.constraint_name != "incidents_idempotency":
            raise
        existing = await _BY_KEY.fetchval(conn, reporter=caller.id, key=new.idempotency_key)
        return await get(conn, caller, existing, scoped=False), False


async def _create(conn, caller: Caller, new: NewIncident) -> tuple[str, bool]:
    # No transaction: the report is written by one statement (_INSERT), so a round trip each for BEGIN and
    # COMMIT would buy nothing. A race on one Idempotency-Key ends in the unique index (create replays it).
    if new.idempotency_key:
        existing = await _BY_KEY.fetchval(conn, reporter=caller.id, key=new.idempotency_key)
        if existing:
            return await get(conn, caller, existing), False
    category = await _category(conn, new.category)
    now = datetime.now(TZ)
    due = due_at(now, category["time_limit"], category["time_limit_unit"], category["clock"])
    row = await _INSERT.fetchrow(
        conn, lon=new.lon, lat=new.lat, category=new.category, description=new.description, source=new.source,
        reporter=caller.id, contact=orjson.dumps(new.reporter_contact).decode() if new.reporter_contact else None,
        crs=new.input_crs, now=now, due=due, department=category["department_code"],
        key=new.idempotency_key, event_data=orjson.dumps({"crs": new.input_crs, **new.extra}).decode(),
        synthetic=new.synthetic, scope=caller.scope,
    )
    if row is None:
        raise NotFound("The point lies in no grid of your area; report it where it is in your area.",
                       field="location")
    incident_id, status = row["id"], row["status"]
    if status == "unassigned":  # kept, never dropped or snapped: the nearest grid is a hint for the dispatcher
        nearest = await areas.nearest_grid(conn, new.lon, new.lat)
        if nearest:
            await _SUGGEST.fetchval(conn, id=incident_id, code=nearest[0], distance=nearest[1])
    return await get(conn, caller, incident_id, scoped=False), True


# -- reads ---------------------------------------------------------------------------------------------------

_I = aliased(Incident, name="i")
_W = aliased(Responder, name="w")
_C = aliased(IncidentCategory, name="c")
_D = aliased(Department, name="d")
_OPEN = tuple(workflow.OPEN)
_SCOPE = bindparam("scope", type_=String)


_REPORTER = bindparam("reporter", type_=Integer)  # Caller.own_reports: a reporter sees only their own reports


def _visible(incident):
    """Scope in SQL: the grid's code, or for unassigned reports the suggested grid's code; and for a reporter,
    their own reports only."""
    place = func.coalesce(incident.grid_code, incident.suggested_grid_code, "")
    return and_(place.startswith(_SCOPE, autoescape=False), or_(_REPORTER.is_(None), incident.reporter_id == _REPORTER))


def _events(incident):
    e = aliased(IncidentEvent)
    entry = func.json_build_object("at", e.at, "action", e.action, "from", e.from_status, "to", e.to_status,
                                   "actor_id", e.actor_id, "note", e.note, "data", e.data)
    return select(func.json_agg(aggregate_order_by(entry, e.id))).where(e.incident_id == incident.id).scalar_subquery()


def _feature(with_events: bool):
    i = _I
    overdue = and_(one_of(i.status, workflow.PENDING), i.due_at < func.now())
    props = func.json_build_object(
        "status", i.status, "category", i.category_code, "category_name", _C.name,
        "description", i.description, "source", i.source,
        "grid_code", i.grid_code, "grid_version", i.grid_version_id,
        "assignee_id", i.assignee_id, "assignee_name", _W.name,
        "department", i.department_code, "department_name", _D.name,
        "reported_at", i.reported_at, "due_at", i.due_at, "dispatched_at", i.dispatched_at,
        "handled_at", i.handled_at, "closed_at", i.closed_at, "overdue", overdue,
        "escalation_level", i.escalation_level, "rework_count", i.rework_count,
        "duplicate_of", i.duplicate_of, "suggested_grid_code", i.suggested_grid_code,
        "suggested_distance_m", i.suggested_distance_m, "input_crs", i.input_crs,
        "reporter_id", i.reporter_id, "is_synthetic", i.is_synthetic,
        "events", _events(i) if with_events else null(),
    )
    return func.json_build_object(
        "type", "Feature", "id", i.id, "geometry", func.ST_AsGeoJSON(i.geom, 7).cast(JSON), "properties", props,
    ).cast(String)


def _base(with_events: bool):
    return (
        select(_feature(with_events))
        .select_from(_I)
        .join(_C, _C.code == _I.category_code)
        .outerjoin(_W, _W.id == _I.assignee_id)
        .outerjoin(_D, _D.code == _I.department_code)
    )


_GET = Query(_base(True).where(_I.id == bindparam("id", type_=BigInteger), _visible(_I)))
_GET_ANY = Query(_base(True).where(_I.id == bindparam("id", type_=BigInteger)))


async def get(conn, caller: Caller, incident_id: int, scoped: bool = True) -> str:
    """One incident as Feature JSON with its event history."""
    query = _GET if scoped else _GET_ANY
    feature = await query.fetchval(conn, id=incident_id, scope=caller.scope, reporter=caller.own_reports)
    if feature is None:
        raise NotFound(f"No incident {incident_id} in your area.", field="id")
    return feature


@dataclass
class Filters:
    """Which incidents a list shows."""
    bbox: tuple[float, float, float, float] | None = None
    area: str | None = None
    grid: str | None = None
    statuses: list[str] | None = None
    categories: list[str] | None = None
    overdue: bool | None = None
    assignee: int | None = None
    since: datetime | None = None
    until: datetime | None = None


def _optional(name, type_, condition):
    """`condition` applies only when the parameter is given (NULL means no filter)."""
    return or_(bindparam(name, type_=type_).is_(None), condition)


def _list_statement():
    i = _I
    envelope = func.ST_MakeEnvelope(bindparam("minx", type_=Float), bindparam("miny", type_=Float),
                                    bindparam("maxx", type_=Float), bindparam("maxy", type_=Float), 4326)
    is_overdue = and_(one_of(i.status, workflow.PENDING), i.due_at < func.now())
    cursor_at, cursor_id = bindparam("cursor_at", type_=DateTime(timezone=True)), bindparam("cursor_id", type_=Integer)
    return (
        _base(False)
        .add_columns(i.reported_at, i.id)
        .where(
            _visible(i),
            _optional("minx", Float, func.ST_Intersects(i.geom, envelope)),
            _optional("area", String, i.grid_code.startswith(bindparam("area", type_=String), autoescape=False)),
            _optional("grid", String, i.grid_code == bindparam("grid", type_=String)),
            _optional("statuses", ARRAY(String), i.status == func.any(bindparam("statuses", type_=ARRAY(String)))),
            _optional("categories", ARRAY(String),
                      i.category_code == func.any(bindparam("categories", type_=ARRAY(String)))),
            _optional("overdue", Boolean, is_overdue == bindparam("overdue", type_=Boolean)),
            _optional("assignee", Integer, i.assignee_id == bindparam("assignee", type_=Integer)),
            _optional("since", DateTime(timezone=True),
                      i.reported_at >= bindparam("since", type_=DateTime(timezone=True))),
            _optional("until", DateTime(timezone=True),
                      i.reported_at < bindparam("until", type_=DateTime(timezone=True))),
            # keyset: newest first, then by id
            _optional("cursor_id", Integer, func.row(i.reported_at, i.id) < func.row(cursor_at, cursor_id)),
        )
        .order_by(i.reported_at.desc(), i.id.desc())
        .limit(bindparam("limit", type_=Integer))
    )


_LIST = Query(_list_statement())


def encode_cursor(reported_at: datetime, incident_id: int) -> str:
    """The keyset cursor after an incident."""
    return base64.urlsafe_b64encode(f"{reported_at.isoformat()}|{incident_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    """The incident a cursor points after (400 for a cursor this service did not write)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, incident_id = raw.split("|")
        moment, number = datetime.fromisoformat(at), int(incident_id)
        if year_problem(moment) or not 0 < number < 2**63:
            raise ValueError("out of range")
        return moment, number
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput("Malformed cursor: pass the `next` link's cursor unchanged.", field="cursor") from exc


async def list_(conn, caller: Caller, filters: Filters, limit: int, cursor: str | None) -> tuple[list[str], str | None]:
    """A page of incidents (Feature JSON texts), newest first, and the cursor of the next page if any."""
    for code, name in ((filters.area, "area"), (filters.grid, "grid")):
        caller.require_area(code, name, what=name)
    cursor_at, cursor_id = decode_cursor(cursor) if cursor else (None, None)
    minx, miny, maxx, maxy = filters.bbox or (None, None, None, None)
    rows = await _LIST.fetch(
        conn, scope=caller.scope, reporter=caller.own_reports,
        minx=minx, miny=miny, maxx=maxx, maxy=maxy, area=filters.area, grid=filters.grid,
        statuses=filters.statuses, categories=filters.categories, overdue=filters.overdue,
        assignee=filters.assignee, since=filters.since, until=filters.until,
        cursor_at=cursor_at, cursor_id=cursor_id, limit=limit + 1,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1][1], rows[-1][2]) if more else None
    return [row[0] for row in rows], next_cursor


_RESPONDER_OF_USER = Query(select(Responder.id).where(Responder.user_id == bindparam("user", type_=Integer)))


async def responder_of(conn, caller: Caller) -> int:
    """The responder linked to the caller's user (404 if none)."""
    responder_id = await _RESPONDER_OF_USER.fetchval(conn, user=caller.id)
    if responder_id is None:
        raise NotFound("Your user is not linked to a responder, so it has no incidents of its own.", field=None)
    return responder_id


# -- workflow actions ----------------------------------------------------------------------------------------

_LOCK = Query(
    select(Incident.id, Incident.status, Incident.grid_code, Incident.suggested_grid_code, Incident.assignee_id,
           Incident.due_at)
    .where(Incident.id == bindparam("id", type_=BigInteger))
    .with_for_update()
)
_SUSPENDED_FROM = Query(
    select(IncidentEvent.from_status)
    .where(IncidentEvent.incident_id == bindparam("id", type_=BigInteger), IncidentEvent.action == "suspend")
    .order_by(IncidentEvent.id.desc())
    .limit(1)
)
_ACTION = bindparam("action", type_=String)


def _stamp(column, *actions):
    return case((one_of(_ACTION, actions), func.now()), else_=column)


_APPLY = Query(
    update(Incident)
    .where(Incident.id == bindparam("id", type_=BigInteger))
    .values(
        status=bindparam("to", type_=String),
        due_at=func.coalesce(bindparam("due_at", type_=DateTime(timezone=True)), Incident.due_at),
        assignee_id=func.coalesce(bindparam("assignee", type_=Integer), Incident.assignee_id),
        dispatched_at=_stamp(Incident.dispatched_at, "dispatch", "rework"),
        handled_at=case((_ACTION == "rework", null()), (_ACTION == "handle", func.now()), else_=Incident.handled_at),
        closed_at=_stamp(Incident.closed_at, "close", "reject", "void"),
        rework_count=Incident.rework_count + case((_ACTION == "rework", 1), else_=0),
        updated_at=func.now(),
    )
)
_EVENT = Query(text(
    "INSERT INTO incident_events (incident_id, actor_id, action, from_status, to_status, note, data) "
    "VALUES (CAST(:id AS bigint), CAST(:actor AS int), CAST(:action AS text), CAST(:from_status AS text), "
    "CAST(:to_status AS text), CAST(:note AS text), CAST(:data AS jsonb))"))


async def _can_act(conn, caller: Caller, action: str, assignee_id: int | None) -> None:
    if caller.role in ("admin", *workflow.STAFF_ROLES):
        return
    if caller.role == "grid_worker" and action in workflow.FIELD_ACTIONS:
        if assignee_id == await _RESPONDER_OF_USER.fetchval(conn, user=caller.id):
            return
        raise Forbidden("Grid workers may only act on incidents assigned to them.")
    raise Forbidden(f"Role {caller.role!r} may not {action} incidents.")


async def act(conn, caller: Caller, incident_id: int, action: str, note: str | None = None,
              due: datetime | None = None, assignee: int | None = None) -> str:
    """Apply a workflow action (409 names the allowed ones); every action is appended to the event log."""
    if action in workflow.NEEDS_REASON and not (note and note.strip()):
        raise InvalidInput(f"Action {action!r} needs a reason in `note`.", field="note")
    if action == "extend" and due is None:
        raise InvalidInput("Action 'extend' needs the new `due_at`.", field="due_at")
    async with conn.transaction():
        row = await _LOCK.fetchrow(conn, id=incident_id)
        if row is None or not caller.can_see(row["grid_code"] or row["suggested_grid_code"] or ""):
            raise NotFound(f"No incident {incident_id} in your area.", field="id")
        await _can_act(conn, caller, action, row["assignee_id"])
        suspended_from = await _SUSPENDED_FROM.fetchval(conn, id=incident_id) if action == "resume" else None
        status = row["status"]
        target = workflow.next_status(incident_id, status, action, suspended_from)
        if action == "extend" and due <= row["due_at"]:
            raise InvalidInput(f"The new due time must be later than the current one ({row['due_at'].isoformat()}).",
                               field="due_at")
        await _APPLY.fetchval(conn, id=incident_id, to=target, action=action, due_at=due, assignee=assignee)
        data = {"due_at": due.isoformat() if due else None, "assignee_id": assignee}
        await _EVENT.fetchval(conn, id=incident_id, actor=caller.id, action=action, from_status=status,
                              to_status=target, note=note,
                              data=orjson.dumps({k: v for k, v in data.items() if v is not None}).decode())
        return await get(conn, caller, incident_id)


_GRID_BY_CODE = Query(text(
    "SELECT id, code, version_id, worker_id FROM areas WHERE level = 'grid' AND code = CAST(:code AS text) "
    "AND version_id = (SELECT id FROM grid_versions WHERE status = 'active')"))
_REASSIGN = Query(text("""
    UPDATE incidents SET grid_id = CAST(:grid_id AS int), grid_code = CAST(:grid_code AS text),
        grid_version_id = CAST(:version_id AS int), assignee_id = CAST(:assignee AS int),
        status = CASE WHEN status = 'unassigned' THEN 'reported' ELSE status END, updated_at = now()
    WHERE id = CAST(:id AS bigint) RETURNING status"""))


async def reassign(conn, caller: Caller, incident_id: int, reason: str, grid_code: str | None = None,
                   assignee: int | None = None) -> str:
    """Move an incident to another grid (and its worker) or another assignee, with a reason."""
    caller.require_role(*workflow.STAFF_ROLES)
    if not (reason and reason.strip()):
        raise InvalidInput("Reassignment needs a reason in `note`.", field="note")
    if grid_code is None and assignee is None:
        raise InvalidInput("Give `grid_code`, `assignee_id` or both.", field="grid_code")
    async with conn.transaction():
        row = await _LOCK.fetchrow(conn, id=incident_id)
        if row is None or not caller.can_see(row["grid_code"] or row["suggested_grid_code"] or ""):
            raise NotFound(f"No incident {incident_id} in your area.", field="id")
        if row["status"] in workflow.FINAL:
            raise IllegalTransition(incident_id, row["status"], "reassign", [])
        grid = {"id": None, "code": row["grid_code"], "version_id": None, "worker_id": row["assignee_id"]}
        current = await _GRID_BY_CODE.fetchrow(conn, code=row["grid_code"]) if row["grid_code"] else None
        if current:
            grid = dict(current)
        if grid_code is not None:
            found = await _GRID_BY_CODE.fetchrow(conn, code=grid_code)
            if found is None or not caller.can_see(grid_code):
                raise NotFound(f"No active grid {grid_code!r} in your area.", field="grid_code")
            grid = dict(found)
        new_assignee = assignee if assignee is not None else grid["worker_id"]
        status = await _REASSIGN.fetchval(conn, id=incident_id, grid_id=grid["id"], grid_code=grid["code"],
                                          version_id=grid["version_id"], assignee=new_assignee)
        data = {"from_grid": row["grid_code"], "to_grid": grid["code"], "from_assignee": row["assignee_id"],
                "to_assignee": new_assignee}
        await _EVENT.fetchval(conn, id=incident_id, actor=caller.id, action="reassign", from_status=row["status"],
                              to_status=status, note=reason, data=orjson.dumps(data).decode())
        return await get(conn, caller, incident_id)


_MERGE = Query(text(
    "UPDATE incidents SET status = 'void', duplicate_of = CAST(:into AS bigint), closed_at = now(), "
    "updated_at = now() WHERE id = CAST(:id AS bigint)"))


async def merge(conn, caller: Caller, incident_id: int, into: int, note: str | None = None) -> str:
    """Merge a duplicate into the incident it repeats: it is voided and linked; both logs record it."""
    caller.require_role(*workflow.STAFF_ROLES)
    if into == incident_id:
        raise InvalidInput("An incident cannot be merged into itself.", field="into")
    async with conn.transaction():
        row = await _LOCK.fetchrow(conn, id=incident_id)
        target = await _LOCK.fetchrow(conn, id=into)
        for found, which in ((row, incident_id), (target, into)):
            if found is None or not caller.can_see(found["grid_code"] or found["suggested_grid_code"] or ""):
                raise NotFound(f"No incident {which} in your area.", field="into" if which == into else "id")
        if row["status"] in workflow.FINAL:
            raise IllegalTransition(incident_id, row["status"], "merge", [])
        if target["status"] in ("void", "rejected"):
            raise InvalidInput(f"Incident {into} is {target['status']}; merge into a live incident.", field="into")
        await _MERGE.fetchval(conn, id=incident_id, into=into)
        await _EVENT.fetchval(conn, id=incident_id, actor=caller.id, action="merge", from_status=row["status"],
                              to_status="void", note=note or f"merged into {into}",
                              data=orjson.dumps({"into": into}).decode())
        await _EVENT.fetchval(conn, id=into, actor=caller.id, action="merge", from_status=target["status"],
                              to_status=target["status"], note=f"absorbed duplicate {incident_id}",
                              data=orjson.dumps({"from": incident_id}).decode())
        return await get(conn, caller, incident_id)
