"""The FastAPI application factory; the lifespan owns the database engine."""

from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from sqlalchemy.ext.asyncio import create_async_engine

from api import errors
from api.routes import areas, health, maps
from api.settings import PROJECT_ROOT, Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.engine = create_async_engine(
            settings.async_url(), pool_size=settings.pool_size, max_overflow=settings.pool_size, pool_pre_ping=False,
        )
        app.state.token_cache = {}
        yield
        await app.state.engine.dispose()

    app = FastAPI(
        title="Wangge",
        version="0.1.0",
        summary="Grid management (网格化管理) on PostGIS: areas, point → grid lookup, maps.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    errors.install(app)
    for module in (health, areas, maps):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=PROJECT_ROOT / "maps" / "static"), name="static")
    return app
