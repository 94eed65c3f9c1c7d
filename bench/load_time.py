"""Figure 1: loading the demo district, against PostgreSQL just writing the same final rows (COPY + indexes)."""

import time

import psycopg

from api.settings import Settings
from bench.context import Bench, recreate_database
from bench.report import Result, Row
from fixtures import synth
from fixtures.load import load
from geo.db import migrate

# The tables whose final rows the demo load writes (the catalog tables are a few dozen rows).
TABLES = ("areas", "buildings", "responders", "incidents", "incident_events")
RAW_SCHEMA = "bench_raw"


def demo_load(ctx: Bench) -> Result:
    """Fresh database, migrate, then time fixtures.load.load(engine, synth.build) end to end."""
    ctx.engine.dispose()
    ctx.token, ctx.points = None, []  # they lived in the database dropped here
    recreate_database(Settings())
    migrate(ctx.engine.url.render_as_string(hide_password=False))
    marks = []
    started = time.perf_counter()
    report = load(ctx.engine, synth.build, step=lambda name: marks.append((name, time.perf_counter())))
    total = time.perf_counter() - started
    marks.append(("end", time.perf_counter()))
    phases = {name: t2 - t1 for (name, t1), (_, t2) in zip(marks, marks[1:], strict=False)}
    generation = phases.get("building the synthetic district")

    raw = raw_write(ctx.url)
    ctx.facts["demo rows"] = ", ".join(f"{k} {v:,}" for k, v in report.counts.items())
    rows = [
        Row("demo load: generate + load (s)", total, raw, "s"),
        Row("demo load without generation (s)", total - generation, raw, "s"),
        Row("synthetic generation alone, synth.build() (s)", generation, None, "s"),
    ]
    notes = [
        "Demo load: fresh `wangge_bench`, migrated, then `fixtures.load.load(engine, synth.build)` timed end to "
        "end (generation, COPY into staging, set-based SQL, ANALYZE). Phases: "
        + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in phases.items()) + ".",
        f"Raw: the final rows of {', '.join(TABLES)} dumped with `COPY ... TO STDOUT (FORMAT binary)` (untimed), "
        "then timed in one transaction: `CREATE TABLE ... (LIKE t INCLUDING ALL EXCLUDING INDEXES)`, "
        "`COPY ... FROM STDIN (FORMAT binary)`, and the same indexes built afterwards (no ANALYZE).",
    ]
    return Result(rows, notes)


def raw_write(url: str) -> float:
    """Seconds PostgreSQL needs to write the loaded rows of TABLES into empty copies and index them."""
    with psycopg.connect(url) as conn:
        dumps = {}
        for table in TABLES:
            chunks = []
            with conn.cursor().copy(f"COPY {table} TO STDOUT (FORMAT binary)") as copy:
                chunks.extend(bytes(chunk) for chunk in copy)
            dumps[table] = b"".join(chunks)
        indexes = conn.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = ANY(%s)",
                               [list(TABLES)]).fetchall()
        conn.execute(f"DROP SCHEMA IF EXISTS {RAW_SCHEMA} CASCADE")
        conn.commit()

        started = time.perf_counter()
        conn.execute(f"CREATE SCHEMA {RAW_SCHEMA}")
        for table in TABLES:
            conn.execute(f"CREATE TABLE {RAW_SCHEMA}.{table} (LIKE public.{table} INCLUDING ALL EXCLUDING INDEXES)")
            with conn.cursor().copy(f"COPY {RAW_SCHEMA}.{table} FROM STDIN (FORMAT binary)") as copy:
                copy.write(dumps[table])
        for (indexdef,) in indexes:
            conn.execute(indexdef.replace(" ON public.", f" ON {RAW_SCHEMA}.", 1))
        conn.commit()
        elapsed = time.perf_counter() - started

        conn.execute(f"DROP SCHEMA {RAW_SCHEMA} CASCADE")
        conn.commit()
    return elapsed
