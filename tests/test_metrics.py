"""GET /analysis/performance: every figure cross-checked against pandas on the same rows; errors and scope."""

import asyncio
from datetime import datetime, timedelta

import asyncpg
import pandas as pd
import pytest
from sqlalchemy import text

from geo.auth import Caller
from geo.incidents import metrics
from geo.incidents.timelimits import TZ
from tests.conftest import DEMO_END, FIRST_DAY, LAST_DAY, make_token

# The definitions, restated for pandas (see geo/incidents/metrics.py): void and rejected never count; a case is due
# once its deadline in [from, to) has passed (before as_of) or once it is done.
DONE = {"handled", "verified", "closed"}
PENDING = {"unassigned", "reported", "filed", "dispatched", "in_progress", "returned"}
NOT_CASES = {"void", "rejected"}
COUNTS = ("due", "handled", "handled_on_time", "due_to_close", "closed", "reworked", "overdue_count")
YEAR = {"from": FIRST_DAY.isoformat(), "to": (LAST_DAY + timedelta(days=1)).isoformat()}  # the demo year, local dates


def expected(frame: pd.DataFrame, code: str, t0, t1, as_of, child_len: int) -> dict:
    """Totals, children, departments and workers computed with pandas from raw incident rows."""
    f = frame[frame.grid_code.fillna("").str.startswith(code) & ~frame.status.isin(NOT_CASES)
              & (frame.due_at >= t0) & (frame.due_at < t1)]
    done, passed = f.status.isin(DONE), f.due_at < as_of
    closed = f.status == "closed"
    to_close = passed | closed
    flags = pd.DataFrame({
        "due": passed | done,
        "handled": done,
        "handled_on_time": done & (f.handled_at <= f.due_at),
        "due_to_close": to_close,
        "closed": closed,
        "reworked": to_close & (f.rework_count > 0),
        "overdue_count": f.status.isin(PENDING) & passed,
    })
    flags = flags[flags.due]  # everything else is a subset of due
    flags["close_s"] = (f.closed_at - f.reported_at).dt.total_seconds().where(closed)
    flags["child"] = f.grid_code.str[:child_len]
    flags["department"] = f.department_code
    flags["worker"] = f.assignee_id.astype("Int64")

    def figures(g: pd.DataFrame) -> dict:
        out = {name: int(g[name].sum()) for name in COUNTS}

        def ratio(n, d):
            return out[n] / out[d] if out[d] else None

        out |= {"handling_rate": ratio("handled", "due"), "on_time_handling_rate": ratio("handled_on_time", "due"),
                "closure_rate": ratio("closed", "due_to_close"), "rework_rate": ratio("reworked", "due_to_close")}
        s = g.close_s.dropna()
        out["median_time_to_close_s"] = s.quantile(0.5) if len(s) else None
        out["p90_time_to_close_s"] = s.quantile(0.9) if len(s) else None
        return out

    def by(key: str) -> dict:
        return {None if pd.isna(k) else k: figures(g) for k, g in flags.groupby(key, dropna=False)}

    return {"totals": figures(flags), "children": by("child"), "by_department": by("department"),
            "by_worker": {None if k is None else int(k): v for k, v in by("worker").items()}}


def same(got: dict, want: dict, where: str) -> None:
    for name, value in want.items():
        if value is None or name in COUNTS:
            assert got[name] == value, (where, name, got[name], value)
        else:
            tol = 0.051 if name.endswith("_s") else 1e-12  # times are rounded to 0.1 s
            assert got[name] == pytest.approx(value, abs=tol), (where, name, got[name], value)


def check(reply: dict, want: dict) -> None:
    """Every figure of the reply equals pandas: totals, each child, each department, each worker."""
    same(reply["totals"], want["totals"], "totals")
    zero = {name: 0 for name in COUNTS}
    for child in reply["children"]:
        same(child, want["children"].get(child["code"], zero), child["code"])
    if reply["area"]["level"] != "grid":  # a grid has no children
        assert set(want["children"]) <= {c["code"] for c in reply["children"]}
    assert {d["code"] for d in reply["by_department"]} == set(want["by_department"])
    for dept in reply["by_department"]:
        same(dept, want["by_department"][dept["code"]], dept["code"])
    assert {w["id"] for w in reply["by_worker"]} == set(want["by_worker"])
    for worker in reply["by_worker"]:
        same(worker, want["by_worker"][worker["id"]], f"worker {worker['id']}")


def bounds(reply: dict):
    return (pd.Timestamp(reply["from"]), pd.Timestamp(reply["to"]), pd.Timestamp(reply["as_of"]))


@pytest.fixture(scope="module")
def frame(engine, demo) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql(text("SELECT * FROM incidents"), conn)


@pytest.fixture(scope="module")
def district_year(client, admin_headers) -> dict:
    reply = client.get("/analysis/performance", params={"area": "110102", **YEAR}, headers=admin_headers)
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_district_year_matches_pandas(district_year, frame):
    check(district_year, expected(frame, "110102", *bounds(district_year), child_len=9))
    assert len(district_year["children"]) == 15 and all(c["level"] == "street" for c in district_year["children"])
    assert len(district_year["by_worker"]) > 1000 and len(district_year["by_department"]) > 5


