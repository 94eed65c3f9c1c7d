"""The audit log: append-only, with who, when, what, before and after; GET /audit for admins, filtered and
keyset-paged, joining plan and user changes, sign-ins, incident transitions and token use per day."""

import pytest
import sqlalchemy.exc
from sqlalchemy import text

from tests.conftest import make_token


def test_the_log_is_append_only(engine):
    from geo import audit

    with engine.begin() as conn:
        audit.record(conn, "test.entry", "test:1", before={"a": 1}, after={"a": 2})
    for statement in ("UPDATE audit_log SET action = 'x' WHERE action = 'test.entry'",
                      "DELETE FROM audit_log WHERE action = 'test.entry'"):
        with pytest.raises(sqlalchemy.exc.DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT before, after FROM audit_log WHERE action = 'test.entry'")).one() \
            == ({"a": 1}, {"a": 2})


def test_get_audit_pages_and_filters_what_admins_need(client, admin_headers, engine):
    token = make_token(engine, "planner", "110102001001")
    planner = {"Authorization": f"Bearer {token}"}
    made = [client.post("/plans", json={"name": f"audit {n}"}, headers=planner).json()["id"] for n in range(3)]
    reply = client.get("/audit", params={"action": "plan.create", "limit": 2}, headers=admin_headers)
    assert reply.status_code == 200, reply.text
    first = reply.json()
    assert [e["target"] for e in first["entries"]] == [f"grid_version:{made[2]}", f"grid_version:{made[1]}"]
    assert all(e["action"] == "plan.create" and e["actor"] and e["at"] for e in first["entries"])
    second = client.get("/audit", params={"action": "plan.create", "limit": 2, "after": first["next"]},
                        headers=admin_headers).json()
    assert second["entries"][0]["target"] == f"grid_version:{made[0]}"
    one = client.get("/audit", params={"target": f"grid_version:{made[1]}"}, headers=admin_headers).json()
    assert {e["action"] for e in one["entries"]} == {"plan.create"}
    for cursor, status in (("yesterday", 422), ("yesterday|1|a", 400)):  # not the shape; not a time
        bad = client.get("/audit", params={"after": cursor}, headers=admin_headers)
        assert bad.status_code == status and bad.json()["error"]["field"] == "after", bad.text
    assert client.get("/audit", headers=planner).status_code == 403
    for plan in made:  # drafts copy every grid: leave none behind for the tests that count them
        assert client.delete(f"/plans/{plan}", headers=planner).status_code == 204
    deleted = client.get("/audit", params={"action": "plan.discard", "limit": 3}, headers=admin_headers).json()
    assert {e["target"] for e in deleted["entries"]} == {f"grid_version:{plan}" for plan in made}


def test_incident_transitions_and_token_use_are_in_it(client, admin_headers, engine):
    with engine.connect() as conn:
        incident = conn.execute(text("SELECT id FROM incidents WHERE status = 'reported' ORDER BY id LIMIT 1")
                                ).scalar_one()
    moved = client.post(f"/incidents/{incident}/actions", json={"action": "file"}, headers=admin_headers)
    assert moved.status_code == 200, moved.text
    entries = client.get("/audit", params={"target": f"incident:{incident}", "action": "incident"},
                         headers=admin_headers).json()["entries"]
    accepted = next(e for e in entries if e["action"] == "incident.file")
    assert accepted["before"] == {"status": "reported"} and accepted["after"] == {"status": "filed"}
    client.portal.call(client.app.state.token_use.flush, client.app.state.pool)
    uses = client.get("/audit", params={"action": "token.use"}, headers=admin_headers).json()["entries"]
    assert uses and all(e["after"]["uses"] >= 1 for e in uses)
    with engine.connect() as conn:
        counted = conn.execute(text("SELECT sum(uses) FROM token_use")).scalar_one()
    assert counted >= 3  # at least this test's own requests


def test_plan_edits_carry_before_and_after_and_exports_are_logged(client, admin_headers, engine):
    token = make_token(engine, "planner", "110102001001")
    planner = {"Authorization": f"Bearer {token}"}
    plan = client.post("/plans", json={"name": "audit edits"}, headers=planner).json()["id"]
    try:
        with engine.connect() as conn:
            code = conn.execute(text(
                "SELECT code FROM areas WHERE version_id = :v AND level = 'grid' "
                "AND code LIKE '110102001001%' ORDER BY code LIMIT 1"), {"v": plan}).scalar_one()
        moved = client.post(f"/plans/{plan}/edits", headers=planner, json={
            "op": "set_attributes", "code": code, "revision": 0, "kind": "commercial"})
        assert moved.status_code == 200, moved.text
        assert client.get(f"/plans/{plan}/export", params={"format": "geojson"}, headers=planner).status_code == 200
        entries = client.get("/audit", params={"target": f"grid_version:{plan}"}, headers=admin_headers).json()
        by_action = {e["action"]: e for e in entries["entries"]}
        edit = by_action["plan.edit.set_attributes"]
        assert edit["before"]["revision"] == 0 and edit["after"]["revision"] == 1 and edit["actor"]
        export = by_action["plan.export"]
        assert export["detail"]["format"] == "geojson" and export["detail"]["grids"] >= 1
    finally:
        assert client.delete(f"/plans/{plan}", headers=planner).status_code == 204
