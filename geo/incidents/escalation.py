"""Overdue escalation (逐级上报): grid worker → community → street → district, one event per level crossed.

An incident is overdue when its work is still pending (status in PENDING) and now > due_at. Once it
has been overdue for more than steps_h[0] hours it goes up to level 1 (community), more than
steps_h[1] hours to level 2 (street), more than steps_h[2] hours to level 3 (district command centre).

* Only upward: escalation_level is never lowered (an extension does not un-escalate a case).
* Suspended (挂账) incidents are not escalated; neither are handled or verified ones, whose work is
  reported done and waits for verification, nor incidents without a grid (no hierarchy to climb).
* Each level crossed is one `escalate` event naming the level and the responsible area: the
  community, street or district code prefix of the grid code.
* Idempotent: a second run at the same time finds every level already reached and writes nothing.
* Concurrent runners (several app workers, the CLI) serialise on a transaction advisory lock; a
  runner that does not get it does nothing, since the holder is doing the same work.
"""

import asyncio
import contextlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import (
    Connection,
    DateTime,
    Engine,
    Integer,
    String,
    bindparam,
    case,
    func,
    insert,
    literal,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB

from geo.incidents.workflow import PENDING
from geo.models import Area, Incident, IncidentEvent

LEVEL_NAMES = {1: "community", 2: "street", 3: "district"}
DEFAULT_STEPS_H = (0, 24, 72)
LOCK_KEY = 0x7767_6573_6361_6C00  # "wgescal\0": one fixed key for every escalation runner

log = logging.getLogger("wangge.escalation")


@dataclass
class Result:
    """What one escalation run did."""
    events: int = 0
    by_level: dict[int, int] = field(default_factory=dict)  # new level → incidents that reached it
    locked_out: bool = False  # another runner held the lock; nothing was done


def _statement():
    now = bindparam("now", type_=DateTime(timezone=True))
    # due_at before threshold n ⇔ overdue by more than steps_h[n-1] hours
    past = [bindparam(f"past{n}", type_=DateTime(timezone=True)) for n in (1, 2, 3)]
    hours = [bindparam(f"hours{n}", type_=Integer) for n in (1, 2, 3)]
    target_level = case((Incident.due_at < past[2], 3), (Incident.due_at < past[1], 2), else_=1)
    # FOR UPDATE: read the current level and status even if a workflow action commits meanwhile.
    target = (
        select(Incident.id, Incident.escalation_level.label("old"), target_level.label("new"))
        .where(Incident.status.in_(PENDING), Incident.grid_code.is_not(None), Incident.due_at < past[0],
               target_level > Incident.escalation_level)
        .with_for_update(of=Incident)
        .cte("target")
    )
    raised = (
        update(Incident)
        .where(Incident.id == target.c.id, Incident.escalation_level < target.c.new)
        .values(escalation_level=target.c.new, updated_at=now)
        .returning(Incident.id, Incident.grid_code, target.c.old, target.c.new)
        .cte("raised")
    )
    # A set-returning function in FROM may refer to earlier FROM items (implicitly lateral).
    crossed = func.generate_series(raised.c.old + 1, raised.c.new).table_valued("level").render_derived(name="crossed")
    level = crossed.c.level
    area_code = func.left(raised.c.grid_code, 15 - 3 * level)  # 12, 9, 6 digits for levels 1, 2, 3
    area_name = select(Area.name).where(Area.code == area_code, Area.version_id.is_(None)).scalar_subquery()
    step_hours = case(dict(zip((1, 2, 3), hours, strict=False)), value=level)
    area = func.concat_ws(" ", case(LEVEL_NAMES, value=level), area_code, area_name)  # a missing name is skipped
    note = func.format("Overdue by more than %s h: escalated to level %s, %s.", step_hours, level, area)
    data = func.jsonb_build_object("level", level, "area_code", area_code, type_=JSONB)
    rows = (
        select(raised.c.id, now, literal("escalate", String), note, data)
        .select_from(raised)
        .join(crossed, true())
        .order_by(raised.c.id, level)
    )
    return (
        insert(IncidentEvent)
        .from_select(["incident_id", "at", "action", "note", "data"], rows)
        .returning(IncidentEvent.incident_id, IncidentEvent.data["level"].astext.cast(Integer))
    )


STATEMENT = _statement()


def check_steps(steps_h) -> tuple[int, int, int]:
    """The three escalation thresholds in hours, checked (non-negative, ascending)."""
    steps = tuple(steps_h)
    if len(steps) != 3 or any(s < 0 for s in steps) or list(steps) != sorted(steps):
        raise ValueError(f"steps_h must be three non-decreasing hours >= 0 (community, street, district), "
                         f"got {steps_h!r}.")
    return steps


def run(conn: Connection, now: datetime | None = None, steps_h=DEFAULT_STEPS_H) -> Result:
    """Escalate every overdue incident as of `now` (default: the database clock) inside the caller's
    transaction; the lock is held until that transaction ends."""
    steps = check_steps(steps_h)
    if not conn.execute(select(func.pg_try_advisory_xact_lock(LOCK_KEY))).scalar():
        return Result(locked_out=True)
    if now is None:
        now = conn.execute(select(func.now())).scalar_one()
    elif now.tzinfo is None:
        raise ValueError("now must be timezone-aware.")
    params: dict[str, datetime | int] = {"now": now}
    for n, hours in enumerate(steps, start=1):
        params[f"past{n}"] = now - timedelta(hours=hours)
        params[f"hours{n}"] = hours
    events = conn.execute(STATEMENT, params).all()
    top: dict[int, int] = {}
    for incident_id, level in events:  # the events just written, not the incidents table
        top[incident_id] = max(level, top.get(incident_id, 0))
    return Result(events=len(events), by_level=dict(sorted(Counter(top.values()).items())))


def escalate(conn: Connection, now: datetime | None = None, steps_h=DEFAULT_STEPS_H) -> int:
    """Escalate every overdue incident; the number of `escalate` events written (0 if locked out)."""
    return run(conn, now, steps_h).events


# ---------------------------------------------------------------- schedule inside the service

def _run_once(engine, steps_h) -> Result:
    with engine.begin() as conn:
        return run(conn, steps_h=steps_h)


async def every(interval_s: float, engine: Engine, steps_h=DEFAULT_STEPS_H) -> None:
    """Escalate every `interval_s` seconds in a worker thread, until cancelled. The first run comes
    after one interval, so starting the app (or a test client) never writes anything by itself."""
    check_steps(steps_h)
    while True:
        await asyncio.sleep(interval_s)
        job = asyncio.ensure_future(asyncio.to_thread(_run_once, engine, steps_h))
        try:
            result = await asyncio.shield(job)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await job  # let the running transaction finish before the engine goes away
            raise
        except Exception:  # a failed run must not kill the loop or the app; the next run retries
            log.exception("Overdue escalation failed; retrying in %s s.", interval_s)
            continue
        if result.events:
            log.info("Escalated %s incidents (%s events): %s.", sum(result.by_level.values()), result.events,
                     ", ".join(f"{n} to {LEVEL_NAMES[lv]}" for lv, n in result.by_level.items()))


def start(interval_s: float, engine: Engine, steps_h=DEFAULT_STEPS_H) -> asyncio.Task | None:
    """Start the schedule as a background task (None when interval_s is 0: disabled)."""
    if not interval_s:
        return None
    check_steps(steps_h)  # a bad setting fails the startup, not every run
    return asyncio.create_task(every(interval_s, engine, steps_h), name="wangge-escalation")


async def stop(task: asyncio.Task | None) -> None:
    """Cancel the schedule and wait for it to end."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
