"""Figure 2: GET /grids/at over HTTP (wrk) against the same lookup as raw SQL (pgbench), plus a correctness check."""

import json
import random

import httpx
import psycopg
from sqlalchemy.dialects import postgresql

from bench.context import Bench
from bench.report import Result, Row
from bench.runners import CLIENTS, THREADS, pgbench, write_requests, wrk
from geo.areas.hierarchy import STATEMENTS

LON, LAT = 123.456789, -12.3456789  # placeholders in the compiled SQL, replaced by reads from bench_points
SPOT_CHECKS = 200
POINT_SQL = "(SELECT {} FROM bench_points WHERE id = :i)"


def service_sql() -> str:
    """The service's own statement, STATEMENTS["grid_at"], compiled for an admin (scope '') and the active
    version, with lon/lat read from bench_points row :i (a pgbench variable)."""
    stmt = STATEMENTS["grid_at"].params(lon=LON, lat=LAT, scope="", version=None)
    sql = str(stmt.compile(dialect=postgresql.dialect(paramstyle="named"), compile_kwargs={"literal_binds": True}))
    for value, column in ((LON, "lon"), (LAT, "lat")):
        if sql.count(repr(value)) != 1:
            raise RuntimeError(f"cannot find the {column} placeholder in the compiled grid_at SQL:\n{sql}")
        sql = sql.replace(repr(value), POINT_SQL.format(column))
    return sql


def bare_sql(version_id: int, lon: str = POINT_SQL.format("lon"), lat: str = POINT_SQL.format("lat")) -> str:
    """Just the covering grid's code: the GiST lookup without the Feature JSON, joins or parent chain."""
    return (f"SELECT code FROM areas WHERE version_id = {int(version_id)} "
            f"AND ST_Covers(geom, ST_SetSRID(ST_MakePoint({lon}, {lat}), 4326)) ORDER BY code LIMIT 1")


def spot_check(ctx: Bench) -> tuple[int, int, list[str]]:
    """For SPOT_CHECKS random sample points: HTTP `id` == raw SQL code; also count byte-equal-as-JSON Features."""
    headers = {"Authorization": f"Bearer {ctx.bench_token()}"}
    picks = random.Random(7).sample(ctx.points, min(SPOT_CHECKS, len(ctx.points)))
    same_id, same_feature, problems = 0, 0, []
    bare = bare_sql(ctx.version_id, "%s", "%s")
    with httpx.Client(base_url=ctx.server(), headers=headers, timeout=10) as client, \
            psycopg.connect(ctx.url) as conn, ctx.engine.connect() as sa:
        for point_id, lon, lat in picks:
            response = client.get("/grids/at", params={"lon": repr(lon), "lat": repr(lat)})
            code = conn.execute(bare, (lon, lat)).fetchone()
            if response.status_code != 200 or code is None or response.json().get("id") != code[0]:
                problems.append(f"point {point_id} ({lon!r}, {lat!r}): HTTP {response.status_code} "
                                f"{response.text[:120]!r} vs SQL {code and code[0]!r}")
                continue
            same_id += 1
            feature = sa.execute(STATEMENTS["grid_at"], {"lon": lon, "lat": lat, "scope": "", "version": None}).scalar()
            same_feature += json.loads(feature) == response.json()
    return same_id, same_feature, problems


def grids_at(ctx: Bench) -> Result:
    points = ctx.sample_points()
    full = pgbench(ctx, "grid_at_full", service_sql())
    bare = pgbench(ctx, "grid_at_bare", bare_sql(ctx.version_id))
    data = write_requests("grids_at", ctx.bench_token(),
                          [("GET", f"/grids/at?lon={lon!r}&lat={lat!r}", None) for _, lon, lat in points])
    same_id, same_feature, problems = spot_check(ctx)  # also warms both workers' pools and token caches
    http = wrk(ctx, "requests.lua", data)
    rows = [
        Row("/grids/at throughput, vs the same SQL (req/s)", http["rps"], full["rps"], "req/s"),
        Row("/grids/at throughput, vs the bare ST_Covers lookup (req/s)", http["rps"], bare["rps"], "req/s"),
        *[Row(f"/grids/at latency p{p}, vs the same SQL (ms)", http[f"p{p}"], full[f"p{p}"], "ms")
          for p in (50, 95, 99)],
        Row("bare ST_Covers lookup latency p50 (ms)", None, bare["p50"], "ms"),
    ]
    checked = min(SPOT_CHECKS, len(points))
    notes = [
        f"/grids/at: `wangge serve --workers 2` on wangge_bench, `wrk -t{THREADS} -c{CLIENTS} -d{int(ctx.seconds)}s "
        f"--latency -s bench/requests.lua` over random sample points, admin bearer token; "
        f"{http['requests']:,.0f} requests, {http['non2xx']:.0f} non-2xx, {http['socket_errors']:.0f} socket errors.",
        f"Raw 'same SQL': pgbench -n -M prepared -c {CLIENTS} -j {THREADS} -T {int(ctx.seconds)} running the SQL "
        "compiled from `geo.areas.STATEMENTS[\"grid_at\"]` (literal binds: admin scope, active version) with lon/lat "
        f"read from `bench_points` by a random id ({full['requests']:,} transactions, {full['failed']} failed); "
        "script in bench/reports/grid_at_full.pgbench.sql.",
        f"Raw 'bare': `{bare_sql(ctx.version_id, 'lon', 'lat')}`, lon/lat from `bench_points` the same way "
        f"({bare['requests']:,} transactions, {bare['failed']} failed). pgbench latencies from a "
        "10% transaction log sample.",
        f"Correctness: {same_id}/{checked} random sample points got the same grid `id` over HTTP as the raw SQL "
        f"code; {same_feature}/{same_id} of those Features are equal as JSON to the raw statement's answer.",
        *problems[:5],
    ]
    failures = []
    if http["non2xx"] or http["socket_errors"]:
        failures.append(f"wrk saw {http['non2xx']:.0f} non-2xx responses and {http['socket_errors']:.0f} socket "
                        "errors on /grids/at (every point is inside a grid, so all should be 200)")
    if same_id != checked:
        failures.append(f"/grids/at disagreed with raw SQL on {checked - same_id} of {checked} points")
    return Result(rows, notes, failures)
