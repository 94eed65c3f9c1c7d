"""Plans (draft grid versions): create (also from a file), list, read, discard."""

import re
from typing import Annotated

import orjson
from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from api.deps import CurrentCaller, SettingsDep, SyncEngine
from api.routes import plan_files as files
from geo import crs as crs_
from geo.planning import files as plan_files
from geo.planning import plans

router = APIRouter(tags=["plans"])

PlanId = Annotated[int, Path(ge=1, description="Plan (grid version) id")]


class NewPlan(BaseModel):
    """The JSON body of POST /plans."""
    name: str = Field(min_length=1, max_length=200)
    note: str | None = Field(default=None, max_length=4000)
    based_on: int | None = Field(default=None, ge=1, description="Version to copy; default: the active one")


def _new_plan(raw: bytes) -> NewPlan | None:
    """The JSON body as NewPlan, or None when it is a GeoJSON document (a file to start the plan from)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestValidationError([{"loc": ("body",), "msg": f"JSON decode error: {exc}",
                                       "type": "json_invalid"}]) from exc
    if isinstance(data, dict) and data.get("type") in ("FeatureCollection", "Feature"):
        return None
    try:
        return NewPlan.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from exc


@router.post("/plans", status_code=201, openapi_extra={"requestBody": {"required": True, "content": {
    "application/json": {"schema": NewPlan.model_json_schema()}, **files.UPLOAD_MEDIA}}})
async def create_plan(
    request: Request, caller: CurrentCaller, engine: SyncEngine, settings: SettingsDep,
    name: Annotated[str | None, Query(min_length=1, max_length=200,
                                      description="file uploads: the plan's name (default: the file name)")] = None,
    note: Annotated[str | None, Query(max_length=4000, description="file uploads: a note")] = None,
    format: files.FileFormat = None, filename: files.FileName = None, crs: files.FileCrs = None,
):
    """Start a draft as a copy of the active version (grids, kinds, workers); edit it, validate, publish.

    Send JSON {name, note, based_on}; or send a grid file as the body (as for POST /plans/{id}/import) to start
    the draft from it: the active version is copied and the file imported into it in one transaction, and the
    reply adds the import report under `import`."""
    caller.require_role(*plans.WRITE_ROLES)
    if format is None and files.content_type_of(request) in ("application/json", ""):
        body = _new_plan(await request.body())
        if body is not None:
            def create() -> dict:
                with engine.begin() as conn:
                    return plans.create(conn, caller, body.name, body.note, body.based_on)

            return await run_in_threadpool(create)
    crs = crs_.normalize_crs(crs) if crs else None

    def work(path, fmt: str | None, file_name: str | None) -> dict:
        upload = plan_files.read(path, fmt, file_name, crs)
        title = name or re.sub(r"(\.(zip|shp|gpkg|geojson|json|parquet|geoparquet))+$", "", file_name or "",
                               flags=re.IGNORECASE) or "Imported plan"
        with engine.begin() as conn:
            return plan_files.create_from_file(conn, caller, title[:200], note, upload)

    return await files.receive(request, settings.bulk_max_bytes, format, filename, work)


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
