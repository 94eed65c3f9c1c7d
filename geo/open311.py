"""Open311 GeoReport v2 over incidents: services are the categories, service requests the incidents.

Only the spec's field set is ever read here, so a reply can't carry the reporter's identity: `reporter_contact`
appears in no statement below, and `reporter_id` only in the filter that shows a reporter their own requests.
Anonymous reads (when the service allows them) see `public_view`: what happened where, roughly, and nothing
a resident wrote.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson
from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Integer,
    String,
    and_,
    bindparam,
    case,
    func,
    null,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import aliased

from geo.auth import Caller
from geo.errors import InvalidInput, NotFound
from geo.incidents import intake as incidents
from geo.incidents import workflow
from geo.incidents.timelimits import TZ
from geo.models import Area, Department, Incident, IncidentCategory, IncidentEvent
from geo.sql import Query, one_of

SPECIFICATION = "http://wiki.open311.org/GeoReport_v2"
# Sortable; bump it when the catalog of services changes so clients refresh their cached service lists.
CHANGESET = "2026-11-22 00:00"
MAX_REQUESTS = 1000  # the spec's response volume: at most 1000 requests...
MAX_SPAN = timedelta(days=90)  # ...from a span of at most 90 days (the default: the most recent 90 days)
MAX_DESCRIPTION = 4000
STATUSES = ("open", "closed")
_CLOCKS = {"urgent": "{n} {unit}, around the clock", "working_hours": "{n} working {unit}",
           "working_days": "{n} working {unit}", "calendar_days": "{n} calendar {unit}"}

# Fields the request keeps in its report event (public location details), and in reporter_contact (private).
PUBLIC_FIELDS = ("address_string", "address_id", "media_url")
CONTACT_FIELDS = ("first_name", "last_name", "email", "phone", "device_id", "account_id")


def open311_status(status: str) -> str:
    """Wangge's workflow status as the spec's two: a final status is closed, every other one open."""
    return "closed" if status in workflow.FINAL else "open"


def w3(value: datetime | None) -> str | None:
    """The spec's date/time format: ISO 8601 to the second, with the local UTC offset."""
    return value.astimezone(TZ).isoformat(timespec="seconds") if value is not None else None


# -- services ------------------------------------------------------------------------------------------------

def _services_statement():
    c, d = aliased(IncidentCategory, name="c"), aliased(Department, name="d")
    return (
        select(c.code, c.name, c.time_limit, c.time_limit_unit, c.clock, d.name.label("department"))
        .join(d, d.code == c.department_code)
        .where(c.active.is_(True),
               or_(bindparam("code", type_=String).is_(None), c.code == bindparam("code", type_=String)))
        .order_by(c.code)
    )


_SERVICES = Query(_services_statement())


def _limit_text(amount: int, unit: str, clock: str) -> str:
    if amount == 0:
        return "the same day"
    unit = unit.rstrip("s") + ("" if amount == 1 else "s")
    return _CLOCKS.get(clock, "{n} {unit}").format(n=amount, unit=unit)


def _service(row) -> dict:
    return {
        "service_code": row["code"],
        "service_name": row["name"],
        "description": f"{row['name']}: handled by {row['department']} within "
                       f"{_limit_text(row['time_limit'], row['time_limit_unit'], row['clock'])}.",
        "metadata": False,
        "type": "realtime",
        "keywords": ", ".join([row["name"], row["department"]]),
        "group": row["department"],
    }


async def services(conn) -> list[dict]:
    """Every active category as an Open311 service, ordered by code."""
    return [_service(row) for row in await _SERVICES.fetch(conn, code=None)]


async def service(conn, code: str) -> dict:
    """One service (category) in the GeoReport v2 shape."""
    rows = await _SERVICES.fetch(conn, code=code)
    if not rows:
        raise NotFound(f"service_code {code!r} was not found; GET services.json lists the valid codes.",
                       field="service_code")
    return _service(rows[0])


async def service_definition(conn, code: str) -> dict:
    """The spec's service definition: no service has extra attributes (metadata is false for all)."""
    await service(conn, code)
    return {"service_code": code, "attributes": []}


# -- service requests: reads ---------------------------------------------------------------------------------

def _optional(name, type_, condition):
    """`condition` applies only when the parameter is given (NULL means no filter)."""
    return or_(bindparam(name, type_=type_).is_(None), condition)


