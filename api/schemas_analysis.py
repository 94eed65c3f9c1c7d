"""Response shapes for OpenAPI: the analyses (performance rates, grid coverage, staffing, response coverage,
stationing, hotspots).

Built by geo.incidents.metrics and geo.analysis; documented with `responses=` like api.schemas, and checked
against real replies in tests/test_openapi.py. `definitions` in each reply says in words what each figure means.
"""

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas import AreaRef, Features, TruncatedFeatures

Definitions = dict[str, str]


# -- performance ---------------------------------------------------------------------------------------------

class Figures(BaseModel):
    """Evaluation rates, the counts they come from and the time to close (see the reply's `definitions`)."""

    handling_rate: float | None = Field(description="handled / due (null when nothing is due)")
    on_time_handling_rate: float | None = Field(description="handled_on_time / due")
    closure_rate: float | None = Field(description="closed / due_to_close")
    rework_rate: float | None = Field(description="reworked / due_to_close")
    due: int
    handled: int
    handled_on_time: int
    due_to_close: int
    closed: int
    reworked: int
    overdue_count: int
    median_time_to_close_s: float | None
    p90_time_to_close_s: float | None


class ChildFigures(Figures):
    """The figures of a child area."""

    code: str
    name: str | None = Field(description="null for a code the cases carry that no longer exists")
    level: str


class DepartmentFigures(Figures):
    """The figures of a department (code null: cases without one)."""

    code: str | None
    name: str | None


class WorkerFigures(Figures):
    """The figures of an assignee (id null: cases without one)."""

    id: int | None
    name: str | None


class Performance(BaseModel):
    """Evaluation rates over [from, to) for an area, its children, its departments and its workers."""

    model_config = ConfigDict(populate_by_name=True)

    area: AreaRef
    from_: datetime = Field(alias="from")
    to: datetime
    as_of: datetime = Field(description="min(to, now): deadlines after it have not arrived yet")
    definitions: Definitions
    totals: Figures
    children: list[ChildFigures]
    by_department: list[DepartmentFigures]
    by_worker: list[WorkerFigures]


# -- grid coverage -------------------------------------------------------------------------------------------

class CoverageChild(BaseModel):
    """Coverage of a child area by the grids under it."""

    code: str
    name: str
    level: str
    grids: int
    area_m2: float
    covered_m2: float
    gap_m2: float
    overlap_m2: float
    covered_share: float | None


class CoveragePartProperties(BaseModel):
    """A gap, overlap or spill-over part."""

    kind: Literal["gap", "overlap", "outside"]
    area_m2: float


class GridCoverage(BaseModel):
    """How completely the active grids cover an area (geodesic m²), for the area and each child area."""

    area: AreaRef
    grid_version: Literal["active"]
    min_area_m2: float = Field(description="smaller parts are slivers: totalled, not listed or counted")
    grids: int
    area_m2: float
    covered_m2: float
    covered_share: float | None
    gap_m2: float
    gap_count: int
    gap_sliver_m2: float
    overlap_m2: float
    overlap_count: int
    overlap_sliver_m2: float
    overlapping_pairs: int
    outside_m2: float = Field(description="grid parts beyond the area boundary")
    outside_count: int
    children: list[CoverageChild]
    features: TruncatedFeatures[CoveragePartProperties] = Field(description="the gaps, overlaps and outside parts")
    definitions: Definitions


# -- staffing ------------------------------------------------------------------------------------------------

class StaffedGrid(BaseModel):
    """A grid and its worker."""

    code: str
    name: str
    households: int
    kind: str | None
    worker_id: int | None
    worker_name: str | None


class WorkerLoad(BaseModel):
    """A worker and the households of the grids they work."""

    id: int
    name: str | None
    status: str | None
    grids: list[str]
    households: int
    grid_count: int
    load: float = Field(description="households / target")


class Staffing(BaseModel):
    """Grids without a worker, households per worker and grid, grids outside the target band."""

    area: AreaRef
    target: int
    tolerance: float
    band: list[float] = Field(description="[target × (1 − tolerance), target × (1 + tolerance)]")
    grids: int
    households: int
    workers: int
    grids_without_worker_count: int
    households_without_worker: int
    households_per_worker: float | None
    households_per_worker_max: float | None
    households_per_worker_median: float | None
    households_per_grid: float | None
    grids_over_count: int
    grids_under_count: int
    grids_within_count: int
    workers_off_duty: list[int] = Field(description="ids of workers of these grids who are off duty")
    grids_without_worker: list[StaffedGrid]
    grids_over: list[StaffedGrid]
    grids_under: list[StaffedGrid]
    most_overloaded_workers: list[WorkerLoad]
    definitions: Definitions


# -- response coverage ---------------------------------------------------------------------------------------

class ValueStats(BaseModel):
    """Median, 90th percentile and maximum over the buildings a responder reaches (null: none)."""

    median: float | None
    p90: float | None
    max: float | None


class RespondersInArea(BaseModel):
    """Responders positioned in the area."""

    available_fresh: int
    available_stale: int
    not_available: int


