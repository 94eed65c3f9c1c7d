"""The benchmark harness: ratios point the right way, the raw SQL is the service's own, pgbench runs it."""

import pytest
from sqlalchemy.engine import make_url

from bench.grids_at import service_sql
from bench.report import Row, render


def test_ratio_is_wangge_as_a_share_of_raw_for_rates_and_times():
    assert Row("lookup", 100, 400, "req/s").ratio == 0.25
    assert Row("load", 4.0, 1.0, "s").ratio == 0.25
    assert Row("generation", 1.0, None, "s").ratio is None


def test_raw_sql_is_the_compiled_service_statement_reading_bench_points():
    sql = service_sql()
    assert "ST_Covers(a.geom, ST_SetSRID(ST_MakePoint((SELECT lon FROM bench_points WHERE id = :i), " \
           "(SELECT lat FROM bench_points WHERE id = :i)), 4326))" in sql
    assert "%%" not in sql and sql.rstrip().endswith("LIMIT 1")


def test_report_has_a_row_per_result_and_lists_failures():
    markdown = render([Row("a", 1, 2, "s"), Row("b", 3000, None, "req/s")], {"nproc": 2}, ["how"], ["broke"])
    assert "| a | 1.00 s | 2.00 s | 2.000 |" in markdown
    assert "| b | 3,000 req/s | — | — |" in markdown
    assert "## FAILED\n\n- broke" in markdown and "- nproc: 2" in markdown


def test_pgbench_runs_the_service_sql_on_sample_points_inside_grids(engine, demo, database_url):
    from bench.context import Bench
    from bench.runners import pgbench, pgbench_bin

    try:
        pgbench_bin()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    url = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    ctx = Bench(url=url, engine=engine, seconds=1, n_points=50)
    assert len(ctx.sample_points()) == 50  # raises if any point is outside every grid
    result = pgbench(ctx, "smoke", service_sql())
    assert result["requests"] > 0 and result["failed"] == 0 and result["p50"] > 0
