"""Who may call what: one table of every route and the roles that may call it.

`authorize` checks the table on every authenticated request (api.deps.get_caller and the lean path);
`check_routes` stops the app at start-up if a route is missing from it, or if a route that needs a role does
not resolve its caller. What each role then sees is a SQL filter in geo/: the caller's area subtree for all,
and besides that a reporter's own reports (Caller.own_reports), a grid worker's own responder record
(Caller.own_responder) and the plans of the caller's area (geo.planning.plans.VISIBLE). Admins may call
everything and see everything.
"""

from collections.abc import Iterable

from fastapi.routing import APIRoute

from geo.auth import Caller
from geo.errors import Forbidden

PUBLIC = "public"  # no token: health, docs, sign-in
OPEN311 = "open311"  # GeoReport v2: api_key, checked by the Open311 routes themselves (reads per a setting)

SUPERVISOR, PLANNER, DISPATCHER, GRID_WORKER, REPORTER = "supervisor", "planner", "dispatcher", "grid_worker", \
    "reporter"
EVERYONE = (SUPERVISOR, PLANNER, DISPATCHER, GRID_WORKER, REPORTER)
INCIDENT_READERS = (SUPERVISOR, DISPATCHER, GRID_WORKER, REPORTER)  # a reporter: their own; a grid worker: their grid
INCIDENT_STAFF = (SUPERVISOR, DISPATCHER)
FIELD = (SUPERVISOR, DISPATCHER, GRID_WORKER)  # a grid worker: their own incidents and responder record
ANALYSTS = (SUPERVISOR, PLANNER, DISPATCHER)
PLAN_READERS = (PLANNER, SUPERVISOR)
PLAN_WRITERS = (PLANNER,)
ADMINS: tuple[str, ...] = ()  # admin only

