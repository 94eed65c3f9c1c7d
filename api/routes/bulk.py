"""Bulk import: POST /incidents/bulk takes a CSV, GeoJSON or GeoPackage file as the raw request body."""

import re
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from api.deps import CurrentCaller, SettingsDep, SyncEngine
from api.schemas import BulkImportReport
from api.uploads import spooled
from geo import crs as crs_
from geo.auth import Caller
from geo.errors import InvalidInput
from geo.incidents import bulk

router = APIRouter(tags=["incidents"])
REPORT_LIMIT = 1000
ROLES = ("supervisor", "dispatcher")  # and admin
MEDIA_TYPES = {
    "text/csv": "csv", "application/csv": "csv",
    "application/geo+json": "geojson", "application/json": "geojson",
    "application/geopackage+sqlite3": "gpkg", "application/x-sqlite3": "gpkg", "application/vnd.sqlite3": "gpkg",
}
_DISPOSITION = re.compile(r'filename\*?=(?:UTF-8\'\')?"?([^";]+)"?', re.IGNORECASE)


def _format(content_type: str, format: str | None) -> str | None:
    if format:
        return format
    if content_type.startswith("multipart/"):
        raise InvalidInput(
            "Send the file itself as the request body, not as a multipart form: e.g. `curl --data-binary "
            "@incidents.csv -H 'Content-Type: text/csv' '/incidents/bulk?filename=incidents.csv'`.", field="body")
    return MEDIA_TYPES.get(content_type)  # otherwise from the file name, else sniffed from the bytes


def _import(engine: Engine, path: str, format: str | None, crs: str, caller: Caller,
            name: str | None, max_columns: int) -> bulk.ImportReport:
    return bulk.import_incidents(engine, path, format=format, crs=crs, actor_id=caller.id, file_name=name,
                                 scope=caller.scope, max_columns=max_columns)


@router.post("/incidents/bulk", openapi_extra={"requestBody": {"required": True, "content": {
    "text/csv": {"schema": {"type": "string"}},
    "application/geo+json": {"schema": {"type": "object"}},
    "application/geopackage+sqlite3": {"schema": {"type": "string", "format": "binary"}},
}}}, responses={200: {"model": BulkImportReport}})
async def bulk_import(
    request: Request, caller: CurrentCaller, settings: SettingsDep, engine: SyncEngine,
    format: Annotated[Literal["csv", "geojson", "gpkg"] | None,
                      Query(description="default: from Content-Type, then the file name, then the content")] = None,
    filename: Annotated[str | None, Query(max_length=255, description="the file's name, kept in the audit log")] = None,
    crs: Annotated[str, Query(description="EPSG:4326, EPSG:4490, GCJ-02 or BD-09; a GeoJSON/GeoPackage layer's "
                                          "own CRS wins unless GCJ-02/BD-09 is declared")] = "EPSG:4326",
):
    """Import incidents from a file sent as the body (CSV with lon,lat,category[,description,reported_at,source],
    GeoJSON or GeoPackage points). Every row is either filed or listed with its line and the reason it was
    rejected; the batch is all or nothing. The reply lists the first 1000 rejects (`report_truncated` says more)."""
    caller.require_role(*ROLES)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    file_format = _format(content_type, format)
    crs = crs_.normalize_crs(crs)
    if filename is None and (match := _DISPOSITION.search(request.headers.get("content-disposition", ""))):
        filename = match.group(1).strip()
    async with spooled(request, settings.bulk_max_bytes, "(WANGGE_BULK_MAX_BYTES); split the file.",
                       "send the file itself as the body, e.g. `curl --data-binary @incidents.csv "
                       "-H 'Content-Type: text/csv' ...`.") as path:
        if path is None:
            return Response(status_code=400)
        report = await run_in_threadpool(_import, engine, str(path), file_format, crs, caller, filename,
                                         settings.bulk_max_columns)
    return JSONResponse(report.summary(limit=REPORT_LIMIT))
