"""Interactive folium pages."""

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from api.deps import Conn, CurrentCaller
from geo import areas, incident_map
from maps import grids, incidents, offline

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


@router.get("/incidents", response_class=HTMLResponse)
async def incidents_map(request: Request, conn: Conn, caller: CurrentCaller,
                        area: Annotated[str | None, Query(pattern=r"^[0-9]{6}([0-9]{3}){0,3}$")] = None,
                        category: Annotated[list[str] | None, Query(description="category code(s); default all")] = None,
                        status: Annotated[list[str] | None, Query(description="open (default), pending, final, all, "
                                                                              "or status name(s)")] = None,
                        start: Annotated[date | None, Query(alias="from", description="first day (default: 29 "
                                                                                       "days before `to`)")] = None,
                        end: Annotated[date | None, Query(alias="to", description="last day, inclusive "
                                                                                  "(default: today)")] = None,
                        ) -> HTMLResponse:
    """The supervisor map of `area`: grids by open/overdue count, overdue red lights, heat, trends, SLA."""
    code = area or caller.area_code or "110102"
    data = await incident_map.gather(conn, caller, code, category, status, start, end)
    token = request.query_params.get("access_token")  # keep browser links working; never added otherwise

    def render() -> str:
        return offline.render(incidents.build(data, token))

    return HTMLResponse(await run_in_threadpool(render))