def test_district_year_looks_like_a_real_city(district_year):
    totals = district_year["totals"]
    assert district_year["area"] == {"code": "110102", "name": "西城区", "level": "district"}
    assert district_year["from"] == f"{YEAR['from']}T00:00:00+08:00" \
        and district_year["to"] == f"{YEAR['to']}T00:00:00+08:00"
    assert totals["due"] > 100_000
    assert 0.99 < totals["closure_rate"] <= 1 and 0.97 < totals["on_time_handling_rate"] <= totals["handling_rate"]
    assert 0 < totals["rework_rate"] < 0.01
    assert 0 < totals["median_time_to_close_s"] < totals["p90_time_to_close_s"]
    assert set(metrics.RATES) <= set(district_year["definitions"])


def test_children_and_breakdowns_add_up_to_the_totals(district_year):
    for part in ("children", "by_department", "by_worker"):
        for name in COUNTS:
            assert sum(row[name] for row in district_year[part]) == district_year["totals"][name], (part, name)


def test_window_reaching_past_now_counts_cases_done_before_their_deadline(client, admin_headers, frame):
    end = (datetime.now(TZ) + timedelta(days=60)).isoformat()
    start = (DEMO_END - timedelta(days=45)).date().isoformat()
    reply = client.get("/analysis/performance", params={"area": "110102003", "from": start, "to": end},
                       headers=admin_headers).json()
    t0, t1, as_of = bounds(reply)
    assert as_of < t1
    check(reply, expected(frame, "110102003", t0, t1, as_of, child_len=12))
    done_early = frame[(frame.due_at >= as_of) & (frame.due_at < t1) & frame.status.isin(DONE)
                       & frame.grid_code.str.startswith("110102003")]
    assert len(done_early) > 0  # the clause is exercised: long time limits reach past the demo's end


def test_community_children_are_its_grids_and_a_grid_has_none(client, admin_headers, frame, engine):
    with engine.connect() as conn:
        community, grids = conn.execute(text(
            "SELECT left(code, 12), count(*) FROM areas WHERE level = 'grid' AND version_id = "
            "(SELECT id FROM grid_versions WHERE status = 'active') GROUP BY 1 ORDER BY 2 DESC LIMIT 1")).one()
    reply = client.get("/analysis/performance", params={"area": community, **YEAR}, headers=admin_headers).json()
    assert reply["area"]["level"] == "community" and len(reply["children"]) == grids
    assert all(c["level"] == "grid" and c["code"].startswith(community) for c in reply["children"])
    check(reply, expected(frame, community, *bounds(reply), child_len=15))
    grid = reply["children"][0]["code"]
    leaf = client.get("/analysis/performance", params={"area": grid, **YEAR}, headers=admin_headers).json()
    assert leaf["area"]["level"] == "grid" and leaf["children"] == []
    check(leaf, expected(frame, grid, *bounds(leaf), child_len=15))


def test_default_window_is_the_last_30_days(client, admin_headers):
    reply = client.get("/analysis/performance", params={"area": "110102001"}, headers=admin_headers).json()
    t0, t1, as_of = bounds(reply)
    assert t1 - t0 == pd.Timedelta(days=30) and as_of == t1
    assert abs(t1 - pd.Timestamp.now(tz="UTC")) < pd.Timedelta(minutes=1)


# -- each status and clock case, on incidents added inside a rolled-back transaction -----------------------

def local(day: int, hour: int = 12) -> datetime:
    return datetime(2020, 1, day, hour, tzinfo=TZ)


# name: status, reported, due, handled, closed, rework_count
CASES = {
    "a_on_time": ("closed", local(3), local(5), local(4), local(5, 0), 0),
    "b_late_reworked": ("closed", local(4), local(6), local(8), local(9), 1),
    "c_pending": ("dispatched", local(8), local(10), None, None, 0),
    "d_suspended": ("suspended", local(8), local(10), None, None, 0),
    "e_void": ("void", local(8), local(10), None, local(8, 13), 0),
    "f_rejected": ("rejected", local(8), local(10), None, local(8, 13), 0),
    "g_handled_early": ("handled", local(14), local(25), local(15), None, 0),
    "h_closed_early": ("closed", local(16), local(28), local(17), local(18), 0),
    "i_not_yet_due": ("in_progress", local(16), local(28), None, None, 0),
    "j_in_rework": ("dispatched", local(9), local(12), None, None, 1),
    "k_outside_window": ("closed", local(20), datetime(2020, 2, 5, tzinfo=TZ), local(21), local(22), 0),
    "l_verified_late": ("verified", local(9), local(11), local(12), None, 0),
}


