"""Backups: `wangge db dump FILE` and `wangge db restore FILE`, with PostgreSQL's own pg_dump and pg_restore.

A dump is pg_dump's custom format (compressed, every table, PostGIS types included). Restoring replaces the
configured database: it is dropped and created again, then the dump is restored in one transaction, so a
failed restore leaves an empty database, never a half-restored one.
"""

import subprocess
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from api.settings import ClusterError
from wangge.localdb import find_bindir


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise ClusterError(f"{what} failed: {' '.join(result.stderr.split())[:600]}")


def dump(libpq_url: str, path: Path) -> int:
    """Write the database at `libpq_url` to `path`; returns its size in bytes."""
    _run([str(find_bindir() / "pg_dump"), "--format=custom", "--no-owner", "--file", str(path), libpq_url],
         "pg_dump")
    return path.stat().st_size


def restore(libpq_url: str, path: Path) -> None:
    """Replace the database at `libpq_url` with the dump at `path`."""
    if not path.is_file():
        raise ClusterError(f"No dump at {path}; make one with `wangge db dump FILE`.")
    url = make_url(libpq_url)
    name = url.database
    admin = url.set(database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    _run([str(find_bindir() / "pg_restore"), "--no-owner", "--exit-on-error", "--single-transaction",
          "--dbname", libpq_url, str(path)], "pg_restore")
