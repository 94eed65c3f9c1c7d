"""Background jobs (GET /jobs/{id}, cancel) and the job that starts one: automatic balanced drafts."""

import random
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from pydantic import Field

from api.deps import CurrentCaller, PlanId, SyncEngine
from api.params import AREA_ABOVE_GRID_CODE, BodyModel, JobId
from api.schemas_plans import Job
from geo import jobs
from geo.planning import propose

router = APIRouter(tags=["plans"])



def get_runner(request: Request) -> jobs.Runner:
    """The app's job runner, made by the lifespan."""
    return request.app.state.jobs


JobRunner = Annotated[jobs.Runner, Depends(get_runner)]


def _links(job: dict) -> dict:
    links = [{"rel": "self", "href": f"/jobs/{job['id']}"}]
    if job["status"] in ("queued", "running"):
        links.append({"rel": "cancel", "href": f"/jobs/{job['id']}/cancel", "method": "POST"})
    plan_id = (job.get("params") or {}).get("plan_id")
    if plan_id:
        links.append({"rel": "plan", "href": f"/plans/{plan_id}"})
    return {**job, "links": links}


@router.get("/jobs/{job_id}", tags=["jobs"], responses={200: {"model": Job}})
def get_job(job_id: JobId, caller: CurrentCaller, engine: SyncEngine) -> dict:
    """A background job: status (queued, running, done, failed, cancelled), progress 0..1, what it is doing
    now (message), its parameters, and its result or error."""
    with engine.connect() as conn:
        return _links(jobs.get(conn, caller, job_id))


@router.post("/jobs/{job_id}/cancel", tags=["jobs"], responses={200: {"model": Job}})
def cancel_job(job_id: JobId, caller: CurrentCaller, engine: SyncEngine) -> dict:
    """Cancel a queued or running job; a running one stops at its next step and writes nothing (409 if it
    has already finished)."""
    with engine.begin() as conn:
        return _links(jobs.cancel(conn, caller, job_id))


class Proposal(BodyModel):
    """The body of POST /plans/{id}/propose: the area to redraw and the household target."""
    revision: int = Field(ge=0, description="The plan revision the proposal is based on (GET /plans/{id})")
    area: str = Field(pattern=AREA_ABOVE_GRID_CODE,
                      description="District (6 digits), street (9) or community (12) code to redraw")
    target: float = Field(default=propose.TARGET, gt=0, le=100_000, description="Households per grid")
    tolerance: float = Field(default=propose.TOLERANCE, gt=0, lt=1, description="0.15 = ±15 %")
    seed: int | None = Field(default=None, ge=0, lt=2**63, description="Same seed, same draft (default: random)")


@router.post("/plans/{plan_id}/propose", status_code=202, responses={202: {"model": Job}})
def propose_grids(plan_id: PlanId, body: Proposal, caller: CurrentCaller, engine: SyncEngine, runner: JobRunner,
                  response: Response) -> dict:
    """Start an automatic draft: contiguous, compact grids of about `target` households (± tolerance) for every
    community of `area`, from its buildings, following roads where there are any (GerryChain recursive
    spanning-tree partition). Returns the job at once (202; poll GET /jobs/{id}); when done, the grids are in
    the plan and the plan's revision is bumped. If the plan is edited meanwhile the job fails and writes
    nothing."""
    with engine.connect() as conn:
        propose.check_request(conn, caller, plan_id, body.revision, body.area, body.target, body.tolerance)
    seed = body.seed if body.seed is not None else random.SystemRandom().randrange(2**31)
    job = runner.submit(caller, "propose", {"plan_id": plan_id, "revision": body.revision, "area": body.area,
                                            "target": body.target, "tolerance": body.tolerance, "seed": seed},
                        propose.run)
    response.headers["Location"] = f"/jobs/{job['id']}"
    return _links(job)
