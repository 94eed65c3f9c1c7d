"""Interactive folium pages."""

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from api.deps import SESSION_COOKIE, Conn, CurrentCaller, PlanId, SettingsDep, SyncEngine, csrf_value
from api.params import AREA_ABOVE_GRID_CODE, AREA_CODE, Day, VersionQuery, comma_list, point_wgs84
from geo.areas import hierarchy as areas
from geo.incidents import incident_map
from geo.models import RESPONDER_ROLES, RESPONDER_STATUSES
from maps import grids, incidents, offline

router = APIRouter(prefix="/maps", tags=["maps"])


@router.get("/grids", response_class=HTMLResponse)
async def grids_map(conn: Conn, caller: CurrentCaller,
                    area: Annotated[str | None, Query(pattern=AREA_CODE)] = None,
                    version: VersionQuery = None) -> HTMLResponse:
    """The hierarchy under `area` (default: the caller's own area, else the first district)."""
    code = area or caller.area_code or "110102"
    rows = await areas.subtree(conn, caller, code, version)

    def render() -> str:
        return offline.render(grids.build(grids.frame([tuple(row) for row in rows]), f"Wangge — grids of {code}"))

    return HTMLResponse(await run_in_threadpool(render))


@router.get("/incidents", response_class=HTMLResponse)
async def incidents_map(request: Request, conn: Conn, caller: CurrentCaller,
                        area: Annotated[str | None, Query(pattern=AREA_CODE)] = None,
                        category: Annotated[list[str] | None,
                                            Query(description="category code(s); default all")] = None,
                        status: Annotated[list[str] | None, Query(description="open (default), pending, final, all, "
                                                                              "or status name(s)")] = None,
                        start: Annotated[Day | None, Query(alias="from", description="first day (default: 29 "
                                                                                       "days before `to`)")] = None,
                        end: Annotated[Day | None, Query(alias="to", description="last day, inclusive "
                                                                                  "(default: today)")] = None,
                        ) -> HTMLResponse:
    """The supervisor map of `area`: grids by open/overdue count, overdue red lights, heat, trends, SLA."""
    code = area or caller.area_code or "110102"
    data = await incident_map.gather(conn, caller, code, category, status, start, end)

    def render() -> str:
        return offline.render(incidents.build(data))

    return HTMLResponse(await run_in_threadpool(render))


# -- dispatch and coverage maps (maps.dispatch, maps.coverage) ----------------------------------------------

@router.get("/dispatch", response_class=HTMLResponse)
async def dispatch_map(conn: Conn, caller: CurrentCaller, settings: SettingsDep,
                       lon: Annotated[float, Query(ge=-180, le=180)], lat: Annotated[float, Query(ge=-90, le=90)],
                       crs_name: Annotated[str, Query(alias="crs")] = "EPSG:4326",
                       k: Annotated[int, Query(ge=1, le=100)] = 5,
                       mode: Literal["straight", "network"] = "straight",
                       role: Annotated[str | None, Query(description="comma-separated")] = None,
                       status: Annotated[str, Query(description="comma-separated; default available")] = "available",
                       ) -> HTMLResponse:
    """The point and its grid, the k nearest responders with lines, distances and ETAs (stale ones greyed
    out), and the road route for mode=network."""
    from geo.dispatch import dispatch_map
    from maps import dispatch as dispatch_page

    lon, lat = point_wgs84(lon, lat, crs_name)
    data = await dispatch_map.gather(
        conn, caller, lon, lat, k, mode, comma_list(status, RESPONDER_STATUSES, "status"),
        comma_list(role, RESPONDER_ROLES, "role"),
        max_age_s=settings.position_max_age_s, speed_mps=settings.straight_speed_mps,
        network_candidates=settings.network_candidates)

    def render() -> str:
        return offline.render(dispatch_page.build(data))

    return HTMLResponse(await run_in_threadpool(render))


@router.get("/coverage", response_class=HTMLResponse)
async def coverage_map(request: Request, conn: Conn, caller: CurrentCaller, settings: SettingsDep,
                       area: Annotated[str | None, Query(pattern=AREA_CODE)] = None,
                       distance: Annotated[float, Query(gt=0, le=5000, description="metres")] = 500,
                       k: Annotated[int | None, Query(ge=1, le=2000, description="posts to propose; default: "
                                                                                 "today's responders")] = None,
                       minutes: Annotated[float | None, Query(gt=0, le=30, description="network isochrones "
                                                                                       "(areas with roads)")] = None,
                       ) -> HTMLResponse:
    """Covered and uncovered households, responder reach, proposed posts against today's, hotspot cells,
    and the coverage curve."""
    from geo.analysis import coverage_map
    from maps import coverage as coverage_page

    data = await coverage_map.gather(conn, caller, area, distance, k, minutes,
                                      max_age_s=settings.position_max_age_s, speed_mps=settings.straight_speed_mps)

    def render() -> str:
        return offline.render(coverage_page.build(data))

    return HTMLResponse(await run_in_threadpool(render))


# -- the planner map (maps.plans) ----------------------------------------------------------------------------

@router.get("/plans/{plan_id}", response_class=HTMLResponse)
def plan_map(request: Request, plan_id: PlanId, caller: CurrentCaller, engine: SyncEngine,
             area: Annotated[str | None, Query(pattern=AREA_ABOVE_GRID_CODE, description=(
                 "district, street or community to show (default: the whole plan if small, else its first "
                 "community)"))] = None,
             target: Annotated[int, Query(ge=1, le=100_000, description="households per grid")] = 300,
             tolerance: Annotated[float, Query(gt=0, lt=1, description="allowed deviation from target")] = 0.15,
             ) -> HTMLResponse:
    """A plan's grids by deviation from the household target, its validation findings, the diff against the
    active version and the area's buildings; draw a line to split a grid or a polygon to redraw one. The page
    fetches grids, findings and diff from the plan APIs with the caller's session and redraws after each edit."""
    from geo.planning import plan_map
    from maps import plans as plan_page

    with engine.connect() as conn:
        data = plan_map.gather(conn, caller, plan_id, area, target, tolerance)
    return HTMLResponse(offline.render(plan_page.build(data, _csrf(request))))


def _csrf(request: Request) -> str | None:
    """The CSRF value the page's own requests carry, for a browser signed in with the session cookie."""
    session = request.cookies.get(SESSION_COOKIE)
    return csrf_value(session) if session else None
