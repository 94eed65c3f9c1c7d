"""The query shapes the routes share, each parsed in one place: codes, pages, comma lists, bboxes and points."""

from datetime import date, datetime
from typing import Annotated, Literal

from fastapi import Path, Query
from pydantic import AfterValidator, BaseModel, Field, field_validator

from geo import crs
from geo.dispatch import nearest as dispatch
from geo.errors import InvalidInput
from geo.incidents.timelimits import year_problem
from geo.models import RESPONDER_ROLES, RESPONDER_STATUSES

AREA_CODE = r"^[0-9]{6}([0-9]{3}){0,3}$"  # district 6, street 9, community 12, grid 15 digits
COMMUNITY_CODE = r"^[0-9]{12}$"
GRID_CODE = r"^[0-9]{15}$"
AREA_ABOVE_GRID_CODE = r"^[0-9]{6}([0-9]{3}){0,2}$"  # district, street or community
MAX_ID = 2**31 - 1  # ids are PostgreSQL integers: larger ones name nothing
MAX_BIGINT = 2**63 - 1  # incident ids are bigints
MAX_PAGE = 1000  # the most features one page of a list returns, whatever `limit` asks

AreaCodeQuery = Annotated[str | None, Query(pattern=AREA_CODE, description="6, 9, 12 or 15-digit area code")]
GridCodeQuery = Annotated[str | None, Query(pattern=GRID_CODE, description="15-digit grid code")]
BBoxQuery = Annotated[str | None, Query(description="minLon,minLat,maxLon,maxLat (WGS84)")]
CommaList = Annotated[str | None, Query(description="comma-separated")]


def comma_list(value: str | None, allowed: tuple[str, ...] | None, field: str) -> list[str] | None:
    """The items of a comma-separated parameter (None when empty), each checked against `allowed` if given."""
    items = [item.strip() for item in (value or "").split(",") if item.strip()]
    unknown = [item for item in items if allowed is not None and item not in allowed]
    if unknown:
        raise InvalidInput(f"Unknown {field} {', '.join(unknown)}; use: {', '.join(allowed or ())}.", field=field)
    return items or None


def parse_bbox(value: str | None) -> tuple[float, float, float, float] | None:
    """minLon,minLat,maxLon,maxLat in WGS84, with min < max; None when not given."""
    if not value:
        return None
    try:
        box = tuple(float(v) for v in value.split(","))
    except ValueError:
        box = ()
    if len(box) != 4 or not (box[0] < box[2] and box[1] < box[3]):
        raise InvalidInput("bbox is minLon,minLat,maxLon,maxLat in WGS84, with min < max.", field="bbox")
    return box[0], box[1], box[2], box[3]


def page_limit(limit: int) -> int:
    """`limit` clamped to one page."""
    return min(limit, MAX_PAGE)


def point_wgs84(lon: float, lat: float, crs_name: str) -> tuple[float, float]:
    """A point given in any supported CRS, as WGS84 lon/lat."""
    return (lon, lat) if crs_name == "EPSG:4326" else crs.to_wgs84(lon, lat, crs_name)


class PointQuery(BaseModel):
    """A point in any supported CRS: the query of GET /grids/at and the start of GET /dispatch/nearest.

    The routes take it as their query model and the lean path (api/fast.py) validates with it, so both read
    every parameter, default and error the same way."""

    lon: float = Field(ge=-180, le=180)
    lat: float = Field(ge=-90, le=90)
    crs: str = Field("EPSG:4326", description="EPSG:4326 (default), EPSG:4490, GCJ-02 or BD-09")

    def wgs84(self) -> tuple[float, float]:
        """The point as WGS84 lon/lat."""
        return point_wgs84(self.lon, self.lat, self.crs)


class GridAtQuery(PointQuery):
    """GET /grids/at: a point, and which grid version to look in."""

    version: int | None = Field(None, ge=1, le=MAX_ID, description="Grid version id; default: the active one")


class NearestQuery(PointQuery):
    """GET /dispatch/nearest: a point and which responders to rank."""

    k: int = Field(5, description="clamped to 1..100")
    status: str = Field("available", description="comma-separated; default available")
    role: str | None = Field(None, description="comma-separated")
    max_distance: float | None = Field(None, ge=0.01, le=20_040_000, description="metres (1 cm to half the globe)")
    mode: Literal["straight", "network"] = "straight"
    include_stale: bool = False

    def nearest(self) -> dispatch.Nearest:
        """The domain query, the point in WGS84 and the comma lists checked (400 naming the field)."""
        lon, lat = self.wgs84()
        return dispatch.Nearest(lon=lon, lat=lat, k=self.k,
                                statuses=comma_list(self.status, RESPONDER_STATUSES, "status"),
                                roles=comma_list(self.role, RESPONDER_ROLES, "role"),
                                max_distance_m=self.max_distance, include_stale=self.include_stale, mode=self.mode)


# Path and query ids, bounded to the database's integers (a larger one is a 422 naming it, never a 500).
IncidentId = Annotated[int, Path(ge=1, le=MAX_BIGINT, description="Incident id")]
ResponderId = Annotated[int, Path(ge=1, le=MAX_ID, description="Responder id")]
JobId = Annotated[int, Path(ge=1, le=MAX_ID, description="Job id")]
VersionQuery = Annotated[int | None, Query(ge=1, le=MAX_ID, description="Grid version id; default: the active one")]


def _supported_year(value):
    if problem := year_problem(value):
        raise ValueError(problem)
    return value


# A date or time inside the supported years (geo.incidents.timelimits.MIN_YEAR..MAX_YEAR), else 422 naming it.
When = Annotated[datetime, AfterValidator(_supported_year)]
Day = Annotated[date, AfterValidator(_supported_year)]


class BodyModel(BaseModel):
    """Base of every JSON body: no text may hold a NUL character (PostgreSQL text cannot store one)."""

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value):
        if _has_nul(value):
            raise ValueError("text may not contain NUL (\\u0000) characters")
        return value


def _has_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    return False
