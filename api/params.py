"""The query shapes the routes share, each parsed in one place: codes, pages, comma lists, bboxes and points."""

from typing import Annotated

from fastapi import Query

from geo import crs
from geo.errors import InvalidInput

AREA_CODE = r"^[0-9]{6}([0-9]{3}){0,3}$"  # district 6, street 9, community 12, grid 15 digits
COMMUNITY_CODE = r"^[0-9]{12}$"
GRID_CODE = r"^[0-9]{15}$"
AREA_ABOVE_GRID_CODE = r"^[0-9]{6}([0-9]{3}){0,2}$"  # district, street or community
MAX_PAGE = 1000  # the most features one page of a list returns, whatever `limit` asks

AreaCodeQuery = Annotated[str | None, Query(pattern=AREA_CODE, description="6, 9, 12 or 15-digit area code")]
GridCodeQuery = Annotated[str | None, Query(pattern=GRID_CODE, description="15-digit grid code")]
BBoxQuery = Annotated[str | None, Query(description="minLon,minLat,maxLon,maxLat (WGS84)")]
CommaList = Annotated[str | None, Query(description="comma-separated")]
Lon = Annotated[float, Query(ge=-180, le=180)]
Lat = Annotated[float, Query(ge=-90, le=90)]
CrsName = Annotated[str, Query(alias="crs", description="EPSG:4326 (default), EPSG:4490, GCJ-02 or BD-09")]


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
