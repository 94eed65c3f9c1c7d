"""The FastAPI application factory; the lifespan owns the database pool."""

from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
import asyncpg

from api import errors
from api.routes import areas, health, incidents, maps
from api.settings import PROJECT_ROOT, Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # asyncpg directly: statements are prepared once per connection and no BEGIN/ROLLBACK wraps reads.
        app.state.pool = await asyncpg.create_pool(
            settings.libpq_url(), min_size=0, max_size=settings.pool_size,
            server_settings={"timezone": settings.timezone},  # times in JSON come out in local time
        )
        app.state.token_cache = {}
        yield
        await app.state.pool.close()

    app = FastAPI(
        title="Wangge",
        version="0.1.0",
        summary="Grid management (网格化管理) on PostGIS: areas, point → grid lookup, maps.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    errors.install(app)
    for module in (health, areas, incidents, maps):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=PROJECT_ROOT / "maps" / "static"), name="static")
    return app
