"""The FastAPI application factory; the lifespan owns the database pool."""

import asyncio
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import fastapi_offline
from fastapi import FastAPI
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from api import errors, fast, policy
from api.deps import TokenCache, TokenUse, get_caller
from api.limits import BodyLimit, InternalErrors, RateLimit, RejectNul
from api.page_headers import PageHeaders
from api.routes import (
    admin,
    analysis,
    areas,
    audit,
    bulk,
    coverage,
    dispatch,
    health,
    incidents,
    jobs,
    maps,
    open311,
    plan_checks,
    plan_edits,
    plan_files,
    plan_publish,
    plans,
    signin,
)
from api.schemas_open311 import ERROR_RESPONSES
from api.settings import PROJECT_ROOT, Settings
from geo import jobs as job_runner
from geo.db import sync_engine
from geo.incidents import escalation


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app: routes, error handlers, middleware, docs, and a lifespan that owns the pools and engines."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # The one pool, for routes and the lean path alike. asyncpg directly: statements are prepared once per
        # connection and no BEGIN/ROLLBACK wraps reads.
        app.state.pool = await asyncpg.create_pool(
            settings.libpq_url(), min_size=0, max_size=settings.pool_size, timeout=settings.db_connect_timeout_s,
            # the server cancels a long statement; the client gives up a little later if the server is frozen
            command_timeout=settings.db_statement_timeout_s + 5,
            reset=_keep_session,
            # generic plans: re-planning the dispatch and grid lookups on every call cost more than running them
            server_settings={"timezone": settings.timezone, "plan_cache_mode": "force_generic_plan",
                             "statement_timeout": str(int(settings.db_statement_timeout_s * 1000))},
        )
        app.state.token_cache = TokenCache(settings.token_cache_s)
        listener = asyncio.create_task(app.state.token_cache.listen(settings.libpq_url(),
                                                                    settings.db_connect_timeout_s))
        app.state.token_use = TokenUse()
        counting = asyncio.create_task(app.state.token_use.run(app.state.pool, settings.token_use_flush_s))
        # Sync work (analyses in threads, bulk import, jobs, escalation) shares one engine; nothing connects yet.
        connect = settings.sync_connect_args("wangge serve")  # connect timeout, keepalives, no statement timeout
        app.state.sync_engine = sync_engine(settings.sync_url(), pool_size=4, max_overflow=4,
                                            pool_timeout=settings.db_acquire_timeout_s, connect_args=connect)
        escalator = escalation.start(settings.escalation_interval_s, app.state.sync_engine, settings.escalation_steps_h)
        app.state.jobs = await job_runner.start(app.state.sync_engine)  # fails jobs a stopped service left running
        yield
        listener.cancel()
        counting.cancel()
        await app.state.token_use.flush(app.state.pool)
        await job_runner.stop(app.state.jobs)
        await escalation.stop(escalator)
        await _close(app.state.pool, settings.db_connect_timeout_s)
        app.state.sync_engine.dispose()

    app = FastAPI(
        title="Wangge",
        version="0.1.0",
        summary="Grid management (网格化管理) on PostGIS: areas, point → grid lookup, maps.",
        lifespan=lifespan,
        docs_url=None,  # served below from vendored assets, so /docs works without internet
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.sign_in_failures = signin.failure_limiter()
    errors.install(app)
    # Only big pages (maps, exports) are worth compressing; small hot-path replies go out as they are.
    app.add_middleware(GZipMiddleware, minimum_size=64_000)
    # Inside the body limit and any middleware added below: the lean path for GET /dispatch/nearest and
    # /grids/at (api/fast.py), built from those routes' own query models and reply functions. It sits outside
    # compression only: its replies (one Feature, or at most 100 small ones) go out uncompressed.
    app.add_middleware(fast.LeanPath)
    app.add_middleware(BodyLimit, default=settings.max_body_bytes,
                       limits={"/incidents/bulk": settings.bulk_max_bytes,
                               "/responders/positions": max(settings.max_body_bytes, 4_000_000),  # 10,000 pings
                               r"/plans/(from-file|\d+/import)$": settings.bulk_max_bytes})  # plan files
    app.add_middleware(RateLimit, paths=[r"/incidents$", r"/open311/v2/requests\.(json|xml)$"],
                       per_token=settings.intake_rate_per_token, per_address=settings.intake_rate_per_address)
    app.add_middleware(RejectNul)
    app.add_middleware(PageHeaders)  # map and sign-in pages: no-store, same-origin referrers
    app.add_middleware(InternalErrors)  # outermost: a bug's 500 in the one error shape, logged once
    modules = (health, areas, bulk, incidents, dispatch, maps, analysis, coverage, open311, plans, plan_edits,
               plan_checks, plan_files, plan_publish, jobs, admin, audit, signin)
    for module in modules:
        # Open311 answers every error in the spec's shape, and documents so on its routes
        app.include_router(module.router, responses=ERROR_RESPONSES if module is open311 else errors.RESPONSES)
    install_docs(app)  # before /static, which would shadow /static/docs
    # Every route is in the one policy table, or the app does not start.
    app.state.routes = [*app.router.routes, *(r for m in modules for r in m.router.routes)]
    policy.check_routes(app.state.routes, get_caller)
    app.mount("/static", StaticFiles(directory=PROJECT_ROOT / "maps" / "static"), name="static")
    return app


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Nothing to undo when a connection goes back to the pool: asyncpg rolls back an open transaction itself,
    and no service leaves session state behind (settings are SET LOCAL, no LISTEN, no session advisory locks or
    held cursors on this pool). asyncpg's default reset would cost a round trip per request."""


async def _close(pool: asyncpg.Pool, timeout_s: float) -> None:
    """Close the pool's connections politely, or drop them if the database does not answer in time."""
    try:
        await asyncio.wait_for(pool.close(), timeout_s)
    except Exception:  # timed out, or the connections are already broken
        pool.terminate()


DOCS_ASSETS = Path(fastapi_offline.__file__).parent / "static"  # Swagger UI and ReDoc, shipped in the wheel


def install_docs(app: FastAPI) -> None:
    """Swagger UI at /docs and ReDoc at /redoc, their scripts served by the app itself."""
    app.mount("/static/docs", StaticFiles(directory=DOCS_ASSETS), name="docs-assets")
    oauth2_redirect = "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title=f"{app.title} – API", oauth2_redirect_url=oauth2_redirect,
            swagger_js_url="/static/docs/swagger-ui-bundle.js", swagger_css_url="/static/docs/swagger-ui.css",
            swagger_favicon_url="/static/docs/favicon.png",
        )

    @app.get(oauth2_redirect, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} – API",
                              redoc_js_url="/static/docs/redoc.standalone.js",
                              redoc_favicon_url="/static/docs/favicon.png", with_google_fonts=False)
