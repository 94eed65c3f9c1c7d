"""Figure 2: GET /grids/at over HTTP (wrk) against the same lookup as raw SQL (pgbench), plus a correctness check."""

import json
import random
from types import SimpleNamespace

import httpx
import numpy as np
import psycopg
import shapely
from pyproj import Geod
from sqlalchemy import text
from sqlalchemy.dialects import postgresql

from bench.context import Bench
from bench.report import Result, Row
from bench.runners import CLIENTS, THREADS, interleaved, pgbench, write_requests, wrk
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


OUTSIDE_M = (1_000, 10_000, 110_000)


def _outside(ctx: Bench, metres: float, n: int = 300) -> list[tuple[float, float]]:
    """n seeded points `metres` outwards (away from the centre) from random vertices of the grids' outline,
    each checked to lie outside every grid."""
    with ctx.engine.connect() as conn:
        outline = shapely.from_wkb(conn.execute(text(
            "SELECT ST_AsBinary(ST_Union(geom)) FROM areas WHERE level = 'grid' AND version_id = :v"),
            {"v": ctx.version_id}).scalar_one())
    geod, rng = Geod(ellps="WGS84"), np.random.default_rng(int(metres))
    largest = outline if outline.geom_type == "Polygon" else max(outline.geoms, key=lambda g: g.area)
    ring, centre = shapely.get_coordinates(largest.exterior), outline.centroid
    points: list[tuple[float, float]] = []
    while len(points) < n:
        x, y = ring[int(rng.integers(len(ring)))]
        azimuth, _, _ = geod.inv(centre.x, centre.y, x, y)
        lon, lat, _ = geod.fwd(x, y, azimuth, metres)
        if not outline.covers(shapely.Point(lon, lat)):
            points.append((lon, lat))
    return points


def _bbox_mix(ctx: Bench, n: int = 2000) -> tuple[list[tuple[float, float]], float]:
    """n seeded random points over the district's bounding box, and the share of them outside every grid."""
    with ctx.engine.connect() as conn:
        rows = conn.execute(text("""
            WITH box AS (SELECT ST_Extent(geom) AS b FROM areas WHERE level = 'district'),
            pts AS (SELECT ST_XMin(b) + (ST_XMax(b) - ST_XMin(b)) * random() AS lon,
                           ST_YMin(b) + (ST_YMax(b) - ST_YMin(b)) * random() AS lat FROM box, generate_series(1, :n))
            SELECT lon, lat, NOT EXISTS (SELECT FROM areas a WHERE a.level = 'grid' AND a.version_id = :v
                                         AND ST_Covers(a.geom, ST_SetSRID(ST_MakePoint(lon, lat), 4326))) AS outside
            FROM pts"""), {"n": n, "v": ctx.version_id}).all()
    return [(r.lon, r.lat) for r in rows], sum(r.outside for r in rows) / len(rows)


def grids_at_outside(ctx: Bench) -> Result:
    """Points outside every grid (a 404 naming the nearest) at 1, 10 and 110 km, and the bounding-box mix, each
    against inside-only points in the same alternating rounds."""
    inside = ctx.sample_points()
    ctx.active_version()
    token = ctx.bench_token()

    def requests(name: str, points) -> object:
        return write_requests(name, token, [("GET", f"/grids/at?lon={lon!r}&lat={lat!r}", None)
                                            for lon, lat in points])

    mix, outside_share = _bbox_mix(ctx)
    data = {"inside": requests("grids_at_inside", [(lon, lat) for _, lon, lat in inside]),
            "bbox": requests("grids_at_bbox", mix),
            **{f"{m // 1000} km": requests(f"grids_at_out_{m}", _outside(ctx, m)) for m in OUTSIDE_M}}
    ctx.server()

    def at(seconds):
        return SimpleNamespace(seconds=seconds, server=ctx.server)

    runs = interleaved({name: (lambda s, path=path: wrk(at(s), "requests.lua", path)) for name, path in data.items()},
                       ctx.seconds, rounds=2)
    hit = runs["inside"]
    rows = [Row(f"/grids/at outside every grid, {name} out: latency p95 vs a point inside (ms)", runs[name]["p95"],
                hit["p95"], "ms") for name in data if name.endswith("km")]
    rows.append(Row(f"/grids/at over the district's bounding box ({outside_share:.0%} outside) vs inside-only "
                    "(req/s)", runs["bbox"]["rps"], hit["rps"], "req/s"))
    notes = [f"/grids/at outside every grid: wrk -t{THREADS} -c{CLIENTS}, 2 alternating rounds of "
             f"{ctx.seconds / 2:g} s per set (inside sample points; random points over the district's bounding box; "
             "300 points each 1, 10 and 110 km outwards from the grids' outline); req/s per set: "
             + ", ".join(f"{name} {runs[name]['rps']:,.0f} (p95 {runs[name]['p95']:.2f} ms)" for name in data)
             + ". A point outside is answered by a KNN scan of 8 grids in Web Mercator whose geodesic metres prove "
             "the nearest (geo.areas.hierarchy.nearest_proven), else by ranking every grid within the Mercator "
             "reach of the best candidate's metres (ST_DWithin on the same index)."]
    return Result(rows, notes, [])
