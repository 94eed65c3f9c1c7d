"""Open311 GeoReport v2 (http://wiki.open311.org/GeoReport_v2) under /open311/v2, in JSON and XML.

Services are the incident categories and service requests the incidents. Everything here answers in the
spec's shapes, errors included (an array of {code, description}), so existing Open311 clients work unchanged.
Wangge extension: POST accepts `crs` (EPSG:4326 by default, EPSG:4490, GCJ-02 or BD-09) for lat/long.
"""

import math
import xml.etree.ElementTree as ET
from datetime import datetime
from email import policy
from email.parser import BytesParser
from typing import Annotated
from urllib.parse import parse_qs

import orjson
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from starlette.routing import Match

from api.deps import Conn, SettingsDep, cached_caller
from api.schemas_open311 import (
    Open311Created,
    Open311Discovery,
    Open311Request,
    Open311Service,
    Open311ServiceDefinition,
    spec_reply,
)
from geo import crs, errors, open311
from geo.auth import Caller
from geo.incidents.timelimits import TZ, year_problem

router = APIRouter(prefix="/open311/v2", tags=["open311"])
# Documented as an enum, read as text: any other suffix is the spec's 404 in JSON, not a validation error.
Fmt = Annotated[str, Path(description="the reply's format", json_schema_extra={"enum": ["json", "xml"]})]
# Read from the query string by the routes themselves (the spec's rules: empty is absent, lists comma-delimited);
# declared here so that OpenAPI documents them.
ApiKey = Annotated[str | None, Query(description="a Wangge bearer token; needed for reads unless "
                                                 "WANGGE_OPEN311_PUBLIC_READS is on")]

FORMATS = {"json": "application/json; charset=utf-8", "xml": "text/xml; charset=utf-8"}
MAX_BODY = 5 * 1024 * 1024
MAX_CONTACT = 200
MAX_ID = 2**63 - 1
# Spec element names of list items in XML (the JSON arrays map to these by the Spark convention).
_ITEM = {"services": "service", "service_requests": "request", "errors": "error", "endpoints": "endpoint",
         "formats": "format", "attributes": "attribute", "values": "value"}


class SpecError(Exception):
    """An error in the spec's shape; HTTP 404 for missing resources, 403 for the api_key, else 400."""

    def __init__(self, status: int, description: str):
        """An error with its HTTP status and the spec's description."""
        super().__init__(description)
        self.status = status
        self.description = description


def _status_for(exc: errors.DomainError) -> int:
    if isinstance(exc, (errors.Unauthorized, errors.Forbidden)):
        return 403
    if isinstance(exc, (errors.NotFound, errors.OutsideEveryGrid)):
        return 404
    return 400


# -- rendering -----------------------------------------------------------------------------------------------

def _text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _element(tag: str, value) -> ET.Element:
    element = ET.Element(tag)
    if isinstance(value, dict):
        for key, child in value.items():
            element.append(_element(key, child))
    elif isinstance(value, list):
        for child in value:
            element.append(_element(_ITEM.get(tag, "item"), child))
    else:
        element.text = _text(value)
    return element


def render(fmt: str, root: str, body, status: int = 200) -> Response:
    """JSON as is, or XML with the spec's element names under `root` (UTF-8, with the declaration)."""
    if fmt == "xml":
        xml = ET.tostring(_element(root, body), encoding="unicode")
        content = ('<?xml version="1.0" encoding="utf-8"?>\n' + xml).encode()
    else:
        content = orjson.dumps(body)
    return Response(content, status, media_type=FORMATS.get(fmt, FORMATS["json"]))


def error_response(fmt: str, status: int, description: str) -> Response:
    """An error in the spec's errors shape, in the requested format."""
    return render(fmt if fmt in FORMATS else "json", "errors", [{"code": status, "description": description}],
                  status)


async def _answer(fmt: str, root: str, produce) -> Response:
    """Run `produce()` and render its result, or its error in the spec's error format."""
    if fmt not in FORMATS:
        return error_response("json", 404, f"Unknown format {fmt!r}: use .json or .xml.")
    try:
        return render(fmt, root, await produce())
    except SpecError as exc:
        return error_response(fmt, exc.status, exc.description)
    except errors.DomainError as exc:
        return error_response(fmt, _status_for(exc), exc.message)


