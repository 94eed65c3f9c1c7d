"""Aggregated incident data for the supervisor map: per-grid counts, heat cells, overdue cases, trends."""

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import orjson
from sqlalchemy import (
    BindParameter,
    Date,
    DateTime,
    Float,
    Integer,
    Numeric,
    Select,
    String,
    and_,
    bindparam,
    func,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY, aggregate_order_by

from geo.areas import hierarchy as areas
from geo.areas.hierarchy import ACTIVE_VERSION
from geo.auth import Caller
from geo.errors import InvalidInput
from geo.incidents.timelimits import TZ
from geo.incidents.workflow import FINAL, OPEN, PENDING
from geo.models import INCIDENT_STATUSES, Area, Department, Incident, IncidentCategory, IncidentEvent, Responder
from geo.sql import Query

STATUS_GROUPS = {"open": OPEN, "pending": PENDING, "final": FINAL, "all": INCIDENT_STATUSES}
DEFAULT_STATUS = "open"
DEFAULT_DAYS = 30
MAX_DAYS = 3 * 366
OVERDUE_CAP = 1000  # markers; beyond this the page says how many were left off
TREND_WEEKS = 52
SLA_MONTHS = 12
MAP_SIMPLIFY_DEG = 5e-6  # ~0.5 m, as in geo.areas: drops densified collinear vertices only
# Heat cell edge in degrees by area level: ~100 m for a district, finer for smaller areas.
HEAT_CELL_DEG = {6: 0.001, 9: 0.0005, 12: 0.0002, 15: 0.0001}
LOCAL = "Asia/Shanghai"

_P: dict[str, BindParameter[Any]] = {
    "code": bindparam("code", type_=String),
    "scope": bindparam("scope", type_=String),
    "categories": bindparam("categories", type_=ARRAY(String)),
    "statuses": bindparam("statuses", type_=ARRAY(String)),
    "pending": bindparam("pending", type_=ARRAY(String)),
    "void": bindparam("void", type_=ARRAY(String)),
    "since": bindparam("since", type_=DateTime(timezone=True)),
    "until": bindparam("until", type_=DateTime(timezone=True)),
    "now": bindparam("now", type_=DateTime(timezone=True)),
    "trend_since": bindparam("trend_since", type_=DateTime(timezone=True)),
    "sla_since": bindparam("sla_since", type_=DateTime(timezone=True)),
    "cell": bindparam("cell", type_=Float),
    "cap": bindparam("cap", type_=Integer),
}


@dataclass(frozen=True)
class Filters:
    """Validated map filters; `since`/`until` are local-midnight instants (until exclusive)."""

    categories: tuple[str, ...]  # empty: all categories
    status: tuple[str, ...]  # as asked: group names and/or statuses
    statuses: tuple[str, ...]  # expanded to concrete statuses
    start: date
    end: date  # inclusive

    @property
    def since(self) -> datetime:
        """The first moment of the period."""
        return datetime.combine(self.start, time(0), TZ)

    @property
    def until(self) -> datetime:
        """The moment the period ends (exclusive)."""
        return datetime.combine(self.end + timedelta(days=1), time(0), TZ)

    def query(self) -> list[tuple[str, str]]:
        """The filters as query parameters, for links that keep them."""
        pairs = [("category", c) for c in self.categories]
        pairs += [("status", s) for s in self.status]
        return pairs + [("from", self.start.isoformat()), ("to", self.end.isoformat())]


def today() -> date:
    """Today in the service's time zone."""
    return datetime.now(TZ).date()


def parse_filters(known_categories: list[str], category: list[str] | None, status: list[str] | None,
                  start: date | None, end: date | None) -> Filters:
    """Check the filters against the catalogue; InvalidInput names the accepted values."""
    categories = tuple(dict.fromkeys(c for c in (category or []) if c not in ("", "all")))
    unknown = [c for c in categories if c not in known_categories]
    if unknown:
        raise InvalidInput(f"Unknown category {', '.join(map(repr, unknown))}; use one of: "
                           f"{', '.join(known_categories)} (or leave it out for all).", field="category")
    asked = tuple(dict.fromkeys(s for s in (status or [DEFAULT_STATUS]) if s)) or (DEFAULT_STATUS,)
    bad = [s for s in asked if s not in STATUS_GROUPS and s not in INCIDENT_STATUSES]
    if bad:
        raise InvalidInput(f"Unknown status {', '.join(map(repr, bad))}; use a group "
                           f"({', '.join(STATUS_GROUPS)}) or a status ({', '.join(INCIDENT_STATUSES)}).",
                           field="status")
    statuses: list[str] = []
    for s in asked:
        statuses += STATUS_GROUPS.get(s, (s,))
    end = end or today()
    start = start or end - timedelta(days=DEFAULT_DAYS - 1)
    if start > end:
        raise InvalidInput(f"The period starts ({start}) after it ends ({end}); swap 'from' and 'to'.",
                           field="from")
    if (end - start).days >= MAX_DAYS:
        raise InvalidInput(f"The period is longer than {MAX_DAYS} days; narrow 'from'/'to'.", field="from")
    return Filters(categories, asked, tuple(dict.fromkeys(statuses)), start, end)


@dataclass
class MapData:
    """Everything the map builder needs, already aggregated in PostGIS."""

    area: dict  # code, name, level, chain (ancestors, nearest first)
    filters: Filters
    now: datetime
    categories: list[tuple]  # code, name, department name
    grids: list[tuple]  # code, name, kind, worker, matching, overdue, geojson
    children: list[tuple]  # code, name, level, geojson (districts and streets only)
    outline: str | None  # the area's own outline as GeoJSON geometry
    heat: list[tuple]  # lat, lon, count per small cell
    heat_cell_deg: float
    overdue: list[tuple]  # see OVERDUE_COLUMNS
    overdue_total: int
    weekly: list[tuple]  # week start (local date), reported, matching status
    monthly: list[tuple]  # month (local date), due, on time, handled
    summary: dict = field(default_factory=dict)  # matching, overdue, due, on_time over the period


OVERDUE_COLUMNS = ["id", "lat", "lon", "category", "status", "reported_at", "due_at", "grid_code",
                   "escalation_level", "description", "assignee", "department", "history"]


def _incidents_where(i, period: bool, statuses: bool = True):
    """Area, scope and category always; the period and status filters when asked."""
    conds = [
        i.grid_code.startswith(_P["code"], autoescape=False),
        i.grid_code.startswith(_P["scope"], autoescape=False),
        or_(func.cardinality(_P["categories"]) == 0, i.category_code == func.any(_P["categories"])),
    ]
    if statuses:
        conds.append(i.status == func.any(_P["statuses"]))
    if period:
        conds += [i.reported_at >= _P["since"], i.reported_at < _P["until"]]
    return conds


def _overdue(i):
    return and_(i.status == func.any(_P["pending"]), i.due_at < _P["now"])


def _local(column):
    return func.timezone(LOCAL, column)


def _build():
    i = Incident
    q: dict[str, Select] = {}
    q["categories"] = (
        select(IncidentCategory.code, IncidentCategory.name, Department.name)
        .outerjoin(Department, Department.code == IncidentCategory.department_code)
        .order_by(IncidentCategory.code)
    )

    in_period = and_(i.reported_at >= _P["since"], i.reported_at < _P["until"])
    counts = (
        select(i.grid_code.label("grid_code"),
               func.count().filter(in_period).label("matching"),
               func.count().filter(_overdue(i)).label("overdue"))
        .where(*_incidents_where(i, period=False))
        .group_by(i.grid_code)
        # MATERIALIZED: computed once. After five runs Postgres may switch to a generic plan that
        # guesses one row for `LIKE $code || '%'` and re-aggregates incidents per grid (~30 s).
        .cte("m").prefix_with("MATERIALIZED")
    )
    g = Area
    q["grids"] = (
        select(g.code, g.name, g.kind, Responder.name, func.coalesce(counts.c.matching, 0),
               func.coalesce(counts.c.overdue, 0),
               func.ST_AsGeoJSON(func.ST_SimplifyPreserveTopology(g.geom, MAP_SIMPLIFY_DEG), 6))
        .outerjoin(Responder, Responder.id == g.worker_id)
        .outerjoin(counts, counts.c.grid_code == g.code)
        .where(g.level == "grid", g.version_id == ACTIVE_VERSION,
               g.code.startswith(_P["code"], autoescape=False), g.code.startswith(_P["scope"], autoescape=False))
        .order_by(g.code)
    )
    q["children"] = (
        select(g.code, g.name, g.level,
               func.ST_AsGeoJSON(func.ST_SimplifyPreserveTopology(g.geom, MAP_SIMPLIFY_DEG), 6))
        .where(g.version_id.is_(None), func.length(g.code) == func.length(_P["code"]) + 3,
               g.code.startswith(_P["code"], autoescape=False), g.code.startswith(_P["scope"], autoescape=False))
        .order_by(g.code)
    )
    q["outline"] = (
        select(func.ST_AsGeoJSON(func.ST_SimplifyPreserveTopology(g.geom, MAP_SIMPLIFY_DEG), 6))
        .where(g.code == _P["code"], g.code.startswith(_P["scope"], autoescape=False),
               or_(g.version_id.is_(None), g.version_id == ACTIVE_VERSION))
        .limit(1)
    )

    cx = func.floor(func.ST_X(i.geom) / _P["cell"])
    cy = func.floor(func.ST_Y(i.geom) / _P["cell"])
    q["heat"] = (
        select(func.round(func.avg(func.ST_Y(i.geom)).cast(Numeric), 5),
               func.round(func.avg(func.ST_X(i.geom)).cast(Numeric), 5),
               func.count())
        .where(*_incidents_where(i, period=True))
        .group_by(cx, cy)
    )

    top = (
        select(i.id, i.geom, i.category_code, i.status, i.reported_at, i.due_at, i.grid_code, i.escalation_level,
               i.description, i.assignee_id, i.department_code, func.count().over().label("total"))
        .where(*_incidents_where(i, period=False), _overdue(i))
        .order_by(i.due_at, i.id)
        .limit(_P["cap"])
        .cte("top")
    )
    e = IncidentEvent
    history = (
        select(func.json_agg(aggregate_order_by(
            func.json_build_array(func.to_char(_local(e.at), "YYYY-MM-DD HH24:MI"), e.action, e.from_status,
                                  e.to_status, e.note),
            e.at, e.id)))
        .where(e.incident_id == top.c.id)
        .scalar_subquery()
    )
    q["overdue"] = (
        select(top.c.id, func.ST_Y(top.c.geom), func.ST_X(top.c.geom), top.c.category_code, top.c.status,
               top.c.reported_at, top.c.due_at, top.c.grid_code, top.c.escalation_level, top.c.description,
               Responder.name, Department.name, history.label("history"), top.c.total)
        .select_from(top)
        .outerjoin(Responder, Responder.id == top.c.assignee_id)
        .outerjoin(Department, Department.code == top.c.department_code)
        .order_by(top.c.due_at, top.c.id)
    )

    week = func.date_trunc("week", _local(i.reported_at)).cast(Date)
    q["weekly"] = (
        select(week, func.count(), func.count().filter(i.status == func.any(_P["statuses"])))
        .where(*_incidents_where(i, period=False, statuses=False),
               i.reported_at >= _P["trend_since"], i.reported_at < _P["until"])
        .group_by(week).order_by(week)
    )
    # On-time handling rate = handled on time ÷ due (DESIGN.md), by the month the case fell due.
    month = func.date_trunc("month", _local(i.due_at)).cast(Date)
    counted = and_(i.status != func.all(_P["void"]), i.due_at.is_not(None))
    q["monthly"] = (
        select(month, func.count(), func.count().filter(i.handled_at <= i.due_at),
               func.count().filter(i.handled_at.is_not(None)))
        .where(*_incidents_where(i, period=False, statuses=False), counted,
               i.due_at >= _P["sla_since"], i.due_at < func.least(_P["until"], _P["now"]))
        .group_by(month).order_by(month)
    )
    due_in_period = and_(counted, i.due_at >= _P["since"], i.due_at < func.least(_P["until"], _P["now"]))
    q["summary"] = (
        select(func.count().filter(in_period, i.status == func.any(_P["statuses"])).label("matching"),
               func.count().filter(_overdue(i), i.status == func.any(_P["statuses"])).label("overdue"),
               func.count().filter(due_in_period).label("due"),
               func.count().filter(due_in_period, i.handled_at <= i.due_at).label("on_time"))
        .where(*_incidents_where(i, period=False, statuses=False))
    )
    return {name: Query(statement) for name, statement in q.items()}


QUERIES = _build()


async def categories(conn) -> list[tuple]:
    """Every incident category: code and name."""
    return [tuple(r) for r in await QUERIES["categories"].fetch(conn)]


async def gather(conn, caller: Caller, code: str, category: list[str] | None = None,
                 status: list[str] | None = None, start: date | None = None, end: date | None = None,
                 now: datetime | None = None) -> MapData:
    """The aggregated map data for `code` under the caller's scope and the filters (validated here)."""
    area = orjson.loads(await areas.get(conn, caller, code, geometry=False))  # 403/404 first
    cats = await categories(conn)
    filters = parse_filters([c[0] for c in cats], category, status, start, end)
    now = now or datetime.now(UTC)
    trend_start = filters.end - timedelta(weeks=TREND_WEEKS) + timedelta(days=1)
    trend_start -= timedelta(days=trend_start.weekday())  # whole weeks, Monday first
    months = filters.end.year * 12 + filters.end.month - 1 - (SLA_MONTHS - 1)
    sla_start = date(months // 12, months % 12 + 1, 1)
    cell = HEAT_CELL_DEG[len(code)]
    params = {
        "code": code, "scope": caller.scope, "categories": list(filters.categories),
        "statuses": list(filters.statuses), "pending": list(PENDING), "void": ["void", "rejected"],
        "since": filters.since, "until": filters.until, "now": now,
        "trend_since": datetime.combine(trend_start, time(0), TZ),
        "sla_since": datetime.combine(sla_start, time(0), TZ),
        "cell": cell, "cap": OVERDUE_CAP,
    }
    fetch = {name: QUERIES[name].fetch for name in QUERIES}
    grids = await fetch["grids"](conn, **params)
    children = await fetch["children"](conn, **params) if len(code) < 12 else []
    overdue = await fetch["overdue"](conn, **params)
    summary = await QUERIES["summary"].fetchrow(conn, **params)
    return MapData(
        area=area["properties"] | {"code": area["id"]},
        filters=filters,
        now=now,
        categories=cats,
        grids=[tuple(r) for r in grids],
        children=[tuple(r) for r in children],
        outline=await QUERIES["outline"].fetchval(conn, **params),
        heat=[(float(a), float(b), n) for a, b, n in await fetch["heat"](conn, **params)],
        heat_cell_deg=cell,
        overdue=[(*tuple(r)[:12], orjson.loads(r["history"]) if r["history"] else []) for r in overdue],
        overdue_total=overdue[0]["total"] if overdue else 0,
        weekly=[tuple(r) for r in await fetch["weekly"](conn, **params)],
        monthly=[tuple(r) for r in await fetch["monthly"](conn, **params)],
        summary=dict(summary),
    )