def _requests_statement():
    i, c, d = aliased(Incident, name="i"), aliased(IncidentCategory, name="c"), aliased(Department, name="d")
    grid, community, street, district = (aliased(Area, name=n) for n in ("g", "cm", "st", "ds"))
    e_last, e_report = aliased(IncidentEvent, name="el"), aliased(IncidentEvent, name="er")
    last = (select(e_last.at, e_last.note).where(e_last.incident_id == i.id)
            .order_by(e_last.at.desc(), e_last.id.desc()).limit(1).lateral("last"))
    report = (select(e_report.data["address_string"].astext.label("address_string"),
                     e_report.data["address_id"].astext.label("address_id"),
                     e_report.data["media_url"].astext.label("media_url"))
              .where(e_report.incident_id == i.id, e_report.action == "report")
              .order_by(e_report.id).limit(1).lateral("report"))
    final = one_of(i.status, workflow.FINAL)
    # Where it is, most specific first (as the spec asks): the grid, its community (unless the grid's
    # name already says it), street and district.
    place = func.nullif(func.concat_ws(
        ", ", grid.name, case((func.strpos(grid.name, community.name) == 1, null()), else_=community.name),
        street.name, district.name), "")
    scope = func.coalesce(i.grid_code, i.suggested_grid_code, "").startswith(
        bindparam("scope", type_=String), autoescape=False)

    def stable(area, n):
        return and_(area.code == func.left(i.grid_code, n), area.version_id.is_(None))

    when = DateTime(timezone=True)
    return (
        select(
            i.id, i.status, last.c.note, c.code.label("service_code"), c.name.label("service_name"),
            i.description, d.name.label("agency"), i.grid_code, i.duplicate_of, i.reported_at,
            case((final, func.coalesce(i.closed_at, last.c.at, i.updated_at)),
                 else_=func.coalesce(last.c.at, i.updated_at)).label("updated_at"),
            i.due_at, func.coalesce(report.c.address_string, place).label("address"),
            report.c.address_id, func.ST_Y(i.geom).label("lat"), func.ST_X(i.geom).label("lon"),
            report.c.media_url, place.label("place"),
        )
        .select_from(i)
        .join(c, c.code == i.category_code)
        .outerjoin(d, d.code == i.department_code)
        .outerjoin(grid, grid.id == i.grid_id)
        .outerjoin(community, stable(community, 12))
        .outerjoin(street, stable(street, 9))
        .outerjoin(district, stable(district, 6))
        .outerjoin(last, true())
        .outerjoin(report, true())
        .where(
            scope,
            _optional("reporter", Integer, i.reporter_id == bindparam("reporter", type_=Integer)),
            _optional("ids", ARRAY(BigInteger), i.id == func.any(bindparam("ids", type_=ARRAY(BigInteger)))),
            _optional("codes", ARRAY(String), i.category_code == func.any(bindparam("codes", type_=ARRAY(String)))),
            _optional("closed", Boolean, final == bindparam("closed", type_=Boolean)),
            _optional("start", when, i.reported_at >= bindparam("start", type_=when)),
            _optional("end", when, i.reported_at <= bindparam("end", type_=when)),
        )
        .order_by(i.reported_at.desc(), i.id.desc())
        .limit(bindparam("limit", type_=Integer))
    )


_REQUESTS = Query(_requests_statement())


def _notice(row) -> str:
    parts = []
    if row["grid_code"]:
        parts.append(f"Filed in grid {row['grid_code']}")
    else:
        parts.append("Outside every grid: kept for manual assignment")
    if row["agency"]:
        parts.append(f"{row['agency']} is responsible")
    if row["due_at"] is not None and row["status"] not in workflow.FINAL:
        parts.append(f"expected by {w3(row['due_at'])}")
    if row["duplicate_of"]:
        parts.append(f"likely a duplicate of request {row['duplicate_of']}")
    return "; ".join(parts) + "."


def _request(row) -> dict:
    notes = row["status"].replace("_", " ")
    if row["note"]:
        notes += f": {row['note']}"
    return {
        "service_request_id": str(row["id"]),
        "status": open311_status(row["status"]),
        "status_notes": notes,
        "service_name": row["service_name"],
        "service_code": row["service_code"],
        "description": row["description"],
        "agency_responsible": row["agency"],
        "service_notice": _notice(row),
        "requested_datetime": w3(row["reported_at"]),
        "updated_datetime": w3(row["updated_at"]),
        "expected_datetime": w3(row["due_at"]),
        "address": row["address"],
        "address_id": row["address_id"],
        "zipcode": None,
        "lat": round(row["lat"], 7),
        "long": round(row["lon"], 7),
        "media_url": row["media_url"],
    }


