"""Lean path for the hottest reads: GET /dispatch/nearest and /grids/at, built from their routes' own parts.

`LeanPath` is an ASGI middleware that `create_app` installs inside the body limit and any other middleware
but compression (its small replies go out as they are), so they apply to it as to every route. For a GET of
those two paths with a bearer token and only the route's own parameters, it validates the query with the
route's model (api.params), resolves the caller, checks the route's policy (api.policy), runs the route's reply
function (api.routes) on a lean connection and sends the bytes, or the error reply the route's handler would
send (api.errors): the same answer, without FastAPI's dependency and routing work. Anything else (other
parameters, repeated ones, a token in the URL, dependency overrides) goes to the route.
"""

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import asyncpg
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import ValidationError
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from api.deps import cached_caller
from api.errors import DATABASE_UNAVAILABLE, domain_response, unavailable_response, validation_response
from api.params import GridAtQuery, NearestQuery, PointQuery
from api.policy import authorize
from api.routes.areas import grid_at_reply
from api.routes.dispatch import nearest_reply
from api.settings import Settings
from geo.errors import DomainError

log = logging.getLogger(__name__)


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
    pool: Connections = scope["app"].state.fast_connections
    if raw is None:
        return None
    try:
        params = model.model_validate(raw)
    except ValidationError as exc:
        return validation_response([{**e, "loc": ("query", *e["loc"])} for e in exc.errors()])
    try:
        conn = await pool.take()
    except DATABASE_UNAVAILABLE as exc:
        return unavailable_response(f"GET {scope['path']}", exc)
    state = scope["app"].state
    try:
        caller = await cached_caller(state, conn, bearer_token(scope["headers"]))
        authorize(caller, "GET", scope["path"])
        body = await reply(conn, caller, state.settings, params)
    except DomainError as exc:
        pool.give(conn)
        return domain_response(exc)
    except DATABASE_UNAVAILABLE as exc:
        pool.discard(conn)  # a broken or timed-out lean connection
        return unavailable_response(f"GET {scope['path']}", exc)
    except BaseException:
        pool.discard(conn)  # its state is unknown
        raise
    pool.give(conn)
    return Response(body, headers={"content-type": "application/geo+json"})


class Connections:
    """A small LIFO pool of asyncpg connections for the lean path. Its statements are single read-only SELECTs
    outside transactions, so a connection needs no reset between requests; taking and giving one back costs well
    under a microsecond (asyncpg's Pool: ~40 µs of shielding, timeouts and a reset query). The connections use
    generic plans: re-planning the dispatch statement on every call cost more than running it."""

    def __init__(self, dsn: str, size: int, timezone: str, connect_timeout_s: float = 5,
                 statement_timeout_s: float = 30):
        """Up to `size` connections to `dsn`, with generic plans, the given time zone and timeouts."""
        self.dsn, self.size, self.connect_timeout_s = dsn, size, connect_timeout_s
        self.command_timeout_s = statement_timeout_s + 5  # the server cancels first; this covers a frozen one
        self.server_settings = {"timezone": timezone, "plan_cache_mode": "force_generic_plan",
                                "statement_timeout": str(int(statement_timeout_s * 1000))}
        self.idle: list[asyncpg.Connection] = []
        self.open = 0  # connections made and not yet dropped
        self.waiters: deque[asyncio.Future] = deque()
        self.closed = False

    async def take(self) -> asyncpg.Connection:
        """An idle connection, a new one if there is room, else the next one given back."""
        while True:
            if self.idle:
                return self.idle.pop()
            if self.open < self.size:
                self.open += 1
                try:
                    return await asyncpg.connect(self.dsn, server_settings=self.server_settings,
                                                 timeout=self.connect_timeout_s,
                                                 command_timeout=self.command_timeout_s)
                except BaseException:
                    self._dropped()
                    raise
            waiter = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            try:
                conn = await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled() and waiter.result() is not None:
                    self.give(waiter.result())
                raise
            if conn is not None:
                return conn  # None: one was dropped, so there is room to connect

    def give(self, conn: asyncpg.Connection) -> None:
        """Return a connection after a clean query: to a waiter, else to the idle list."""
        if self.closed or conn.is_closed():
            self.discard(conn)
            return
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self.idle.append(conn)

    def discard(self, conn: asyncpg.Connection) -> None:
        """Drop a connection whose state is unknown (an error or a cancel in the middle of a query)."""
        conn.terminate()
        self._dropped()

    def _dropped(self) -> None:
        self.open -= 1
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def close(self) -> None:
        """Close the idle connections; those in use are dropped when given back."""
        self.closed = True
        idle, self.idle = self.idle, []
        self.open -= len(idle)
        await asyncio.gather(*(conn.close() for conn in idle), return_exceptions=True)


def connections(settings: Settings) -> Connections:
    """The lean path's connections, as many as the main pool may hold."""
    return Connections(settings.libpq_url(), settings.pool_size, settings.timezone, settings.db_connect_timeout_s,
                       settings.db_statement_timeout_s)
