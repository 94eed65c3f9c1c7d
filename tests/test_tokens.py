"""The token life cycle: revocation and disabling take effect at once (through the cache of every worker),
tokens expire, their last use is kept, and the command line and admin API manage them."""

import re
import time
from datetime import timedelta

from sqlalchemy import text
from typer.testing import CliRunner

from geo.auth import create_user, hash_token, issue_token

runner = CliRunner()
TOKEN = re.compile(r"wg_[A-Za-z0-9_-]{20,}")  # the printed token, whatever warnings share the output


def _user_with_token(engine, role="supervisor", area="110102", lifetime=None):
    with engine.begin() as conn:
        user_id = create_user(conn, f"{role}-tok-{time.monotonic_ns()}", role, area)
        token = issue_token(conn, user_id, lifetime)
        token_id = conn.execute(text("SELECT id FROM api_tokens WHERE token_hash = :h"),
                                {"h": hash_token(token)}).scalar_one()
    return user_id, token, token_id


def _status(client, token) -> int:
    return client.get("/areas/110102", headers={"Authorization": f"Bearer {token}"}).status_code


def _refused_within(client, token, seconds=2.0) -> float:
    started = time.monotonic()
    while _status(client, token) != 401:
        assert time.monotonic() - started < seconds, "the revoked token kept working"
        time.sleep(0.02)
    return time.monotonic() - started


def test_a_revoked_token_stops_at_once_even_when_cached(client, engine, admin_headers):
    _, token, token_id = _user_with_token(engine)
    assert _status(client, token) == 200 and _status(client, token) == 200  # now cached
    reply = client.post(f"/admin/tokens/{token_id}/revoke", headers=admin_headers)
    assert reply.status_code == 200 and reply.json()["live"] is False and reply.json()["revoked_at"]
    assert _refused_within(client, token) < 1.0
    assert client.post(f"/admin/tokens/{token_id}/revoke", headers=admin_headers).status_code == 404


def test_a_disabled_user_is_refused_at_once(client, engine, admin_headers):
    user_id, token, _ = _user_with_token(engine)
    assert _status(client, token) == 200
    reply = client.post(f"/admin/users/{user_id}/disable", headers=admin_headers)
    assert reply.status_code == 200 and all(not t["live"] for t in reply.json())
    assert _refused_within(client, token) < 1.0
    users = {u["id"]: u for u in client.get("/admin/users", headers=admin_headers).json()}
    assert users[user_id]["disabled_at"] and users[user_id]["live_tokens"] == 0


def test_tokens_expire_even_from_the_cache_and_their_last_use_is_kept(client, engine):
    _, token, token_id = _user_with_token(engine, lifetime=timedelta(seconds=1.5))
    assert _status(client, token) == 200
    with engine.connect() as conn:
        used, expires = conn.execute(text("SELECT last_used_at, expires_at FROM api_tokens WHERE id = :t"),
                                     {"t": token_id}).one()
    assert used is not None and expires is not None
    time.sleep(1.6)
    assert _status(client, token) == 401


def test_the_command_line_lists_revokes_and_disables(database_url, engine, client, monkeypatch, tmp_path):
    from wangge.cli import app

    monkeypatch.setenv("WANGGE_DATABASE_URL", database_url)
    monkeypatch.setenv("WANGGE_LOCAL_DIR", str(tmp_path))
    created = runner.invoke(app, ["users", "create", "--role", "planner", "--area", "110102",
                                  "--name", "cli-planner", "--expires-days", "30"])
    assert created.exit_code == 0, created.output
    token = TOKEN.search(created.output).group(0)
    with engine.connect() as conn:
        lifetime = conn.execute(text("SELECT expires_at - created_at FROM api_tokens WHERE token_hash = :h"),
                                {"h": hash_token(token)}).scalar_one()
    assert abs(lifetime - timedelta(days=30)) < timedelta(seconds=5)
    listed = runner.invoke(app, ["tokens", "list", "--user", "cli-planner"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0 and token[:10] in listed.output and token not in listed.output
    assert "cli-planner" in runner.invoke(app, ["users", "list"], env={"COLUMNS": "200"}).output
    assert _status(client, token) == 200
    revoked = runner.invoke(app, ["users", "revoke", "cli-planner"])
    assert revoked.exit_code == 0 and "revoked 1 token" in revoked.output
    assert _refused_within(client, token) < 1.0
    assert runner.invoke(app, ["users", "disable", "cli-planner"]).exit_code == 0
    assert runner.invoke(app, ["users", "disable", "nobody-such"]).exit_code == 1
    assert runner.invoke(app, ["tokens", "revoke", "999999"]).exit_code == 1


def test_a_new_demo_token_revokes_the_previous_one(database_url, client, monkeypatch, tmp_path):
    from wangge.cli import app

    monkeypatch.setenv("WANGGE_DATABASE_URL", database_url)
    monkeypatch.setenv("WANGGE_LOCAL_DIR", str(tmp_path))
    first = TOKEN.search(runner.invoke(app, ["users", "demo-token"]).output).group(0)
    assert _status(client, first) == 200
    second = TOKEN.search(runner.invoke(app, ["users", "demo-token"]).output).group(0)
    assert second != first and _status(client, second) == 200
    assert _refused_within(client, first) < 1.0
    assert (tmp_path / "demo-token").read_text().strip() == second
