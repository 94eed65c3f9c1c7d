"""Evaluation rates (综合评价) per area, child area, department and worker over a time window.

The window is [from, to); `as_of` = min(to, now). Following GB/T 30428 / CJ/T 292 practice the
cohort is defined by the deadline: a case counts once its handling deadline (due_at) has arrived,
or earlier if it is already done ("已到处置时限的 + 未到时限但已处置的"). Void (作废) and rejected
(不予受理) reports are not cases and never count. Figures are as recorded at query time.

* due (应处置数): not void/rejected, from <= due_at < to, and (due_at < as_of or handled).
* handled (处置数): due, and its work is reported done: status handled, verified or closed (a rework
  clears handled_at and sends the case back, so it stops counting until handled again).
* handled_on_time (按期处置数): handled and handled_at <= due_at.
* due_to_close (应结案数): not void/rejected, from <= due_at < to, and (due_at < as_of or closed).
* closed (结案数): due_to_close and status closed.
* reworked (返工数): due_to_close and rework_count > 0.
* overdue_count: due and still pending (unassigned, reported, filed, dispatched, in_progress,
  returned): past its deadline with the work not done. Suspended (挂账) cases are not counted
  overdue, as they are not escalated, but they do count as due and not handled.
* handling_rate = handled / due; on_time_handling_rate = handled_on_time / due;
  closure_rate = closed / due_to_close; rework_rate = reworked / due_to_close (null when the
  denominator is 0).
* median / p90 time to close: closed_at - reported_at in seconds over the closed cases
  (percentile_cont: linear interpolation).

Areas are matched by grid_code prefix, so a case stays with the grid code it was filed under.
"""

from datetime import date, datetime, timedelta

from sqlalchemy import DateTime, Float, Integer, String, and_, bindparam, case, func, or_, select, tuple_
from sqlalchemy.orm import aliased

from geo.auth import Caller
from geo.errors import InvalidInput, NotFound
from geo.incidents.timelimits import TZ, year_problem
from geo.incidents.workflow import PENDING
from geo.models import Area, Department, GridVersion, Incident, Responder
from geo.sql import Query, one_of

DEFAULT_WINDOW = timedelta(days=30)
READERS = ("supervisor", "dispatcher", "planner")  # and admin
NOT_CASES = ("void", "rejected")
DONE = ("handled", "verified", "closed")
CHILD_LEVEL = {"district": "street", "street": "community", "community": "grid"}
CODE_LENGTH = {"district": 6, "street": 9, "community": 12, "grid": 15}
COUNTS = ("due", "handled", "handled_on_time", "due_to_close", "closed", "reworked", "overdue_count")
RATES = {  # rate: (numerator, denominator), DESIGN.md
    "handling_rate": ("handled", "due"),
    "on_time_handling_rate": ("handled_on_time", "due"),
    "closure_rate": ("closed", "due_to_close"),
    "rework_rate": ("reworked", "due_to_close"),
}
DEFINITIONS = {
    "window": "[from, to); as_of = min(to, now). Void and rejected reports never count.",
    "due": "from <= due_at < to, and due_at < as_of or already handled (status handled, verified or closed)",
    "handled": "due, with status handled, verified or closed",
    "handled_on_time": "handled, with handled_at <= due_at",
    "due_to_close": "from <= due_at < to, and due_at < as_of or already closed",
    "closed": "due_to_close, with status closed",
    "reworked": "due_to_close, with rework_count > 0",
    "overdue_count": "due and still pending (unassigned, reported, filed, dispatched, in_progress or returned); "
                     "suspended cases are not counted overdue",
    "handling_rate": "handled / due",
    "on_time_handling_rate": "handled_on_time / due",
    "closure_rate": "closed / due_to_close",
    "rework_rate": "reworked / due_to_close",
    "median_time_to_close_s": "median of closed_at - reported_at over the closed cases, seconds",
    "p90_time_to_close_s": "90th percentile (linear interpolation) of closed_at - reported_at over the closed cases",
    "areas": "by grid_code prefix: district 6, street 9, community 12 digits",
}

_TS = DateTime(timezone=True)
_ACTIVE = select(GridVersion.id).where(GridVersion.status == "active").scalar_subquery()
_VISIBLE = (Area.version_id.is_(None)) | (Area.version_id == _ACTIVE)

_AREA = Query(select(Area.id, Area.code, Area.name, Area.level)
              .where(Area.code == bindparam("code", type_=String), _VISIBLE).limit(1))
_CHILDREN = Query(select(Area.code, Area.name, Area.level)
                  .where(Area.parent_id == bindparam("parent_id", type_=Integer), _VISIBLE).order_by(Area.code))


