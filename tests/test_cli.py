"""The wangge command: users and tokens, fixtures idempotence."""

from typer.testing import CliRunner

from wangge.cli import app

runner = CliRunner()


def test_users_create_prints_a_working_scoped_token(client, database_url, monkeypatch):
    monkeypatch.setenv("WANGGE_DATABASE_URL", database_url)
    result = runner.invoke(app, ["users", "create", "--role", "planner", "--area", "110102003"])
    assert result.exit_code == 0, result.output
    token = result.output.strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/areas/110102003", headers=headers).status_code == 200
    assert client.get("/areas/110102001", headers=headers).status_code == 404


def test_users_create_rejects_unknown_area_and_role(database_url, monkeypatch):
    monkeypatch.setenv("WANGGE_DATABASE_URL", database_url)
    result = runner.invoke(app, ["users", "create", "--role", "planner", "--area", "999999"])
    assert result.exit_code == 1 and "No area with code '999999'" in result.output
    result = runner.invoke(app, ["users", "create", "--role", "mayor", "--area", "110102"])
    assert result.exit_code == 1 and "Unknown role 'mayor'" in result.output


def test_fixtures_load_twice_reuses_what_is_there(demo, database_url, monkeypatch):
    monkeypatch.setenv("WANGGE_DATABASE_URL", database_url)
    result = runner.invoke(app, ["fixtures", "load"])
    assert result.exit_code == 0, result.output
    assert "already loaded" in result.output


def test_serve_uses_a_worker_per_core_and_stops_within_its_grace_period(database_url, demo, tmp_path):
    """`wangge serve` as a real process: one worker per core unless told, and SIGTERM with a client holding a
    connection open ends it within WANGGE_SHUTDOWN_GRACE_S, not never."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    import httpx

    from api.settings import Settings

    assert Settings(workers=3).worker_count() == 3
    assert Settings(workers=0).worker_count() == len(os.sched_getaffinity(0))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, WANGGE_DATABASE_URL=database_url, WANGGE_SHUTDOWN_GRACE_S="2",
               WANGGE_ESCALATION_INTERVAL_S="0")
    wangge = str(Path(sys.executable).parent / "wangge")
    server = subprocess.Popen([wangge, "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and server.poll() is None, "the server did not start"
            time.sleep(0.3)
        idle = socket.create_connection(("127.0.0.1", port))  # a client that never finishes its request
        idle.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        stopping = time.monotonic()
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        assert time.monotonic() - stopping < 15
        idle.close()
        output = server.stdout.read() if server.stdout else ""
        assert f"with {len(os.sched_getaffinity(0))} worker(s)" in " ".join(output.split())
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
