"""Automatic balanced drafts (POST /plans/{id}/propose → GET /jobs/{id} until done) for one community, the Karhula
community with roads (2,208 real buildings) and the whole demo district, each against the raw SQL that reads the
communities' buildings — the only PostGIS part of the partitioning — on the same database in the same run."""

import statistics
import time

import psycopg
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import psycopg as pg_dialect

from bench.context import Bench
from bench.coverage import _client, _ensure_network, _fmt, _remove_network
from bench.plan_validation import draft
from bench.report import Result, Row
from geo.planning import propose

COMMUNITY = "110102003004"
DISTRICT = "110102"
SEED = 1
REPS = 3
COMMUNITY_TARGET_S = 10.0
DISTRICT_TARGET_S = 300.0


def plan_propose(ctx: Bench) -> Result:
    loaded = _ensure_network(ctx)
    try:
        with _client(ctx) as client, draft(ctx, client, "bench: propose") as plan_id:
            return _measure(ctx, client, plan_id)
    finally:
        if loaded:
            _remove_network(ctx)


def _propose(client, plan_id: int, area: str) -> tuple[float, float | None, dict]:
    """(seconds from POST to done, seconds until the job started writing, the finished job)."""
    revision = client.get(f"/plans/{plan_id}").json()["revision"]
    t0 = time.perf_counter()
    reply = client.post(f"/plans/{plan_id}/propose", json={"revision": revision, "area": area, "seed": SEED})
    if reply.status_code != 202:
        raise RuntimeError(f"POST propose {area}: {reply.status_code} {reply.text[:300]}")
    writing = None
    while True:
        job = client.get(reply.headers["location"]).json()
        if writing is None and (job["message"] or "").startswith("writing"):
            writing = time.perf_counter() - t0
        if job["status"] not in ("queued", "running"):
            return time.perf_counter() - t0, writing, job
        time.sleep(0.05)


def _raw(ctx: Bench, codes: list[str]) -> float:
    """The community polygon, buildings and roads statements of geo.propose for `codes`, over psycopg."""
    statements = [str(text(sql).compile(dialect=pg_dialect.dialect()))
                  for sql in (propose.COMMUNITY_SQL, propose.BUILDINGS_SQL, propose.ROADS_SQL)]
    with psycopg.connect(ctx.url) as conn:
        t0 = time.perf_counter()
        for code in codes:
            for sql in statements:
                conn.execute(sql, {"code": code}).fetchall()
        return time.perf_counter() - t0


def _check(job: dict, area: str, grids_in_db: int, failures: list[str]) -> dict:
    result = job.get("result") or {}
    if job["status"] != "done":
        failures.append(f"propose {area}: job {job['id']} ended {job['status']}: {job.get('error')}")
    elif result.get("grids") != grids_in_db or len(result.get("per_grid", [])) != grids_in_db:
        failures.append(f"propose {area}: the job reports {result.get('grids')} grids, the plan holds {grids_in_db}")
    return result


def _grids(ctx: Bench, plan_id: int, prefix: str) -> int:
    with ctx.engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM areas WHERE version_id = :v AND level = 'grid' "
                                 "AND starts_with(code, :p)"), {"v": plan_id, "p": prefix}).scalar()


def _measure(ctx: Bench, client, plan_id: int) -> Result:
    from fixtures import network_demo

    rows, notes, failures = [], [], []
    with ctx.engine.connect() as conn:
        district_codes = [c for c, _ in propose.communities(conn, DISTRICT)]
    for label, area in (("one community", COMMUNITY), ("Karhula community with roads", network_demo.COMMUNITY["code"])):
        runs = [_propose(client, plan_id, area) for _ in range(REPS)]
        wall = statistics.median(r[0] for r in runs)
        raw = statistics.median(_raw(ctx, [area]) for _ in range(5))
        result = _check(runs[-1][2], area, _grids(ctx, plan_id, area), failures)
        rows.append(Row(f"propose, {label} {area}: job submit → done vs its buildings SQL (s)", wall, raw, "s"))
        notes.append(
            f"Propose {label} {area}: POST /plans/{{id}}/propose (seed {SEED}) then GET /jobs/{{id}} every 50 ms "
            f"until done, median of {REPS} (runs {_fmt([r[0] for r in runs])} s; partitioning ended after "
            f"{_fmt([r[1] or 0 for r in runs])} s, the rest is the write: replace_community_grids + recount in one "
            f"transaction): {result.get('grids')} grids, {result.get('within_band')} within 300 ± 15%, "
            f"{len(result.get('explanations', []))} explained. Raw: geo.propose's community, buildings and roads "
            f"statements for it over psycopg, median of 5. Target: under {COMMUNITY_TARGET_S:g} s.")
        if wall > COMMUNITY_TARGET_S:
            notes.append(f"Propose {label} took {wall:.2f} s: above the {COMMUNITY_TARGET_S:g} s target.")
    wall, writing, job = _propose(client, plan_id, DISTRICT)
    raw = _raw(ctx, district_codes)
    result = _check(job, DISTRICT, _grids(ctx, plan_id, DISTRICT), failures)
    rows.append(Row(f"propose, whole district {DISTRICT} ({len(district_codes)} communities): job vs the buildings "
                    "SQL of every community (s)", wall, raw, "s"))
    notes.append(
        f"Propose the whole district {DISTRICT}: one job, {wall:.1f} s submit → done (partitioning "
        f"{(writing or 0):.1f} s, writing {wall - (writing or 0):.1f} s for {result.get('grids')} grids in one "
        f"transaction); {result.get('within_band')} of {result.get('grids')} grids within 300 ± 15%, "
        f"{len(result.get('explanations', []))} explained. Raw: the same three statements for all "
        f"{len(district_codes)} communities in a row over psycopg. Target: under {DISTRICT_TARGET_S:g} s.")
    if wall > DISTRICT_TARGET_S:
        notes.append(f"Propose the whole district took {wall:.1f} s: above the {DISTRICT_TARGET_S:g} s target.")
    return Result(rows, notes, failures)
