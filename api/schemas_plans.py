"""Response shapes for OpenAPI: plans (grid versions), their edits, validation, diff and publishing, and jobs.

Built by geo.planning and geo.jobs; documented with `responses=` like api.schemas, and checked against real
replies in tests/test_openapi.py.
"""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas import Feature, Features

PlanStatus = Literal["draft", "active", "retired"]


class PlanSummary(BaseModel):
    """A plan (grid version): its state, the revision edits must carry, and its grid and household counts."""

    id: int
    name: str
    status: PlanStatus
    revision: int = Field(description="send it with every edit; each edit advances it")
    based_on_id: int | None = Field(description="the version this plan was copied from")
    note: str | None
    created_by: int | None = Field(description="user id of its creator")
    area_code: str | None = Field(description="a draft's area (its creator's): seen there only; null: everyone's")
    created_at: datetime
    activated_at: datetime | None
    retired_at: datetime | None
    grids: int
    households: int
    grids_without_worker: int


class PlanImport(BaseModel):
    """What importing a grid file into a plan did."""

    plan_id: int
    revision: int = Field(description="the plan's new revision")
    imported: int = Field(description="features (grids) in the file")
    communities: list[str] = Field(description="the communities the file touches: their grids were replaced")
    unchanged: list[str] = Field(description="communities whose grids the file repeats exactly (not rewritten)")
    codes: list[str] = Field(description="the grid code each feature got, in file order")
    replaced: int = Field(description="grids of those communities before the import")
    format: str = Field(description="gpkg, shp, geojson or parquet")
    crs: str = Field(description="the CRS the file was read in")


class PlanFromFile(PlanSummary):
    """A new plan started from a grid file: the plan, and the import report under `import`."""

    model_config = ConfigDict(populate_by_name=True)

    import_: PlanImport = Field(alias="import")


class PlanGridProperties(BaseModel):
    """A grid of a plan, with its deviation from the household target."""

    code: str
    name: str
    community: str = Field(description="community code (the grid code's first 12 digits)")
    kind: str | None
    households: int
    worker_id: int | None
    worker_name: str | None
    deviation: float = Field(description="households / target − 1")


class EditedGrids(Features[PlanGridProperties]):
    """The grids an edit changed, as they are now, and the codes it deleted."""

    removed: list[str] = Field(description="grid codes that no longer exist (merged away)")


class PlanEdit(BaseModel):
    """The result of one edit: the plan's new revision and the grids it changed."""

    plan_id: int
    revision: int = Field(description="the plan's new revision: send it with the next edit")
    op: str
    changed: list[str] = Field(description="codes of the grids changed, neighbours whose households moved included")
    grids: EditedGrids


class FindingProperties(BaseModel):
    """One validation finding, located by the Feature's geometry."""

    kind: Literal["invalid_geometry", "overlap", "gap", "outside_community", "multipart", "hole",
                  "households_out_of_band", "low_compactness", "no_worker"]
    severity: Literal["error", "fixable", "warning"] = Field(
        description="error blocks publishing; fixable is a sliver POST /plans/{id}/fix-slivers snaps away")
    codes: list[str] = Field(description="the grids involved")
    community: str | None
    area_m2: float | None = Field(description="geodesic m² of the problem, for area findings")
    message: str = Field(description="what is wrong and how to fix it")


class ValidationParameters(BaseModel):
    """The parameters the plan was validated with."""

    target: float = Field(description="households per grid")
    tolerance: float
    band: list[float] = Field(description="[target × (1 − tolerance), target × (1 + tolerance)]")
    sliver_m2: float = Field(description="smaller gaps/overlaps/outside parts are fixable slivers")
    min_compactness: float = Field(description="Polsby–Popper score below which a grid is flagged")
    noise_m2: float = Field(description="smaller parts are floating-point residue and ignored")


class ValidationSummary(BaseModel):
    """Counts of findings, and whether the plan may be published."""

    errors: int
    warnings: int
    fixable: int
    passes: bool = Field(description="no errors and nothing fixable: what publishing requires")
    by_kind: dict[str, int] = Field(description="findings per kind")