Policy = tuple[str, ...] | str
POLICY: dict[tuple[str, str], Policy] = {
    ("GET", "/health"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/oauth2-redirect"): PUBLIC,
    ("GET", "/redoc"): PUBLIC,
    # areas: the grid hierarchy and who works each grid (public on every grid's sign, 网格员公示牌)
    ("GET", "/areas/{code}"): EVERYONE,
    ("GET", "/areas/{code}/children"): EVERYONE,
    ("GET", "/areas/{code}/history"): EVERYONE,
    ("GET", "/grids/at"): EVERYONE,
    # incidents
    ("POST", "/incidents"): EVERYONE,
    ("POST", "/incidents/bulk"): INCIDENT_STAFF,
    ("GET", "/incidents"): INCIDENT_READERS,
    ("GET", "/me/incidents"): EVERYONE,
    ("GET", "/incidents/{incident_id}"): INCIDENT_READERS,
    ("POST", "/incidents/{incident_id}/actions"): FIELD,
    ("POST", "/incidents/{incident_id}/reassign"): INCIDENT_STAFF,
    ("POST", "/incidents/{incident_id}/merge"): INCIDENT_STAFF,
    ("POST", "/incidents/{incident_id}/dispatch"): INCIDENT_STAFF,
    # responders and dispatch: names, phones and live positions of staff
    ("POST", "/responders"): INCIDENT_STAFF,
    ("GET", "/responders"): FIELD,
    ("GET", "/responders/{responder_id}"): FIELD,
    ("PATCH", "/responders/{responder_id}"): FIELD,
    ("DELETE", "/responders/{responder_id}"): INCIDENT_STAFF,
    ("POST", "/responders/{responder_id}/position"): FIELD,
    ("POST", "/responders/positions"): FIELD,
    ("GET", "/dispatch/nearest"): INCIDENT_STAFF,
    # pages
    ("GET", "/maps/grids"): (SUPERVISOR, PLANNER, DISPATCHER, GRID_WORKER),
    ("GET", "/maps/incidents"): INCIDENT_STAFF,
    ("GET", "/maps/dispatch"): INCIDENT_STAFF,
    ("GET", "/maps/coverage"): ANALYSTS,
    ("GET", "/maps/plans/{plan_id}"): PLAN_READERS,
    # analysis
    ("GET", "/analysis/performance"): ANALYSTS,
    ("GET", "/analysis/coverage"): ANALYSTS,
    ("GET", "/analysis/staffing"): ANALYSTS,
    ("GET", "/analysis/response-coverage"): ANALYSTS,
    ("GET", "/analysis/response-coverage/chart.svg"): ANALYSTS,
    ("POST", "/analysis/stationing"): ANALYSTS,
    ("GET", "/analysis/hotspots"): ANALYSTS,
    # Open311 (GeoReport v2)
    ("GET", "/open311/v2/discovery.{fmt}"): OPEN311,
    ("GET", "/open311/v2/services.{fmt}"): OPEN311,
    ("GET", "/open311/v2/services/{code}.{fmt}"): OPEN311,
    ("GET", "/open311/v2/requests.{fmt}"): OPEN311,
    ("POST", "/open311/v2/requests.{fmt}"): OPEN311,
    ("GET", "/open311/v2/requests/{request_id}.{fmt}"): OPEN311,
    ("GET", "/open311/v2/{rest:path}"): OPEN311,  # the spec's error format for anything else
    ("POST", "/open311/v2/{rest:path}"): OPEN311,
    ("PUT", "/open311/v2/{rest:path}"): OPEN311,
    ("PATCH", "/open311/v2/{rest:path}"): OPEN311,
    ("DELETE", "/open311/v2/{rest:path}"): OPEN311,
    # plans: the drafts of the caller's area
    ("GET", "/plans"): PLAN_READERS,
    ("POST", "/plans"): PLAN_WRITERS,
    ("POST", "/plans/from-file"): PLAN_WRITERS,
    ("GET", "/plans/{plan_id}"): PLAN_READERS,
    ("DELETE", "/plans/{plan_id}"): PLAN_WRITERS,
    ("POST", "/plans/{plan_id}/edits"): PLAN_WRITERS,
    ("GET", "/plans/{plan_id}/grids"): PLAN_READERS,
    ("GET", "/plans/{plan_id}/validation"): PLAN_READERS,
    ("POST", "/plans/{plan_id}/fix-slivers"): PLAN_WRITERS,
    ("POST", "/plans/{plan_id}/import"): PLAN_WRITERS,
    ("GET", "/plans/{plan_id}/export"): PLAN_READERS,
    ("GET", "/plans/{plan_id}/diff"): PLAN_READERS,
    ("POST", "/plans/{plan_id}/publish"): PLAN_WRITERS,
    ("POST", "/plans/{plan_id}/propose"): PLAN_WRITERS,
    ("GET", "/jobs/{job_id}"): PLAN_READERS,
    ("POST", "/jobs/{job_id}/cancel"): PLAN_WRITERS,
    # users and tokens
    ("GET", "/admin/users"): ADMINS,
    ("POST", "/admin/users/{user_id}/disable"): ADMINS,
    ("GET", "/admin/tokens"): ADMINS,
    ("POST", "/admin/tokens/{token_id}/revoke"): ADMINS,
    ("GET", "/audit"): ADMINS,
    # sign-in for pages: anyone may try (failures are limited per address and per user name)
    ("GET", "/login"): PUBLIC,
    ("POST", "/login"): PUBLIC,
    ("POST", "/logout"): PUBLIC,
}


def policy_of(method: str, path: str) -> Policy:
    """The policy of a route (HEAD is GET's); KeyError for a route missing from the table."""
    return POLICY["GET" if method == "HEAD" else method, path]


def authorize(caller: Caller, method: str, path: str) -> None:
    """Forbidden unless the caller's role may call this route (admins may call every route)."""
    allowed = policy_of(method, path)
    if caller.role != "admin" and (isinstance(allowed, str) or caller.role not in allowed):
        roles = "admin" if isinstance(allowed, str) else ", ".join(("admin", *allowed))
        raise Forbidden(f"Role {caller.role!r} may not call {method} {path}; it is for: {roles}.")


def _resolves_caller(route: APIRoute, get_caller) -> bool:
    pending = list(route.dependant.dependencies)
    while pending:
        dependency = pending.pop()
        if dependency.call is get_caller:
            return True
        pending.extend(dependency.dependencies)
    return False


def check_routes(routes: Iterable, get_caller) -> None:
    """RuntimeError naming every route that is missing from POLICY, or that the table gives to roles while
    it does not resolve its caller (so the role could not be checked); and every stale entry of the table."""
    problems, seen = [], set()
    for route in routes:
        if not isinstance(route, APIRoute):
            continue
        for method in sorted((route.methods or set()) - {"HEAD", "OPTIONS"}):
            seen.add((method, route.path))
            allowed = POLICY.get((method, route.path))
            if allowed is None:
                problems.append(f"{method} {route.path} has no entry in api.policy.POLICY")
            elif not isinstance(allowed, str) and not _resolves_caller(route, get_caller):
                problems.append(f"{method} {route.path} is for roles but does not depend on get_caller")
    problems += [f"POLICY names {method} {path}, which is no route" for method, path in POLICY.keys() - seen]
    if problems:
        raise RuntimeError("Route policy incomplete:\n  " + "\n  ".join(problems))
