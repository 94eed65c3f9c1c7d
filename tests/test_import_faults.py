"""`wangge incidents import` when the database goes away or the command is stopped: one clear line, exit code,
the server's statement gone, and nothing of the batch left behind.

The command runs as a real subprocess against the real test database; its backend is found in pg_stat_activity
by the application name the command gives itself, and terminated from another session (never the postmaster).
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import shapely
from sqlalchemy import text

APPLICATION = "wangge incidents import"
WANGGE = str(Path(sys.executable).with_name("wangge"))


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory, grids) -> Path:
    """1.5M rows inside the active grids: the command needs several seconds for it."""
    points = shapely.point_on_surface(grids.geometry.values)
    rng = np.random.default_rng(14)
    pick = rng.integers(0, len(points), 1_500_000)
    x, y = shapely.get_x(points)[pick], shapely.get_y(points)[pick]
    path = tmp_path_factory.mktemp("faults") / "big.csv"
    with open(path, "w") as f:
        f.write("lon,lat,category,description\n")
        f.writelines(f"{a:.7f},{b:.7f},0101,fault test\n" for a, b in zip(x, y, strict=True))
    return path


def _counts(engine) -> tuple[int, int, int]:
    with engine.connect() as conn:
        return conn.execute(text(
            "SELECT (SELECT count(*) FROM incidents), (SELECT count(*) FROM incident_events), "
            "(SELECT count(*) FROM audit_log WHERE action = 'incidents.import')")).one()


def _start(database_url: str, path: Path) -> subprocess.Popen:
    env = {**os.environ, "WANGGE_DATABASE_URL": database_url, "COLUMNS": "200"}
    return subprocess.Popen([WANGGE, "incidents", "import", str(path)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _backend(engine, process: subprocess.Popen, query_like: str, within_s: float = 60) -> int:
    """The pid of the command's backend once it runs a statement LIKE `query_like`."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            pid = conn.execute(text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = :app "
                "AND state = 'active' AND query LIKE :like"), {"app": APPLICATION, "like": query_like}).scalar()
        if pid is not None:
            return pid
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"the import never ran {query_like!r}: {process.communicate()}")


def _running(engine, pid: int) -> str | None:
    """A statement the backend `pid`, or any other of the command's, is running now (None: none is)."""
    with engine.connect() as conn:
        return conn.execute(text(
            "SELECT query FROM pg_stat_activity WHERE (pid = :pid OR application_name = :app) AND state = 'active' "
            "AND datname = current_database() LIMIT 1"), {"pid": pid, "app": APPLICATION}).scalar()


def _wait_gone(engine, pid: int, after: str) -> None:
    """Until neither backend `pid` nor any other of the command's runs a statement; at most 2 s after `after`."""
    sent = time.monotonic()
    while _running(engine, pid) is not None:
        assert time.monotonic() - sent < 2, f"the backend still runs {_running(engine, pid)!r} 2 s after {after}"
        time.sleep(0.02)


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_a_backend_terminated_mid_copy_gives_one_line_exit_1_and_nothing_imported(engine, database_url, big_csv):
    before = _counts(engine)
    process = _start(database_url, big_csv)
    pid = _backend(engine, process, "COPY stage_incidents%")
    time.sleep(0.5)  # well into the COPY
    with engine.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
    killed = time.monotonic()
    _, stderr = process.communicate(timeout=30)
    took = time.monotonic() - killed
    assert process.returncode == 1, stderr
    line = _one_line(stderr)
    print(f"{line} — exit {process.returncode} {took:.2f} s after the termination")
    assert line.startswith("error: nothing was imported: the database went away during the COPY of the rows (")
    assert "terminating connection" in line or "server closed the connection" in line or "consuming" in line, line
    assert took < 5, f"{took:.1f} s from the termination to the exit"
    assert _counts(engine) == before


def test_ctrl_c_mid_copy_cancels_the_statement_and_imports_nothing(engine, database_url, big_csv):
    before = _counts(engine)
    process = _start(database_url, big_csv)
    pid = _backend(engine, process, "COPY stage_incidents%")
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    _wait_gone(engine, pid, "Ctrl-C")
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert _one_line(stderr).startswith("error: nothing was imported: interrupted during the COPY of the rows;")
    assert _counts(engine) == before


def test_sigterm_during_the_assignment_cancels_that_statement_and_imports_nothing(engine, database_url, big_csv):
    before = _counts(engine)
    process = _start(database_url, big_csv)
    pid = _backend(engine, process, "%WITH dup AS%")  # the one statement that files the rows
    process.send_signal(signal.SIGTERM)
    _wait_gone(engine, pid, "SIGTERM")
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 143, stderr
    assert _one_line(stderr).startswith("error: nothing was imported: stopped (SIGTERM) during the assignment to "
                                        "grids;")
    assert _counts(engine) == before


def test_a_server_that_refuses_connections_gives_one_line_and_exit_1_promptly(database_url, tmp_path):
    from sqlalchemy.engine import make_url

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "few.csv"
    path.write_text("lon,lat,category\n116.36,39.91,0101\n")
    started = time.monotonic()
    process = _start(make_url(database_url).set(port=port).render_as_string(hide_password=False), path)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 1, stderr
    line = _one_line(stderr)
    assert line.startswith("error: nothing was imported: the database could not be reached ("), line
    assert "refused" in line.lower()
    assert time.monotonic() - started < 10
