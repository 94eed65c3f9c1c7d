"""Lean path for the hottest reads: GET /dispatch/nearest and /grids/at answered ahead of FastAPI's routing."""

import asyncio
import logging
import re
from collections import deque
from urllib.parse import parse_qsl

import asyncpg
from fastapi import FastAPI

from api.deps import cached_caller
from api.params import comma_list
from api.routes.dispatch import nearest_body
from geo.areas import hierarchy as areas
from geo.dispatch import nearest as dispatch
from geo.errors import DomainError
from geo.models import RESPONDER_ROLES, RESPONDER_STATUSES

# Only values that pydantic reads the same way; anything else (and every error) is left to the FastAPI route.
_FLOAT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d{1,3})?")
_INT = re.compile(r"[+-]?\d{1,9}")
_BOOL = {"true": True, "false": False, "1": True, "0": False}
_NEAREST = frozenset(("lon", "lat", "k", "status", "role", "max_distance", "mode", "include_stale", "crs"))
_GRID_AT = frozenset(("lon", "lat", "crs", "version"))
_TYPE = (b"content-type", b"application/geo+json")
log = logging.getLogger(__name__)


class Wangge(FastAPI):
    """The app: a plain GET /dispatch/nearest or /grids/at (WGS84, valid parameters, a bearer token that resolves)
    is answered here with the same bytes as its route; everything else — and every error — goes through FastAPI,
    which keeps the routes, their OpenAPI entries and their error replies."""

    async def __call__(self, scope, receive, send):
        lean = LEAN.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "GET" else None
        if lean is not None and not self.root_path:
            scope["app"] = self
            body = await lean(scope)
            if body is not None:
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-length", b"%d" % len(body)), _TYPE]})
                await send({"type": "http.response.body", "body": body})
                return
        await super().__call__(scope, receive, send)


class Connections:
    """A small LIFO pool of asyncpg connections for the lean path. Its statements are single read-only SELECTs
    outside transactions, so a connection needs no reset between requests; taking and giving one back costs well
    under a microsecond (asyncpg's Pool: ~40 µs of shielding, timeouts and a reset query). The connections use
    generic plans: re-planning the dispatch statement on every call cost more than running it."""

    def __init__(self, dsn: str, size: int, timezone: str):
        self.dsn, self.size = dsn, size
        self.server_settings = {"timezone": timezone, "plan_cache_mode": "force_generic_plan"}
        self.idle: list[asyncpg.Connection] = []
        self.open = 0  # connections made and not yet dropped
        self.waiters: deque[asyncio.Future] = deque()
        self.closed = False

    async def take(self) -> asyncpg.Connection:
        while True:
            if self.idle:
                return self.idle.pop()
            if self.open < self.size:
                self.open += 1
                try:
                    return await asyncpg.connect(self.dsn, server_settings=self.server_settings)
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
        self.closed = True
        idle, self.idle = self.idle, []
        self.open -= len(idle)
        await asyncio.gather(*(conn.close() for conn in idle), return_exceptions=True)


def connections(settings) -> Connections:
    return Connections(settings.libpq_url(), settings.pool_size, settings.timezone)


def _token(headers) -> str | None:
    """The bearer token as fastapi.security.HTTPBearer reads it (the first Authorization header)."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            credentials = credentials.strip()
            return credentials if scheme.lower() == "bearer" and credentials else None
    return None


def _params(query_string: bytes, names: frozenset) -> dict | None:
    """The query parameters (as Starlette parses them) with WGS84 lon, lat in range, or None if anything is
    missing, repeated, unknown or not plain."""
    query = query_string.decode("latin-1")
    if "%" in query or "+" in query:
        pairs = parse_qsl(query, keep_blank_values=True)
    else:  # nothing to unquote: parse_qsl's split, at a quarter of its cost
        pairs = [(name, value) for name, _, value in (part.partition("=") for part in query.split("&") if part)]
    params = dict(pairs)
    if len(params) != len(pairs) or not params.keys() <= names or params.get("crs", "EPSG:4326") != "EPSG:4326":
        return None
    lon, lat = params.get("lon", ""), params.get("lat", "")
    if not (_FLOAT.fullmatch(lon) and _FLOAT.fullmatch(lat)):
        return None
    params["lon"], params["lat"] = float(lon), float(lat)
    return params if -180 <= params["lon"] <= 180 and -90 <= params["lat"] <= 90 else None


def _nearest_query(params: dict) -> dispatch.Nearest | None:
    k, max_distance, stale = params.get("k", "5"), params.get("max_distance"), params.get("include_stale", "false")
    if not (_INT.fullmatch(k) and stale in _BOOL and params.get("mode", "straight") == "straight"
            and (max_distance is None or _FLOAT.fullmatch(max_distance))):
        return None
    distance = None if max_distance is None else float(max_distance)
    if distance is not None and not distance > 0:
        return None
    try:
        statuses = comma_list(params.get("status", "available"), RESPONDER_STATUSES, "status")
        roles = comma_list(params.get("role"), RESPONDER_ROLES, "role")
    except DomainError:
        return None
    return dispatch.Nearest(lon=params["lon"], lat=params["lat"], k=int(k), statuses=statuses, roles=roles,
                            max_distance_m=distance, include_stale=_BOOL[stale])


async def _answer(scope, work) -> bytes | None:
    """`await work(conn, caller, settings)` on a lean connection for the bearer token's caller; None (the route
    answers) without a token, or on any error: the route then gives the same error reply, or succeeds on the
    main pool if a lean connection broke."""
    token = _token(scope["headers"])
    state = scope["app"].state
    pool: Connections | None = getattr(state, "fast_connections", None)  # made by the app's lifespan
    if token is None or pool is None:
        return None
    try:
        conn = await pool.take()
    except Exception:
        log.warning("lean %s could not connect; the route answers instead", scope["path"], exc_info=True)
        return None
    try:
        caller = await cached_caller(state, conn, token)
        body = await work(conn, caller, state.settings)
    except DomainError:
        pool.give(conn)
        return None
    except BaseException as exc:
        pool.discard(conn)
        if isinstance(exc, Exception):
            log.warning("lean %s failed; the route answers instead", scope["path"], exc_info=True)
            return None
        raise
    pool.give(conn)
    return body


async def nearest(scope) -> bytes | None:
    """GET /dispatch/nearest: the route's reply body for a plain straight-line query, or None."""
    params = _params(scope["query_string"], _NEAREST)
    query = _nearest_query(params) if params is not None else None
    if query is None:
        return None

    async def work(conn, caller, settings):
        found = await dispatch.nearest(conn, caller, query, max_age_s=settings.position_max_age_s,
                                       speed_mps=settings.straight_speed_mps)
        return nearest_body(found, query.lon, query.lat, settings.straight_speed_mps)

    return await _answer(scope, work)


async def grid_at(scope) -> bytes | None:
    """GET /grids/at: the covering grid's Feature (as api.routes.areas.grid_at replies), or None."""
    params = _params(scope["query_string"], _GRID_AT)
    version = params.get("version") if params is not None else None
    if params is None or not (version is None or _INT.fullmatch(version)):
        return None

    async def work(conn, caller, settings):
        version_id = None if version is None else int(version)
        return (await areas.grid_at(conn, caller, params["lon"], params["lat"], version_id)).encode()

    return await _answer(scope, work)


LEAN = {"/dispatch/nearest": nearest, "/grids/at": grid_at}
