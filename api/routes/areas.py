"""Areas of the hierarchy and the point → grid lookup."""

from typing import Annotated

import orjson
from fastapi import APIRouter, Path, Query, Request

from api.deps import Conn, CurrentCaller
from api.geojson import GeoJSONResponse, feature, feature_collection
from api.params import AREA_CODE, GRID_CODE, GridAtQuery, VersionQuery, page_limit
from api.schemas import AreaProperties, AreaVersionProperties, Feature, FeatureCollection, geojson
from geo.areas import hierarchy as areas

router = APIRouter(tags=["areas"])

Code = Annotated[str, Path(pattern=AREA_CODE, description="6, 9, 12 or 15-digit area code")]


@router.get("/areas/{code}", response_class=GeoJSONResponse, responses=geojson(Feature[AreaProperties]))
async def get_area(code: Code, conn: Conn, caller: CurrentCaller, geometry: bool = True,
                   version: VersionQuery = None) -> GeoJSONResponse:
    """One area as a Feature: code, name, level, households, worker and parent chain."""
    return feature(await areas.get(conn, caller, code, geometry, version))


@router.get("/areas/{code}/children", response_class=GeoJSONResponse,
            responses=geojson(FeatureCollection[AreaProperties]))
async def get_children(request: Request, code: Code, conn: Conn, caller: CurrentCaller, geometry: bool = True,
                       version: VersionQuery = None, after: str = "",
                       limit: Annotated[int, Query(ge=1)] = 100) -> GeoJSONResponse:
    """The area's children as a FeatureCollection, paged by code (`after`), `limit` clamped to 1000."""
    limit = page_limit(limit)
    features, more = await areas.children(conn, caller, code, geometry, version, after, limit)
    next_params = {"after": _code_of(features[-1]), "limit": limit} if more else None
    return feature_collection(request, features, next_params)


@router.get("/areas/{code}/history", response_class=GeoJSONResponse,
            responses=geojson(FeatureCollection[AreaVersionProperties]))
async def get_history(request: Request, conn: Conn, caller: CurrentCaller,
                      code: Annotated[str, Path(pattern=GRID_CODE, description="15-digit grid code")]
                      ) -> GeoJSONResponse:
    """A grid's boundaries in every published version, newest first (feature id = version id), with the version's
    status and dates, households, kind, worker and area in m²."""
    return feature_collection(request, await areas.history(conn, caller, code), None)


@router.get("/grids/at", response_class=GeoJSONResponse, responses=geojson(Feature[AreaProperties]))
async def grid_at(conn: Conn, caller: CurrentCaller, params: Annotated[GridAtQuery, Query()]) -> GeoJSONResponse:
    """The grid covering a point (edges included; shared edges go to the lowest code)."""
    return GeoJSONResponse(await grid_at_reply(conn, caller, params))


async def grid_at_reply(conn, caller, params: GridAtQuery) -> bytes:
    """The reply body of GET /grids/at (the route's, and the lean path's)."""
    lon, lat = params.wgs84()
    return (await areas.grid_at(conn, caller, lon, lat, params.version)).encode()


def _code_of(feature_text: str) -> str:
    return orjson.loads(feature_text)["id"]
