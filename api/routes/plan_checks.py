"""Plan checks: validation findings of a grid version, and snapping away the slivers among them."""

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import Field

from api.deps import CurrentCaller, PlanId, SyncEngine
from api.params import BodyModel
from api.schemas_plans import PlanValidation, SliversFixed
from geo.planning import validation as pv

router = APIRouter(tags=["plans"])

SliverM2 = Annotated[float, Query(ge=0, le=pv.MAX_SLIVER_M2, description="gaps/overlaps/outside parts below this "
                                  "many m² are drawing slivers (severity fixable)")]


@router.get("/plans/{plan_id}/validation", responses={200: {"model": PlanValidation}})
def validate_plan(plan_id: PlanId, caller: CurrentCaller, engine: SyncEngine,
                  target: Annotated[float, Query(gt=0, description="households per grid")] = pv.TARGET,
                  tolerance: Annotated[float, Query(ge=0, lt=1, description="band: target × (1 ± tolerance)")]
                  = pv.TOLERANCE,
                  sliver_m2: SliverM2 = pv.SLIVER_M2,
                  min_compactness: Annotated[float, Query(ge=0, le=1, description="Polsby–Popper 4πA/P² below "
                                                          "which a grid is flagged")] = pv.MIN_COMPACTNESS) -> dict:
    """Findings as a GeoJSON FeatureCollection: each Feature locates one problem (kind, severity error | fixable
    | warning, grid codes, community, area_m2, message); `summary.passes` is what publishing requires."""
    with engine.connect() as conn:
        return pv.validate(conn, plan_id, caller, target=target, tolerance=tolerance, sliver_m2=sliver_m2,
                           min_compactness=min_compactness)


class FixSlivers(BodyModel):
    """The body of POST /plans/{id}/fix-slivers."""
    revision: int = Field(ge=0, description="The plan's current revision (409 if stale)")
    sliver_m2: float = Field(default=pv.SLIVER_M2, ge=0, le=pv.MAX_SLIVER_M2)


@router.post("/plans/{plan_id}/fix-slivers", responses={200: {"model": SliversFixed}})
def fix_slivers(plan_id: PlanId, body: FixSlivers, caller: CurrentCaller, engine: SyncEngine) -> dict:
    """Snap every fixable sliver of a draft away in one step: sliver overlaps stay with the lowest code, sliver
    parts outside the community are clipped, sliver gaps join the neighbour with the longest shared edge.
    Replies with the counts fixed, the new revision and the summary of what remains."""
    with engine.begin() as conn:
        return pv.fix_slivers(conn, caller, plan_id, body.revision, body.sliver_m2)
