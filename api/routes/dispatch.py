"""Responders (CRUD, position pings), the nearest responders to a point, and dispatching an incident."""

from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import Field

from api.deps import Conn, CurrentCaller, SettingsDep
from api.geojson import GeoJSONResponse, feature, feature_collection
from api.params import (
    AREA_CODE,
    GRID_CODE,
    MAX_ID,
    BBoxQuery,
    BodyModel,
    IncidentId,
    NearestQuery,
    ResponderId,
    When,
    comma_list,
    page_limit,
    parse_bbox,
)
from api.schemas import (
    Feature,
    FeatureCollection,
    IncidentProperties,
    NearestResponders,
    PositionBatch,
    ResponderProperties,
    geojson,
)
from api.settings import Settings
from geo import crs
from geo.dispatch import nearest as dispatch
from geo.dispatch import responders
from geo.models import RESPONDER_ROLES, RESPONDER_STATUSES

router = APIRouter()
Role = Literal["grid_worker", "patrol", "department_crew"]
Status = Literal["available", "busy", "off_duty"]
CrsField = Field("EPSG:4326", description="EPSG:4326, EPSG:4490, GCJ-02 or BD-09")


class ResponderIn(BodyModel):
    """The body of POST /responders."""
    name: str = Field(min_length=1, max_length=200)
    role: Role
    phone: str | None = Field(None, max_length=40)
    status: Status = "available"
    home_grid_code: str | None = Field(None, pattern=GRID_CODE)
    department: str | None = Field(None, max_length=32, description="department code (for department crews)")
    user_id: int | None = Field(None, description="the user account of the responder (grid worker's app)")


class ResponderPatch(BodyModel):
    """The body of PATCH /responders/{id}: only the fields given change."""
    name: str | None = Field(None, min_length=1, max_length=200)
    role: Role | None = None
    phone: str | None = Field(None, max_length=40)
    status: Status | None = None
    home_grid_code: str | None = Field(None, pattern=GRID_CODE)
    department: str | None = Field(None, max_length=32)
    user_id: int | None = None


FixTime = Annotated[When | None, Field(description="when the fix was taken (ISO 8601; default now; naive = "
                                                     "Beijing time); at most 2 minutes ahead of the server clock")]
Accuracy = Annotated[float | None, Field(ge=0)]
FixSource = Annotated[str | None, Field(max_length=32, description="e.g. gps, app, avl")]


class PositionIn(BodyModel):
    """One position of a responder, in the given crs."""
    lon: float
    lat: float
    crs: str = CrsField
    at: FixTime = None
    accuracy_m: Accuracy = None
    source: FixSource = None


class PingIn(BodyModel):
    """One ping of a batch: whose position, where and when."""
    responder_id: int = Field(ge=1, le=MAX_ID)  # a PostgreSQL integer: a larger one would overflow, not 4xx
    lon: float
    lat: float
    crs: str | None = Field(None, description="per ping; default the batch's crs")
    at: FixTime = None
    accuracy_m: Accuracy = None
    source: FixSource = None


class PingBatch(BodyModel):
    """A batch of pings with a default crs."""
    crs: str = CrsField
    pings: list[PingIn]


class DispatchIn(BodyModel):
    """The body of POST /incidents/{id}/dispatch."""
    responder_id: int | None = Field(None, ge=1, le=MAX_ID, description="default: the nearest available responder "
                                                                     "with a fresh position")
    note: str | None = Field(None, max_length=2000)




# -- responders ----------------------------------------------------------------------------------------------

@router.post("/responders", status_code=201, response_class=GeoJSONResponse, tags=["responders"],
             responses=geojson(Feature[ResponderProperties], 201))
async def create_responder(body: ResponderIn, conn: Conn, caller: CurrentCaller,
                           settings: SettingsDep) -> GeoJSONResponse:
    """Create a grid worker, patrol or department crew; it has no position (stale) until its first ping."""
    text = await responders.create(conn, caller, body.model_dump(), settings.position_max_age_s)
    response = feature(text)
    response.status_code = 201
    response.headers["Location"] = f"/responders/{orjson.loads(text)['id']}"
    return response


@router.get("/responders", response_class=GeoJSONResponse, tags=["responders"],
            responses=geojson(FeatureCollection[ResponderProperties]))
async def list_responders(
    request: Request, conn: Conn, caller: CurrentCaller, settings: SettingsDep,
    status: Annotated[str | None, Query(description="comma-separated: available, busy, off_duty")] = None,
    role: Annotated[str | None, Query(description="comma-separated: grid_worker, patrol, department_crew")] = None,
    area: Annotated[str | None, Query(pattern=AREA_CODE, description="home grid under")] = None,
    bbox: BBoxQuery = None,
    include_stale: Annotated[bool | None, Query(description="default: stale positions are left out when asking "
                                                            "for status=available, flagged otherwise")] = None,
    limit: Annotated[int, Query(ge=1, description="clamped to 1000")] = 100,
    after: Annotated[int | None, Query(ge=0, le=MAX_ID, description="keyset: the last id of the previous page")] = None,
) -> GeoJSONResponse:
    """Responders as a FeatureCollection of their last positions, with position age and `stale` flag."""
    box = parse_bbox(bbox)
    limit = page_limit(limit)
    filters = responders.Filters(statuses=comma_list(status, RESPONDER_STATUSES, "status"),
                                 roles=comma_list(role, RESPONDER_ROLES, "role"), area=area, bbox=box,
                                 include_stale=include_stale)
    features, next_after = await responders.list_(conn, caller, filters, settings.position_max_age_s, limit, after)
    return feature_collection(request, features, {"after": next_after, "limit": limit} if next_after else None)


