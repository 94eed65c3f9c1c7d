"""Incidents: report, read, list, workflow actions, reassignment and merging."""

from datetime import datetime
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Header, Query, Request
from pydantic import Field, model_validator

from api.deps import Conn, CurrentCaller
from api.errors import RATE_LIMITED
from api.geojson import GeoJSONResponse, feature, feature_collection
from api.params import (
    GRID_CODE,
    MAX_ID,
    AreaCodeQuery,
    BBoxQuery,
    BodyModel,
    CommaList,
    GridCodeQuery,
    IncidentId,
    When,
    comma_list,
    page_limit,
    parse_bbox,
)
from api.schemas import Feature, FeatureCollection, IncidentProperties, geojson
from geo import crs
from geo.errors import InvalidInput
from geo.incidents import intake as incidents
from geo.incidents import workflow
from geo.incidents.timelimits import TZ
from geo.models import INCIDENT_STATUSES

router = APIRouter(tags=["incidents"])


class Point(BodyModel):
    """A GeoJSON Point."""
    type: Literal["Point"]
    coordinates: Annotated[list[float], Field(min_length=2, max_length=3)]


class Contact(BodyModel):
    """The reporter's contact details, stored with the incident."""
    first_name: str | None = Field(None, max_length=100)
    last_name: str | None = Field(None, max_length=100)
    email: str | None = Field(None, max_length=200)
    phone: str | None = Field(None, max_length=40)


class IncidentIn(BodyModel):
    """The body of POST /incidents: a category and a location, as lon/lat or a GeoJSON Point."""
    category: str = Field(max_length=32, description="Category code, see GET /open311/v2/services.json")
    description: str | None = Field(None, max_length=4000)
    lon: float | None = None
    lat: float | None = None
    location: Point | None = Field(None, description="GeoJSON Point instead of lon/lat")
    crs: str = Field("EPSG:4326", description="EPSG:4326, EPSG:4490, GCJ-02 or BD-09")
    source: str | None = Field(None, description=f"one of {', '.join(incidents.SOURCES)}")
    contact: Contact | None = None
    synthetic: bool = Field(False, description="simulated or test traffic, such as `wangge simulate` sends")

    @model_validator(mode="after")
    def _one_location(self):
        if (self.lon is None) != (self.lat is None):
            raise ValueError("give both lon and lat")
        if (self.lon is None) == (self.location is None):
            raise ValueError("give the location either as lon/lat or as a GeoJSON Point in `location`, not both")
        return self

    def wgs84(self) -> tuple[float, float]:
        """The location as WGS84 lon/lat (400 when out of range)."""
        if self.lon is not None and self.lat is not None:
            lon, lat = self.lon, self.lat
        else:
            assert self.location is not None  # one of the two, checked by the validator above
            lon, lat = self.location.coordinates[:2]
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            raise InvalidInput(f"Coordinates ({lon}, {lat}) are out of range: lon is -180..180, lat -90..90 "
                               "(did you swap them?).", field="location")
        return crs.to_wgs84(lon, lat, self.crs)


class ActionIn(BodyModel):
    """The body of POST /incidents/{id}/actions: a workflow action."""
    action: str = Field(description=f"one of {', '.join(workflow.ACTIONS)}")
    note: str | None = Field(None, max_length=2000)
    due_at: When | None = Field(None, description="for 'extend': the new due time (ISO 8601 with zone)")
    assignee_id: int | None = Field(None, description="for 'dispatch': the responder sent")


class ReassignIn(BodyModel):
    """The body of POST /incidents/{id}/reassign: another grid or responder, and why."""
    note: str = Field(max_length=2000, description="the reason")
    grid_code: str | None = Field(None, pattern=GRID_CODE)
    assignee_id: int | None = None


class MergeIn(BodyModel):
    """The body of POST /incidents/{id}/merge: the incident this one repeats."""
    into: int
    note: str | None = Field(None, max_length=2000)


def _default_source(role: str) -> str:
    return {"grid_worker": "grid_worker", "dispatcher": "hotline"}.get(role, "resident_app")


@router.post("/incidents", status_code=201, response_class=GeoJSONResponse,
             responses={**geojson(Feature[IncidentProperties], 201), **RATE_LIMITED})
