"""The floor for an HTTP service here: the bare KNN behind a bare ASGI app (uvicorn, a bare list of connections).

`python -m bench` serves it beside the service to show how much of raw PostGIS any Python HTTP path can keep:
no framework, no authentication, no validation, no grid lookup, only the query and its rows as JSON."""

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import orjson

from bench.context import REPORTS, _stop_group

PORT = 8766
SQL = ("SELECT id, ST_Distance(geography(position), geography(ST_SetSRID(ST_MakePoint($1, $2), 4326))) "
       "FROM responders WHERE status = 'available' ORDER BY position <-> ST_SetSRID(ST_MakePoint($1, $2), 4326) "
       "LIMIT 5")
_state = {}


async def app(scope, receive, send):
    """GET /?lon=..&lat=.. → [[id, metres], ...] of the 5 nearest available responders."""
    import asyncpg

    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _state["idle"] = []
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for conn in _state["idle"]:
                    await conn.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    params = dict(pair.split(b"=", 1) for pair in scope["query_string"].split(b"&"))
    idle = _state["idle"]  # no cap: wrk's few connections bound how many are made
    conn = idle.pop() if idle else await asyncpg.connect(
        os.environ["FLOOR_DATABASE_URL"], server_settings={"timezone": "UTC", "plan_cache_mode": "force_generic_plan"})
    rows = await conn.fetch(SQL, float(params[b"lon"]), float(params[b"lat"]))
    idle.append(conn)
    body = orjson.dumps([tuple(row) for row in rows])
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"%d" % len(body)), (b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


@contextmanager
def serve(url: str):
    """The floor app with 2 workers on PORT (the service's own worker count), for the length of the block."""
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", PORT)) == 0:
            raise RuntimeError(f"Port {PORT} is taken (a leftover floor server?); free it and rerun.")
    with open(REPORTS / "floor.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "bench.floor:app", "--workers", "2", "--host", "127.0.0.1",
             "--port", str(PORT), "--log-level", "warning", "--no-access-log"],
            cwd=Path(__file__).resolve().parent.parent, env=dict(os.environ, FLOOR_DATABASE_URL=url),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", PORT)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"The floor server did not start; see {REPORTS / 'floor.log'}")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{PORT}"
    finally:
        _stop_group(proc)
