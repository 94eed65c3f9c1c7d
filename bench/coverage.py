"""Coverage analysis and network ETA, each against the raw SQL it runs, on the same database in the same run:

* response coverage of the whole demo district (GET /analysis/response-coverage) vs geo.coverage's statements;
* one hotspot run over the demo year (GET /analysis/hotspots, by=h3 and by=grid) vs geo.hotspots' SQL alone,
  with the in-process split SQL / H3 + Gi*;
* network ETA for the top 5 candidates (GET /dispatch/nearest?mode=network on the Karhula demo) vs raw
  pgr_dijkstraCost for the same 5 sources → 1 target.
"""

import re
import statistics
import time
from datetime import timedelta
from types import SimpleNamespace

import httpx
import numpy as np
import psycopg
from sqlalchemy import text

from bench.context import Bench
from bench.report import Result, Row
from bench.runners import CLIENTS, THREADS, pgbench, write_requests, wrk
from geo.analysis import coverage as cov
from geo.analysis import hotspots as hs
from geo.dispatch import routing

DISTRICT = "110102"
DISTANCE_M = 500
REPS = 5  # timed repetitions of each heavy request / statement set (median reported)
HOTSPOT_PARAMS = {"windows": 4, "alpha": 0.05, "permutations": 99, "resolution": 8}  # the endpoint's defaults
NET_POINTS = 300
NET_SPOT_CHECKS = 30


def _pg(sql: str) -> str:
    """asyncpg `$n` placeholders → psycopg `%(pn)s`."""
    return re.sub(r"\$(\d+)", r"%(p\1)s", sql.replace("%", "%%"))


def _args(*values) -> dict:
    return {f"p{i}": v for i, v in enumerate(values, 1)}


def _median_time(fn, reps: int = REPS) -> tuple[float, list[float], object]:
    """Median seconds of `reps` calls of fn (after one untimed warm-up call), all times, the last result."""
    out = fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, out


def _client(ctx: Bench) -> httpx.Client:
    return httpx.Client(base_url=ctx.server(), headers={"Authorization": f"Bearer {ctx.bench_token()}"}, timeout=300)


def _get(client: httpx.Client, path: str, params: dict) -> dict:
    r = client.get(path, params=params)
    if r.status_code != 200:
        raise RuntimeError(f"GET {path} {params}: {r.status_code} {r.text[:300]}")
    return r.json()


def _fmt(times: list[float]) -> str:
    return "/".join(f"{t:.2f}" for t in times)


# -- response coverage ---------------------------------------------------------------------------------------

def response_coverage(ctx: Bench) -> Result:
    with ctx.engine.begin() as conn:
        fresh = conn.execute(text("UPDATE responders SET position_at = now() WHERE position IS NOT NULL")).rowcount
        area_id = conn.execute(text("SELECT id FROM areas WHERE code = :c AND version_id IS NULL"),
                               {"c": DISTRICT}).scalar_one()
    max_age = float(cov.DEFAULT_MAX_AGE_S)

    def raw(conn: psycopg.Connection):
        with conn.transaction():
            assert conn.execute(_pg(cov.FRESH_SQL), _args(max_age)).fetchone()[0]
            conn.execute(_pg(cov.FRESH_TABLE_SQL[0]), _args(max_age))
            for sql in cov.FRESH_TABLE_SQL[1:]:
                conn.execute(sql)
            rows = conn.execute(_pg(cov.RESPONSE_SQL), _args(area_id)).fetchall()
        conn.execute(_pg(cov.RESPONDERS_SQL), _args(area_id, max_age)).fetchone()
        return rows

    with psycopg.connect(ctx.url, autocommit=True) as conn:  # so transaction() is one, and the temp table drops
        raw_s, raw_times, rows = _median_time(lambda: raw(conn))
    with _client(ctx) as client:
        params = {"area": DISTRICT, "distance": DISTANCE_M}
        http_s, http_times, body = _median_time(lambda: _get(client, "/analysis/response-coverage", params))

    households = np.array([r[1] for r in rows], dtype=float)
    dist = np.array([np.inf if r[4] is None else r[4] for r in rows], dtype=float)
    raw_covered = int(households[dist <= DISTANCE_M].sum())
    rows_out = [Row(f"response coverage, whole district {DISTRICT}, {DISTANCE_M} m: one request vs its SQL (s)",
                    http_s, raw_s, "s")]
    notes = [
        f"Response coverage: GET /analysis/response-coverage?area={DISTRICT}&distance={DISTANCE_M}, median of {REPS} "
        f"after a warm-up (runs {_fmt(http_times)} s); {body['buildings']:,} buildings, {body['households']:,} "
        f"households, share covered {body['share_covered']:.3f}; {fresh:,} responder positions stamped now() first "
        f"(freshness cut-off {max_age:.0f} s). The service adds the JSON of up to 1,000 uncovered buildings "
        "and the 100..2000 m curve.",
        f"Raw: geo.coverage's own statements over psycopg on one connection — the freshness EXISTS, the temp table "
        f"of fresh available responders + GiST index + ANALYZE, RESPONSE_SQL (KNN-bounded geodesic nearest per "
        f"building, all rows fetched) and the responder counts; median of {REPS} (runs {_fmt(raw_times)} s).",
    ]
    failures = []
    if len(rows) != body["buildings"] or raw_covered != body["households_covered"]:
        failures.append(f"response coverage: HTTP {body['buildings']} buildings / {body['households_covered']} "
                        f"households covered vs raw {len(rows)} / {raw_covered}")
    if http_s > 5:
        notes.append(f"Response coverage {http_s:.2f} s is above the 5 s target.")
    return Result(rows_out, notes, failures)


