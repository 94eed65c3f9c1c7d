"""Faults: the service between itself and a real PostgreSQL that goes away, freezes and comes back.

A small TCP relay stands between the app and the test cluster, so the database can be cut off (connections
reset, nothing listening), frozen (bytes held, like a SIGSTOPped server) and restored, while the app keeps
running. Replies must be the one JSON error shape with 503 and Retry-After within the timeouts, never a 500,
and the service must recover by itself.
"""

import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from tests.conftest import make_token


class Relay:
    """Forwards TCP connections from a local port to `target`; `cut()` resets them all and refuses new ones,
    `freeze()` holds every byte (connections stay open), `restore()` forwards again."""

    def __init__(self, target: tuple[str, int]):
        self.target, self.state = target, "open"
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.state == "cut":
                client.close()
                continue
            server = socket.create_connection(self.target)
            with self.lock:
                self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket):
        try:
            while data := source.recv(65536):
                while self.state == "frozen":
                    time.sleep(0.01)
                if self.state == "cut":
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.close()
                except OSError:
                    pass

    def cut(self):
        """Like a stopped server: every connection reset, new ones refused."""
        self.state = "cut"
        with self.lock:
            for s in self.sockets:
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    s.close()
                except OSError:
                    pass
            self.sockets.clear()

    def freeze(self):
        """Like a frozen server: connections accepted, nothing answered."""
        self.state = "frozen"

    def restore(self):
        """Forward again."""
        self.state = "open"


@pytest.fixture
def relayed(database_url, demo, engine):
    """An app whose database is reached through a Relay, with short timeouts."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.settings import Settings

    url = make_url(database_url)
    relay = Relay((url.host or "127.0.0.1", url.port or 5432))
    through = url.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
    settings = Settings(database_url=through, escalation_interval_s=0, db_connect_timeout_s=1,
                        db_acquire_timeout_s=1, db_statement_timeout_s=1, token_cache_s=0)
    token = make_token(engine, "supervisor", "110102")
    with TestClient(create_app(settings)) as client:
        yield client, relay, {"Authorization": f"Bearer {token}"}
    relay.restore()


def _unavailable(reply):
    assert reply.status_code == 503, reply.text
    assert reply.headers["Retry-After"].isdigit() and reply.headers["content-type"] == "application/json"
    assert reply.json()["error"]["code"] == "database_unavailable"


PATHS = ["/incidents?limit=5", "/areas/110102001", "/grids/at?lon=116.36&lat=39.91", "/plans"]


def test_a_stopped_database_answers_503_and_the_service_recovers(relayed, caplog):
    client, relay, headers = relayed
    for path in PATHS:
        assert client.get(path, headers=headers).status_code in (200, 404)
    relay.cut()
    caplog.clear()
    for path in PATHS:
        _unavailable(client.get(path, headers=headers))
    assert not [r for r in caplog.records if r.exc_info]  # one line each, no tracebacks
    relay.restore()
    for path in PATHS:
        assert client.get(path, headers=headers).status_code in (200, 404)


def test_a_frozen_database_answers_503_within_the_timeouts(relayed):
    client, relay, headers = relayed
    assert client.get(PATHS[0], headers=headers).status_code == 200
    relay.freeze()
    try:
        started = time.monotonic()
        _unavailable(client.get(PATHS[0], headers=headers))
        assert time.monotonic() - started < 10  # connect 1 s, statement 1 s (+5 s client margin), acquire 1 s
    finally:
        relay.restore()


def test_a_slow_statement_is_cancelled_by_the_timeout(database_url, demo, engine):
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.settings import Settings

    token = make_token(engine, "admin", None)
    settings = Settings(database_url=database_url, escalation_interval_s=0, db_statement_timeout_s=0.001)
    with TestClient(create_app(settings)) as client:
        _unavailable(client.get("/incidents?limit=1000", headers={"Authorization": f"Bearer {token}"}))


def test_concurrent_reports_with_one_idempotency_key_make_one_incident_and_replay_it(client, engine, grids_in):
    token = make_token(engine, "reporter", "110102")
    key, (lon, lat) = str(uuid.uuid4()), grids_in
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": key}

    def post(_):
        return client.post("/incidents", headers=headers, json={"category": "0101", "lon": lon, "lat": lat})

    with ThreadPoolExecutor(10) as pool:
        replies = list(pool.map(post, range(30)))
    assert sorted({r.status_code for r in replies}) in ([200, 201], [201])
    assert len({r.json()["id"] for r in replies}) == 1
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM incidents WHERE idempotency_key = :k"), {"k": key}).scalar() == 1


def test_open311_honours_idempotency_key(client, engine, grids_in):
    token = make_token(engine, "reporter", "110102")
    key, (lon, lat) = str(uuid.uuid4()), grids_in
    form = {"api_key": token, "service_code": "0101", "lat": str(lat), "long": str(lon)}
    ids = {client.post("/open311/v2/requests.json", data=form, headers={"Idempotency-Key": key}).json()[0]
           ["service_request_id"] for _ in range(5)}
    assert len(ids) == 1
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM incidents WHERE idempotency_key = :k"), {"k": key}).scalar() == 1


@pytest.fixture
def grids_in(engine, demo):
    """A point inside a grid of the active version."""
    with engine.connect() as conn:
        return tuple(conn.execute(text(
            "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) p FROM areas WHERE level = 'grid' "
            "AND version_id = (SELECT id FROM grid_versions WHERE status = 'active') ORDER BY code OFFSET 700 "
            "LIMIT 1) s")).one())
