"""Request dependencies, declared once as Annotated aliases."""

import time
from collections.abc import AsyncIterator
from typing import Annotated

import asyncpg
from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine

from api.params import MAX_ID
from api.policy import authorize
from api.settings import Settings
from geo.auth import Caller, resolve_token
from geo.planning import plans

_bearer = HTTPBearer(auto_error=False, description="Token from `wangge users create`.")


def get_settings(request: Request) -> Settings:
    """The app's settings."""
    return request.app.state.settings


async def get_conn(request: Request) -> AsyncIterator[asyncpg.Connection]:
    """A connection from the app's asyncpg pool for the length of the request."""
    state = request.app.state
    async with state.pool.acquire(timeout=state.settings.db_acquire_timeout_s) as conn:
        yield conn


async def get_caller(
    request: Request,
    conn: Annotated[asyncpg.Connection, Depends(get_conn)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """The authenticated caller, if the route's policy (api.policy) lets their role call it; browsers opening
    map pages may pass ?access_token= instead."""
    token = credentials.credentials if credentials else request.query_params.get("access_token")
    caller = await cached_caller(request.app.state, conn, token)
    authorize(caller, request.method, request.scope["route"].path)
    return caller


async def cached_caller(state, conn: asyncpg.Connection, token: str | None) -> Caller:
    """The caller behind a token, from the per-process cache (token_cache_s) or resolved and cached."""
    cache: dict = state.token_cache
    hit = cache.get(token)
    now = time.monotonic()
    if hit and hit[1] > now:
        return hit[0]
    caller = await resolve_token(conn, token)
    if len(cache) > 10_000:
        cache.clear()
    cache[token] = (caller, now + state.settings.token_cache_s)
    return caller


SettingsDep = Annotated[Settings, Depends(get_settings)]
Conn = Annotated[asyncpg.Connection, Depends(get_conn)]
CurrentCaller = Annotated[Caller, Depends(get_caller)]


def get_sync_engine(request: Request) -> Engine:
    """The app's sync SQLAlchemy engine (made by the lifespan), for work that runs in worker threads."""
    return request.app.state.sync_engine


SyncEngine = Annotated[Engine, Depends(get_sync_engine)]


def visible_plan(plan_id: Annotated[int, Path(ge=1, le=MAX_ID, description="Plan (grid version) id")],
                 caller: CurrentCaller, engine: SyncEngine) -> int:
    """The plan id from the path, once the caller may see that plan (404 otherwise: geo.planning.plans.VISIBLE)."""
    with engine.connect() as conn:
        plans.require_visible(conn, caller, plan_id)
    return plan_id


PlanId = Annotated[int, Depends(visible_plan)]
