"""GET /health: is the app up, and can it reach PostGIS?"""

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.schemas import Health
from geo.incidents.timelimits import TZ

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
async def health(request: Request) -> JSONResponse:
    """Whether the service can reach PostGIS, its version, the active grid version and the demo's anchor."""
    try:
        async with request.app.state.pool.acquire() as conn:
            postgis = await conn.fetchval("SELECT postgis_lib_version()")
            active = await conn.fetchval("SELECT id FROM grid_versions WHERE status = 'active'")
            demo_as_of = await conn.fetchval("SELECT as_of FROM demo_loads WHERE name = 'xicheng'")
    except Exception as exc:  # report, don't crash: health must answer even when the database is down
        return JSONResponse({"status": "degraded", "database": "unreachable", "detail": str(exc)[:200]}, 503)
    # The synthetic demo's "now": its year of incidents ends there (null when no demo is loaded).
    return JSONResponse({"status": "ok", "database": "ok", "postgis": postgis, "active_grid_version": active,
                         "demo_as_of": demo_as_of.astimezone(TZ).isoformat() if demo_as_of else None})
