"""Database rules the schema itself enforces."""

import uuid

import psycopg
import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError


def test_only_one_version_can_be_active(engine, demo):
    with pytest.raises(IntegrityError, match="grid_versions_one_active"):
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO grid_versions (name, status) VALUES ('second', 'active')"))


def test_incident_events_are_append_only(engine, demo):
    for statement in ("UPDATE incident_events SET note = 'x' WHERE id = 1", "DELETE FROM incident_events WHERE id = 1"):
        with pytest.raises(DBAPIError, match="append-only"):
            with engine.begin() as conn:
                conn.execute(text(statement))


def test_grid_codes_must_have_15_digits_and_a_version(engine, demo):
    with pytest.raises(IntegrityError, match="areas_code_digits"):
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO areas (code, level, name, version_id, geom) SELECT '11010200100100', 'grid', 'x', "
                "version_id, geom FROM areas WHERE level = 'grid' LIMIT 1"))
    with pytest.raises(IntegrityError, match="areas_only_grids_versioned"):
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO areas (code, level, name, geom) SELECT '110102001001999', 'grid', 'x', geom "
                "FROM areas WHERE level = 'grid' LIMIT 1"))


def test_invalid_geometry_is_refused(engine, demo):
    bowtie = "SRID=4326;MULTIPOLYGON(((116.3 39.9,116.31 39.91,116.31 39.9,116.3 39.91,116.3 39.9)))"
    with pytest.raises(IntegrityError, match="areas_geom_valid"):
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO areas (code, level, name, geom) VALUES ('110199', 'district', 'x', :g)"),
                         {"g": bowtie})


def test_migrations_run_down_and_up_again(database_url):
    from geo.db import alembic_config

    # on a scratch database: the session database keeps its data
    url = make_url(database_url)
    scratch = f"wangge_scratch_{uuid.uuid4().hex[:6]}"
    admin = url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{scratch}"')
    try:
        cfg = alembic_config(url.set(database=scratch).render_as_string(hide_password=False))
        command.upgrade(cfg, "head")
        command.downgrade(cfg, "base")
        command.upgrade(cfg, "head")
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