class CurvePoint(BaseModel):
    """Households within one distance (or, mode=network, one travel time)."""

    distance_m: int | None = Field(None, description="mode=straight")
    minutes: float | None = Field(None, description="mode=network")
    households_covered: int
    share: float | None


class UncoveredProperties(BaseModel):
    """A building no responder reaches in time."""

    building_id: int
    households: int
    nearest_responder_m: float | None = Field(None, description="mode=straight; null: no responder at all")
    travel_time_s: float | None = Field(None, description="mode=network; null: unreachable")


class ResponseCoverage(BaseModel):
    """Share of households within reach of an available responder with a fresh position."""

    area: AreaRef
    mode: Literal["straight", "network"]
    distance_m: float | None = Field(description="mode=straight")
    minutes: float | None = Field(description="mode=network")
    position_max_age_s: float
    buildings: int
    households: int
    households_covered: int
    share_covered: float | None
    buildings_uncovered: int
    households_uncovered: int
    nearest_responder_m: ValueStats | None = Field(None, description="mode=straight only: geodesic metres")
    travel_time_s: ValueStats | None = Field(None, description="mode=network only: seconds by road")
    responders_in_area: RespondersInArea
    curve: list[CurvePoint] = Field(description="100..2000 m (mode=network: 1..30 minutes)")
    uncovered: TruncatedFeatures[UncoveredProperties]
    definitions: Definitions


# -- stationing ----------------------------------------------------------------------------------------------

class StationingDemand(BaseModel):
    """The demand the optimiser sees: buildings aggregated to at most a few hundred points."""

    points: int
    source: str
    households: int
    buildings: int


class StationingCandidates(BaseModel):
    """Where posts may go."""

    count: int
    source: str
    given_or_centroids: int
    current_positions: int = Field(description="today's positions added to the candidates")
    current_positions_left_out: int


class PostProperties(BaseModel):
    """A post: which candidate it is and the households it covers."""

    candidate: str
    candidate_kind: Literal["candidate", "current_position"]
    households_covered: int


class Mclp(BaseModel):
    """MCLP: the k posts covering the most households within distance_m."""

    status: str
    posts: Features[PostProperties]


class CoveredBy(BaseModel):
    """Households within distance_m of a set of posts (exact, and on the optimiser's aggregated demand)."""

    households_covered: int
    share_covered: float | None
    model_households_covered: int
    model_share_covered: float | None


class ProposedCover(CoveredBy):
    """The proposed posts' cover."""

    posts: int


class CurrentCover(CoveredBy):
    """Today's cover by the available, fresh responders."""

    responders: int


class Lscp(BaseModel):
    """LSCP: the fewest posts covering every household a candidate can reach."""

    status: str | None
    posts_needed: int | None
    posts: Features[PostProperties] | None
    uncoverable_households: float
    uncoverable_demand_points: int
    covers_everyone: bool
    note: str | None = Field(None, description="when some households are beyond every candidate")


class Stationing(BaseModel):
    """Optimal posts for k responders (MCLP) and for everyone (LSCP), compared with today."""

    area: AreaRef
    k: int
    distance_m: float
    projection: str = Field(description="the UTM zone distances were measured in")
    demand: StationingDemand
    candidates: StationingCandidates
    mclp: Mclp
    proposed: ProposedCover
    current: CurrentCover
    gain_households: int = Field(description="proposed − current households covered")
    lscp: Lscp
    definitions: Definitions


# -- hotspots ------------------------------------------------------------------------------------------------

class HotspotWindow(BaseModel):
    """Hot and cold cells in one of the consecutive windows."""

    model_config = ConfigDict(populate_by_name=True)

    from_: datetime = Field(alias="from")
    to: datetime
    incidents: int
    hot_cells: int
    cold_cells: int


class HotspotProperties(BaseModel):
    """A significant (or persistent) cell."""

    cell: str = Field(description="H3 index or grid code")
    name: str | None = Field(description="by=grid: the grid's name")
    count: int
    z: float = Field(description="Getis-Ord Gi* z-score")
    p: float
    p_sim: float = Field(description="permutation pseudo p-value")
    hotspot: Literal["hot", "cold"]
    significant: bool = Field(description="Benjamini–Hochberg at alpha")
    windows_hot: int
    persistent: bool = Field(description="hot in every window")


class Hotspots(BaseModel):
    """Getis-Ord Gi* hot and cold cells with FDR significance, and their persistence over windows."""

    model_config = ConfigDict(populate_by_name=True)

    area: AreaRef
    by: Literal["h3", "grid"]
    resolution: int | None = Field(description="by=h3: the H3 resolution")
    category: str | None
    from_: datetime = Field(alias="from")
    to: datetime
    alpha: float
    permutations: int
    seed: int
    cells: int
    incidents: int
    hot_cells: int
    cold_cells: int
    persistent_cells: int
    windows: list[HotspotWindow]
    features: Features[HotspotProperties]
    definitions: Definitions
