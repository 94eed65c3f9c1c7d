"""A plan's impact against a published version, and publishing it with reassignment of open incidents."""

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import Field

from api.deps import CurrentCaller, PlanId, SyncEngine
from api.params import BodyModel
from api.schemas_plans import PlanDiff, Published
from geo.planning import diff as plan_diff
from geo.planning import publish

router = APIRouter(tags=["plans"])



class Publish(BodyModel):
    """The body of POST /plans/{id}/publish."""
    revision: int = Field(ge=0, description="The plan's current revision (GET /plans/{id})")
    force: bool = Field(default=False, description="Publish even though the plan was copied from a version that "
                                                   "is no longer active (that would undo what was published since)")


@router.get("/plans/{plan_id}/diff", responses={200: {"model": PlanDiff}})
def plan_diff_(plan_id: PlanId, caller: CurrentCaller, engine: SyncEngine,
               against: Annotated[str, Query(pattern=r"^(active|[0-9]+)$",
                                             description="'active' or a grid version id")] = "active",
               limit: Annotated[int, Query(ge=0, description="Incidents listed (clamped to 5000); "
                                                        "summary.incidents_reassigned has the total")] = 500) -> dict:
    """What publishing the plan changes: grids added/removed/changed as GeoJSON (added: the new grid, removed: the
    old one, reshaped: the land that changed hands, only kind/worker changed: the grid), building flows between
    grids, the open incidents whose grid or assignee would change (exactly what publishing does), and the workers
    whose grids change."""
    with engine.connect() as conn:
        return plan_diff.diff(conn, caller, plan_id, against, limit)


@router.post("/plans/{plan_id}/publish", responses={200: {"model": Published}})
def publish_plan(plan_id: PlanId, body: Publish, caller: CurrentCaller, engine: SyncEngine) -> dict:
    """Make a validated draft the active version in one step: the previous one is retired, open incidents move to
    the new grids and their workers (each change logged), closed incidents keep their history. 409 while the plan
    has validation errors or the revision is stale."""
    with engine.begin() as conn:
        return publish.publish(conn, caller, plan_id, body.revision, body.force)
