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


def spec_reply(model: Any) -> dict[int | str, dict[str, Any]]:
    """`responses=` for an Open311 route: `model` as JSON (path ending .json), the same data as XML (.xml)."""
    return {200: {"model": model, "description": "The reply, as JSON or, by the .xml suffix, as XML with the "
                                                "spec's element names.",
                  "content": {"text/xml": {"schema": {"type": "string"}}}}}
