"""Response shapes for OpenAPI: GeoJSON, areas, incidents (and their bulk import), responders, health.

The bytes come from PostGIS (`json_build_object`) or from the builders in geo/; these models document them
(routes name them in `responses=`, never as `response_model=`, so nothing re-validates what is sent), and
tests check real replies against them. Plans and jobs are in api.schemas_plans, analyses in
api.schemas_analysis, Open311 in api.schemas_open311.
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


class Features(BaseModel, Generic[P]):
    """A FeatureCollection inside a JSON reply (all of it, no paging)."""

    type: Literal["FeatureCollection"]
    features: list[Feature[P]]


class TruncatedFeatures(Features[P], Generic[P]):
    """A FeatureCollection inside a JSON reply, cut at the route's feature limit."""

    truncated: bool = Field(description="more Features exist than are listed (max_features)")


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


class BulkReject(BaseModel):
    """A row of a bulk import that was not filed, and why."""

    line: int = Field(description="CSV: the physical line; GeoJSON/GeoPackage: the 1-based feature number")
    reason: str
    fid: int | str | None = Field(None, description="GeoJSON/GeoPackage: the feature's FID")
    nearest_grid: str | None = Field(None, description="outside every grid: the nearest grid")
    distance_m: float | None = Field(None, description="outside every grid: metres to that grid")


class BulkImportReport(BaseModel):
    """What POST /incidents/bulk did: every row was filed or rejected, all in one transaction."""

    batch_id: str = Field(description="the batch's id in the audit log and in the incidents' events")
    file_name: str | None
    format: str | None = Field(description="csv, geojson or gpkg")
    crs: str | None = Field(description="the CRS the coordinates were read in")
    grid_version: int | None = Field(description="the active grid version the rows were assigned under")
    total_rows: int
    imported: int
    duplicates: int = Field(description="imported rows linked as likely duplicates of open incidents")
    rejected_count: int
    rejected: list[BulkReject] = Field(description="the first 1000 rejected rows, in line order")
    report_truncated: bool = Field(description="more rows were rejected than `rejected` lists")
    blank_lines: int
    ignored_columns: list[str] = Field(description="columns of the file that were not read")
    seconds: float


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


class PositionBatch(BaseModel):
    """What a batch of position pings did."""

    received: int
    written: int = Field(description="pings appended to the tracks")
    positions_updated: int = Field(description="responders whose last position moved (the ping was newer)")
    responders: int = Field(description="distinct responders in the batch")


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
