"""Plans (draft grid versions): create, list, read, discard."""

from typing import Annotated

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, Field

from api.deps import CurrentCaller, SyncEngine
from geo import plans

router = APIRouter(tags=["plans"])

PlanId = Annotated[int, Path(ge=1, description="Plan (grid version) id")]


class NewPlan(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    note: str | None = Field(default=None, max_length=4000)
    based_on: int | None = Field(default=None, ge=1, description="Version to copy; default: the active one")


@router.post("/plans", status_code=201)
def create_plan(body: NewPlan, caller: CurrentCaller, engine: SyncEngine) -> dict:
    """Start a draft as a copy of the active version (grids, kinds, workers); edit it, validate, publish."""
    with engine.begin() as conn:
        return plans.create(conn, caller, body.name, body.note, body.based_on)


@router.get("/plans")
def list_plans(caller: CurrentCaller, engine: SyncEngine) -> list[dict]:
    """Every grid version (drafts, the active one, retired ones), newest first."""
    with engine.connect() as conn:
        return plans.list_(conn, caller)


@router.get("/plans/{plan_id}")
def get_plan(plan_id: PlanId, caller: CurrentCaller, engine: SyncEngine) -> dict:
    """One plan: status, revision (send it with every edit), grid and household counts."""
    with engine.connect() as conn:
        return plans.get(conn, caller, plan_id)


@router.delete("/plans/{plan_id}", status_code=204)
def discard_plan(plan_id: PlanId, caller: CurrentCaller, engine: SyncEngine) -> Response:
    """Discard a draft and its grids (published versions are history and cannot be deleted)."""
    with engine.begin() as conn:
        plans.discard(conn, caller, plan_id)
    return Response(status_code=204)
