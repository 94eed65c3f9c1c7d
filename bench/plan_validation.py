"""Plan validation of the whole demo district (1,566 grids): GET /plans/{id}/validation on a fresh draft of the
active version against geo.plan_validation's statement alone, on the same database in the same run."""

import time
from contextlib import contextmanager

import psycopg
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import psycopg as pg_dialect

from bench.context import Bench
from bench.coverage import REPS, _client, _fmt, _get, _median_time
from bench.report import Result, Row
from geo.db import migrate
from geo.planning import validation as pv

TARGET_S = 2.0


def plan_validation(ctx: Bench) -> Result:
    with _client(ctx) as client, draft(ctx, client, "bench: validation") as plan_id:
        return _measure(ctx, client, plan_id)


@contextmanager
def draft(ctx: Bench, client, name: str):
    """A fresh draft of the active version for one benchmark, discarded afterwards (the bench database stays as
    the demo left it)."""
    migrate(ctx.engine.url.render_as_string(hide_password=False))  # drafts need the plans migrations
    created = client.post("/plans", json={"name": name})
    if created.status_code != 201:
        raise RuntimeError(f"POST /plans: {created.status_code} {created.text[:300]}")
    plan_id = created.json()["id"]
    try:
        yield plan_id
    finally:
        t0 = time.perf_counter()
        client.delete(f"/plans/{plan_id}")
        ctx.facts[f"DELETE /plans/{{id}} of the {name!r} draft"] = f"{time.perf_counter() - t0:.1f} s"


def _measure(ctx: Bench, client, plan_id: int) -> Result:
    path = f"/plans/{plan_id}/validation"
    t0 = time.perf_counter()
    first = _get(client, path, {})  # the first call on a fresh draft: no statistics for it yet
    first_s = time.perf_counter() - t0
    http_s, http_times, body = _median_time(lambda: _get(client, path, {}))

    sql = str(text(pv.VALIDATE_SQL).compile(dialect=pg_dialect.dialect()))
    params = pv.bind(plan_id, "", pv.parameters())
    with psycopg.connect(ctx.url) as conn:
        raw_s, raw_times, rows = _median_time(lambda: conn.execute(sql, params).fetchall())

    summary = body["summary"]
    notes = [
        f"Plan validation: GET {path} (defaults: target 300 ± 15%, sliver_m2 {pv.SLIVER_M2:g}, min_compactness "
        f"{pv.MIN_COMPACTNESS:g}) on a fresh draft of the active version, median of {REPS} after the first call "
        f"(first call {first_s:.2f} s; runs {_fmt(http_times)} s): {len(body['features'])} findings, "
        f"{summary['errors']} errors, {summary['fixable']} fixable, {summary['warnings']} warnings "
        f"{summary['by_kind']}. "
        f"Raw: geo.plan_validation.VALIDATE_SQL alone over psycopg, same parameters, all rows fetched, median of "
        f"{REPS} (runs {_fmt(raw_times)} s). Target: under {TARGET_S:g} s.",
    ]
    failures = []
    if len(rows) != len(body["features"]) or len(first["features"]) != len(body["features"]):
        failures.append(f"plan validation: HTTP {len(body['features'])} findings (first call "
                        f"{len(first['features'])}) vs raw {len(rows)} rows")
    if max(first_s, http_s) > TARGET_S:
        notes.append(f"Plan validation took {max(first_s, http_s):.2f} s: above the {TARGET_S:g} s target.")
    rows_out = [Row("plan validation, whole demo district (1,566 grids): one request vs its SQL alone (s)",
                    http_s, raw_s, "s"),
                Row("plan validation: first request on a fresh draft (s)", first_s, None, "s")]
    return Result(rows_out, notes, failures)
