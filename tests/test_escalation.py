"""Overdue escalation: levels by hours overdue, one event per level, idempotence, locking, CLI and schedule."""

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text
from typer.testing import CliRunner

from geo.db import sync_engine
from geo.incidents import escalation
from geo.incidents.escalation import LOCK_KEY, escalate, run
from wangge.cli import app as cli

H = timedelta(hours=1)
NEVER = (10**6, 10**6, 10**6)  # hours: nothing in the demo is that overdue, so runs write nothing


@pytest.fixture(scope="module")
def grids(engine, demo):
    with engine.connect() as conn:
        return conn.execute(text(
            "SELECT code FROM areas WHERE level = 'grid' AND version_id = "
            "(SELECT id FROM grid_versions WHERE status = 'active') ORDER BY code LIMIT 2")).scalars().all()


@pytest.fixture
def tx(engine, demo):
    """A connection whose work is rolled back; it holds the escalation lock, so a scheduled run elsewhere
    can't lock it out (advisory locks are re-entrant within a session)."""
    with engine.connect() as conn:
        conn.execute(select(func.pg_advisory_xact_lock(LOCK_KEY)))
        yield conn
        conn.rollback()


@pytest.fixture
def at(tx):
    """A moment after every demo deadline; the demo's own overdue incidents are escalated first, so the
    counts in a test are those of the incidents it adds."""
    moment = datetime.now(UTC).replace(microsecond=0) + timedelta(days=400)
    escalate(tx, now=moment)
    return moment


def add(conn, grid: str, due: datetime, status: str = "dispatched", level: int = 0) -> int:
    return conn.execute(text("""
        INSERT INTO incidents (category_code, source, status, reported_at, due_at, grid_id, grid_code,
                               grid_version_id, assignee_id, department_code, escalation_level, geom)
        SELECT c.code, 'patrol', :status, :due - interval '1 day', :due, a.id, a.code, a.version_id, a.worker_id,
               c.department_code, :level, ST_PointOnSurface(a.geom)
        FROM areas a, (SELECT * FROM incident_categories ORDER BY code LIMIT 1) c
        WHERE a.code = :grid AND a.version_id = (SELECT id FROM grid_versions WHERE status = 'active')
        RETURNING id"""), {"grid": grid, "due": due, "status": status, "level": level}).scalar_one()


def level_of(conn, incident_id: int) -> int:
    return conn.execute(text("SELECT escalation_level FROM incidents WHERE id = :id"), {"id": incident_id}).scalar_one()


def events_of(conn, incident_id: int) -> list:
    return conn.execute(text("SELECT action, at, note, data FROM incident_events WHERE incident_id = :id "
                             "AND action = 'escalate' ORDER BY id"), {"id": incident_id}).all()


def test_level_follows_hours_overdue(tx, at, grids):
    ids = [add(tx, grids[0], at - d) for d in (1 * H, 30 * H, 100 * H, -1 * H)]
    assert escalate(tx, now=at) == 1 + 2 + 3
    assert [level_of(tx, i) for i in ids] == [1, 2, 3, 0]


def test_one_event_per_level_crossed_names_the_area(tx, at, grids):
    grid = grids[1]
    incident = add(tx, grid, at - 100 * H)
    escalate(tx, now=at)
    events = events_of(tx, incident)
    assert [e.data for e in events] == [{"level": 1, "area_code": grid[:12]}, {"level": 2, "area_code": grid[:9]},
                                        {"level": 3, "area_code": grid[:6]}]
    assert all(e.action == "escalate" and e.at == at for e in events)
    assert "level 1, community " + grid[:12] in events[0].note
    assert "level 2, street " + grid[:9] in events[1].note and "街道" in events[1].note
    assert events[2].note.endswith("level 3, district 110102 西城区.")


def test_second_run_writes_nothing(tx, at, grids):
    add(tx, grids[0], at - 50 * H)
    assert escalate(tx, now=at) == 2
    assert escalate(tx, now=at) == 0
    assert escalate(tx, now=at - 10 * H) == 0  # an earlier clock never lowers a level


def test_suspended_done_and_final_incidents_are_not_escalated(tx, at, grids):
    ids = [add(tx, grids[0], at - 100 * H, status) for status in
           ("suspended", "handled", "verified", "closed", "void", "rejected")]
    assert escalate(tx, now=at) == 0
    assert [level_of(tx, i) for i in ids] == [0] * len(ids)


def test_pending_statuses_are_escalated(tx, at, grids):
    ids = [add(tx, grids[0], at - 2 * H, status) for status in escalation.PENDING]
    assert escalate(tx, now=at) == len(ids)


