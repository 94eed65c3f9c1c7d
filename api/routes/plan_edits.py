"""Editing a draft plan: POST /plans/{id}/edits (one op per request) and GET /plans/{id}/grids."""

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Query, Request
from pydantic import ConfigDict, Field, model_validator

from api.deps import CurrentCaller, PlanId, SyncEngine
from api.geojson import GeoJSONResponse, feature_collection
from api.params import COMMUNITY_CODE, GRID_CODE, BodyModel
from api.schemas import FeatureCollection, geojson
from api.schemas_plans import PlanEdit, PlanGridProperties
from geo.planning import edits as plan_edits

router = APIRouter(tags=["plans"])

GridCode = Annotated[str, Field(pattern=GRID_CODE, description="15-digit grid code")]
Crs = Annotated[str, Field(description="EPSG:4326 (default), EPSG:4490, GCJ-02 or BD-09")]
Target = Annotated[int, Query(ge=1, le=100_000, description="Households a grid should hold")]


class _Geometry(BodyModel):
    """A GeoJSON geometry; its coordinates are checked by the edit itself (validity, crs, community)."""

    type: str
    coordinates: list


class PolygonGeometry(_Geometry):
    """A polygon (new boundary) in the edit's crs."""
    type: Literal["Polygon", "MultiPolygon"]


class LineGeometry(_Geometry):
    """A line (split line) in the edit's crs."""
    type: Literal["LineString"]


class _Edit(BodyModel):
    model_config = ConfigDict(extra="forbid")
    revision: int = Field(ge=0, description="The plan revision this edit is based on (GET /plans/{id})")


class ReplaceGeometry(_Edit):
    """Give a grid a new boundary inside its community; neighbours are not adjusted (validation shows overlaps)."""

    op: Literal["replace_geometry"]
    code: GridCode
    geometry: PolygonGeometry
    crs: Crs = "EPSG:4326"


class Split(_Edit):
    """Cut a grid along a line across it; the largest part keeps the code, the others get new codes."""

    op: Literal["split"]
    code: GridCode
    line: LineGeometry
    crs: Crs = "EPSG:4326"


class Merge(_Edit):
    """Join adjacent grids of one community; the lowest code survives."""

    op: Literal["merge"]
    codes: list[GridCode] = Field(min_length=2, max_length=100)


class MoveBuildings(_Edit):
    """Move buildings (by id, or every building whose point lies in `area`) and their land to grid `to`."""

    op: Literal["move_buildings"]
    to: GridCode
    building_ids: list[int] | None = Field(default=None, min_length=1, max_length=10_000)
    area: PolygonGeometry | None = None
    crs: Crs = "EPSG:4326"

    @model_validator(mode="after")
    def _one_selection(self):
        if (self.building_ids is None) == (self.area is None):
            raise ValueError("give either building_ids or area (a block polygon), not both")
        return self


class SetAttributes(_Edit):
    """Set a grid's kind and/or worker (worker_id null: no worker)."""

    op: Literal["set_attributes"]
    code: GridCode
    kind: Literal["residential", "commercial"] | None = None
    worker_id: int | None = None

    @model_validator(mode="after")
    def _something(self):
        if not {"kind", "worker_id"} & self.model_fields_set:
            raise ValueError("give kind and/or worker_id")
        if "kind" in self.model_fields_set and self.kind is None:
            raise ValueError("kind cannot be null; use residential or commercial")
        return self


Edit = Annotated[ReplaceGeometry | Split | Merge | MoveBuildings | SetAttributes, Field(discriminator="op")]


@router.post("/plans/{plan_id}/edits", responses={200: {"model": PlanEdit}})
def edit_plan(plan_id: PlanId, body: Annotated[Edit, Body()], caller: CurrentCaller, engine: SyncEngine,
              target: Target = 300) -> dict:
    """Apply one edit to a draft (ops: replace_geometry, split, merge, move_buildings, set_attributes).

    Send the plan's current `revision`; the reply carries the new one. A stale revision is a 409: reload and
    apply again. The reply lists the changed grid codes and returns them as a FeatureCollection (deleted
    codes in `grids.removed`)."""
    if isinstance(body, SetAttributes):  # only the attributes actually sent (worker_id null unassigns)
        params = body.model_dump(include=body.model_fields_set & {"code", "kind", "worker_id"})
    else:
        params = body.model_dump(exclude={"revision", "op"}, exclude_none=True)
    with engine.begin() as conn:
        return plan_edits.apply(conn, caller, plan_id, body.revision, body.op, target=target, **params)


@router.get("/plans/{plan_id}/grids", response_class=GeoJSONResponse,
            responses=geojson(FeatureCollection[PlanGridProperties]))
def plan_grids(request: Request, plan_id: PlanId, caller: CurrentCaller, engine: SyncEngine, target: Target = 300,
               community: Annotated[str | None, Query(pattern=COMMUNITY_CODE,
                                                      description="Only this community's grids")] = None
               ) -> GeoJSONResponse:
    """The plan's grids in your area: code, name, community, kind, households, worker and
    deviation = households / target − 1."""
    with engine.connect() as conn:
        return feature_collection(request, plan_edits.grids_geojson(conn, caller, plan_id, target, community), None)
