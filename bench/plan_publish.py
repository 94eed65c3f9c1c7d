"""Publishing a plan with one community reshaped (POST /plans/{id}/publish: validation, impact, the version swap and
the reassignment of every open incident with its events and audit) against the raw set-based UPDATE that moves the
same open incidents onto the new grids, on the same database in the same run.

It changes the active version of the bench database: the reshaped copy is published, then a copy of the original
is published back, so the bench database ends with the demo's own grids (under a new version id).
"""

import statistics
import time

from sqlalchemy import text

from bench.context import Bench
from bench.coverage import _client, _fmt, _median_time
from bench.report import Result, Row
from geo.db import migrate
from geo.planning import diff as plan_diff
from geo.planning import publish
from geo.planning import validation as plan_validation

REPS = 5  # rolled-back runs of each statement (median)

# The whole job as one would write it by hand: each open incident to the lowest-coded covering grid of the new
# version and that grid's worker; no events, no outside-every-grid handling, no audit.
RAW_UPDATE = text("""
UPDATE incidents i SET grid_id = t.id, grid_code = t.code, grid_version_id = :v, assignee_id = t.worker_id,
                       updated_at = now()
FROM incidents o
CROSS JOIN LATERAL (SELECT a.id, a.code, a.worker_id FROM areas a
                    WHERE a.version_id = :v AND a.level = 'grid' AND ST_Covers(a.geom, o.geom)
                    ORDER BY a.code LIMIT 1) t
WHERE i.id = o.id AND o.status = ANY(:open)
RETURNING i.id, i.grid_code""")

# Open incidents not in the lowest-coded grid of the active version covering them (or not under it at all).
MISPLACED = text("""
SELECT count(*) FROM incidents i
LEFT JOIN LATERAL (SELECT a.code FROM areas a WHERE a.version_id = :v AND a.level = 'grid'
                   AND ST_Covers(a.geom, i.geom) ORDER BY a.code LIMIT 1) t ON true
WHERE i.status = ANY(:open)
  AND (i.grid_code IS DISTINCT FROM t.code OR (t.code IS NOT NULL AND i.grid_version_id IS DISTINCT FROM :v))""")

# One community moved around: a 50 m strip of a grid goes to its neighbour, and the community's workers rotate.
RESHAPE = text("""
WITH pair AS (SELECT a.code AS a, b.code AS b FROM areas a
              JOIN areas b ON b.version_id = a.version_id AND b.code > a.code AND left(b.code, 12) = :c
               AND a.geom && b.geom AND ST_Relate(a.geom, b.geom, 'F***1****')
              WHERE a.version_id = :v AND left(a.code, 12) = :c ORDER BY a.code, b.code LIMIT 1),
piece AS (SELECT pair.a, pair.b, ST_Intersection(gb.geom, ST_Buffer(ga.geom, 0.0005)) AS g
          FROM pair JOIN areas ga ON ga.version_id = :v AND ga.code = pair.a
          JOIN areas gb ON gb.version_id = :v AND gb.code = pair.b)
UPDATE areas x SET geom = ST_Multi(CASE WHEN x.code = piece.a THEN ST_Union(x.geom, piece.g)
                                        ELSE ST_Difference(x.geom, piece.g) END)
FROM piece WHERE x.version_id = :v AND x.code IN (piece.a, piece.b)""")
ROTATE_WORKERS = text("""
WITH g AS (SELECT id, worker_id, row_number() OVER (ORDER BY code) AS n, count(*) OVER () AS k FROM areas
           WHERE version_id = :v AND level = 'grid' AND left(code, 12) = :c)
UPDATE areas x SET worker_id = nxt.worker_id
FROM g cur JOIN g nxt ON nxt.n = cur.n % cur.k + 1
WHERE x.id = cur.id""")