def test_only_upward_and_only_the_missing_levels(tx, at, grids):
    extended = add(tx, grids[0], at + 10 * H, level=3)  # escalated, then given a new due time
    halfway = add(tx, grids[0], at - 30 * H, level=1)
    later = add(tx, grids[0], at - 1 * H)
    assert escalate(tx, now=at) == 1 + 1
    assert level_of(tx, extended) == 3 and events_of(tx, extended) == []
    assert [e.data["level"] for e in events_of(tx, halfway)] == [2]
    assert escalate(tx, now=at + 80 * H) == 1 + 2  # halfway 2 → 3; later 1 → 3 (overdue 81 h)
    assert [e.data["level"] for e in events_of(tx, later)] == [1, 2, 3]


def test_steps_are_configurable(tx, at, grids):
    ids = [add(tx, grids[0], at - d) for d in (1 * H, 3 * H, 5 * H, 9 * H)]
    assert escalate(tx, now=at, steps_h=(2, 4, 8)) == 0 + 1 + 2 + 3
    assert [level_of(tx, i) for i in ids] == [0, 1, 2, 3]


def test_bad_steps_are_refused(tx):
    with pytest.raises(ValueError, match="three non-decreasing hours"):
        escalate(tx, steps_h=(24, 0, 72))


def test_concurrent_runner_is_locked_out(engine, tx, at, grids):
    add(tx, grids[0], at - 100 * H)
    with engine.connect() as other:
        result = run(other, now=at)
        assert result.locked_out and result.events == 0
        other.rollback()
    assert escalate(tx, now=at) == 3  # the lock holder still does the work


def test_run_reports_incidents_by_new_level(tx, at, grids):
    for d in (1 * H, 2 * H, 30 * H, 100 * H):
        add(tx, grids[0], at - d)
    result = run(tx, now=at)
    assert result.by_level == {1: 2, 2: 1, 3: 1} and result.events == 2 + 2 + 3


def test_cli_escalate_prints_what_moved(database_url, demo, monkeypatch):
    monkeypatch.setenv("WANGGE_DATABASE_URL", database_url)
    monkeypatch.setenv("WANGGE_ESCALATION_STEPS_H", str(list(NEVER)))
    result = CliRunner().invoke(cli, ["incidents", "escalate"])
    assert result.exit_code == 0, result.output
    assert "escalated 0 incidents (0 events)" in result.output


def test_cli_escalate_names_the_levels(monkeypatch):
    monkeypatch.setattr(escalation, "run", lambda conn, steps_h: escalation.Result(6, {1: 2, 3: 1}))
    monkeypatch.setattr("wangge.cli._engine", lambda: _NoEngine())
    result = CliRunner().invoke(cli, ["incidents", "escalate"])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())  # rich wraps long lines
    assert "escalated 3 incidents: 2 to level 1 (community), 1 to level 3 (district) (6 events)" in output


class _NoEngine:
    def begin(self):
        return contextlib.nullcontext()


def test_schedule_runs_repeatedly_and_survives_a_failure(engine, demo, monkeypatch, caplog):
    calls = []
    real = escalation._run_once

    def flaky(engine, steps_h):
        calls.append(steps_h)
        if len(calls) == 1:
            raise RuntimeError("database went away")
        return real(engine, steps_h)

    monkeypatch.setattr(escalation, "_run_once", flaky)

    async def main():
        task = escalation.start(0.05, engine, NEVER)
        while len(calls) < 3:
            await asyncio.sleep(0.02)
        await escalation.stop(task)
        return task

    with caplog.at_level(logging.ERROR, logger="wangge.escalation"):
        task = asyncio.run(asyncio.wait_for(main(), 30))
    assert task.done() and task.cancelled()
    assert "Overdue escalation failed" in caplog.text and "database went away" in caplog.text


def test_schedule_is_off_with_interval_zero():
    assert escalation.start(0, sync_engine("postgresql+psycopg://unused/db")) is None


def test_app_lifespan_starts_and_stops_the_schedule(settings, monkeypatch):
    from fastapi.testclient import TestClient

    from api.app import create_app

    calls = []
    monkeypatch.setattr(escalation, "_run_once", lambda engine, steps_h: calls.append(steps_h) or escalation.Result())
    fast = settings.model_copy(update={"escalation_interval_s": 0.05, "escalation_steps_h": NEVER})
    with TestClient(create_app(fast)):
        deadline = time.monotonic() + 10
        while not calls and time.monotonic() < deadline:
            time.sleep(0.05)
    assert calls and calls[0] == NEVER
    seen = len(calls)
    time.sleep(0.2)
    assert len(calls) == seen  # stopped with the app