# -- hotspots ------------------------------------------------------------------------------------------------

def _demo_year(ctx: Bench) -> tuple[str, str]:
    """[from, to) of the demo's synthetic incidents: the 365 days before the loaded demo's anchor (local dates)."""
    from fixtures.load import anchor
    from geo.incidents.timelimits import TZ

    with ctx.engine.connect() as conn:
        end = anchor(conn).astimezone(TZ)
    return (end - timedelta(days=365)).date().isoformat(), (end + timedelta(days=1)).date().isoformat()


def hotspots(ctx: Bench) -> Result:
    start, end = _demo_year(ctx)
    t0, t1, _ = hs.window(start, end, hs.datetime.now(hs.TZ))
    with ctx.engine.connect() as conn:
        area_id = conn.execute(text("SELECT id FROM areas WHERE code = :c AND version_id IS NULL"),
                               {"c": DISTRICT}).scalar_one()
    p = HOTSPOT_PARAMS
    rows_out, notes, failures = [], [], []
    with psycopg.connect(ctx.url, autocommit=True) as conn, _client(ctx) as client:
        for by in ("h3", "grid"):
            def sql_only(by=by):
                incidents = conn.execute(_pg(hs.INCIDENTS_SQL), _args(DISTRICT, "", t0, t1, None)).fetchall()
                if by == "h3":
                    extra = conn.execute(_pg(hs.AREA_GEOJSON_SQL), _args(area_id)).fetchone()[0]
                else:
                    extra = (conn.execute(_pg(hs.GRIDS_SQL), _args(DISTRICT)).fetchall(),
                             conn.execute(_pg(hs.GRID_NEIGHBOURS_SQL), _args(DISTRICT)).fetchall())
                return incidents, extra

            sql_s, sql_times, (incidents, extra) = _median_time(sql_only)
            lon = np.array([r[0] for r in incidents], dtype=float)
            lat = np.array([r[1] for r in incidents], dtype=float)
            times = [r[3] for r in incidents]

            def compute(by=by, extra=extra, lon=lon, lat=lat, times=times, incidents=incidents):
                if by == "h3":
                    ids, cell_of, neighbours, _ = hs.h3_cells(extra, lon, lat, p["resolution"])
                    keep_times = times
                else:
                    grids, pairs = extra
                    ids = [g[0] for g in grids]
                    index = {c: i for i, c in enumerate(ids)}
                    neighbours = {c: [] for c in ids}
                    for a, b in pairs:
                        neighbours[a].append(b)
                        neighbours[b].append(a)
                    cell_of = [index.get(r[2], -1) for r in incidents]
                    keep_times = [t for t, c in zip(times, cell_of, strict=False) if c >= 0]
                    cell_of = [c for c in cell_of if c >= 0]
                return hs.analyse(ids, neighbours, np.asarray(cell_of, dtype=int), keep_times, t0, t1,
                                  p["windows"], p["alpha"], p["permutations"])

            gi_s, gi_times, result = _median_time(compute, reps=3)
            params = {"area": DISTRICT, "from": start, "to": end, "by": by, **p}
            http_s, http_times, body = _median_time(lambda params=params: _get(client, "/analysis/hotspots", params),
                                                  reps=3)

            hot = int((result["significant"] & (result["z"] > 0)).sum())
            rows_out += [
                Row(f"hotspots by={by}, demo year: one request vs its SQL alone (s)", http_s, sql_s, "s"),
                Row(f"hotspots by={by}: in-process {'H3 cells + ' if by == 'h3' else ''}Gi* computation alone (s)",
                    gi_s, None, "s"),
            ]
            notes.append(
                f"Hotspots by={by}: GET /analysis/hotspots?area={DISTRICT}&from={start}&to={end}&by={by}"
                f"{'&resolution=8' if by == 'h3' else ''}&windows=4&alpha=0.05&permutations=99, median of 3 after a "
                f"warm-up (runs {_fmt(http_times)} s): {body['incidents']:,} incidents in {body['cells']:,} cells, "
                f"{body['hot_cells']} hot, {body['cold_cells']} cold, {body['persistent_cells']} persistent. Raw: "
                f"geo.hotspots' statements over psycopg (incident rows"
                f"{', area GeoJSON' if by == 'h3' else ', grids, grid adjacency'}"
                f"), median of {REPS} (runs {_fmt(sql_times)} s). Split: SQL {sql_s:.2f} s + "
                f"{'h3_cells + ' if by == 'h3' else ''}analyse() {gi_s:.2f} s in-process (Gi* with 99 "
                f"permutations over the year + 4 analytical window runs, BH) ≈ {sql_s + gi_s:.2f} s; the rest is "
                "asyncpg decoding, GeoJSON and HTTP.")
            if body["cells"] != len(result["counts"]) or body["hot_cells"] != hot \
                    or body["incidents"] != int(result["counts"].sum()):
                failures.append(f"hotspots by={by}: HTTP {body['cells']} cells / {body['incidents']} incidents / "
                                f"{body['hot_cells']} hot vs in-process {len(result['counts'])} / "
                                f"{int(result['counts'].sum())} / {hot}")
    return Result(rows_out, notes, failures)


