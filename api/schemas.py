"""Response shapes for OpenAPI: the GeoJSON Features and FeatureCollections the routes send.

The bytes come from PostGIS (`json_build_object`) or from the Feature builders in geo/; these models document
them, and tests check real replies against them.
"""

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, Field

P = TypeVar("P", bound=BaseModel)


class Geometry(BaseModel):
    """A GeoJSON geometry in WGS84 lon/lat."""

    type: str = Field(description="Point, Polygon, MultiPolygon, LineString, ...")
    coordinates: Any


class Link(BaseModel):
    """A link of a FeatureCollection page (rel self or next)."""

    rel: str
    href: str
    type: str


class Feature(BaseModel, Generic[P]):
    """A GeoJSON Feature."""

    type: Literal["Feature"]
    id: str | int | None = None
    geometry: Geometry | None
    properties: P


class FeatureCollection(BaseModel, Generic[P]):
    """One page of Features, with a `next` link unless it is the last."""

    type: Literal["FeatureCollection"]
    numberReturned: int
    links: list[Link]
    features: list[Feature[P]]


class AreaRef(BaseModel):
    """An area of the parent chain."""

    code: str
    name: str
    level: str


class Worker(BaseModel):
    """A grid's worker, as far as the caller may see."""

    id: int
    name: str
    phone: str | None = None
    status: str


class AreaProperties(BaseModel):
    """A district, street, community or grid."""

    code: str
    name: str
    level: Literal["district", "street", "community", "grid"]
    kind: str | None
    households: int
    grid_version: int | None
    is_synthetic: bool
    worker: Worker | None
    chain: list[AreaRef]


class AreaVersionProperties(BaseModel):
    """A grid's boundary in one grid version."""

    code: str
    name: str
    version_id: int
    version_name: str
    status: str
    activated_at: datetime | None
    retired_at: datetime | None
    households: int
    kind: str | None
    worker_id: int | None
    worker_name: str | None
    area_m2: float


class IncidentProperties(BaseModel):
    """An incident with its assignment, time limit and workflow state."""

    status: str
    category: str
    category_name: str | None
    description: str | None
    source: str
    grid_code: str | None
    grid_version: int | None
    assignee_id: int | None
    assignee_name: str | None
    department: str | None
    department_name: str | None
    reported_at: datetime
    due_at: datetime | None
    dispatched_at: datetime | None
    handled_at: datetime | None
    closed_at: datetime | None
    overdue: bool
    escalation_level: int
    rework_count: int
    duplicate_of: int | None
    suggested_grid_code: str | None = Field(description="outside every grid: the nearest grid")
    suggested_distance_m: float | None
    input_crs: str
    reporter_id: int | None
    is_synthetic: bool
    events: list[dict[str, Any]] | None = Field(description="the event log, on single-incident reads")


class ResponderProperties(BaseModel):
    """A responder and its last position."""

    responder_id: int
    name: str
    phone: str | None
    role: str
    status: str
    department: str | None
    home_grid_code: str | None
    user_id: int | None
    position_at: datetime | None
    position_age_s: float | None
    stale: bool
    is_synthetic: bool


class CandidateProperties(ResponderProperties):
    """A responder near the point (the responder's own properties, then how near it is)."""

    distance_m: float = Field(description="geodesic metres (network mode: the straight-line metres it ranked by)")
    eta_s: float | None = Field(description="straight mode: distance / speed; network mode: road seconds, null "
                                            "when unreachable")
    same_grid: bool = Field(description="its home grid is the grid under the point")


class NearestQuery(BaseModel):
    """The point asked about, its grid and how candidates were ranked."""

    lon: float
    lat: float
    grid_code: str | None
    mode: Literal["straight", "network"]
    speed_mps: float | None = Field(description="straight mode: the ETA speed; null in network mode")


class NearestResponders(BaseModel):
    """The k nearest responders to a point."""

    type: Literal["FeatureCollection"]
    numberReturned: int
    query: NearestQuery
    features: list[Feature[CandidateProperties]]


class Health(BaseModel):
    """Whether the service and its database are up, and what they hold."""

    status: Literal["ok", "degraded"]
    database: str
    postgis: str | None = None
    active_grid_version: int | None = None
    demo_as_of: datetime | None = Field(None, description="the moment the loaded demo's year ends, if a demo is loaded")


def geojson(model: type[BaseModel], status: int = 200) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route that sends `model` as application/geo+json."""
    return {status: {"model": model, "content": {"application/geo+json": {}}}}
