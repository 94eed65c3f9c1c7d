"""One table maps domain errors to HTTP statuses; every error reply has the same JSON shape."""

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
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


def error_body(code: str, message: str, field: str | None = None, **extra) -> dict:
    return {"error": {"code": code, "message": message, "field": field, **extra}}


def _status_for(exc: errors.DomainError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


async def _domain(request: Request, exc: errors.DomainError):
    extra = {}
    if isinstance(exc, errors.OutsideEveryGrid):
        extra = {"nearest_grid": exc.nearest_code, "distance_m": exc.distance_m}
    elif isinstance(exc, errors.IllegalTransition):
        extra = {"allowed": exc.allowed}
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, errors.Unauthorized) else None
    return JSONResponse(error_body(exc.code, exc.message, exc.field, **extra), _status_for(exc), headers=headers)


async def _validation(request: Request, exc: RequestValidationError):
    problems = exc.errors()
    first = problems[0] if problems else {}
    field = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
    message = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}" for e in problems
    )
    return JSONResponse(error_body("invalid_request", message, field), 422)


async def _http(request: Request, exc: StarletteHTTPException):
    code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(exc.status_code, "http_error")
    return JSONResponse(error_body(code, str(exc.detail)), exc.status_code, headers=getattr(exc, "headers", None))


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.DomainError, _domain)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