@router.get("/responders/{responder_id}", response_class=GeoJSONResponse, tags=["responders"],
            responses=geojson(Feature[ResponderProperties]))
async def get_responder(responder_id: ResponderId, conn: Conn, caller: CurrentCaller,
                        settings: SettingsDep) -> GeoJSONResponse:
    """One responder: role, status, home grid, last position, its age and whether it is stale."""
    return feature(await responders.get(conn, caller, responder_id, settings.position_max_age_s))


@router.patch("/responders/{responder_id}", response_class=GeoJSONResponse, tags=["responders"],
              responses=geojson(Feature[ResponderProperties]))
async def update_responder(responder_id: ResponderId, body: ResponderPatch, conn: Conn, caller: CurrentCaller,
                           settings: SettingsDep) -> GeoJSONResponse:
    """Change name, phone, role, status (shift), home grid, department or linked user; only the fields sent."""
    values = body.model_dump(exclude_unset=True)
    return feature(await responders.update(conn, caller, responder_id, values, settings.position_max_age_s))


@router.delete("/responders/{responder_id}", status_code=204, tags=["responders"])
async def delete_responder(responder_id: ResponderId, conn: Conn, caller: CurrentCaller) -> Response:
    """Delete a responder with no history; one that worked grids or incidents must go off duty instead (409)."""
    await responders.delete(conn, caller, responder_id)
    return Response(status_code=204)


@router.post("/responders/{responder_id}/position", response_class=GeoJSONResponse, tags=["responders"],
             responses=geojson(Feature[ResponderProperties]))
async def post_position(responder_id: ResponderId, body: PositionIn, conn: Conn, caller: CurrentCaller,
                        settings: SettingsDep) -> GeoJSONResponse:
    """One position ping: appended to the track; it becomes the last position if it is the newest."""
    text, result = await responders.ping(conn, caller, responder_id, body.lon, body.lat, body.crs, body.at,
                                         body.accuracy_m, body.source, settings.position_max_age_s)
    response = feature(text)
    response.headers["X-Position-Updated"] = "true" if result.positions_updated else "false"
    return response


@router.post("/responders/positions", tags=["responders"], responses={200: {"model": PositionBatch}})
async def post_positions(body: list[PingIn] | PingBatch, conn: Conn, caller: CurrentCaller) -> Response:
    """A batch of pings (a JSON array, or {"crs": ..., "pings": [...]}), up to 10,000: all written or none.

    Every ping goes to the track; each responder's last position moves to its newest ping if that is newer
    than the stored one. Unknown responder ids are listed and nothing is written."""
    default_crs, items = ("EPSG:4326", body) if isinstance(body, list) else (body.crs, body.pings)
    pings = responders.pings_from([p.__dict__ for p in items], crs.normalize_crs(default_crs))
    result = await responders.ingest(conn, caller, pings)
    return Response(responders.result_json(result), media_type="application/json")


# -- dispatch ------------------------------------------------------------------------------------------------

@router.get("/dispatch/nearest", response_class=GeoJSONResponse, tags=["dispatch"],
            responses=geojson(NearestResponders))
async def nearest(conn: Conn, caller: CurrentCaller, settings: SettingsDep,
                  params: Annotated[NearestQuery, Query()]) -> GeoJSONResponse:
    """The k nearest responders by geodesic metres (or by road time with mode=network), with ETA, position
    age, stale flag and whether each works the grid covering the point."""
    return GeoJSONResponse(await nearest_reply(conn, caller, settings, params.nearest()))


async def nearest_reply(conn, caller, settings: Settings, query: dispatch.Nearest) -> bytes:
    """The reply body of GET /dispatch/nearest (the route's, and the lean path's)."""
    found = await dispatch.nearest(conn, caller, query, max_age_s=settings.position_max_age_s,
                                   speed_mps=settings.straight_speed_mps,
                                   network_candidates=settings.network_candidates)
    return nearest_body(found, query.lon, query.lat, settings.straight_speed_mps)


def nearest_body(found: dispatch.NearestResult, lon: float, lat: float, speed_mps: float) -> bytes:
    """The /dispatch/nearest FeatureCollection (api/fast.py writes the same bytes for plain queries)."""
    return orjson.dumps({"type": "FeatureCollection", "numberReturned": len(found.features),
                         "query": {"lon": lon, "lat": lat, "grid_code": found.grid_code, "mode": found.mode,
                                   "speed_mps": speed_mps if found.mode == "straight" else None},
                         "features": found.features})


@router.post("/incidents/{incident_id}/dispatch", response_class=GeoJSONResponse, tags=["dispatch"],
             responses=geojson(Feature[IncidentProperties]))
async def dispatch_incident(incident_id: IncidentId, conn: Conn, caller: CurrentCaller, settings: SettingsDep,
                            body: DispatchIn | None = None) -> GeoJSONResponse:
    """Send a responder (default: the nearest available with a fresh position): it becomes busy and the
    incident dispatched (filed first if it was only reported), with events, in one transaction."""
    body = body or DispatchIn(responder_id=None, note=None)
    return feature(await dispatch.dispatch_incident(
        conn, caller, incident_id, body.responder_id, body.note,
        max_age_s=settings.position_max_age_s, speed_mps=settings.straight_speed_mps))

