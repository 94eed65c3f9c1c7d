"""Plans (draft grid versions): create (as a copy, or from a file), list, read, discard."""

import re
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import Field

from api.deps import CurrentCaller, PlanId, SettingsDep, SyncEngine
from api.params import BodyModel
from api.routes import plan_files as files
from api.schemas_plans import PlanFromFile, PlanSummary
from geo import crs as crs_
from geo.planning import files as plan_files
from geo.planning import plans

router = APIRouter(tags=["plans"])



class NewPlan(BodyModel):
    """The JSON body of POST /plans."""
    name: str = Field(min_length=1, max_length=200)
    note: str | None = Field(default=None, max_length=4000)
    based_on: int | None = Field(default=None, ge=1, description="Version to copy; default: the active one")


@router.post("/plans", status_code=201, responses={201: {"model": PlanSummary}})
def create_plan(body: NewPlan, caller: CurrentCaller, engine: SyncEngine) -> dict:
    """Start a draft as a copy of a version (default: the active one) with its grids, kinds and workers;
    edit it, validate, publish. To start from a grid file instead, POST it to /plans/from-file."""
    caller.require_role(*plans.WRITE_ROLES)
    with engine.begin() as conn:
        return plans.create(conn, caller, body.name, body.note, body.based_on)


@router.post("/plans/from-file", status_code=201, openapi_extra=files.UPLOAD_BODY,
             responses={201: {"model": PlanFromFile}})
async def create_plan_from_file(
    request: Request, caller: CurrentCaller, engine: SyncEngine, settings: SettingsDep,
    name: Annotated[str | None, Query(min_length=1, max_length=200,
                                      description="the plan's name (default: the file name)")] = None,
    note: Annotated[str | None, Query(max_length=4000)] = None,
    format: files.FileFormat = None, filename: files.FileName = None, crs: files.FileCrs = None,
):
    """Start a draft from a grid file sent as the body (as for POST /plans/{id}/import): the active version is
    copied and the file imported into it in one transaction; the reply adds the import report under `import`."""
    caller.require_role(*plans.WRITE_ROLES)
    crs = crs_.normalize_crs(crs) if crs else None

    def work(path, fmt: str | None, file_name: str | None) -> dict:
        upload = plan_files.read(path, fmt, file_name, crs, settings.unzip_limits())
        title = name or re.sub(r"(\.(zip|shp|gpkg|geojson|json|parquet|geoparquet))+$", "", file_name or "",
                               flags=re.IGNORECASE) or "Imported plan"
        with engine.begin() as conn:
            return plan_files.create_from_file(conn, caller, title[:200], note, upload)

    return await files.receive(request, settings.bulk_max_bytes, format, filename, work)


@router.get("/plans", responses={200: {"model": list[PlanSummary]}})
def list_plans(caller: CurrentCaller, engine: SyncEngine) -> list[dict]:
    """Every grid version (drafts, the active one, retired ones), newest first."""
    with engine.connect() as conn:
        return plans.list_(conn, caller)


@router.get("/plans/{plan_id}", responses={200: {"model": PlanSummary}})
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
