"""One table maps domain errors to HTTP statuses; every error reply has the same JSON shape."""

import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import asyncpg
import psycopg
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from geo import errors

STATUS = {
    errors.InvalidInput: 400,
    errors.UnknownCRS: 400,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.OutsideEveryGrid: 404,
    errors.Conflict: 409,
    errors.PayloadTooLarge: 413,
}


class ErrorDetail(BaseModel):
    """What went wrong, in words for a person, and which input to fix."""

    code: str = Field(description="A stable machine-readable code, e.g. invalid_input, not_found, outside_every_grid.")
    message: str = Field(description="What was wrong and how to fix it.")
    field: str | None = Field(None, description="The parameter or body field at fault, when there is one.")
    nearest_grid: str | None = Field(None, description="outside_every_grid: the code of the nearest grid.")
    distance_m: float | None = Field(None, description="outside_every_grid: metres to that grid.")
    allowed: list[str] | None = Field(None, description="illegal_transition: the actions allowed from here.")
    features: list[dict[str, Any]] | None = Field(None, description="invalid_features: each bad feature of a file, "
                                                  "with its identifier and reason (at most 1,000)")
    features_not_listed: int | None = Field(None, description="invalid_features: bad features beyond those listed")


class ErrorResponse(BaseModel):
    """The one shape of every error reply."""

    error: ErrorDetail


_DESCRIPTIONS = {
    400: "Bad input: the message says what was wrong and how to fix it.",
    401: "No valid bearer token.",
    403: "The caller's role may not do this.",
    404: "Not found, or outside the caller's area.",
    409: "Conflicts with the current state.",
    413: "The body is too large.",
    422: "The request does not match the documented parameters or body.",
    503: "The database is not answering; retry after the Retry-After seconds.",
}
# Documented on the intake routes (api.limits.RateLimit), with the Retry-After header.
RATE_LIMITED: dict[int | str, dict[str, Any]] = {429: {
    "model": ErrorResponse, "description": "Too many reports from this token or address: retry after the "
    "Retry-After seconds.", "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}}}
# Documented on every route, in the shape the handlers below really send.
RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text} for status, text in _DESCRIPTIONS.items()
}


def error_body(code: str, message: str, field: str | None = None, **extra) -> dict:
    """The one error body: {"error": {code, message, field, ...}}."""
    return {"error": {"code": code, "message": message, "field": field, **extra}}


def _status_for(exc: errors.DomainError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


def domain_response(exc: errors.DomainError) -> JSONResponse:
    """The reply to a domain error: its status from STATUS, the one body shape."""
    extra: dict[str, Any] = {}
    if isinstance(exc, errors.OutsideEveryGrid):
        extra = {"nearest_grid": exc.nearest_code, "distance_m": exc.distance_m}
    elif isinstance(exc, errors.IllegalTransition):
        extra = {"allowed": exc.allowed}
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, errors.Unauthorized) else None
    return JSONResponse(error_body(exc.code, exc.message, exc.field, **extra), _status_for(exc), headers=headers)


async def _domain(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.DomainError)  # registered for DomainError only
    if isinstance(exc, errors.Unauthorized) and _browser_page(request):  # a person opening a page: sign in first
        next_path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(next_path, safe='')}", status_code=303)
    return domain_response(exc)


def _browser_page(request: Request) -> bool:
    return (request.method == "GET" and request.url.path.startswith("/maps/")
            and "text/html" in request.headers.get("accept", ""))


def validation_response(problems: Sequence[Any]) -> JSONResponse:
    """The 422 reply to request validation errors (pydantic's, with locations such as ("query", "lon"))."""
    first = problems[0] if problems else {}
    field = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
    message = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}" for e in problems
    )
    return JSONResponse(error_body("invalid_request", message, field), 422)


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # registered for RequestValidationError only
    problems = exc.errors()
    if any(tuple(p.get("loc", ()))[:1] == ("path",) for p in problems) and (allowed := _literal_methods(request)):
        # e.g. GET /incidents/bulk: a literal path that only takes POST, read as an id by GET /incidents/{id}
        return JSONResponse(error_body("method_not_allowed", f"{request.method} is not allowed on "
                                       f"{request.url.path}; use {', '.join(allowed)}."), 405,
                            headers={"Allow": ", ".join(allowed)})
    return validation_response(problems)


def _literal_methods(request: Request) -> list[str]:
    """The documented methods of the request's path, when the path is one of the API's literal paths."""
    item = request.app.openapi()["paths"].get(request.url.path, {})
    return sorted(method.upper() for method in item)


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)  # registered for HTTPException only
    code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(exc.status_code, "http_error")
    return JSONResponse(error_body(code, str(exc.detail)), exc.status_code, headers=getattr(exc, "headers", None))


def _document_errors_as_json(app: FastAPI) -> None:
    """Error replies are always application/json, whatever the route's own media type (HTML, GeoJSON)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = build()
            for item in spec["paths"].values():
                for operation in item.values():
                    responses = operation.get("responses", {})
                    # FastAPI's default 422 (HTTPValidationError) is added only where a route documents no 422
                    # of its own: the Open311 routes, which read their parameters themselves and never send one
                    if _schema_of(responses.get("422", {})) == {"$ref": REF + "HTTPValidationError"}:
                        del responses["422"]
                    for response in responses.values():
                        # only the one error shape: Open311's spec-shaped errors come as JSON or XML
                        if _schema_of(response) == {"$ref": REF + "ErrorResponse"}:
                            response["content"] = {"application/json": {"schema": _schema_of(response)}}
            for unused in ("HTTPValidationError", "ValidationError"):
                spec.get("components", {}).get("schemas", {}).pop(unused, None)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to customise the schema


REF = "#/components/schemas/"


def _schema_of(response: dict[str, Any]) -> Any:
    """The schema of a documented response's (first) media type."""
    media: dict[str, Any] = next(iter(response.get("content", {}).values()), {})
    return media.get("schema")


# The database is down, restarting, frozen or out of connections: the request may succeed later.
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.QueryCanceledError,
    asyncpg.TooManyConnectionsError, asyncpg.CannotConnectNowError, OSError, TimeoutError,
    sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.TimeoutError,
    psycopg.OperationalError, psycopg.InterfaceError,  # raw psycopg, as the bulk import's COPY raises them
)
RETRY_AFTER_S = 5
log = logging.getLogger("wangge.api")


def unavailable_response(request_line: str, exc: BaseException) -> JSONResponse:
    """503 in the one error shape (under /open311/: the GeoReport v2 error array), with Retry-After; logged as one
    line, not a traceback."""
    reason = " ".join(str(exc).split())[:200] or type(exc).__name__
    log.warning("database unavailable: %s: %s: %s", request_line, type(exc).__name__, reason)
    message = ("The database is not answering (down, restarting or busy). Nothing was changed by this request; "
               f"retry in {RETRY_AFTER_S} s.")
    body: Any = error_body("database_unavailable", message)
    if request_line.split(" ", 1)[-1].startswith("/open311/"):
        body = [{"code": 503, "description": message}]
    return JSONResponse(body, 503, headers={"Retry-After": str(RETRY_AFTER_S)})


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    return unavailable_response(f"{request.method} {request.url.path}", exc)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into the one shape, and document that shape."""
    _document_errors_as_json(app)
    for cls in DATABASE_UNAVAILABLE:
        app.add_exception_handler(cls, _unavailable)
    app.add_exception_handler(errors.DomainError, _domain)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
