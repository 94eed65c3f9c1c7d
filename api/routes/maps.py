"""Interactive folium pages."""

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from api.deps import Conn, CurrentCaller
from geo import areas
from maps import grids, offline

router = APIRouter(prefix="/maps", tags=["maps"])


@router.get("/grids", response_class=HTMLResponse)
async def grids_map(conn: Conn, caller: CurrentCaller,
                    area: Annotated[str | None, Query(pattern=r"^[0-9]{6}([0-9]{3}){0,3}$")] = None,
                    version: int | None = None) -> HTMLResponse:
    """The hierarchy under `area` (default: the caller's own area, else the first district)."""
    code = area or caller.area_code or "110102"
    rows = await areas.subtree(conn, caller, code, version)

    def render() -> str:
        return offline.render(grids.build(grids.frame([tuple(row) for row in rows]), f"Wangge — grids of {code}"))

    return HTMLResponse(await run_in_threadpool(render))