class PlanValidation(BaseModel):
    """A plan's validation findings as a FeatureCollection (most severe first), with a summary."""

    type: Literal["FeatureCollection"]
    plan_id: int
    status: PlanStatus
    revision: int
    parameters: ValidationParameters
    summary: ValidationSummary
    features: list[Feature[FindingProperties]]


class SliverCounts(BaseModel):
    """Slivers snapped away, by kind."""

    gap: int
    hole: int
    overlap: int
    outside_community: int


class SliversFixed(BaseModel):
    """What POST /plans/{id}/fix-slivers did, and what validation finds now."""

    plan_id: int
    revision: int = Field(description="the plan's new revision")
    sliver_m2: float
    fixed: SliverCounts
    changed: list[str] = Field(description="codes of the grids reshaped")
    summary: ValidationSummary


class DiffGridProperties(BaseModel):
    """A grid that publishing would add, remove or change, both sides of it."""

    code: str
    change: Literal["added", "removed", "changed"]
    households_before: int | None
    households_after: int | None
    kind_before: str | None
    kind_after: str | None
    worker_before: int | None
    worker_after: int | None
    area_changed_m2: float = Field(description="geodesic m² of land that changed hands (0 when not reshaped)")


class BuildingMove(BaseModel):
    """Buildings that change grid."""

    model_config = ConfigDict(populate_by_name=True)

    from_: str | None = Field(alias="from", description="old grid code (null: no grid)")
    to: str | None = Field(description="new grid code (null: no grid)")
    buildings: int
    households: int


class IncidentMove(BaseModel):
    """An open incident whose grid or assignee would change."""

    id: int
    status: str
    from_grid: str | None
    to_grid: str | None
    from_worker: int | None
    to_worker: int | None


class WorkerChange(BaseModel):
    """A worker whose grids change."""

    worker_id: int
    name: str | None
    grids_before: list[str]
    grids_after: list[str]
    households_before: int
    households_after: int


class DiffSummary(BaseModel):
    """Counts of what publishing changes."""

    added: int
    removed: int
    changed: int
    unchanged: int
    households_moved: int
    buildings_moved: int
    incidents_reassigned: int = Field(description="every open incident whose grid or assignee changes")
    workers_affected: int


class PlanDiff(BaseModel):
    """What publishing a plan changes relative to another version, in the caller's area."""

    plan_id: int
    against: int | None = Field(description="the version compared with (null: nothing is active yet)")
    summary: DiffSummary
    grids: Features[DiffGridProperties] = Field(
        description="added: the new grid, removed: the old one, reshaped: the land that changed hands, "
                    "only kind/worker changed: the grid")
    moves: list[BuildingMove]
    incidents: list[IncidentMove] = Field(description="at most `limit` of them")
    incidents_truncated: bool
    workers: list[WorkerChange]


class Published(BaseModel):
    """What publishing did: the plan is active, the previous version retired, open incidents moved."""

    plan_id: int
    status: Literal["active"]
    revision: int
    activated_at: datetime
    retired: int | None = Field(description="the version retired (null: none was active)")
    reassigned: int = Field(description="open incidents reassigned (one event each)")
    events: int
    moved: int = Field(description="incidents whose grid changed")
    unassigned: int = Field(description="incidents no new grid covers")
    newly_assigned: int = Field(description="incidents that gained an assignee")
    workers_affected: int
    home_grids_updated: int = Field(description="responders whose home grid code was updated")
    summary: DiffSummary


class JobLink(BaseModel):
    """Where to read, cancel or see the result of a job."""

    rel: Literal["self", "cancel", "plan"]
    href: str
    method: str | None = Field(None, description="cancel: POST")


class Job(BaseModel):
    """A background job and its links."""

    id: int
    kind: str = Field(description="e.g. propose")
    status: Literal["queued", "running", "done", "failed", "cancelled"]
    progress: float = Field(description="0..1")
    message: str | None = Field(description="what it is doing now")
    params: dict[str, Any] | None = Field(description="what it was asked to do")
    result: dict[str, Any] | None = Field(description="done: what it did")
    error: str | None = Field(description="failed: why")
    created_by: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    links: list[JobLink]