def _stats_statement():
    start, end, as_of = (bindparam(n, type_=_TS) for n in ("start", "end", "as_of"))
    i = Incident
    cases = (
        select(i.department_code, i.assignee_id, i.status, i.due_at, i.handled_at, i.rework_count,
               func.left(i.grid_code, bindparam("child_len", type_=Integer)).label("child"),
               func.extract("epoch", i.closed_at - i.reported_at).cast(Float).label("close_s"))
        .where(i.grid_code.startswith(bindparam("code", type_=String), autoescape=False),
               i.grid_code.startswith(bindparam("scope", type_=String), autoescape=False),
               ~one_of(i.status, NOT_CASES), i.due_at >= start, i.due_at < end,
               or_(i.due_at < as_of, one_of(i.status, DONE)))  # due_to_close ⊆ due: closed ⊆ done
        .subquery("cases")
    )
    c = cases.c
    closed = c.status == "closed"
    due_to_close = or_(c.due_at < as_of, closed)
    count = func.count().filter
    stats = (
        select(
            func.grouping(c.child, c.department_code, c.assignee_id).label("grouping"),
            c.child, c.department_code, c.assignee_id,
            func.count().label("due"),
            count(one_of(c.status, DONE)).label("handled"),
            count(and_(one_of(c.status, DONE), c.handled_at <= c.due_at)).label("handled_on_time"),
            count(due_to_close).label("due_to_close"),
            count(closed).label("closed"),
            count(and_(due_to_close, c.rework_count > 0)).label("reworked"),
            count(one_of(c.status, PENDING)).label("overdue_count"),
            func.percentile_cont(0.5).within_group(case((closed, c.close_s))).label("median_time_to_close_s"),
            func.percentile_cont(0.9).within_group(case((closed, c.close_s))).label("p90_time_to_close_s"),
        )
        .group_by(func.grouping_sets(tuple_(c.child), tuple_(c.department_code), tuple_(c.assignee_id), tuple_()))
        .subquery("stats")
    )
    worker = aliased(Responder)
    return (
        select(stats, Department.name.label("department_name"), worker.name.label("worker_name"))
        .outerjoin(Department, Department.code == stats.c.department_code)
        .outerjoin(worker, worker.id == stats.c.assignee_id)
    )


_STATS = Query(_stats_statement())
# grouping(child, department, assignee): a bit is 1 where that column is rolled up
_SET = {0b011: "children", 0b101: "by_department", 0b110: "by_worker", 0b111: "totals"}


def parse_time(value: str | None, name: str) -> datetime | None:
    """An ISO 8601 date or date-time; dates are local midnight, naive times are local (Asia/Shanghai)."""
    if value is None or value == "":
        return None
    try:
        parsed = date.fromisoformat(value) if len(value) == 10 else None
        moment = datetime.combine(parsed, datetime.min.time()) if parsed else datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"`{name}` must be an ISO 8601 date or date-time, such as 2026-01-01 or "
                           f"2026-01-01T08:00:00+08:00; got {value!r}.", field=name) from None
    if problem := year_problem(moment):
        raise InvalidInput(f"`{name}` {problem}.", field=name)
    return moment.replace(tzinfo=TZ) if moment.tzinfo is None else moment


def window(start: str | None, end: str | None, now: datetime) -> tuple[datetime, datetime, datetime]:
    """[from, to) and as_of from the query strings; default the last 30 days up to now."""
    t0, t1 = parse_time(start, "from"), parse_time(end, "to")
    t1 = t1 or now
    t0 = t0 or t1 - DEFAULT_WINDOW
    if t0 >= t1:
        raise InvalidInput(f"`from` ({t0.isoformat()}) must be before `to` ({t1.isoformat()}).", field="from")
    return t0, t1, min(t1, now)


def _figures(row) -> dict:
    out = {}
    for rate, (num, den) in RATES.items():
        out[rate] = row[num] / row[den] if row and row[den] else None
    for name in COUNTS:
        out[name] = row[name] if row else 0
    for name in ("median_time_to_close_s", "p90_time_to_close_s"):
        out[name] = round(row[name], 1) if row and row[name] is not None else None
    return out


async def performance(conn, caller: Caller, code: str | None, start: str | None = None,
                      end: str | None = None, now: datetime | None = None) -> dict:
    """The rates for an area, each of its children, each department and each worker, as plain JSON."""
    caller.require_role(*READERS)
    code = code or caller.area_code
    if not code:
        raise InvalidInput("Give area=CODE (a 6, 9, 12 or 15-digit area code).", field="area")
    caller.require_area(code, "area")
    t0, t1, as_of = window(start, end, now or datetime.now(TZ))
    area = await _AREA.fetchrow(conn, code=code)
    if area is None:
        raise NotFound(f"No area with code {code!r}.", field="area")
    child_level = CHILD_LEVEL.get(area["level"])
    child_len = CODE_LENGTH[child_level] if child_level else CODE_LENGTH["grid"]
    rows = await _STATS.fetch(conn, code=code, scope=caller.scope, start=t0, end=t1, as_of=as_of,
                              child_len=child_len)
    sets: dict[str, list] = {name: [] for name in _SET.values()}
    for row in rows:
        sets[_SET[row["grouping"]]].append(row)
    children = []
    if child_level:
        by_code = {row["child"]: row for row in sets["children"]}
        known = await _CHILDREN.fetch(conn, parent_id=area["id"])
        # Every child area, even without cases, plus any code the cases carry that no longer exists.
        names = {c["code"]: c["name"] for c in known} | {k: None for k in by_code if k not in
                                                          {c["code"] for c in known}}
        children = [{"code": k, "name": names[k], "level": child_level, **_figures(by_code.get(k))}
                    for k in sorted(names)]
    return {
        "area": {"code": area["code"], "name": area["name"], "level": area["level"]},
        "from": t0.astimezone(TZ).isoformat(),
        "to": t1.astimezone(TZ).isoformat(),
        "as_of": as_of.astimezone(TZ).isoformat(),
        "definitions": DEFINITIONS,
        "totals": _figures(sets["totals"][0] if sets["totals"] else None),
        "children": children,
        "by_department": sorted(
            ({"code": r["department_code"], "name": r["department_name"], **_figures(r)}
             for r in sets["by_department"]), key=lambda d: (d["code"] is None, d["code"] or "")),
        "by_worker": sorted(
            ({"id": r["assignee_id"], "name": r["worker_name"], **_figures(r)} for r in sets["by_worker"]),
            key=lambda d: (d["id"] is None, d["id"] or 0)),
    }
