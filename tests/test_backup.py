"""Backups and migrations: a dump restores to the same rows, and Alembic walks down to base and back up."""

import uuid

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from wangge.cli import app

runner = CliRunner()
FINGERPRINT = """
SELECT (SELECT count(*) FROM incidents), (SELECT count(*) FROM incident_events), (SELECT count(*) FROM buildings),
       (SELECT md5(string_agg(code || ST_AsEWKB(geom)::text, ',' ORDER BY id)) FROM areas),
       (SELECT md5(string_agg(id || status || coalesce(grid_code, '') || reported_at::text, ',' ORDER BY id))
        FROM incidents),
       (SELECT version_num FROM alembic_version)"""


def test_dump_and_restore_round_trip(scratch_url, tmp_path, monkeypatch):
    with create_engine(scratch_url).connect() as conn:
        before = conn.execute(text(FINGERPRINT)).one()
    assert before[0] > 0
    dump = tmp_path / "wangge.dump"
    monkeypatch.setenv("WANGGE_DATABASE_URL", scratch_url)
    result = runner.invoke(app, ["db", "dump", str(dump)])
    assert result.exit_code == 0, result.output
    target = make_url(scratch_url).set(database=f"wangge_restore_{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("WANGGE_DATABASE_URL", target.render_as_string(hide_password=False))
    assert runner.invoke(app, ["db", "restore", str(dump)]).exit_code == 1  # needs --yes
    result = runner.invoke(app, ["db", "restore", str(dump), "--yes"])
    assert result.exit_code == 0, result.output
    engine = create_engine(target)
    try:
        with engine.connect() as conn:
            assert conn.execute(text(FINGERPRINT)).one() == before
    finally:
        engine.dispose()
        with create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT").connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)'))
    result = runner.invoke(app, ["db", "restore", str(tmp_path / "missing.dump"), "--yes"])
    assert result.exit_code == 1 and "No dump at" in result.output


def test_alembic_from_the_repository_goes_down_to_base_and_back_up(database_url):
    """`alembic downgrade base` and `upgrade head` as documented, on a fresh empty database."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    target = make_url(database_url).set(database=f"wangge_alembic_{uuid.uuid4().hex[:8]}")
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{target.database}"'))
    env = dict(os.environ, WANGGE_DATABASE_URL=target.render_as_string(hide_password=False))
    alembic = [str(Path(sys.executable).parent / "alembic")]
    try:
        for step, expected in ((["upgrade", "head"], "0011"), (["downgrade", "-1"], "0010"),
                               (["downgrade", "base"], None), (["upgrade", "head"], "0011")):
            result = subprocess.run(alembic + step, cwd=root, env=env, capture_output=True, text=True)
            assert result.returncode == 0, result.stderr
            engine = create_engine(target)
            with engine.connect() as conn:
                exists = conn.execute(text("SELECT to_regclass('alembic_version')")).scalar()
                version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar() if exists else None
                tables = conn.execute(text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public' "
                                           "AND tablename = 'incidents'")).scalar()
            engine.dispose()
            assert version == expected and tables == (0 if expected is None else 1), (step, version)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)'))