async def report(body: IncidentIn, conn: Conn, caller: CurrentCaller,
                 idempotency_key: Annotated[str | None, Header(max_length=200)] = None) -> GeoJSONResponse:
    """Report an incident: it is filed in the covering grid, with its worker, department and due time."""
    lon, lat = body.wgs84()
    new = incidents.NewIncident(
        category=body.category, lon=lon, lat=lat, description=body.description,
        source=body.source or _default_source(caller.role), input_crs=crs.normalize_crs(body.crs),
        reporter_contact=body.contact.model_dump(exclude_none=True) if body.contact else None,
        idempotency_key=idempotency_key, synthetic=body.synthetic,
    )
    text, created = await incidents.create(conn, caller, new)
    response = feature(text)
    response.status_code = 201
    response.headers["Location"] = f"/incidents/{orjson.loads(text)['id']}"
    if not created:
        response.headers["Idempotency-Replayed"] = "true"
    return response



def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=TZ) if value is not None and value.tzinfo is None else value


def _filters(bbox, area, grid, status, category, overdue, assignee, since, until) -> incidents.Filters:
    return incidents.Filters(bbox=parse_bbox(bbox), area=area, grid=grid,
                             statuses=comma_list(status, INCIDENT_STATUSES, "status"),
                             categories=comma_list(category, None, "category"), overdue=overdue, assignee=assignee,
                             since=_aware(since), until=_aware(until))


Limit = Annotated[int, Query(ge=1, description="clamped to 1000")]


@router.get("/incidents", response_class=GeoJSONResponse, responses=geojson(FeatureCollection[IncidentProperties]))
async def list_incidents(request: Request, conn: Conn, caller: CurrentCaller, bbox: BBoxQuery = None,
                         area: AreaCodeQuery = None, grid: GridCodeQuery = None, status: CommaList = None,
                         category: CommaList = None, overdue: bool | None = None,
                         assignee: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None, since: When | None = None,
                         until: When | None = None, limit: Limit = 100, cursor: str | None = None):
    """Incidents in your area, newest first, paged with a keyset cursor (follow the `next` link)."""
    filters = _filters(bbox, area, grid, status, category, overdue, assignee, since, until)
    return await _page(request, conn, caller, filters, limit, cursor)


@router.get("/me/incidents", response_class=GeoJSONResponse,
            responses=geojson(FeatureCollection[IncidentProperties]))
async def my_incidents(request: Request, conn: Conn, caller: CurrentCaller, status: CommaList = None,
                       overdue: bool | None = None, limit: Limit = 100, cursor: str | None = None):
    """The incidents assigned to the responder linked to your user (a grid worker's own list)."""
    filters = _filters(None, None, None, status, None, overdue, await incidents.responder_of(conn, caller),
                       None, None)
    return await _page(request, conn, caller, filters, limit, cursor)


async def _page(request, conn, caller, filters, limit, cursor) -> GeoJSONResponse:
    limit = page_limit(limit)
    features, next_cursor = await incidents.list_(conn, caller, filters, limit, cursor)
    return feature_collection(request, features, {"cursor": next_cursor, "limit": limit} if next_cursor else None)


@router.get("/incidents/{incident_id}", response_class=GeoJSONResponse,
            responses=geojson(Feature[IncidentProperties]))
async def get_incident(incident_id: IncidentId, conn: Conn, caller: CurrentCaller) -> GeoJSONResponse:
    """One incident with its full event history."""
    return feature(await incidents.get(conn, caller, incident_id))


@router.post("/incidents/{incident_id}/actions", response_class=GeoJSONResponse,
             responses=geojson(Feature[IncidentProperties]))
async def act(incident_id: IncidentId, body: ActionIn, conn: Conn, caller: CurrentCaller) -> GeoJSONResponse:
    """Move the incident through the workflow; an illegal action gets 409 with the allowed ones."""
    return feature(await incidents.act(conn, caller, incident_id, body.action, body.note, _aware(body.due_at),
                                       body.assignee_id))


@router.post("/incidents/{incident_id}/reassign", response_class=GeoJSONResponse,
             responses=geojson(Feature[IncidentProperties]))
async def reassign(incident_id: IncidentId, body: ReassignIn, conn: Conn, caller: CurrentCaller) -> GeoJSONResponse:
    """Manual reassignment to another grid (and its worker) or responder, with a reason."""
    return feature(await incidents.reassign(conn, caller, incident_id, body.note, body.grid_code, body.assignee_id))


@router.post("/incidents/{incident_id}/merge", response_class=GeoJSONResponse,
             responses=geojson(Feature[IncidentProperties]))
async def merge(incident_id: IncidentId, body: MergeIn, conn: Conn, caller: CurrentCaller) -> GeoJSONResponse:
    """Merge a duplicate into the incident it repeats."""
    return feature(await incidents.merge(conn, caller, incident_id, body.into, body.note))
