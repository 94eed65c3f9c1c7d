"""Coverage analysis: grid coverage, staffing, response coverage (+ chart), stationing and hotspots."""

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from api.deps import Conn, CurrentCaller, SettingsDep, SyncEngine
from api.params import AREA_CODE, BodyModel
from api.schemas_analysis import GridCoverage, Hotspots, ResponseCoverage, Staffing, Stationing
from geo.analysis import coverage
from geo.analysis import hotspots as hotspot_analysis
from geo.analysis import stationing as stationing_analysis

router = APIRouter(tags=["analysis"])

AreaCode = Annotated[str | None, Query(pattern=AREA_CODE,
                                       description="Area code; default: the caller's own area")]
MaxAge = Annotated[float | None, Query(gt=0, description="Position freshness cut-off in seconds "
                                                          "(default: the position_max_age_s setting, 1800)")]


def _max_age(settings, value: float | None) -> float:
    return value if value is not None else settings.position_max_age_s


@router.get("/analysis/coverage", responses={200: {"model": GridCoverage}})
async def grid_coverage(conn: Conn, caller: CurrentCaller, settings: SettingsDep, area: AreaCode = None,
                        min_area_m2: Annotated[float, Query(ge=0, description="smaller parts are slivers")] = 1.0
                        ) -> dict:
    """Share of the area covered by its active grids, gaps, overlaps and spill-over as GeoJSON (m²),
    for the area and each child area."""
    return await coverage.grid_coverage(conn, caller, area, min_area_m2, settings.max_features)


@router.get("/analysis/staffing", responses={200: {"model": Staffing}})
async def staffing(conn: Conn, caller: CurrentCaller, area: AreaCode = None,
                   target: Annotated[int, Query(gt=0)] = 300,
                   tolerance: Annotated[float, Query(ge=0, lt=1)] = 0.15,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> dict:
    """Grids without a worker, households per worker, grids outside target × (1 ± tolerance), most loaded workers."""
    return await coverage.staffing(conn, caller, area, target, tolerance, limit)


async def _response(conn, caller, settings, area, distance, mode, max_age_s, minutes=None, engine=None):
    return await coverage.response_coverage(conn, caller, area, distance, _max_age(settings, max_age_s),
                                            settings.max_features, mode=mode, minutes=minutes, engine=engine)


@router.get("/analysis/response-coverage", responses={200: {"model": ResponseCoverage}})
async def response_coverage(conn: Conn, caller: CurrentCaller, settings: SettingsDep, area: AreaCode = None,
                            distance: Annotated[float, Query(gt=0, le=50_000, description="metres")] = 500,
                            mode: Literal["straight", "network"] = "straight",
                            minutes: Annotated[float | None, Query(gt=0, le=120, description="mode=network")] = None,
                            max_age_s: MaxAge = None, *, engine: SyncEngine) -> dict:
    """Share of households within `distance` m (or, mode=network, `minutes` by road) of an available, fresh
    responder; uncovered buildings as GeoJSON; the coverage curve (100..2000 m, or 1..30 min)."""
    return await _response(conn, caller, settings, area, distance, mode, max_age_s, minutes, engine)


@router.get("/analysis/response-coverage/chart.svg", response_class=Response,
            responses={200: {"content": {"image/svg+xml": {"schema": {"type": "string"}}}}})
async def response_coverage_chart(conn: Conn, caller: CurrentCaller, settings: SettingsDep, area: AreaCode = None,
                                  distance: Annotated[float, Query(gt=0, le=50_000)] = 500,
                                  mode: Literal["straight", "network"] = "straight",
                                  minutes: Annotated[float | None, Query(gt=0, le=120)] = None,
                                  max_age_s: MaxAge = None, *, engine: SyncEngine) -> Response:
    """The coverage curve as a small SVG line chart."""
    result = await _response(conn, caller, settings, area, distance, mode, max_age_s, minutes, engine)
    title = f"{result['area']['name']}: households within reach of a responder"
    svg = coverage.curve_svg(result["curve"], title, marker_m=minutes if mode == "network" else distance)
    return Response(svg, media_type="image/svg+xml")


class StationingIn(BodyModel):
    """The body of POST /analysis/stationing: where to place k posts and what counts as covered."""
    area: str | None = Field(None, pattern=AREA_CODE)
    k: int = Field(5, ge=1, le=stationing_analysis.MAX_K, description="posts to place (MCLP)")
    distance: float = Field(500, gt=0, le=50_000, description="service distance, metres")
    candidates: Literal["grid_centroids"] | list[Annotated[list[float], Field(min_length=2, max_length=2)]] = Field(
        "grid_centroids", description='"grid_centroids" or a list of [lon, lat] WGS84 points')
    max_age_s: float | None = Field(None, gt=0, description="freshness cut-off for today's positions")


@router.post("/analysis/stationing", responses={200: {"model": Stationing}})
async def stationing(body: StationingIn, conn: Conn, caller: CurrentCaller, settings: SettingsDep) -> dict:
    """MCLP posts for K responders within D, LSCP fewest posts for everyone, compared with today's positions."""
    area = await coverage.resolve_area(conn, caller, body.area)
    rows = await stationing_analysis.load(conn, area.id, area.code, _max_age(settings, body.max_age_s),
                                          body.candidates == "grid_centroids")
    result = await run_in_threadpool(stationing_analysis.solve, rows[0], rows[1], rows[2], body.k, body.distance,
                                     body.candidates)
    return {"area": area.as_json(), **result}


@router.get("/analysis/hotspots", responses={200: {"model": Hotspots}})
async def hotspots(conn: Conn, caller: CurrentCaller, area: AreaCode = None,
                   start: Annotated[str | None, Query(alias="from",
                                                      description="ISO date (default: to - 30 days)")] = None,
                   end: Annotated[str | None, Query(alias="to",
                                                    description="ISO date, exclusive (default: now)")] = None,
                   category: Annotated[str | None, Query(max_length=32)] = None,
                   by: Literal["h3", "grid"] = "h3",
                   resolution: Annotated[int, Query(ge=5, le=10)] = 8,
                   windows: Annotated[int, Query(ge=1, le=24)] = 4,
                   alpha: Annotated[float, Query(gt=0, lt=1)] = 0.05,
                   permutations: Annotated[int, Query(ge=0, le=9999)] = 99) -> dict:
    """Getis-Ord Gi* hot and cold cells (H3 or grids) with BH-FDR significance; persistent hot cells."""
    return await hotspot_analysis.hotspots(conn, caller, area, start, end, category, by, resolution, windows,
                                           alpha, permutations)
