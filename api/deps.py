"""Request dependencies, declared once as Annotated aliases."""

import asyncio
import hashlib
import hmac
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated

import asyncpg
from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine

from api.params import MAX_ID
from api.policy import authorize
from api.settings import Settings
from geo.auth import TOKENS_CHANNEL, Caller, resolve_token_until
from geo.errors import Forbidden
from geo.planning import plans

_bearer = HTTPBearer(auto_error=False, description="Token from `wangge users create`.")
SESSION_COOKIE = "wangge_session"  # set by POST /login (api.routes.signin)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_settings(request: Request) -> Settings:
    """The app's settings."""
    return request.app.state.settings


@asynccontextmanager
async def pooled(state) -> AsyncIterator[asyncpg.Connection]:
    """A connection from the app's one asyncpg pool, waiting at most db_acquire_timeout_s for it. The wait is
    bounded with asyncio.timeout rather than acquire(timeout=), which costs a wait_for task per request."""
    wait_s = state.settings.db_acquire_timeout_s
    async with asyncio.timeout(wait_s):
        conn = await state.pool.acquire()
    try:
        yield conn
    finally:
        await state.pool.release(conn, timeout=wait_s)  # bounds the wait for a cancelled statement, too


async def get_conn(request: Request) -> AsyncIterator[asyncpg.Connection]:
    """A connection from the app's one pool for the length of the request."""
    async with pooled(request.app.state) as conn:
        yield conn


async def get_caller(
    request: Request,
    conn: Annotated[asyncpg.Connection, Depends(get_conn)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """The authenticated caller, by bearer token or by the session cookie of a signed-in browser, if the route's
    policy (api.policy) lets their role call it. A change made with the cookie must carry the session's CSRF
    value in X-CSRF-Token (pages hold it), so that no other site can make it on the user's behalf."""
    token = credentials.credentials if credentials else request.cookies.get(SESSION_COOKIE)
    caller = await cached_caller(request.app.state, conn, token)
    if not credentials and request.method not in SAFE_METHODS:
        sent = request.headers.get("x-csrf-token") or ""
        if not hmac.compare_digest(sent, csrf_value(token or "")):
            raise Forbidden("A change made from a signed-in page needs its X-CSRF-Token header; reload the page "
                            "and try again (programs send Authorization: Bearer instead).", field="X-CSRF-Token")
    authorize(caller, request.method, request.scope["route"].path)
    return caller


def csrf_value(session_token: str) -> str:
    """The CSRF value of a session: derived from the session token, so it needs no storage and dies with it."""
    return hashlib.sha256(b"wangge-csrf:" + session_token.encode()).hexdigest()[:32]


class TokenCache:
    """Callers by token, kept for token_cache_s and never past a token's expiry. It is emptied whenever a token
    is revoked or a user disabled (geo.auth announces it on TOKENS_CHANNEL, heard by `listen`), and it is not
    used while that announcement cannot be heard, so a revocation takes effect at once in every worker."""

    def __init__(self, ttl_s: float):
        """An empty cache; nothing is cached until `listen` is connected."""
        self.ttl_s, self.listening = ttl_s, False
        self.entries: dict[str | None, tuple[Caller, float]] = {}

    def get(self, token: str | None) -> Caller | None:
        """The cached caller, if fresh."""
        hit = self.entries.get(token) if self.listening else None
        if hit and hit[1] > time.monotonic():
            return hit[0]
        return None

    def put(self, token: str, caller: Caller, expires_at: datetime | None) -> None:
        """Remember a resolved caller (not past the token's expiry)."""
        if not self.listening or self.ttl_s <= 0:
            return
        ttl = self.ttl_s
        if expires_at is not None:
            ttl = min(ttl, (expires_at - datetime.now(UTC)).total_seconds())
        if len(self.entries) > 10_000:
            self.entries.clear()
        self.entries[token] = (caller, time.monotonic() + ttl)

    def clear(self, *_) -> None:
        """Forget every caller (a revocation was announced, or the announcements were lost)."""
        self.entries.clear()

    async def listen(self, dsn: str, connect_timeout_s: float) -> None:
        """Hear revocations for as long as the app runs, reconnecting after a lost connection."""
        while True:
            lost = asyncio.Event()
            conn = None
            try:
                conn = await asyncpg.connect(dsn, timeout=connect_timeout_s)
                await conn.add_listener(TOKENS_CHANNEL, self.clear)
                conn.add_termination_listener(lambda _, lost=lost: lost.set())
                self.clear()
                self.listening = True
                await lost.wait()
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                pass
            finally:
                self.listening = False
                self.clear()
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            await asyncio.sleep(1)


async def cached_caller(state, conn: asyncpg.Connection, token: str | None) -> Caller:
    """The caller behind a token, from the app's TokenCache or resolved (stamping its last use) and cached."""
    cache: TokenCache = state.token_cache
    caller = cache.get(token)
    if caller is None:
        caller, expires_at = await resolve_token_until(conn, token)
        if token:
            cache.put(token, caller, expires_at)
    state.token_use.count(caller.token_id)
    return caller


class TokenUse:
    """Requests per token in this worker, added to token_use (per local day) every token_use_flush_s and at
    shutdown: the audit's count of token use, without a write per request."""

    ADD = """INSERT INTO token_use (token_id, day, uses)
             SELECT t.id, current_date, t.n FROM unnest($1::int[], $2::bigint[]) AS t(id, n)
             WHERE EXISTS (SELECT FROM api_tokens WHERE id = t.id)
             ON CONFLICT (token_id, day) DO UPDATE SET uses = token_use.uses + EXCLUDED.uses"""

    def __init__(self) -> None:
        """Nothing counted yet."""
        self.counts: Counter[int] = Counter()

    def count(self, token_id: int | None) -> None:
        """One more request with this token."""
        if token_id is not None:
            self.counts[token_id] += 1

    async def flush(self, pool: asyncpg.Pool) -> None:
        """Add the counts to the database; kept for the next flush if it is not reachable."""
        counts, self.counts = self.counts, Counter()
        if not counts:
            return
        try:
            async with pool.acquire(timeout=5) as conn:
                await conn.execute(self.ADD, list(counts), list(counts.values()))
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            self.counts.update(counts)

    async def run(self, pool: asyncpg.Pool, every_s: float) -> None:
        """Flush every `every_s` for as long as the app runs."""
        while True:
            await asyncio.sleep(every_s)
            await self.flush(pool)


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
