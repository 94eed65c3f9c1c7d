"""Lean path for the hottest reads: GET /dispatch/nearest and /grids/at, built from their routes' own parts.

`LeanPath` is an ASGI middleware that `create_app` installs inside the body limit and any other middleware
but compression (its small replies go out as they are), so they apply to it as to every route. For a GET of
those two paths with a bearer token and only the route's own parameters, it validates the query with the
route's model (api.params), resolves the caller, checks the route's policy (api.policy), runs the route's
reply function (api.routes) on a connection from the app's one pool and sends the bytes, or the error reply
the route's handler would send (api.errors): the same answer, without FastAPI's dependency and routing work.
Anything else (other parameters, repeated ones, a session cookie without a bearer token, dependency
overrides) goes to the route.
"""

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import asyncpg
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import ValidationError
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from api.deps import SESSION_COOKIE, cached_caller, pooled
from api.errors import DATABASE_UNAVAILABLE, domain_response, unavailable_response, validation_response
from api.params import GridAtQuery, NearestQuery, PointQuery
from api.policy import authorize
from api.routes.areas import grid_at_reply
from api.routes.dispatch import nearest_reply
from api.settings import Settings
from geo.errors import DomainError


async def _nearest(conn, caller, settings: Settings, params: NearestQuery) -> bytes:
    return await nearest_reply(conn, caller, settings, params.nearest())


async def _grid_at(conn, caller, settings: Settings, params: GridAtQuery) -> bytes:
    return await grid_at_reply(conn, caller, params)


Reply = Callable[[asyncpg.Connection, Any, Settings, Any], Awaitable[bytes]]
# path -> (the route's query model, its reply function)
ROUTES: dict[str, tuple[type[PointQuery], Reply]] = {
    "/dispatch/nearest": (NearestQuery, _nearest), "/grids/at": (GridAtQuery, _grid_at)}
_NAMES = {path: frozenset(model.model_fields) for path, (model, _) in ROUTES.items()}


class LeanPath:
    """Answers plain GET /dispatch/nearest and /grids/at; passes everything else on."""

    def __init__(self, app: ASGIApp):
        """Wrap the rest of the stack."""
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a lean request, or pass it on."""
        route = ROUTES.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "GET" else None
        if route is not None and not scope["app"].dependency_overrides and not scope.get("root_path"):
            response = await answer(scope, *route)
            if response is not None:
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def query_params(query_string: bytes, names: frozenset) -> dict | None:
    """The query parameters as Starlette parses them, or None if any is repeated or not one of `names`."""
    query = query_string.decode("latin-1")
    if "%" in query or "+" in query:
        pairs = parse_qsl(query, keep_blank_values=True)
    else:  # nothing to unquote: parse_qsl's split, at a quarter of its cost
        pairs = [(name, value) for name, _, value in (part.partition("=") for part in query.split("&") if part)]
    params = dict(pairs)
    return params if len(params) == len(pairs) and params.keys() <= names else None


def _has_session(headers) -> bool:
    return any(name == b"cookie" and SESSION_COOKIE.encode() in value for name, value in headers)


def bearer_token(headers) -> str | None:
    """The bearer token as fastapi.security.HTTPBearer reads it (the first Authorization header)."""
    for name, value in headers:
        if name == b"authorization":
            scheme, credentials = get_authorization_scheme_param(value.decode("latin-1"))
            return credentials if scheme.lower() == "bearer" and credentials else None
    return None


async def answer(scope: Scope, model: type[PointQuery], reply: Reply) -> Response | None:
    """The route's response for this request, or None when the route must answer it itself."""
    raw = query_params(scope["query_string"], _NAMES[scope["path"]])
    token = bearer_token(scope["headers"])
    if raw is None or (token is None and _has_session(scope["headers"])):
        return None  # a signed-in browser's cookie is the route's to read
    try:
        params = model.model_validate(raw)
    except ValidationError as exc:
        return validation_response([{**e, "loc": ("query", *e["loc"])} for e in exc.errors()])
    state = scope["app"].state
    try:  # the app's one pool, as the route's get_conn takes it
        async with pooled(state) as conn:
            caller = await cached_caller(state, conn, token)
            authorize(caller, "GET", scope["path"])
            body = await reply(conn, caller, state.settings, params)
    except DomainError as exc:
        return domain_response(exc)
    except DATABASE_UNAVAILABLE as exc:
        return unavailable_response(f"GET {scope['path']}", exc)
    return Response(body, headers={"content-type": "application/geo+json"})
