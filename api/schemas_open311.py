"""Response shapes for OpenAPI: Open311 GeoReport v2 replies (http://wiki.open311.org/GeoReport_v2), as JSON.

Built by geo.open311 and api.routes.open311; the same data is sent as XML (the spec's element names) when the
path ends in .xml. Checked against real replies in tests/test_openapi.py.
"""

from typing import Any, Literal

from pydantic import BaseModel, Field


class Open311Endpoint(BaseModel):
    """Where the GeoReport v2 endpoint is and which formats it speaks."""

    specification: str
    url: str
    changeset: str
    type: Literal["production", "test"]
    formats: list[str]


class Open311Discovery(BaseModel):
    """Service discovery."""

    changeset: str = Field(description="changes when the catalog of services changes")
    contact: str
    key_service: str = Field(description="how to get an api_key")
    endpoints: list[Open311Endpoint]


class Open311Service(BaseModel):
    """A service: an incident category."""

    service_code: str = Field(description="the category code")
    service_name: str
    description: str
    metadata: bool = Field(description="always false: no service needs extra attributes")
    type: Literal["realtime", "batch", "blackbox"]
    keywords: str
    group: str = Field(description="the responsible department")


class Open311ServiceDefinition(BaseModel):
    """A service definition."""

    service_code: str
    attributes: list[dict[str, Any]] = Field(description="always empty here")


class Open311Request(BaseModel):
    """A service request: an incident as Open311 shows it (never the reporter's identity)."""

    service_request_id: str
    status: Literal["open", "closed"]
    status_notes: str = Field(description="Wangge's workflow status and the last event's note")
    service_name: str
    service_code: str
    description: str | None
    agency_responsible: str | None = Field(description="the responsible department")
    service_notice: str
    requested_datetime: str = Field(description="w3 date-time with the local UTC offset")
    updated_datetime: str | None
    expected_datetime: str | None = Field(description="the handling deadline")
    address: str | None = Field(description="the address given, else grid, community, street, district")
    address_id: str | None
    zipcode: None
    lat: float
    long: float
    media_url: str | None


class Open311Created(BaseModel):
    """The reply to POST requests (a one-element array of these)."""

    service_request_id: str
    service_notice: str
    account_id: None


class Open311Error(BaseModel):
    """An error as the spec shapes it (the reply is an array of these)."""

    code: int = Field(description="the HTTP status")
    description: str = Field(description="what was wrong and how to fix it")


_XML = {"text/xml": {"schema": {"type": "string"}}}
_ERRORS = {
    400: "Bad input: the description says what to send.",
    403: "api_key missing, unknown, expired or revoked.",
    404: "No such resource, or an unknown format (use .json or .xml).",
    413: "The body is too large.",
    503: "The database is not answering; retry after the Retry-After seconds.",
}
# Every Open311 route's errors, in the spec's shape (never the JSON API's {"error": ...}).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": list[Open311Error], "description": text, "content": _XML} for status, text in _ERRORS.items()
}


def spec_reply(model: Any, *extra_errors: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for an Open311 route: `model` as JSON (path ending .json), the same data as XML (.xml), and
    `extra_errors` (e.g. 429 on intake) in the spec's error shape."""
    return {200: {"model": model, "description": "The reply, as JSON or, by the .xml suffix, as XML with the "
                                                "spec's element names.", "content": _XML},
            **{status: {"model": list[Open311Error], "content": _XML, "description": {
                429: "Too many requests: retry after the Retry-After seconds."}.get(status, "")}
               for status in extra_errors}}
