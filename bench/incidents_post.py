"""POST /incidents over HTTP (wrk) against raw pgbench running the same transaction: insert, grid lookup, event."""

import json

from sqlalchemy import text

from bench.context import Bench
from bench.report import Result, Row
from bench.runners import CLIENTS, THREADS, pgbench, write_requests, wrk

CATEGORY, DEPARTMENT = "0101", "SZSR"


def raw_sql(version_id: int) -> str:
    """The core of intake as one statement: the point, its covering grid (lowest code), the row and its event."""
    return f"""
        WITH pt AS (SELECT ST_SetSRID(ST_MakePoint(lon, lat), 4326) AS g FROM bench_points WHERE id = :i),
        grid AS (SELECT a.id, a.code, a.version_id, a.worker_id FROM areas a, pt
                 WHERE a.level = 'grid' AND a.version_id = {int(version_id)} AND ST_Covers(a.geom, pt.g)
                 ORDER BY a.code LIMIT 1),
        ins AS (INSERT INTO incidents (category_code, source, status, reported_at, due_at, grid_id, grid_code,
                                       grid_version_id, assignee_id, department_code, geom)
                SELECT '{CATEGORY}', 'import', 'reported', now(), now() + interval '1 day', grid.id, grid.code,
                       grid.version_id, grid.worker_id, '{DEPARTMENT}', pt.g
                FROM pt LEFT JOIN grid ON true RETURNING id, status)
        INSERT INTO incident_events (incident_id, action, to_status) SELECT id, 'report', status FROM ins"""


def incidents_post(ctx: Bench) -> Result:
    points = ctx.sample_points()
    with ctx.engine.connect() as conn:
        before = conn.execute(text("SELECT count(*) FROM incidents")).scalar()
    raw = pgbench(ctx, "incidents_post_raw", raw_sql(ctx.active_version()))
    bodies = [json.dumps({"category": CATEGORY, "description": "bench", "lon": lon, "lat": lat})
              for _, lon, lat in points]
    http = wrk(ctx, "requests.lua", write_requests("incidents_post", ctx.bench_token(),
                                                   [("POST", "/incidents", body) for body in bodies]))
    with ctx.engine.connect() as conn:
        after = conn.execute(text("SELECT count(*) FROM incidents")).scalar()
    rows = [
        Row("POST /incidents throughput, vs the same transaction (req/s)", http["rps"], raw["rps"], "req/s"),
        *[Row(f"POST /incidents latency p{p} (ms)", http[f"p{p}"], raw[f"p{p}"], "ms") for p in (50, 95)],
    ]
    notes = [
        f"POST /incidents: wrk -t{THREADS} -c{CLIENTS} -d{int(ctx.seconds)}s, JSON reports at random sample points "
        f"(category {CATEGORY}); {http['requests']:,.0f} requests, {http['non2xx']:.0f} non-2xx. The service also "
        "checks for a likely duplicate (50 m, 24 h), computes the due time with the holiday calendar and returns "
        "the Feature with its event log.",
        f"Raw: pgbench -M prepared running one statement that inserts the point with its covering grid, worker and "
        f"department and appends the event ({raw['requests']:,} transactions); script in "
        "bench/reports/incidents_post_raw.pgbench.sql.",
        f"Rows written during both runs: {after - before:,}.",
    ]
    failures = []
    if http["non2xx"] or http["socket_errors"]:
        failures.append(f"POST /incidents: {http['non2xx']:.0f} non-2xx, {http['socket_errors']:.0f} socket errors")
    return Result(rows, notes, failures)
