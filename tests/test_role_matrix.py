"""The role matrix: every route of the OpenAPI schema, called as every role, from inside and from outside the
resource's area, with no token and with a bad one, answers exactly the status written here.

The table below is written from what each role is for (independently of api/policy.py):
a reporter files reports and sees their own; a grid worker works their grid's incidents and their own responder
record; a dispatcher runs responders and dispatch in their area; a supervisor sees the incidents, maps and
analysis of their area; a planner the plans of their area; an admin everything. Requests are built to change
nothing (bodies that fail validation, actions a closed incident refuses), except where a fresh resource is
made for each call. A route missing from the table fails the suite.
"""

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import text

from tests.conftest import COUNTS, make_token

A, B = "110102001001", "110102003001"  # two communities in different streets
NOT_IN_THE_MATRIX = {"/docs", "/docs/oauth2-redirect", "/redoc", "/open311/v2/{rest:path}"}
ROLES = ("supervisor", "planner", "dispatcher", "grid_worker", "reporter")
S, P, D, W, R = ROLES
EVERYONE = frozenset(ROLES)


@dataclass
class Case:
    """One route's sample request (for a resource in A) and the statuses it must answer.

    `roles` may call it (admin always may). `inside`: the status for an allowed caller of A (or admin);
    `outside`: for an allowed caller of B; `role_inside` overrides `inside` per role (what a role sees of A);
    `anonymous`: with no token (401 unless public)."""

    roles: frozenset
    path: Any  # str, or a function of the context making a fresh resource for each call
    inside: int = 200
    outside: int = 404
    role_inside: dict = field(default_factory=dict)
    anonymous: int = 401
    params: dict = field(default_factory=dict)
    json: Any = None
    content: bytes | None = None
    headers: dict = field(default_factory=dict)
    open311: bool = False  # the token travels as api_key (GeoReport v2), not as a bearer header


@pytest.fixture(scope="module")
def ctx(engine, demo, client, admin_headers):
    """Resources in A, users of every role in A and in B, and an admin."""
    with engine.begin() as conn:
        grid, lon, lat = conn.execute(text(
            "SELECT code, ST_X(ST_PointOnSurface(geom)), ST_Y(ST_PointOnSurface(geom)) FROM areas "
            "WHERE level = 'grid' AND code LIKE :a || '%' AND version_id = "
            "(SELECT id FROM grid_versions WHERE status = 'active') ORDER BY code LIMIT 1"), {"a": A}).one()
        incident = conn.execute(text("SELECT id FROM incidents WHERE grid_code LIKE :a || '%' AND status = 'closed' "
                                     "ORDER BY id LIMIT 1"), {"a": A}).scalar_one()
        responder = conn.execute(text("SELECT id FROM responders WHERE home_grid_code LIKE :a || '%' "
                                      "AND user_id IS NULL ORDER BY id LIMIT 1"), {"a": A}).scalar_one()
        active = conn.execute(text("SELECT id FROM grid_versions WHERE status = 'active'")).scalar_one()
    tokens = {(role, area): make_token(engine, role, area) for role in ROLES for area in (A, B)}
    tokens["admin", None] = admin_headers["Authorization"].split()[1]
    planner_a = {"Authorization": f"Bearer {tokens[P, A]}"}

    def new_plan(_ctx=None) -> int:
        reply = client.post("/plans", json={"name": "matrix"}, headers=planner_a)
        assert reply.status_code == 201, reply.text
        return reply.json()["id"]

    def new_job(_ctx=None) -> int:
        with engine.begin() as conn:
            user = conn.execute(text("SELECT user_id FROM api_tokens t JOIN users u ON u.id = t.user_id "
                                     "WHERE u.role = 'planner' AND u.area_code = :a ORDER BY t.id DESC LIMIT 1"),
                                {"a": A}).scalar_one()
            return conn.execute(text(
                "INSERT INTO jobs (kind, status, params, created_by) VALUES ('propose', 'queued', "
                "CAST(:p AS jsonb), :u) RETURNING id"), {"p": f'{{"area": "{A}"}}', "u": user}).scalar_one()

    def new_token(_ctx=None) -> int:
        from geo.auth import hash_token

        token = make_token(engine, R, A)
        with engine.connect() as conn:
            return conn.execute(text("SELECT id FROM api_tokens WHERE token_hash = :h"),
                                {"h": hash_token(token)}).scalar_one()

    def new_user(_ctx=None) -> int:
        with engine.connect() as conn:
            return conn.execute(text("SELECT user_id FROM api_tokens WHERE id = :t"),
                                {"t": new_token()}).scalar_one()

    return {"new_token": new_token, "new_user": new_user, "grid": grid, "lon": lon, "lat": lat, "incident": incident,
            "responder": responder, "active": active,
            "plan": new_plan(), "job": new_job(), "tokens": tokens, "new_plan": new_plan, "new_job": new_job}


