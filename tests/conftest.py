"""Shared fixtures: a throwaway database on the real PostGIS, loaded with the demo district once."""

import os
import uuid
from datetime import datetime, timedelta

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from api.settings import Settings
from geo.incidents.timelimits import TZ

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# The loaded demo's anchor: its year ends when the session starts. Tests take "now" from here, never from a date.
DEMO_END = datetime.now(TZ).replace(microsecond=0)
FIRST_DAY = DEMO_END.date() - timedelta(days=364)  # the demo year's local days, first and last
LAST_DAY = DEMO_END.date()


# What the matrix, the fuzz run and the fault tests covered: printed at the end of every run (CI's log too).
COUNTS: list[str] = []
_FAULTS: list[str] = []


def pytest_runtest_logreport(report):
    """Count the fault scenarios that passed (tests/test_faults.py)."""
    if report.when == "call" and report.passed and "test_faults.py::" in report.nodeid:
        _FAULTS.append(report.nodeid.split("::")[-1])


def pytest_terminal_summary(terminalreporter):
    """The counts, after the results."""
    lines = COUNTS + ([f"faults survived: {len(_FAULTS)} ({', '.join(_FAULTS)})"] if _FAULTS else [])
    if lines:
        terminalreporter.section("counts")
        for line in lines:
            terminalreporter.write_line(line)


def _server_url(settings: Settings) -> str:
    if settings.database_url:
        return settings.database_url
    from wangge.localdb import LocalCluster

    return LocalCluster(settings).url()


@pytest.fixture(scope="session")
def database_url():
    """URL (psycopg driver) of a fresh, migrated database that is dropped after the session."""
    yield from _throwaway_database()


@pytest.fixture(scope="module")
def scratch_url():
    """Another fresh database, with the small demo (2 streets) loaded, for tests that change the active
    version (publishing) and must not disturb the shared demo."""
    for url in _throwaway_database():
        from fixtures import synth
        from fixtures.load import load
        from geo.db import sync_engine

        engine = sync_engine(url)
        load(engine, lambda: synth.build(streets=2, end=DEMO_END))
        engine.dispose()
        yield url


def _throwaway_database():
    settings = Settings()
    try:
        base = make_url(_server_url(settings))
        admin = base.set(drivername="postgresql", database="postgres")
        psycopg.connect(admin.render_as_string(hide_password=False), connect_timeout=5).close()
    except Exception as exc:
        message = f"PostGIS is not reachable ({exc}); run `make test`, which starts it."
        if IN_CI:
            pytest.fail(message, pytrace=False)  # in CI a missing database is a failure, never a skip
        pytest.skip(message)
    name = f"wangge_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = base.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
    try:
        from geo.db import migrate

        migrate(url)
        yield url
    finally:
        with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def engine(database_url):
    from geo.db import sync_engine

    engine = sync_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def demo(engine):
    """The full demo district, built once and loaded through the real loader."""
    from fixtures import synth
    from fixtures.load import load

    district = synth.build(end=DEMO_END)
    report = load(engine, lambda: district)
    return district, report


@pytest.fixture(scope="session")
def settings(database_url, demo):
    # escalation is exercised by its own tests; the background schedule must not move test data meanwhile
    # intake from the one test client is not rate-limited here (tests/test_rate_limits.py checks the limits)
    return Settings(database_url=database_url, escalation_interval_s=0, intake_rate_per_token="1000000/minute",
                    intake_rate_per_address="1000000/minute")


@pytest.fixture(scope="session")
def client(settings):
    from fastapi.testclient import TestClient

    from api.app import create_app

    with TestClient(create_app(settings)) as client:
        yield client


def make_token(engine, role: str, area: str | None) -> str:
    from geo.auth import create_user, issue_token

    with engine.begin() as conn:
        user_id = create_user(conn, f"{role}-{area}-{uuid.uuid4().hex[:6]}", role, area)
        return issue_token(conn, user_id)


@pytest.fixture(scope="session")
def admin_headers(engine, demo):
    return {"Authorization": f"Bearer {make_token(engine, 'admin', None)}"}


@pytest.fixture(scope="session")
def boundary():
    """The real 西城区 boundary, read straight from the committed file (independent of the database)."""
    import geopandas as gpd

    from api.settings import PROJECT_ROOT

    return gpd.read_file(PROJECT_ROOT / "fixtures" / "xicheng" / "boundary.geojson").geometry.iloc[0]


@pytest.fixture(scope="session")
def live_server(settings):
    """The app on a real local port, for the browser."""
    import socket
    import threading
    import time

    import uvicorn

    from api.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="session")
def grids(engine, demo):
    """Grids of the active version (code, worker_id, geometry), read straight from PostGIS."""
    import geopandas as gpd

    with engine.connect() as conn:
        return gpd.read_postgis(text(
            "SELECT code, worker_id, geom FROM areas WHERE level = 'grid' AND version_id = "
            "(SELECT id FROM grid_versions WHERE status = 'active') ORDER BY code"), conn, geom_col="geom")


def lean(client, headers: dict, path: str, query: str):
    """What the lean path (api/fast.py) answers for GET path?query, run in the app's loop: a Response, or None
    when it leaves the request to the FastAPI route."""
    from api import fast

    scope = {"type": "http", "method": "GET", "path": path, "query_string": query.encode(),
             "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
             "app": client.app}
    return client.portal.call(fast.answer, scope, *fast.ROUTES[path])
