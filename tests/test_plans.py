"""Plans: a draft is a full copy of the active version; edits carry the revision; drafts can be discarded."""

from sqlalchemy import text


def test_create_copies_the_active_version(client, admin_headers, engine):
    plan = client.post("/plans", json={"name": "copy"}, headers=admin_headers).json()
    with engine.connect() as conn:
        active = conn.execute(text(
            "SELECT count(*), sum(households), sum(ST_Area(geom)) FROM areas "
            "WHERE version_id = (SELECT id FROM grid_versions WHERE status = 'active')")).one()
        copied = conn.execute(text("SELECT count(*), sum(households), sum(ST_Area(geom)) FROM areas "
                                   "WHERE version_id = :v"), {"v": plan["id"]}).one()
    assert plan["status"] == "draft" and plan["revision"] == 0
    assert plan["grids"] == active[0] == copied[0] and plan["households"] == active[1]
    assert abs(copied[2] - active[2]) < 1e-12
    listed = client.get("/plans", headers=admin_headers).json()
    assert plan["id"] in [p["id"] for p in listed]
    assert client.delete(f"/plans/{plan['id']}", headers=admin_headers).status_code == 204
    gone = client.get(f"/plans/{plan['id']}", headers=admin_headers)
    assert gone.status_code == 404 and "No plan" in gone.json()["error"]["message"]


def test_stale_revision_is_a_conflict(engine, demo):
    from geo.auth import Caller, create_user
    from geo.errors import Conflict
    from geo.planning import plans

    with engine.begin() as conn:
        caller = Caller(create_user(conn, "revision-tester", "admin", None), "revision-tester", "admin", None)
        plan = plans.create(conn, caller, "revisions")
        assert plans.bump(conn, plan["id"], 0) == 1
        try:
            plans.bump(conn, plan["id"], 0)
        except Conflict as exc:
            assert "revision 1" in exc.message and "based on revision 0" in exc.message
        else:
            raise AssertionError("a stale revision was accepted")
        plans.discard(conn, caller, plan["id"])


def test_active_version_cannot_be_discarded(client, admin_headers, engine):
    with engine.connect() as conn:
        active = conn.execute(text("SELECT id FROM grid_versions WHERE status = 'active'")).scalar()
    reply = client.delete(f"/plans/{active}", headers=admin_headers)
    assert reply.status_code == 409 and "not a draft" in reply.json()["error"]["message"]


def test_only_planners_write_plans(client, engine, demo):
    from tests.conftest import make_token

    token = make_token(engine, "dispatcher", "110102")
    reply = client.post("/plans", json={"name": "x"}, headers={"Authorization": f"Bearer {token}"})
    assert reply.status_code == 403 and "planner" in reply.json()["error"]["message"]


def test_only_plan_files_get_the_bulk_body_limit():
    from api.app import create_app
    from api.limits import BodyLimit
    from api.settings import Settings

    settings = Settings(max_body_bytes=10_000, bulk_max_bytes=5_000_000)
    app = create_app(settings)
    limits = next(m for m in app.user_middleware if m.cls is BodyLimit)
    middleware = BodyLimit(None, **limits.kwargs)
    assert middleware.limit_for("/plans/from-file") == middleware.limit_for("/plans/12/import") == 5_000_000
    assert middleware.limit_for("/plans") == middleware.limit_for("/plans/12/edits") == 10_000
    assert middleware.limit_for("/plans/12/importx") == 10_000
    assert middleware.limit_for("/incidents/bulk") == 5_000_000