# -- network ETA ---------------------------------------------------------------------------------------------

def _ensure_network(ctx: Bench) -> bool:
    """Migrate (road network tables) and load the Karhula demo; True if this call loaded it."""
    from fixtures import network_demo
    from geo.db import migrate

    migrate(ctx.engine.url.render_as_string(hide_password=False))
    report = network_demo.load(ctx.engine)
    return not report.skipped


def _remove_network(ctx: Bench) -> None:
    from fixtures import network_demo

    with ctx.engine.begin() as conn:
        network_demo._remove(conn)
        conn.execute(text("DELETE FROM road_networks WHERE name = :n"), {"n": network_demo.NETWORK})
        conn.execute(text("DROP TABLE IF EXISTS bench_net_queries"))


def network_eta(ctx: Bench) -> Result:
    loaded = _ensure_network(ctx)
    try:
        return _network_eta(ctx, loaded)
    finally:
        if loaded:
            _remove_network(ctx)


def _network_eta(ctx: Bench, loaded: bool) -> Result:
    from fixtures import network_demo

    with ctx.engine.begin() as conn:
        fresh = conn.execute(text("UPDATE responders SET position_at = now(), status = 'available' "
                                  "WHERE name LIKE 'Karhula patrol %'")).rowcount
        network_id = conn.execute(text("SELECT id FROM road_networks WHERE name = :n"),
                                  {"n": network_demo.NETWORK}).scalar_one()
        points = [tuple(r) for r in conn.execute(text("""
            SELECT ST_X(d.geom), ST_Y(d.geom)
            FROM areas a, ST_Dump(ST_GeneratePoints(a.geom, :n, 7)) d
            WHERE a.code = :c AND a.version_id IS NULL"""), {"n": NET_POINTS, "c": network_demo.DISTRICT["code"]})]
    paths = [f"/dispatch/nearest?lon={lon!r}&lat={lat!r}&k=5&mode=network" for lon, lat in points]

    # The service's answer at every point (untimed; also warms both workers): its top 5 are the raw sources.
    with _client(ctx) as client:
        answers = []
        for path in paths:
            r = client.get(path)
            if r.status_code != 200:
                raise RuntimeError(f"GET {path}: {r.status_code} {r.text[:300]}")
            answers.append(r.json()["features"])

    # Raw inputs per point: the 5 responders' vertices → the point's vertex (routing's own snap), the edge query.
    queries, legs = [], []
    with psycopg.connect(ctx.url) as conn:
        for (lon, lat), feats in zip(points, answers, strict=False):
            cands = [(f["id"], *f["geometry"]["coordinates"]) for f in feats]
            pts = [(lon, lat)] + [(c[1], c[2]) for c in cands]
            snaps = conn.execute(_pg(routing._SNAP), _args(network_id, [p[0] for p in pts],
                                                            [p[1] for p in pts])).fetchall()
            target, sources = snaps[0][1], [s[1] for s in snaps[1:]]
            queries.append((routing.edges_sql(network_id, pts), sources, target))
            legs.append((snaps[0][2], [s[2] for s in snaps[1:]], cands, feats))
        conn.execute("DROP TABLE IF EXISTS bench_net_queries")
        conn.execute("CREATE TABLE bench_net_queries (id int PRIMARY KEY, edges text, sources bigint[], "
                     "target bigint)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO bench_net_queries VALUES (%s, %s, %s, %s)",
                            [(i, q, s, t) for i, (q, s, t) in enumerate(queries, 1)])
        conn.execute("ANALYZE bench_net_queries")
        conn.commit()

        # Spot check: the service's ETA = raw dijkstra cost + both snap legs on foot.
        problems = []
        for i in range(min(NET_SPOT_CHECKS, len(points))):
            q, sources, target = queries[i]
            costs = dict(conn.execute("SELECT start_vid, agg_cost FROM pgr_dijkstraCost(%s, %s::bigint[], %s, "
                                      "directed => true)", (q, sources, target)).fetchall())
            tsnap, ssnaps, cands, feats = legs[i]
            for vid, snap_m, feat in zip(sources, ssnaps, feats, strict=False):
                expect = 0.0 if vid == target else costs.get(vid)
                got = feat["properties"]["eta_s"]
                if expect is None or got is None:
                    if (expect is None) != (got is None):
                        problems.append(f"point {points[i]}: responder {feat['id']} HTTP eta {got} vs raw {expect}")
                    continue
                expect += (snap_m + tsnap) / routing.WALK_MPS
                if abs(expect - got) > 0.11:
                    problems.append(f"point {points[i]}: responder {feat['id']} HTTP eta {got} vs raw {expect:.1f}")

    raw = pgbench(SimpleNamespace(points=queries, seconds=ctx.seconds, url=ctx.url), "network_eta_raw",
                  "SELECT count(*), sum(c.agg_cost) FROM bench_net_queries q, "
                  "pgr_dijkstraCost(q.edges, q.sources, q.target, directed => true) c WHERE q.id = :i")
    http = wrk(ctx, "requests.lua", write_requests("network_eta", ctx.bench_token(),
                                                   [("GET", p, None) for p in paths]))
    with ctx.engine.connect() as conn:
        size = conn.execute(text("SELECT (SELECT count(*) FROM road_vertices WHERE network_id = :n), "
                                 "(SELECT count(*) FROM road_edges WHERE network_id = :n)"), {"n": network_id}).one()
    rows = [
        Row("/dispatch/nearest k=5 mode=network (Karhula): throughput vs raw pgr_dijkstraCost 5→1 (req/s)",
            http["rps"], raw["rps"], "req/s"),
        *[Row(f"/dispatch/nearest k=5 mode=network latency p{q}, vs raw pgr_dijkstraCost (ms)", http[f"p{q}"],
              raw[f"p{q}"], "ms") for q in (50, 95)],
    ]
    notes = [
        f"Network ETA: Karhula demo ({'loaded for this run and removed after' if loaded else 'already loaded'}; "
        f"network 'karhula', {size[0]:,} vertices, {size[1]:,} edges, {fresh} patrols stamped fresh and available). "
        f"wrk -t{THREADS} -c{CLIENTS} -d{int(ctx.seconds)}s over {len(points)} seeded random points in area "
        f"990101: GET /dispatch/nearest?k=5&mode=network; {http['requests']:,.0f} requests, "
        f"{http['non2xx']:.0f} non-2xx. Per request the service runs the straight KNN for the top "
        "network_candidates (default 10), picks the network, snaps all points to vertices, and runs one pgr_dijkstra "
        "one-to-many over the reversed graph (with the fastest route's geometry), then re-ranks by ETA.",
        f"Raw: pgbench -M prepared, one pgr_dijkstraCost(edges, 5 sources, 1 target, directed) per transaction "
        f"with the vertices of the 5 responders the service returned at the same point and routing.edges_sql's "
        f"bounding-box edge query, snapping precomputed ({raw['requests']:,} transactions).",
        f"Correctness: at {min(NET_SPOT_CHECKS, len(points))} points, every returned eta_s was compared with raw "
        f"pgr_dijkstraCost + both snap legs at {routing.WALK_MPS} m/s: {len(problems)} disagreements (> 0.11 s).",
        *problems[:3],
    ]
    failures = [f"network ETA disagreed with raw pgr_dijkstraCost {len(problems)} times"] if problems else []
    if http["non2xx"] or http["socket_errors"]:
        failures.append(f"network ETA: {http['non2xx']:.0f} non-2xx, {http['socket_errors']:.0f} socket errors")
    return Result(rows, notes, failures)