def plan_publish(ctx: Bench) -> Result:
    migrate(ctx.engine.url.render_as_string(hide_password=False))  # plans need migration 0004+
    original = ctx.active_version()
    with ctx.engine.connect() as conn:
        community = conn.execute(text("""
            SELECT left(grid_code, 12) FROM incidents WHERE status = ANY(:open) AND grid_version_id = :v
            GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1"""), {"open": plan_diff.OPEN, "v": original}).scalar_one()
        open_count = conn.execute(text("SELECT count(*) FROM incidents WHERE status = ANY(:open)"),
                                  {"open": plan_diff.OPEN}).scalar_one()
    with _client(ctx) as client:
        forward = _draft(client, "bench: publish, one community reshaped", None)
        with ctx.engine.begin() as conn:
            conn.execute(RESHAPE, {"v": forward, "c": community})
            conn.execute(ROTATE_WORKERS, {"v": forward, "c": community})
            from geo.planning import plans

            plans.recount(conn, forward, list(conn.execute(text(
                "SELECT code FROM areas WHERE version_id = :v AND left(code, 12) = :c"),
                {"v": forward, "c": community}).scalars()))
        with ctx.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE areas"))

        raw_s, raw_times, raw_rows = _median_time(
            lambda: _rolled_back(ctx, RAW_UPDATE, {"v": forward, "open": plan_diff.OPEN}), REPS)
        stmt_params = {"old": None, "new": forward, "open": plan_diff.OPEN, "actor": None, "note": "bench"}
        stmt_s, stmt_times, counts = _median_time(lambda: _rolled_back(ctx, publish._REASSIGN, stmt_params), REPS)
        with ctx.engine.connect() as conn:
            t0 = time.perf_counter()
            passes = plan_validation.validate(conn, forward)["summary"]["passes"]
            validate_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        preview = client.get(f"/plans/{forward}/diff", params={"limit": 0})
        diff_s = time.perf_counter() - t0

        published, times = [], []
        back = _draft(client, "bench: publish back", original)
        for plan in (forward, back):
            revision = client.get(f"/plans/{plan}").json()["revision"]
            t0 = time.perf_counter()
            # publishing the original back is a deliberate revert: it is copied from a version no longer active
            reply = client.post(f"/plans/{plan}/publish", json={"revision": revision, "force": plan == back})
            times.append(time.perf_counter() - t0)
            if reply.status_code != 200:
                raise RuntimeError(f"POST /plans/{plan}/publish: {reply.status_code} {reply.text[:400]}")
            published.append(reply.json())
            if plan == forward:
                with ctx.engine.connect() as conn:
                    placed = dict(conn.execute(text("SELECT id, grid_code FROM incidents WHERE status = ANY(:open)"),
                                               {"open": plan_diff.OPEN}).all())
                    misplaced = conn.execute(MISPLACED, {"v": forward, "open": plan_diff.OPEN}).scalar()
    publish_s = statistics.median(times)

    first = published[0]
    rows = [Row(f"publish a plan (one community reshaped, {open_count:,} open incidents): POST /plans/{{id}}/publish "
                "vs the raw reassignment UPDATE (s)", publish_s, raw_s, "s"),
            Row("publish: the reassignment statement alone (grid, worker rule, events, suggestions) vs the raw "
                "UPDATE (s)", stmt_s, raw_s, "s")]
    notes = [
        f"Plan publish: community {community} of the demo reshaped (a 50 m strip moves between two neighbouring "
        f"grids, its workers rotate), then a copy of the original published back: {_fmt(times)} s. Forward: "
        f"{first['reassigned']} incidents reassigned (one event each), {first['moved']} open incidents moved to the "
        f"new version's grid rows, {first['workers_affected']} workers affected; diff summary {first['summary']}. "
        f"Inside it: validation {validate_s:.2f} s (geo.plan_validation, whole district), impact diff "
        f"{diff_s:.2f} s (GET /plans/{{id}}/diff?limit=0), then the swap and reassignment under "
        "LOCK TABLE incidents — intake waits only for that last part (the statement alone: "
        f"{_fmt(stmt_times)} s, rolled back, {counts['events']} events).",
        f"Raw: one UPDATE … FROM incidents CROSS JOIN LATERAL (lowest-code ST_Covers grid of the new version) over "
        f"the open incidents, rolled back, median of {REPS} (runs {_fmt(raw_times)} s); same database, areas "
        "analysed first.",
    ]
    failures = []
    raw_codes = dict(raw_rows)
    moved_codes = {k: v for k, v in placed.items() if k in raw_codes}
    if not passes or preview.status_code != 200:
        failures.append(f"plan publish: the reshaped draft does not validate ({passes}) or the diff failed "
                        f"({preview.status_code})")
    if moved_codes != raw_codes:
        wrong = sum(1 for k, v in raw_codes.items() if moved_codes.get(k) != v)
        failures.append(f"plan publish: {wrong} open incidents in another grid than the raw UPDATE puts them")
    if misplaced:
        failures.append(f"plan publish: {misplaced} open incidents not in their covering grid of the new version")
    if first["reassigned"] != preview.json()["summary"]["incidents_reassigned"]:
        failures.append(f"plan publish: {first['reassigned']} reassigned, the diff predicted "
                        f"{preview.json()['summary']['incidents_reassigned']}")
    return Result(rows, notes, failures)


def _draft(client, name: str, based_on: int | None) -> int:
    reply = client.post("/plans", json={"name": name, "based_on": based_on})
    if reply.status_code != 201:
        raise RuntimeError(f"POST /plans: {reply.status_code} {reply.text[:300]}")
    return reply.json()["id"]


def _rolled_back(ctx: Bench, statement, params: dict):
    with ctx.engine.connect() as conn:
        with conn.begin() as transaction:
            result = conn.execute(statement, params)
            out = result.mappings().one() if statement is publish._REASSIGN else [tuple(r) for r in result]
            transaction.rollback()
    return out