def cases(c: dict) -> dict[tuple[str, str], Case]:
    """The table: (method, path template) → Case."""
    point = {"lon": c["lon"], "lat": c["lat"]}
    area = {"area": A}
    inc, resp, plan, job = c["incident"], c["responder"], c["plan"], c["job"]
    analysts, incident_readers, field_ = frozenset({S, P, D}), frozenset({S, D, W, R}), frozenset({S, D, W})
    staff, plan_readers, planners = frozenset({S, D}), frozenset({P, S}), frozenset({P})
    csv = {"Content-Type": "text/csv"}
    return {
        ("GET", "/health"): Case(EVERYONE, "/health", outside=200, anonymous=200),
        ("GET", "/areas/{code}"): Case(EVERYONE, f"/areas/{A}"),
        ("GET", "/areas/{code}/children"): Case(EVERYONE, f"/areas/{A}/children"),
        ("GET", "/areas/{code}/history"): Case(EVERYONE, f"/areas/{c['grid']}/history"),
        ("GET", "/grids/at"): Case(EVERYONE, "/grids/at", params=point),
        # incidents: a closed incident of A, which refuses every action and dispatch (409) without changing
        ("POST", "/incidents"): Case(EVERYONE, "/incidents", json={}, inside=422, outside=422),
        ("POST", "/incidents/bulk"): Case(staff, "/incidents/bulk", content=b"", headers=csv, inside=400,
                                          outside=400),
        ("GET", "/incidents"): Case(incident_readers, "/incidents", params=area),
        ("GET", "/me/incidents"): Case(EVERYONE, "/me/incidents", inside=404, outside=404),  # no responder linked
        ("GET", "/incidents/{incident_id}"): Case(incident_readers, f"/incidents/{inc}", role_inside={R: 404}),
        ("POST", "/incidents/{incident_id}/actions"): Case(field_, f"/incidents/{inc}/actions",
                                                           json={"action": "close"}, inside=409,
                                                           role_inside={W: 403}),  # not their incident
        ("POST", "/incidents/{incident_id}/reassign"): Case(staff, f"/incidents/{inc}/reassign", json={},
                                                            inside=422, outside=422),
        ("POST", "/incidents/{incident_id}/merge"): Case(staff, f"/incidents/{inc}/merge", json={}, inside=422,
                                                         outside=422),
        ("POST", "/incidents/{incident_id}/dispatch"): Case(staff, f"/incidents/{inc}/dispatch", json={},
                                                            inside=409),
        # responders: a grid's responder of A linked to no user (no grid worker's own record)
        ("POST", "/responders"): Case(staff, "/responders", json={}, inside=422, outside=422),
        ("GET", "/responders"): Case(field_, "/responders", params=area),
        ("GET", "/responders/{responder_id}"): Case(field_, f"/responders/{resp}", role_inside={W: 404}),
        ("PATCH", "/responders/{responder_id}"): Case(field_, f"/responders/{resp}", json={},
                                                      role_inside={W: 404}),
        ("DELETE", "/responders/{responder_id}"): Case(staff, f"/responders/{resp}", inside=409),  # has history
        ("POST", "/responders/{responder_id}/position"): Case(field_, f"/responders/{resp}/position", json={},
                                                              inside=422, outside=422),
        ("POST", "/responders/positions"): Case(field_, "/responders/positions", json={}, inside=422,
                                                outside=422),
        ("GET", "/dispatch/nearest"): Case(staff, "/dispatch/nearest", params=point, outside=200),  # B's own
        # pages
        ("GET", "/maps/grids"): Case(frozenset({S, P, D, W}), "/maps/grids", params=area),
        ("GET", "/maps/incidents"): Case(staff, "/maps/incidents", params=area),
        ("GET", "/maps/dispatch"): Case(staff, "/maps/dispatch", params=point),
        ("GET", "/maps/coverage"): Case(analysts, "/maps/coverage", params=area),
        ("GET", "/maps/plans/{plan_id}"): Case(plan_readers, f"/maps/plans/{plan}", params=area),
        # analysis
        ("GET", "/analysis/performance"): Case(analysts, "/analysis/performance", params=area),
        ("GET", "/analysis/coverage"): Case(analysts, "/analysis/coverage", params=area),
        ("GET", "/analysis/staffing"): Case(analysts, "/analysis/staffing", params=area),
        ("GET", "/analysis/response-coverage"): Case(analysts, "/analysis/response-coverage", params=area),
        ("GET", "/analysis/response-coverage/chart.svg"): Case(analysts, "/analysis/response-coverage/chart.svg",
                                                               params=area),
        ("POST", "/analysis/stationing"): Case(analysts, "/analysis/stationing", json={"area": A, "k": 1}),
        ("GET", "/analysis/hotspots"): Case(analysts, "/analysis/hotspots", params=area),
        # Open311: any role's token is an api_key; reads need one (public reads are off by default)
        ("GET", "/open311/v2/discovery.{fmt}"): Case(EVERYONE, "/open311/v2/discovery.json", outside=200,
                                                     anonymous=200, open311=True),
        ("GET", "/open311/v2/services.{fmt}"): Case(EVERYONE, "/open311/v2/services.json", outside=200,
                                                    anonymous=403, open311=True),
        ("GET", "/open311/v2/services/{code}.{fmt}"): Case(EVERYONE, "/open311/v2/services/0101.json", outside=200,
                                                           anonymous=403, open311=True),
        ("GET", "/open311/v2/requests.{fmt}"): Case(EVERYONE, "/open311/v2/requests.json", outside=200,
                                                    anonymous=403, open311=True),
        ("GET", "/open311/v2/requests/{request_id}.{fmt}"): Case(EVERYONE, f"/open311/v2/requests/{inc}.json",
                                                                 role_inside={R: 404}, anonymous=403, open311=True),
        ("POST", "/open311/v2/requests.{fmt}"): Case(EVERYONE, "/open311/v2/requests.json", inside=400, outside=400,
                                                     anonymous=403, open311=True),  # no service_code
        # plans: A's draft (made by A's planner); deleting and cancelling get a fresh plan or job each time
        ("GET", "/plans"): Case(plan_readers, "/plans", outside=200),
        ("POST", "/plans"): Case(planners, "/plans", json={}, inside=422, outside=422),
        ("POST", "/plans/from-file"): Case(planners, "/plans/from-file", content=b"", inside=400, outside=400),
        ("GET", "/plans/{plan_id}"): Case(plan_readers, f"/plans/{plan}"),
        ("DELETE", "/plans/{plan_id}"): Case(planners, lambda ctx: f"/plans/{ctx['new_plan']()}", inside=204),
        ("POST", "/plans/{plan_id}/edits"): Case(planners, f"/plans/{plan}/edits", json={}, inside=422),
        ("GET", "/plans/{plan_id}/grids"): Case(plan_readers, f"/plans/{plan}/grids", params={"community": A}),
        ("GET", "/plans/{plan_id}/validation"): Case(plan_readers, f"/plans/{plan}/validation", params=area),
        ("POST", "/plans/{plan_id}/fix-slivers"): Case(planners, f"/plans/{plan}/fix-slivers", json={}, inside=422),
        ("POST", "/plans/{plan_id}/import"): Case(planners, f"/plans/{plan}/import", content=b"", inside=422),
        ("GET", "/plans/{plan_id}/export"): Case(plan_readers, f"/plans/{plan}/export", params={"format": "geojson"}),
        ("GET", "/plans/{plan_id}/diff"): Case(plan_readers, f"/plans/{plan}/diff", params={"limit": 1}),
        ("POST", "/plans/{plan_id}/publish"): Case(planners, f"/plans/{plan}/publish", json={}, inside=422),
        ("POST", "/plans/{plan_id}/propose"): Case(planners, f"/plans/{plan}/propose", json={}, inside=422),
        ("GET", "/jobs/{job_id}"): Case(plan_readers, f"/jobs/{job}"),
        ("POST", "/jobs/{job_id}/cancel"): Case(planners, lambda ctx: f"/jobs/{ctx['new_job']()}/cancel"),
        # users and tokens: admins only
        ("GET", "/admin/users"): Case(frozenset(), "/admin/users"),
        ("POST", "/admin/users/{user_id}/disable"): Case(frozenset(),
                                                         lambda ctx: f"/admin/users/{ctx['new_user']()}/disable"),
        ("GET", "/admin/tokens"): Case(frozenset(), "/admin/tokens", params={"user_id": 1}),
        ("POST", "/admin/tokens/{token_id}/revoke"): Case(frozenset(),
                                                          lambda ctx: f"/admin/tokens/{ctx['new_token']()}/revoke"),
        ("GET", "/audit"): Case(frozenset(), "/audit", params={"limit": 5}),
        # sign-in pages: the same for everyone (an empty form is a 422; sign-out without a session does nothing
        # and lands on the sign-in page)
        ("GET", "/login"): Case(EVERYONE, "/login", outside=200, anonymous=200),
        ("POST", "/login"): Case(EVERYONE, "/login", inside=422, outside=422, anonymous=422),
        ("POST", "/logout"): Case(EVERYONE, "/logout", outside=200, anonymous=200),
    }