@dataclass
class RequestFilters:
    """Which requests a GeoReport v2 list shows."""
    ids: list[int] | None = None  # overrides every other filter, as the spec says
    service_codes: list[str] | None = None
    start: datetime | None = None
    end: datetime | None = None
    statuses: list[str] | None = None  # "open" / "closed"


def window(start: datetime | None, end: datetime | None, now: datetime) -> tuple[datetime, datetime]:
    """The spec's date range: the most recent 90 days by default, never more than 90 days."""
    if start is None:
        if end is None:
            return now - MAX_SPAN, now
        return end - MAX_SPAN, end
    if end is None:
        return start, start + MAX_SPAN
    if end < start:
        raise InvalidInput("end_date is before start_date.", field="end_date")
    if end - start > MAX_SPAN:
        raise InvalidInput("start_date and end_date may not span more than 90 days.", field="start_date")
    return start, end


PUBLIC_PRECISION = 3  # decimals of lat/long in the public view: about 100 m


def public_view(request: dict, place: str | None) -> dict:
    """A request as anyone may see it: no description or media (a resident's words and photos), the grid and
    street instead of the address, and the location rounded to about 100 m."""
    return {**request, "description": None, "media_url": None, "address": place, "address_id": None,
            "lat": round(request["lat"], PUBLIC_PRECISION), "long": round(request["long"], PUBLIC_PRECISION)}


def _shown(rows, caller: Caller | None) -> list[dict]:
    if caller is None:
        return [public_view(_request(row), row["place"]) for row in rows]
    return [_request(row) for row in rows]


def _scope(caller: Caller | None) -> dict:
    """Who sees what: the caller's area, and for reporters their own requests; anonymous readers every area."""
    return {"scope": caller.scope, "reporter": caller.own_reports} if caller else {"scope": "", "reporter": None}


async def requests(conn, caller: Caller | None, filters: RequestFilters) -> list[dict]:
    """Service requests newest first (at most 1000), in the caller's scope (anonymous: public_view)."""
    if filters.ids is not None:
        rows = await _REQUESTS.fetch(conn, **_scope(caller), ids=filters.ids, codes=None, closed=None, start=None,
                                     end=None, limit=MAX_REQUESTS)
        return _shown(rows, caller)
    start, end = window(filters.start, filters.end, datetime.now(TZ))
    statuses = set(filters.statuses or STATUSES)
    closed = None if statuses == set(STATUSES) else statuses == {"closed"}
    rows = await _REQUESTS.fetch(conn, **_scope(caller), ids=None, codes=filters.service_codes, closed=closed,
                                 start=start, end=end, limit=MAX_REQUESTS)
    return _shown(rows, caller)


async def request(conn, caller: Caller | None, request_id: int) -> dict:
    """One request in the GeoReport v2 shape (404 outside the caller's scope)."""
    rows = await _REQUESTS.fetch(conn, **_scope(caller), ids=[request_id], codes=None,
                                 closed=None, start=None, end=None, limit=1)
    if not rows:
        raise NotFound(f"service_request_id {request_id} was not found.", field="service_request_id")
    return _shown(rows, caller)[0]


# -- service requests: create --------------------------------------------------------------------------------

@dataclass
class NewRequest:
    """A GeoReport v2 request to file, its point already in WGS84."""
    service_code: str
    lon: float  # WGS84, already converted
    lat: float
    input_crs: str = "EPSG:4326"
    description: str | None = None
    public: dict | None = None  # address_string, address_id, media_url
    contact: dict | None = None  # first_name, last_name, email, phone, device_id, account_id
    attributes: dict | None = None
    idempotency_key: str | None = None  # the Idempotency-Key header: a retried POST files one incident


async def create(conn, caller: Caller, new: NewRequest) -> dict:
    """File the request as an incident (source open311); returns the spec's POST reply entry."""
    if new.description is not None and len(new.description) > MAX_DESCRIPTION:
        raise InvalidInput(f"description is limited to {MAX_DESCRIPTION} characters.", field="description")
    await service(conn, new.service_code)  # unknown code: 404, as the spec says, before anything is written
    extra = dict(new.public or {})
    if new.attributes:
        extra["attributes"] = new.attributes
    feature, _ = await incidents.create(conn, caller, incidents.NewIncident(
        category=new.service_code, lon=new.lon, lat=new.lat, description=new.description, source="open311",
        input_crs=new.input_crs, reporter_contact=new.contact or None, extra=extra,
        idempotency_key=new.idempotency_key,
    ))
    incident_id = orjson.loads(feature)["id"]
    return {"service_request_id": str(incident_id),
            "service_notice": (await request(conn, None, incident_id))["service_notice"],
            "account_id": None}
