"""Plan files: POST /plans/{id}/import takes a grid file as the raw body; GET /plans/{id}/export writes one."""

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from api.deps import CurrentCaller, PlanId, SettingsDep, SyncEngine
from api.errors import error_body
from api.routes.bulk import _DISPOSITION
from api.schemas_plans import PlanImport
from api.uploads import spooled
from geo import crs as crs_
from geo.errors import InvalidInput
from geo.planning import files as plan_files
from geo.planning import plans

router = APIRouter(tags=["plans"])

FileFormat = Annotated[Literal["gpkg", "shp", "geojson", "parquet"] | None,
                       Query(description="default: from Content-Type, then the file name, then the content")]
FileName = Annotated[str | None, Query(max_length=255, description="the file's name (also read from "
                                                                   "Content-Disposition), kept in the audit log")]
FileCrs = Annotated[str | None, Query(description="EPSG:4326, EPSG:4490, GCJ-02 or BD-09: the CRS of a file that "
                                                  "has none; a declared GCJ-02/BD-09 wins over the file's own")]
MEDIA_TYPES = {
    "application/geopackage+sqlite3": "gpkg", "application/x-sqlite3": "gpkg", "application/vnd.sqlite3": "gpkg",
    "application/geo+json": "geojson", "application/json": "geojson",
    "application/zip": "shp", "application/x-zip-compressed": "shp", "application/x-shapefile": "shp",
    "application/vnd.apache.parquet": "parquet", "application/x-parquet": "parquet",
}
UPLOAD_MEDIA: dict[str, dict] = {
    media: {"schema": {"type": "string", "format": "binary"}}
    for media in ("application/geopackage+sqlite3", "application/zip", "application/geo+json",
                  "application/vnd.apache.parquet")}
UPLOAD_BODY = {"requestBody": {"required": True, "content": UPLOAD_MEDIA}}
_EXAMPLE = "`curl --data-binary @grids.gpkg -H 'Content-Type: application/geopackage+sqlite3' ...`"


def content_type_of(request: Request) -> str:
    """The request's media type, lower-cased, without parameters."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def receive(request: Request, limit: int, format: str | None, filename: str | None,
                  work: Callable[[Path, str | None, str | None], dict]) -> dict | Response:
    """Spool the body to a temporary file, then run `work(path, format, filename)` in a worker thread.
    A file with bad features gets 400 with every one of them listed under `features`."""
    content_type = content_type_of(request)
    if content_type.startswith("multipart/"):
        raise InvalidInput(f"Send the file itself as the request body, not as a multipart form: e.g. {_EXAMPLE}.",
                           field="body")
    format = format or MEDIA_TYPES.get(content_type)  # otherwise from the file name, else from the content
    if filename is None and (match := _DISPOSITION.search(request.headers.get("content-disposition", ""))):
        filename = match.group(1).strip()
    async with spooled(request, limit, "(WANGGE_BULK_MAX_BYTES); import it community by community.",
                       f"send the grid file itself as the body, e.g. {_EXAMPLE}.") as path:
        if path is None:
            return Response(status_code=400)
        try:
            return await run_in_threadpool(work, path, format, filename)
        except plan_files.BadFeatures as exc:  # every bad feature up to LISTED_LIMIT, the rest counted
            listed = exc.features[:plan_files.LISTED_LIMIT]
            return JSONResponse(error_body(exc.code, exc.message, exc.field, features=listed,
                                           features_not_listed=len(exc.features) - len(listed)), 400)


@router.post("/plans/{plan_id}/import", openapi_extra=UPLOAD_BODY, responses={200: {"model": PlanImport}})
async def import_file(
    plan_id: PlanId, request: Request, caller: CurrentCaller, settings: SettingsDep, engine: SyncEngine,
    revision: Annotated[int, Query(ge=0, description="the plan's current revision (GET /plans/{id})")],
    format: FileFormat = None, filename: FileName = None, crs: FileCrs = None,
):
    """Import grids from a file sent as the body: GeoPackage, zipped Shapefile, GeoJSON or GeoParquet, one
    (Multi)Polygon per grid with optional `code`, `name`, `kind`, `worker_id`. Each feature goes to the community
    holding most of it, and the grids of every community the file touches are replaced (a grid on the same place
    keeps its code; new ones are numbered). All or nothing: any bad feature → 400 listing them all."""
    caller.require_role(*plans.WRITE_ROLES)
    crs = crs_.normalize_crs(crs) if crs else None

    def work(path: Path, fmt: str | None, name: str | None) -> dict:
        upload = plan_files.read(path, fmt, name, crs, settings.unzip_limits())
        with engine.begin() as conn:
            return plan_files.import_grids(conn, caller, plan_id, revision, upload)

    return await receive(request, settings.bulk_max_bytes, format, filename, work)


@router.get("/plans/{plan_id}/export", response_class=Response, responses={200: {"content": {
    media: {"schema": {"type": "string", "format": "binary"}} for media in plan_files.MEDIA_TYPES.values()}}})
def export_file(
    plan_id: PlanId, caller: CurrentCaller, engine: SyncEngine,
    format: Annotated[Literal["gpkg", "geojson", "shp", "parquet"],
                      Query(description="gpkg, geojson, shp (a zip with .prj) or parquet (GeoParquet)")] = "gpkg",
) -> Response:
    """A version's grids (draft, active or retired) in your area as a file, EPSG:4326, with code, name,
    community_code, street_code, kind, households, worker_id, worker_name and version_id (in a Shapefile:
    comm_code, street_cd, worker_nm)."""
    with engine.begin() as conn:  # the export is audited
        out = plan_files.export(conn, caller, plan_id, format)
    return Response(out.content, media_type=out.media_type,
                    headers={"Content-Disposition": f'attachment; filename="{out.file_name}"'})
