"""Shared state of one bench run: the wangge_bench database, its engine, a token, the point sample, the server."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
from psycopg import sql
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from api.settings import PROJECT_ROOT, Settings

DB_NAME = "wangge_bench"
HTTP_PORT = 8765
BENCH_DIR = Path(__file__).resolve().parent
REPORTS = BENCH_DIR / "reports"
BENCH_USER = "bench-admin"


def bench_url(settings: Settings) -> str:
    """libpq URL (postgresql://) of wangge_bench on the configured server."""
    if settings.database_url:
        url = make_url(settings.database_url).set(drivername="postgresql", database=DB_NAME)
        return url.render_as_string(hide_password=False)
    from wangge.localdb import LocalCluster

    return LocalCluster(settings).url(DB_NAME)


def recreate_database(settings: Settings) -> None:
    """Drop wangge_bench (closing its connections) and create it empty."""
    if not settings.database_url:
        from wangge.localdb import LocalCluster

        cluster = LocalCluster(settings)
        cluster.drop_database(DB_NAME)
        cluster.create_database(DB_NAME)
        return
    admin = make_url(bench_url(settings)).set(database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB_NAME)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB_NAME)))


def libpq_env(url: str) -> dict:
    """Environment for pgbench/psql: the URL as PG* variables (keeps the password off the command line)."""
    u = make_url(url)
    env = dict(os.environ, PGHOST=u.host or "127.0.0.1", PGPORT=str(u.port or 5432), PGUSER=u.username or "",
               PGDATABASE=u.database or "")
    if u.password:
        env["PGPASSWORD"] = u.password
    return env


@dataclass
class Bench:
    url: str  # libpq URL of wangge_bench
    engine: Engine
    seconds: float  # duration of each load-generator run
    n_points: int
    token: str | None = None
    points: list[tuple[int, float, float]] = field(default_factory=list)  # (id, lon, lat) of bench_points
    version_id: int | None = None
    facts: dict = field(default_factory=dict)  # shown under "Setup" in the report
    _server: subprocess.Popen | None = None

    # -- data ---------------------------------------------------------------
    def active_version(self) -> int:
        with self.engine.connect() as conn:
            self.version_id = conn.execute(text("SELECT id FROM grid_versions WHERE status = 'active'")).scalar_one()
        return self.version_id

    def bench_token(self) -> str:
        """A bearer token for a bench admin (created once per run)."""
        if self.token is None:
            from geo.auth import create_user, get_user_id, issue_token

            with self.engine.begin() as conn:
                user_id = get_user_id(conn, BENCH_USER) or create_user(conn, BENCH_USER, "admin", None)
                self.token = issue_token(conn, user_id)
        return self.token

    def sample_points(self) -> list[tuple[int, float, float]]:
        """bench_points: n seeded random points, each inside a grid of the active version (checked)."""
        if self.points:
            return self.points
        version = self.active_version()
        with self.engine.begin() as conn:
            grids = conn.execute(text("SELECT count(*) FROM areas WHERE version_id = :v"), {"v": version}).scalar()
            per_grid = -(-self.n_points // grids)  # ceil
            conn.execute(text("DROP TABLE IF EXISTS bench_points"))
            conn.execute(text("CREATE TABLE bench_points (id serial PRIMARY KEY, lon float8 NOT NULL, "
                              "lat float8 NOT NULL)"))
            conn.execute(text("""
                INSERT INTO bench_points (lon, lat)
                SELECT ST_X(p.geom), ST_Y(p.geom)
                FROM (SELECT (ST_Dump(ST_GeneratePoints(geom, :k, id))).geom FROM areas WHERE version_id = :v) p
                ORDER BY md5(ST_AsEWKB(p.geom)::text) LIMIT :n"""), {"k": per_grid, "v": version, "n": self.n_points})
            outside = conn.execute(text("""
                SELECT count(*) FROM bench_points p WHERE NOT EXISTS (
                  SELECT 1 FROM areas a WHERE a.version_id = :v
                  AND ST_Covers(a.geom, ST_SetSRID(ST_MakePoint(p.lon, p.lat), 4326)))"""), {"v": version}).scalar()
            if outside:
                raise RuntimeError(f"{outside} sample points are outside every grid of version {version}")
            self.points = [tuple(r) for r in conn.execute(text("SELECT id, lon, lat FROM bench_points ORDER BY id"))]
        with self.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE bench_points"))
        self.facts["grids (active version)"] = f"{grids:,}"
        self.facts["sample points"] = f"{len(self.points):,} (ST_GeneratePoints, {per_grid} per grid, seeded)"
        return self.points

    # -- the service ----------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{HTTP_PORT}"

    def server(self) -> str:
        """Start `wangge serve --workers 2` on the bench database (once), wait for /health; its base URL."""
        if self._server is None:
            self._server = self._start(HTTP_PORT, 2)
        return self.base_url

    @contextmanager
    def serving(self, workers: int, port: int) -> Iterator[str]:
        """Another `wangge serve --workers N` on `port` for the length of the block (its base URL)."""
        proc = self._start(port, workers)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            _stop_group(proc)

    def _start(self, port: int, workers: int) -> subprocess.Popen:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                raise RuntimeError(f"Port {port} is taken (a leftover bench server?); free it and rerun.")
        REPORTS.mkdir(parents=True, exist_ok=True)
        # intake is measured at full speed: the per-client rate limits stay out of the way
        env = dict(os.environ, WANGGE_DATABASE_URL=self.url, WANGGE_INTAKE_RATE_PER_TOKEN="10000000/minute",
                   WANGGE_INTAKE_RATE_PER_ADDRESS="10000000/minute")
        log_path = REPORTS / f"server-{port}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [str(Path(sys.executable).parent / "wangge"), "serve", "--workers", str(workers), "--host",
                 "127.0.0.1", "--port", str(port)],
                cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"The server exited with {proc.returncode}; see {log_path}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    return proc
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        _stop_group(proc)
        raise RuntimeError(f"The server did not answer /health within 60 s; see {log_path}")

    def close(self) -> None:
        """Stop the server (its whole process group: uvicorn's workers too) and dispose of the engine."""
        if self._server is not None:
            _stop_group(self._server)
        self._server = None
        self.engine.dispose()


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group we started, then SIGKILL whatever is left of it after 15 s."""
    deadline = time.monotonic() + 15
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        while time.monotonic() < deadline:
            proc.poll()
            os.killpg(proc.pid, 0)  # raises ProcessLookupError once the whole group is gone
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