def test_each_case_counts_as_defined(database_url, demo, engine, frame):
    with engine.connect() as conn:
        grid = conn.execute(text(
            "SELECT code FROM areas WHERE level = 'grid' AND version_id = "
            "(SELECT id FROM grid_versions WHERE status = 'active') ORDER BY code LIMIT 1")).scalar_one()

    async def main():
        conn = await asyncpg.connect(database_url.replace("+psycopg", ""))
        try:
            async with conn.transaction():
                for status, reported, due, handled, closed, rework in CASES.values():
                    await conn.execute("""
                        INSERT INTO incidents (category_code, source, status, reported_at, due_at, handled_at,
                                               closed_at, rework_count, grid_id, grid_code, grid_version_id,
                                               assignee_id, department_code, geom)
                        SELECT c.code, 'patrol', $2, $3, $4, $5, $6, $7, a.id, a.code, a.version_id, a.worker_id,
                               c.department_code, ST_PointOnSurface(a.geom)
                        FROM areas a, (SELECT * FROM incident_categories ORDER BY code LIMIT 1) c
                        WHERE a.code = $1 AND a.version_id = (SELECT id FROM grid_versions WHERE status = 'active')
                        """, grid, status, reported, due, handled, closed, rework)
                admin = Caller(0, "test", "admin", None)
                reply = await metrics.performance(conn, admin, grid[:12], "2020-01-01", "2020-02-01",
                                                  now=local(20, 0))
                rows = [dict(r) for r in await conn.fetch("SELECT * FROM incidents WHERE grid_code = $1", grid)]
                raise Rollback(reply, _frame(rows))
        except Rollback as done:
            return done.args
        finally:
            await conn.close()

    reply, rows = asyncio.run(main())
    totals = reply["totals"]
    assert reply["as_of"] == "2020-01-20T00:00:00+08:00"
    # due a b c d g h j l; handled a b g h l; on time a g h; to close a b c d h j l; closed a b h; reworked b j
    assert {k: totals[k] for k in COUNTS} == {"due": 8, "handled": 5, "handled_on_time": 3, "due_to_close": 7,
                                              "closed": 3, "reworked": 2, "overdue_count": 2}
    assert (totals["handling_rate"], totals["on_time_handling_rate"]) == (5 / 8, 3 / 8)
    assert (totals["closure_rate"], totals["rework_rate"]) == (3 / 7, 2 / 7)
    # time to close: a 36 h, h 48 h, b 120 h; p90 interpolates between 48 h and 120 h
    assert totals["median_time_to_close_s"] == 48 * 3600
    assert totals["p90_time_to_close_s"] == pytest.approx((48 + 0.8 * 72) * 3600, abs=0.051)
    check(reply, expected(rows, grid[:12], *bounds(reply), child_len=15))
    empty = [c for c in reply["children"] if c["code"] != grid]
    assert empty and all(c["due"] == 0 and c["handling_rate"] is None for c in empty)


def _frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    for name in ("reported_at", "due_at", "handled_at", "closed_at"):
        frame[name] = pd.to_datetime(frame[name], utc=True)
    return frame


class Rollback(Exception):
    """Raised inside the transaction to roll it back while carrying the results out."""


# -- errors and scope -------------------------------------------------------------------------------------

def test_from_not_before_to_is_400(client, admin_headers):
    reply = client.get("/analysis/performance", params={"area": "110102", "from": "2026-05-01", "to": "2026-05-01"},
                       headers=admin_headers)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["field"] == "from" and "must be before `to`" in error["message"]


def test_bad_dates_are_400_with_an_example(client, admin_headers):
    for name, value in (("from", "2026-13-01"), ("to", "yesterday")):
        reply = client.get("/analysis/performance", params={"area": "110102", name: value}, headers=admin_headers)
        assert reply.status_code == 400
        error = reply.json()["error"]
        assert error["field"] == name and f"`{name}` must be an ISO 8601 date" in error["message"]
        assert repr(value) in error["message"]


def test_area_outside_scope_is_404_and_own_area_is_the_default(client, engine, demo):
    headers = {"Authorization": f"Bearer {make_token(engine, 'supervisor', '110102001')}"}
    reply = client.get("/analysis/performance", params={"area": "110102003"}, headers=headers)
    assert reply.status_code == 404 and "No area 110102003 in your area" in reply.json()["error"]["message"]
    assert client.get("/analysis/performance", params={"area": "110102"}, headers=headers).status_code == 404
    own = client.get("/analysis/performance", headers=headers)
    assert own.status_code == 200 and own.json()["area"]["code"] == "110102001"


def test_grid_workers_may_not_read_rates(client, engine, demo):
    headers = {"Authorization": f"Bearer {make_token(engine, 'grid_worker', '110102001')}"}
    reply = client.get("/analysis/performance", params={"area": "110102001"}, headers=headers)
    assert reply.status_code == 403 and "grid_worker" in reply.json()["error"]["message"]


def test_unknown_and_malformed_areas(client, admin_headers):
    missing = client.get("/analysis/performance", params={"area": "110102999"}, headers=admin_headers)
    assert missing.status_code == 404 and "110102999" in missing.json()["error"]["message"]
    assert client.get("/analysis/performance", params={"area": "11010"}, headers=admin_headers).status_code == 422
    unbound = client.get("/analysis/performance", headers=admin_headers)
    assert unbound.status_code == 400 and "area=CODE" in unbound.json()["error"]["message"]
