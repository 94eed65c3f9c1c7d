"""wangge simulate: a live feed through the public API keeps responders fresh and files, works and closes
synthetic incidents, and reports what it sent."""

import socket
import threading
import time

import pytest
from sqlalchemy import text

from api.settings import Settings
from fixtures.simulate import Feed, run
from geo.db import sync_engine
from tests.conftest import make_token


@pytest.fixture(scope="module")
def server(scratch_url):
    """The app over the scratch database (the small demo) on a real local port."""
    import uvicorn

    from api.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(Settings(database_url=scratch_url, escalation_interval_s=0))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.1)
    engine = sync_engine(scratch_url)
    yield f"http://127.0.0.1:{port}", engine
    server.should_exit = True
    thread.join(10)
    engine.dispose()


def test_feed_pings_every_responder_and_works_incidents_to_closure(server):
    url, engine = server
    with engine.begin() as conn:
        conn.execute(text("UPDATE responders SET position_at = now() - interval '2 hours'"))  # all stale
        before = conn.execute(text("SELECT max(id) FROM incidents")).scalar()
        responders = conn.execute(text("SELECT count(*) FROM responders WHERE position IS NOT NULL")).scalar()
    token = make_token(engine, "admin", None)
    # Fast: 240 incidents/min for 25 s, every one worked, workflow steps 20× faster; pings every 5 s.
    tally = run(url, token, Feed(rate_per_min=240, duration_s=25, ping_interval_s=5, worked_share=1.0,
                                 step_scale=0.05, seed=7),
                say=lambda line: None)
    assert not tally.failed, tally.lines()
    assert tally.sent["report"] >= 40 and tally.sent["pings"] >= 4 and tally.sent["close"] >= 1
    with engine.connect() as conn:
        new = conn.execute(text("SELECT status, is_synthetic, assignee_id FROM incidents WHERE id > :b"),
                           {"b": before}).all()
        fresh = conn.execute(text("SELECT count(*) FROM responders WHERE position_at > now() - interval '1 minute'"))
        closed_events = conn.execute(text("SELECT count(*) FROM incident_events WHERE incident_id > :b "
                                          "AND action = 'close'"), {"b": before}).scalar()
        fresh = fresh.scalar()
    assert len(new) == tally.sent["report"] and all(synthetic for _, synthetic, _ in new)
    statuses = {status for status, _, _ in new}
    assert "closed" in statuses and closed_events == tally.sent["close"]
    assert fresh == responders  # every responder walked and pinged: none is stale any more
    assert any(line.startswith("report: ") for line in tally.lines())


def test_feed_refuses_a_bad_token_at_once(server):
    import httpx

    url, _ = server
    with pytest.raises(httpx.HTTPStatusError, match="401"):
        run(url, "not-a-token", Feed(duration_s=1, seed=1), say=lambda line: None)
