"""`python -m bench`: run the benchmarks side by side with raw PostGIS and write bench/reports/latest.md."""

import argparse
import shutil
import subprocess
import sys
import time
import traceback

from sqlalchemy import text

from api.settings import Settings
from bench import (
    bulk_import,
    coverage,
    dispatch,
    grids_at,
    incidents_post,
    load_time,
    plan_propose,
    plan_publish,
    plan_validation,
    report,
)
from bench.context import REPORTS, Bench, bench_url
from bench.report import Result
from geo.db import sync_engine

# Run in this order; each takes the Bench and returns a Result. demo_load (re)creates and loads the database,
# so it comes first; later ones expect the demo district. Add new benchmarks to the end of this list.
BENCHMARKS = [load_time.demo_load, grids_at.grids_at, grids_at.grids_at_outside, incidents_post.incidents_post,
              dispatch.dispatch_nearest, dispatch.dispatch_ingest, bulk_import.bulk_import,
              coverage.response_coverage, coverage.hotspots, coverage.network_eta,
              plan_validation.plan_validation, plan_propose.plan_propose,
              plan_publish.plan_publish]  # changes the active version (and publishes the original back): keep last


def server_facts(ctx: Bench) -> dict:
    with ctx.engine.connect() as conn:
        pg = conn.execute(text("SHOW server_version")).scalar()
        postgis = conn.execute(
            text("SELECT postgis_lib_version() || ' (GEOS ' || postgis_geos_version() || ')'")).scalar()
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()
    return {"PostgreSQL": pg, "PostGIS": postgis, "wrk": wrk[0] if wrk else "?"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--seconds", type=float, default=20, help="duration of each pgbench/wrk run (default 20)")
    parser.add_argument("--points", type=int, default=2000, help="sample points for the lookups (default 2000)")
    parser.add_argument("--only", nargs="*", help="run only these benchmarks (by function name)")
    args = parser.parse_args(argv)
    if not shutil.which("wrk"):
        print("wrk is not installed: run `make bench`, which installs it.", file=sys.stderr)
        return 1

    settings = Settings()
    url = bench_url(settings)
    ctx = Bench(url=url, engine=sync_engine(Settings(database_url=url).sync_url()), seconds=args.seconds,
                n_points=args.points)
    ctx.facts.update(report.machine())
    result, started = Result(), time.perf_counter()
    try:
        for bench in BENCHMARKS:
            if args.only and bench.__name__ not in args.only:
                continue
            print(f"== {bench.__name__}", flush=True)
            t0 = time.perf_counter()
            try:
                part = bench(ctx)
            except Exception as exc:
                traceback.print_exc()
                part = Result(failures=[f"{bench.__name__} crashed: {type(exc).__name__}: {exc}"])
            print(f"   {time.perf_counter() - t0:.1f} s", flush=True)
            for name in ("rows", "notes", "failures"):
                getattr(result, name).extend(getattr(part, name))
        try:
            ctx.facts.update(server_facts(ctx))
        except Exception as exc:
            ctx.facts["PostgreSQL"] = f"unknown ({exc})"
    finally:
        ctx.close()
    ctx.facts["database"] = "wangge_bench on " + url.rsplit("@", 1)[-1].rsplit("/", 1)[0]
    ctx.facts["load generators"] = f"4 connections, 2 threads, {args.seconds:g} s per run"
    ctx.facts["bench wall time"] = f"{time.perf_counter() - started:.0f} s"

    markdown = report.render(result.rows, ctx.facts, result.notes, result.failures)
    REPORTS.mkdir(parents=True, exist_ok=True)
    (REPORTS / "latest.md").write_text(markdown)
    print(markdown)
    print(f"written to {REPORTS / 'latest.md'}")
    return 1 if result.failures else 0


if __name__ == "__main__":
    sys.exit(main())
