"""GET /health: is the app up, and can it reach PostGIS?"""

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import func, select

from geo.models import GridVersion

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    try:
        async with request.app.state.engine.connect() as conn:
            postgis = (await conn.execute(select(func.postgis_lib_version()))).scalar()
            active = (await conn.execute(select(GridVersion.id).where(GridVersion.status == "active"))).scalar()
    except Exception as exc:  # report, don't crash: health must answer even when the database is down
        return JSONResponse({"status": "degraded", "database": "unreachable", "detail": str(exc)[:200]}, 503)
    return JSONResponse({"status": "ok", "database": "ok", "postgis": postgis, "active_grid_version": active})