# -- parameters ----------------------------------------------------------------------------------------------

def _first(params: dict[str, list[str]], name: str) -> str | None:
    """A parameter's first non-empty value: the spec treats an empty parameter as an absent one."""
    if any("\x00" in value for value in params.get(name, ())):
        raise SpecError(400, f"{name} holds a NUL character; remove it.")
    for value in params.get(name, ()):
        if value.strip():
            return value.strip()
    return None


def _list(params: dict[str, list[str]], name: str) -> list[str] | None:
    """Declared several times and/or comma-delimited."""
    items = [item.strip() for value in params.get(name, ()) for item in value.split(",") if item.strip()]
    return items or None


def _query(request: Request) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        params.setdefault(key, []).append(value)
    return params


async def _form(request: Request) -> dict[str, list[str]]:
    """The POST parameters: form-encoded per spec (also multipart or a JSON object), over the query string."""
    body = await request.body()
    if len(body) > MAX_BODY:
        raise SpecError(400, f"The request body is larger than {MAX_BODY // (1024 * 1024)} MB.")
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";")[0].strip().lower()
    params = _query(request)
    try:
        if media == "multipart/form-data":
            message = BytesParser(policy=policy.HTTP).parsebytes(
                b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition")
                if isinstance(name, str) and name and not part.get_filename():  # files are not kept: send media_url
                    payload = part.get_payload(decode=True)
                    text_ = payload.decode(part.get_content_charset() or "utf-8") if isinstance(payload, bytes) else ""
                    params.setdefault(name, []).append(text_)
        elif media == "application/json":
            data = orjson.loads(body) if body else {}
            if not isinstance(data, dict):
                raise ValueError("not an object")
            for key, value in data.items():
                params[key] = [str(v) for v in value] if isinstance(value, list) else [_text(value) or ""]
        else:
            for key, values in parse_qs(body.decode("utf-8"), keep_blank_values=True).items():
                params[key] = values  # the body wins over the query string
    except (ValueError, UnicodeDecodeError) as exc:
        raise SpecError(400, "The body could not be read: send application/x-www-form-urlencoded "
                             f"parameters in UTF-8 ({exc}).") from exc
    return params


def _attributes(params: dict[str, list[str]]) -> dict:
    """attribute[code]=value, and attribute[code][]=v1&attribute[code][]=v2 for multi-value lists."""
    found: dict = {}
    for key, values in params.items():
        if key.startswith("attribute[") and "\x00" in key + "".join(values):
            raise SpecError(400, f"{key} holds a NUL character; remove it.")
        if key.startswith("attribute[") and "]" in key:
            code = key[len("attribute["):key.index("]")]
            values = [v for v in values if v.strip()]
            if code and values:
                found[code] = values if key.endswith("[]") or len(values) > 1 else values[0]
    return found


def _datetime(params: dict[str, list[str]], name: str) -> datetime | None:
    value = _first(params, name)
    if value is None:
        return None
    try:
        # '+' of an offset arrives as a space when a client forgets to encode it
        parsed = datetime.fromisoformat(value.replace(" ", "+") if "T" in value else value)
    except ValueError as exc:
        raise SpecError(400, f"{name} must use the w3 format, e.g. 2010-01-01T00:00:00Z; got {value!r}.") from exc
    if problem := year_problem(parsed):
        raise SpecError(400, f"{name} {problem}.")
    return parsed.replace(tzinfo=TZ) if parsed.tzinfo is None else parsed


def _float(params: dict[str, list[str]], name: str) -> float | None:
    value = _first(params, name)
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise SpecError(400, f"{name} must be a number in decimal degrees; got {value!r}.")
    return number


async def _caller(request: Request, conn, key: str | None, required: bool) -> Caller | None:
    """The user behind an api_key (a Wangge bearer token), cached like the JSON API's bearer tokens."""
    if not key:
        if required:
            raise SpecError(403, "api_key is required: use a Wangge token, created with "
                                 "`wangge users create --role reporter --area CODE`.")
        return None
    try:
        return await cached_caller(request.app.state, conn, key)
    except errors.Unauthorized as exc:
        raise SpecError(403, "Invalid api_key: it is unknown, expired or revoked.") from exc


async def _reader(request: Request, conn, settings, params: dict[str, list[str]]) -> Caller | None:
    """Reads are public unless the setting turns them off; a given api_key scopes them to its user's area."""
    return await _caller(request, conn, _first(params, "api_key"), required=not settings.open311_public_reads)


def _request_id(value: str) -> int:
    if not value.isdigit() or int(value) > MAX_ID:
        raise SpecError(404, f"service_request_id {value!r} was not found.")
    return int(value)


def _new_request(params: dict[str, list[str]]) -> open311.NewRequest:
    """POST requests' parameters checked (400 in the spec's format, saying what to send) and put in WGS84."""
    code = _first(params, "service_code")
    if code is None:
        raise SpecError(400, "service_code was not provided; GET services.json lists the valid codes.")
    lat, lon = _float(params, "lat"), _float(params, "long")
    if lat is None or lon is None:
        if _first(params, "address_string") or _first(params, "address_id"):
            raise SpecError(400, "This server places requests on its grids by lat and long; "
                                 "send both with address_string (there is no geocoder for addresses).")
        raise SpecError(400, "A location is required: send both lat and long (WGS84).")
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise SpecError(400, f"lat {lat} / long {lon} are out of range (lat -90..90, long -180..180; swapped?).")
    input_crs = crs.normalize_crs(_first(params, "crs") or "EPSG:4326")
    lon, lat = crs.to_wgs84(lon, lat, input_crs)
    contact = {name: value for name in open311.CONTACT_FIELDS if (value := _first(params, name))}
    long_fields = [name for name, value in contact.items() if len(value) > MAX_CONTACT]
    if long_fields:
        raise SpecError(400, f"{', '.join(long_fields)} may be at most {MAX_CONTACT} characters.")
    return open311.NewRequest(
        service_code=code, lon=lon, lat=lat, input_crs=input_crs, description=_first(params, "description"),
        public={name: value for name in open311.PUBLIC_FIELDS if (value := _first(params, name))},
        contact=contact, attributes=_attributes(params))


# -- endpoints -----------------------------------------------------------------------------------------------

@router.get("/discovery.{fmt}", summary="Service discovery", responses=spec_reply(Open311Discovery))
async def discovery(request: Request, fmt: Fmt) -> Response:
    """Where the GeoReport v2 endpoint is, which formats it speaks and how to get an api_key."""
    async def produce():
        return {
            "changeset": open311.CHANGESET,
            "contact": "Wangge grid management service (网格化管理): ask the district's grid management centre.",
            "key_service": "An api_key is a Wangge bearer token; an administrator creates one with "
                           "`wangge users create --role reporter --area CODE`.",
            "endpoints": [{
                "specification": open311.SPECIFICATION,
                "url": str(request.url_for("discovery", fmt=fmt)).rsplit("/", 1)[0],
                "changeset": open311.CHANGESET,
                "type": "production",
                "formats": [FORMATS["xml"].split(";")[0], FORMATS["json"].split(";")[0]],
            }],
        }
    return await _answer(fmt, "discovery", produce)


@router.get("/services.{fmt}", summary="GET Service List", responses=spec_reply(list[Open311Service]))
async def service_list(request: Request, fmt: Fmt, conn: Conn, settings: SettingsDep,
                       api_key: ApiKey = None) -> Response:
    """The incident categories as services: service_code is the category code, group the department."""
    async def produce():
        await _reader(request, conn, settings, _query(request))
        return await open311.services(conn)
    return await _answer(fmt, "services", produce)


@router.get("/services/{code}.{fmt}", summary="GET Service Definition",
            responses=spec_reply(Open311ServiceDefinition))
async def service_definition(request: Request, code: str, fmt: Fmt, conn: Conn, settings: SettingsDep,
                             api_key: ApiKey = None) -> Response:
    """The spec's service definition (no service needs extra attributes: metadata is false)."""
    async def produce():
        await _reader(request, conn, settings, _query(request))
        return await open311.service_definition(conn, code)
    return await _answer(fmt, "service_definition", produce)


@router.get("/requests.{fmt}", summary="GET Service Requests", responses=spec_reply(list[Open311Request]))
async def request_list(request: Request, fmt: Fmt, conn: Conn, settings: SettingsDep,
                       api_key: ApiKey = None) -> Response:
    """Requests newest first: the last 90 days by default, at most 90 days and 1000 requests.

    Filters: service_request_id (overrides the rest), service_code, start_date, end_date, status (open,
    closed); lists are comma-delimited. The reporter's identity is never part of a reply.
    """
    async def produce():
        params = _query(request)
        caller = await _reader(request, conn, settings, params)
        ids = _list(params, "service_request_id")
        statuses = _list(params, "status")
        unknown = [s for s in statuses or () if s not in open311.STATUSES]
        if unknown:
            raise SpecError(400, f"Unknown status {', '.join(unknown)}: use open or closed.")
        if ids is not None:
            bad = [i for i in ids if not i.isdigit()]
            if bad:
                raise SpecError(400, f"service_request_id takes numeric ids, comma-delimited; got {', '.join(bad)}.")
        numeric_ids = None if ids is None else [int(i) for i in ids if int(i) <= MAX_ID]  # larger can't exist
        filters = open311.RequestFilters(
            ids=numeric_ids, service_codes=_list(params, "service_code"), start=_datetime(params, "start_date"),
            end=_datetime(params, "end_date"), statuses=statuses,
        )
        return await open311.requests(conn, caller, filters)
    return await _answer(fmt, "service_requests", produce)


@router.get("/requests/{request_id}.{fmt}", summary="GET Service Request",
            responses=spec_reply(list[Open311Request]))
async def single_request(request: Request, request_id: str, fmt: Fmt, conn: Conn,
                         settings: SettingsDep, api_key: ApiKey = None) -> Response:
    """One request, as a one-element array."""
    async def produce():
        caller = await _reader(request, conn, settings, _query(request))
        return [await open311.request(conn, caller, _request_id(request_id))]
    return await _answer(fmt, "service_requests", produce)


@router.post("/requests.{fmt}", summary="POST Service Request", responses=spec_reply(list[Open311Created], 429))
async def create_request(request: Request, fmt: Fmt, conn: Conn) -> Response:
    """Create a request from form-encoded parameters; api_key is the reporter's Wangge token.

    Location: lat and long (WGS84, or in `crs`: EPSG:4490, GCJ-02, BD-09). address_string, address_id and
    media_url are kept and shown; first_name, last_name, email, phone, device_id and account_id are kept
    privately for staff. The reply is a one-element array with service_request_id and service_notice.
    """
    async def produce():
        params = await _form(request)
        key = _first(params, "api_key")
        authorization = request.headers.get("authorization", "")
        if key is None and authorization.lower().startswith("bearer "):
            key = authorization[7:].strip()
        caller = await _caller(request, conn, key, required=True)
        assert caller is not None  # required: a missing key was refused above
        new = _new_request(params)
        key = request.headers.get("idempotency-key")
        if key is not None and not 0 < len(key) <= 200:
            raise SpecError(400, "Idempotency-Key must be 1 to 200 characters.")
        new.idempotency_key = key
        return [await open311.create(conn, caller, new)]
    return await _answer(fmt, "service_requests", produce)


@router.api_route("/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
async def not_found(request: Request, rest: str) -> Response:
    """Anything else under /open311/v2 still answers in the spec's error format."""
    fmt = rest.rsplit(".", 1)[-1] if "." in rest else "json"
    scope = dict(request.scope)
    allowed = sorted({method for route in router.routes if getattr(route, "endpoint", None) is not not_found
                      and route.matches(scope)[0] == Match.PARTIAL for method in getattr(route, "methods", ())})
    if allowed:
        reply = error_response(fmt, 405, f"{request.method} is not allowed on {request.url.path}; "
                                         f"use {', '.join(allowed)}.")
        reply.headers["Allow"] = ", ".join(allowed)
        return reply
    return error_response(fmt, 404, f"No Open311 resource at {request.url.path}; see discovery.json.")