def _call(client, ctx, case: Case, method: str, token: str | None):
    path = case.path(ctx) if callable(case.path) else case.path
    params, headers, data = dict(case.params), dict(case.headers), None
    if case.open311:
        if token is not None:
            if method == "POST":
                data = {"api_key": token}
            else:
                params["api_key"] = token
    elif token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return client.request(method, path, params=params, headers=headers, json=case.json, content=case.content,
                          data=data)


def _expected(case: Case, role: str | None, area: str | None) -> int:
    if role is None:
        return case.anonymous
    if role != "admin" and role not in case.roles:
        return 403 if not case.open311 else case.inside
    if area == B:
        return case.outside
    return case.role_inside.get(role, case.inside)


def test_every_route_answers_every_role_exactly_as_the_table_says(client, ctx):
    from fastapi.routing import APIRoute

    spec = client.get("/openapi.json").json()
    routes = {(method.upper(), path) for path, item in spec["paths"].items() for method in item}
    # and the pages outside the schema, but for the docs and Open311's catch-all (it answers 404/405 only)
    routes |= {(method, route.path) for route in client.app.state.routes if isinstance(route, APIRoute)
               and not route.include_in_schema and route.path not in NOT_IN_THE_MATRIX
               for method in route.methods - {"HEAD", "OPTIONS"}}
    table = cases(ctx)
    assert routes - table.keys() == set(), "routes missing from the role matrix"
    assert table.keys() - routes == set(), "the matrix names routes that do not exist"
    callers = [("admin", None), *((role, area) for role in ROLES for area in (A, B))]
    wrong, counts = [], Counter()
    for (method, template), case in sorted(table.items()):
        for role, area in [(None, None), *callers]:
            token = None if role is None else ctx["tokens"][role, area]
            got = _call(client, ctx, case, method, token).status_code
            want = _expected(case, role, area)
            counts["calls"] += 1
            if got != want:
                wrong.append(f"{method} {template} as {role or 'anonymous'}@{area}: {got}, expected {want}")
        if not case.open311 and case.anonymous == 401:  # a token that is no token
            counts["calls"] += 1
            if _call(client, ctx, case, method, "wg_not-a-token").status_code != 401:
                wrong.append(f"{method} {template} with a bad token: not 401")
    COUNTS.append(f"role matrix: {len(table)} routes × {len(callers) + 1} callers (6 roles, inside and outside, "
                  f"and no token) = {counts['calls']} calls")
    assert wrong == [], "\n".join(wrong)
    assert counts["calls"] >= len(table) * (len(callers) + 1)


def test_lists_show_only_what_the_caller_may_see(client, ctx, engine):
    def get(path, role, area, **params):
        return client.get(path, params=params, headers={"Authorization": f"Bearer {ctx['tokens'][role, area]}"})

    assert ctx["plan"] in [p["id"] for p in get("/plans", P, A).json()]
    assert ctx["plan"] not in [p["id"] for p in get("/plans", P, B).json()]
    assert ctx["active"] in [p["id"] for p in get("/plans", P, B).json()]  # the published version is everyone's
    assert get("/incidents", R, A).json()["features"] == []  # this reporter has reported nothing
    assert get("/responders", W, A).json()["features"] == []  # this grid worker has no responder record
    supervisors = get("/incidents", S, A, limit=50).json()["features"]
    assert supervisors and all(f["properties"]["grid_code"].startswith(A) for f in supervisors)
