"""Open311 GeoReport v2 under /open311/v2: discovery, services, requests (POST and GET), errors, XML.

Checked against the spec's shapes and against the database and shapely directly, as an off-the-shelf Open311
client would see it: form-encoded POSTs with an api_key, one-element arrays, and the spec's error arrays.
"""

import uuid
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta

import geopandas as gpd
import pytest
import shapely
from pyproj import Geod
from sqlalchemy import text

from fixtures.catalog import CATEGORIES, DEPARTMENTS
from tests.conftest import make_token

BASE = "/open311/v2"
GEOD = Geod(ellps="WGS84")
# The spec's field sets, written out here (independently of the implementation).
REQUEST_FIELDS = {"service_request_id", "status", "status_notes", "service_name", "service_code", "description",
                  "agency_responsible", "service_notice", "requested_datetime", "updated_datetime",
                  "expected_datetime", "address", "address_id", "zipcode", "lat", "long", "media_url"}
SERVICE_FIELDS = {"service_code", "service_name", "description", "metadata", "type", "keywords", "group"}
FINAL = ("closed", "rejected", "void")  # Wangge statuses that Open311 calls closed
DEPARTMENT_NAMES = {d["code"]: d["name"] for d in DEPARTMENTS}


@pytest.fixture(scope="module")
def client(settings):
    """The service with anonymous reads turned on (they are off by default; see test_public_reads_...)."""
    from fastapi.testclient import TestClient

    from api.app import create_app

    with TestClient(create_app(settings.model_copy(update={"open311_public_reads": True}))) as client:
        yield client


@pytest.fixture(scope="module")
def grids(engine, demo):
    with engine.connect() as conn:
        return gpd.read_postgis(text(
            "SELECT code, worker_id, geom FROM areas WHERE level = 'grid' AND version_id = "
            "(SELECT id FROM grid_versions WHERE status = 'active') ORDER BY code"), conn, geom_col="geom")


@pytest.fixture(scope="module")
def api_key(engine, demo):
    return make_token(engine, "reporter", "110102")


def _contact():
    tag = uuid.uuid4().hex[:10]
    return {"first_name": f"Zhang{tag}", "last_name": f"San{tag}", "email": f"zs{tag}@example.cn",
            "phone": f"138{int(tag, 16) % 10**8:08d}", "device_id": f"dev-{tag}", "account_id": f"acct-{tag}"}


def _post(client, api_key, lon, lat, code="0101", fmt="json", **extra):
    form = {"api_key": api_key, "jurisdiction_id": "bjxch.gov.cn", "service_code": code, "lat": str(lat),
            "long": str(lon), "description": "路边垃圾桶满溢", **extra}
    return client.post(f"{BASE}/requests.{fmt}", data=form)


def _spec_error(reply, status):
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert isinstance(body, list) and len(body) == 1 and set(body[0]) == {"code", "description"}
    assert body[0]["code"] == status and body[0]["description"]
    return body[0]["description"]


def test_discovery_names_this_endpoint_and_its_formats(client):
    body = client.get(f"{BASE}/discovery.json").json()
    assert {"changeset", "contact", "key_service", "endpoints"} <= set(body)
    (endpoint,) = body["endpoints"]
    assert endpoint["specification"] == "http://wiki.open311.org/GeoReport_v2"
    assert endpoint["url"] == "http://testserver/open311/v2" and endpoint["type"] == "production"
    assert set(endpoint["formats"]) == {"text/xml", "application/json"}
    root = ET.fromstring(client.get(f"{BASE}/discovery.xml").content)
    assert root.tag == "discovery"
    assert [f.text for f in root.iter("format")] == endpoint["formats"]


def test_services_are_the_catalog(client):
    reply = client.get(f"{BASE}/services.json")
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("application/json")
    services = reply.json()
    assert [s["service_code"] for s in services] == sorted(c["code"] for c in CATEGORIES)
    by_code = {c["code"]: c for c in CATEGORIES}
    for service in services:
        category = by_code[service["service_code"]]
        assert set(service) == SERVICE_FIELDS
        assert service["service_name"] == category["name"]
        assert service["group"] == DEPARTMENT_NAMES[category["department_code"]]
        assert service["metadata"] is False and service["type"] == "realtime"
        assert category["name"] in service["keywords"] and service["description"]
    root = ET.fromstring(client.get(f"{BASE}/services.xml").content)
    assert root.tag == "services" and [s.findtext("service_code") for s in root.findall("service")] == \
        [s["service_code"] for s in services]
    assert root.find("service/metadata").text == "false"


def test_service_definition_and_unknown_code(client):
    assert client.get(f"{BASE}/services/0301.json").json() == {"service_code": "0301", "attributes": []}
    root = ET.fromstring(client.get(f"{BASE}/services/0301.xml").content)
    assert root.tag == "service_definition" and root.findtext("service_code") == "0301"
    assert "9999" in _spec_error(client.get(f"{BASE}/services/9999.json"), 404)


def test_form_post_files_the_request_in_the_covering_grid(client, api_key, grids, engine):
    point = grids.geometry.iloc[37].representative_point()
    contact = _contact()
    reply = _post(client, api_key, point.x, point.y, code="0302", address_string="西长安街 1号",
                  media_url="http://example.cn/p/1.jpg", **contact)
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("application/json")
    body = reply.json()
    assert isinstance(body, list) and len(body) == 1
    assert set(body[0]) == {"service_request_id", "service_notice", "account_id"}
    assert body[0]["account_id"] is None and isinstance(body[0]["service_request_id"], str)
    request_id = int(body[0]["service_request_id"])
    # independently: shapely on the grid polygons, and ST_Covers in plain SQL
    covering = grids[grids.geometry.covers(shapely.Point(point.x, point.y))].sort_values("code")
    with engine.connect() as conn:
        row = conn.execute(text("SELECT grid_code, source, reporter_contact, department_code, status, "
                                "ST_X(geom), ST_Y(geom) FROM incidents WHERE id = :id"), {"id": request_id}).one()
        sql_grid = conn.execute(text(
            "SELECT a.code FROM areas a, incidents i WHERE i.id = :id AND a.level = 'grid' AND a.version_id = "
            "(SELECT id FROM grid_versions WHERE status = 'active') AND ST_Covers(a.geom, i.geom) "
            "ORDER BY a.code LIMIT 1"), {"id": request_id}).scalar()
    assert row.grid_code == covering["code"].iloc[0] == sql_grid
    assert row.grid_code in body[0]["service_notice"]
    assert row.source == "open311" and row.department_code == "SZSR" and row.status == "reported"
    assert row.reporter_contact == contact  # kept for staff, never shown publicly
    assert abs(row[5] - point.x) < 1e-9 and abs(row[6] - point.y) < 1e-9

    (request,) = client.get(f"{BASE}/requests/{request_id}.json", params={"api_key": api_key}).json()
    assert set(request) == REQUEST_FIELDS
    assert request["service_request_id"] == str(request_id) and request["status"] == "open"
    assert request["service_code"] == "0302" and request["service_name"] == "路灯损坏"
    assert request["agency_responsible"] == DEPARTMENT_NAMES["SZSR"]
    assert request["address"] == "西长安街 1号" and request["media_url"] == "http://example.cn/p/1.jpg"
    assert abs(request["lat"] - point.y) < 1e-6 and abs(request["long"] - point.x) < 1e-6
    requested = datetime.fromisoformat(request["requested_datetime"])
    assert requested.tzinfo is not None and abs(datetime.now(requested.tzinfo) - requested) < timedelta(minutes=5)
    assert datetime.fromisoformat(request["expected_datetime"]) > requested


def test_spec_example_body_with_attributes_and_multipart(client, api_key, grids, engine):
    point = grids.geometry.iloc[51].representative_point()
    # the spec's own example request, byte for byte in form (attribute[...] pairs and '+' for spaces)
    raw = (f"api_key={api_key}&jurisdiction_id=city.gov&service_code=0203&lat={point.y}&long={point.x}"
           "&address_string=1234+5th+street&email=smit333%40sfgov.edu&device_id=tt222111&account_id=123456"
           "&first_name=john&last_name=smith&phone=111111111&description=A+large+sinkhole+is+destroying+the+street"
           "&media_url=http%3A%2F%2Ffarm3.static.flickr.com%2F2002%2F2212426634_5ed477a060.jpg"
           "&attribute[WHISPAWN]=123456&attribute[WHISDORN]=COISL001")
    reply = client.post(f"{BASE}/requests.json", content=raw.encode(),
                        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    assert reply.status_code == 200, reply.text
    request_id = int(reply.json()[0]["service_request_id"])
    (request,) = client.get(f"{BASE}/requests/{request_id}.json", params={"api_key": api_key}).json()
    assert request["address"] == "1234 5th street" and request["description"].startswith("A large sinkhole")
    with engine.connect() as conn:
        contact, data = conn.execute(text(
            "SELECT i.reporter_contact, e.data FROM incidents i JOIN incident_events e ON e.incident_id = i.id "
            "AND e.action = 'report' WHERE i.id = :id"), {"id": request_id}).one()
    assert contact["email"] == "smit333@sfgov.edu" and contact["first_name"] == "john"
    assert data["attributes"] == {"WHISPAWN": "123456", "WHISDORN": "COISL001"}
    # a client posting multipart/form-data (e.g. with a photo) works too
    form = {"api_key": api_key, "service_code": "0203", "lat": str(point.y), "long": str(point.x),
            "description": "小广告 multipart"}
    reply = client.post(f"{BASE}/requests.json", data=form, files={"media": ("p.jpg", b"\xff\xd8jpeg", "image/jpeg")})
    assert reply.status_code == 200, reply.text
    (request,) = client.get(f"{BASE}/requests/{reply.json()[0]['service_request_id']}.json",
                            params={"api_key": api_key}).json()
    assert request["description"] == "小广告 multipart" and request["service_code"] == "0203"


def test_gcj02_crs_extension(client, api_key, grids):
    from geo.crs import wgs84_to_gcj02

    point = grids.geometry.iloc[120].representative_point()
    gx, gy = wgs84_to_gcj02(point.x, point.y)
    reply = _post(client, api_key, gx, gy, crs="GCJ-02")
    (request,) = client.get(f"{BASE}/requests/{reply.json()[0]['service_request_id']}.json",
                            params={"api_key": api_key}).json()
    assert GEOD.inv(request["long"], request["lat"], point.x, point.y)[2] < 0.5
    assert grids["code"].iloc[120] in reply.json()[0]["service_notice"]
    assert "coordinate system" in _spec_error(_post(client, api_key, point.x, point.y, crs="EPSG:3857"), 400)


def test_reporter_identity_never_appears_in_reads(client, api_key, grids, engine):
    point = grids.geometry.iloc[77].representative_point()
    contact = _contact()
    request_id = _post(client, api_key, point.x, point.y, code="0401", **contact).json()[0]["service_request_id"]
    with engine.connect() as conn:
        reporter_id = conn.execute(text("SELECT reporter_id FROM incidents WHERE id = :id"),
                                   {"id": int(request_id)}).scalar()
    assert reporter_id is not None
    replies = [
        client.get(f"{BASE}/requests/{request_id}.json"), client.get(f"{BASE}/requests/{request_id}.xml"),
        client.get(f"{BASE}/requests.json", params={"service_request_id": request_id}),
        client.get(f"{BASE}/requests.json"), client.get(f"{BASE}/requests.xml", params={"service_code": "0401"}),
        client.get(f"{BASE}/requests.json", params={"api_key": api_key, "service_code": "0401"}),  # keyed read
    ]
    for reply in replies:
        assert reply.status_code == 200 and request_id in reply.text
        for value in contact.values():
            assert value not in reply.text
        for word in ("reporter", "first_name", "last_name", "email", "phone", "device_id", "contact"):
            assert word not in reply.text
    for request in replies[3].json():
        assert set(request) == REQUEST_FIELDS  # nothing beyond the spec's fields


def test_missing_and_invalid_api_key_are_403_and_bad_parameters_400_or_404(client, api_key, grids):
    point = grids.geometry.iloc[10].representative_point()
    form = {"service_code": "0101", "lat": str(point.y), "long": str(point.x)}
    assert "api_key" in _spec_error(client.post(f"{BASE}/requests.json", data=form), 403)
    assert "Invalid api_key" in _spec_error(client.post(f"{BASE}/requests.json", data=form | {"api_key": "wg_x"}), 403)
    root = ET.fromstring(client.post(f"{BASE}/requests.xml", data=form).content)
    assert root.tag == "errors" and root.findtext("error/code") == "403" and root.findtext("error/description")
    keyed = form | {"api_key": api_key}
    assert "service_code" in _spec_error(client.post(f"{BASE}/requests.json", data=keyed | {"service_code": ""}), 400)
    # the spec: "404 - service_code ... was not found"
    assert "'nope'" in _spec_error(client.post(f"{BASE}/requests.json", data=keyed | {"service_code": "nope"}), 404)
    no_location = {"api_key": api_key, "service_code": "0101", "address_string": "西单北大街"}
    assert "lat and long" in _spec_error(client.post(f"{BASE}/requests.json", data=no_location), 400)
    assert "out of range" in _spec_error(_post(client, api_key, point.y, point.x), 400)
    assert "4000" in _spec_error(_post(client, api_key, point.x, point.y, description="x" * 4001), 400)
    assert "status" in _spec_error(client.get(f"{BASE}/requests.json", params={"status": "pending"}), 400)
    assert "w3" in _spec_error(client.get(f"{BASE}/requests.json", params={"start_date": "yesterday"}), 400)
    assert "90 days" in _spec_error(client.get(f"{BASE}/requests.json", params={
        "start_date": "2026-01-01T00:00:00Z", "end_date": "2026-06-01T00:00:00Z"}), 400)
    _spec_error(client.get(f"{BASE}/requests/999999999.json"), 404)
    _spec_error(client.get(f"{BASE}/requests/abc.json"), 404)
    _spec_error(client.get(f"{BASE}/nothing.json"), 404)
    _spec_error(client.delete(f"{BASE}/requests.json"), 405)


def test_default_window_is_the_last_90_days_and_at_most_1000(client, engine):
    requests = client.get(f"{BASE}/requests.json").json()
    now = datetime.now().astimezone()
    with engine.connect() as conn:
        in_window = conn.execute(text(
            "SELECT count(*) FROM incidents WHERE reported_at >= now() - interval '90 days'")).scalar()
    assert len(requests) == min(1000, in_window) and len(requests) > 0
    times = [datetime.fromisoformat(r["requested_datetime"]) for r in requests]
    assert times == sorted(times, reverse=True)
    assert all(now - timedelta(days=90, minutes=1) <= t <= now + timedelta(minutes=1) for t in times)


def test_filters_match_plain_sql(client, engine):
    with engine.connect() as conn:
        latest = conn.execute(text("SELECT max(reported_at) FROM incidents WHERE is_synthetic")).scalar()
    end, start = latest, latest - timedelta(days=10)
    params = {"start_date": start.isoformat(), "end_date": end.isoformat(), "service_code": "0201,0303"}
    final = ", ".join(f"'{s}'" for s in FINAL)
    for status, condition in (("closed", f"status IN ({final})"), ("open", f"status NOT IN ({final})"),
                              ("open,closed", "true")):
        reply = client.get(f"{BASE}/requests.json", params=params | {"status": status}).json()
        with engine.connect() as conn:
            expected = conn.execute(text(
                f"SELECT id, status FROM incidents WHERE category_code IN ('0201', '0303') AND {condition} "
                "AND reported_at BETWEEN :start AND :end ORDER BY reported_at DESC, id DESC LIMIT 1000"),
                {"start": start, "end": end}).all()
        assert [r["service_request_id"] for r in reply] == [str(row.id) for row in expected]
        assert len(expected) > 0, status
        statuses = {row.id: row.status for row in expected}
        for request in reply:
            assert request["service_code"] in ("0201", "0303")
            assert request["status"] == ("closed" if statuses[int(request["service_request_id"])] in FINAL else "open")
            assert start <= datetime.fromisoformat(request["requested_datetime"]) <= end
    # a service_request_id list overrides every other filter
    ids = [str(row.id) for row in expected[:3]]
    reply = client.get(f"{BASE}/requests.json", params={"service_request_id": ",".join(ids), "service_code": "0101",
                                                         "status": "open", "start_date": "2000-01-01T00:00:00Z"})
    assert sorted(r["service_request_id"] for r in reply.json()) == sorted(ids)
    root = ET.fromstring(client.get(f"{BASE}/requests.xml", params={"service_request_id": ",".join(ids)}).content)
    assert root.tag == "service_requests"
    assert sorted(r.findtext("service_request_id") for r in root.findall("request")) == sorted(ids)
    assert {child.tag for child in root.find("request")} == REQUEST_FIELDS


def test_post_reply_in_xml(client, api_key, grids):
    point = grids.geometry.iloc[88].representative_point()
    reply = _post(client, api_key, point.x, point.y, fmt="xml")
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/xml")
    assert reply.content.startswith(b'<?xml version="1.0" encoding="utf-8"?>')
    root = ET.fromstring(reply.content)
    assert root.tag == "service_requests" and len(root.findall("request")) == 1
    assert root.findtext("request/service_request_id").isdigit() and root.find("request/account_id").text is None


def test_keyed_reads_see_only_the_keys_area(client, engine):
    street_key = make_token(engine, "supervisor", "110102003")
    requests = client.get(f"{BASE}/requests.json", params={"api_key": street_key}).json()
    assert requests
    with engine.connect() as conn:
        codes = conn.execute(text("SELECT coalesce(grid_code, suggested_grid_code) FROM incidents "
                                  "WHERE id = ANY(:ids)"),
                             {"ids": [int(r["service_request_id"]) for r in requests]}).scalars().all()
        outside = conn.execute(text("SELECT id FROM incidents WHERE grid_code LIKE '110102001%' LIMIT 1")).scalar()
    assert all(code.startswith("110102003") for code in codes)
    _spec_error(client.get(f"{BASE}/requests/{outside}.json", params={"api_key": street_key}), 404)
    assert client.get(f"{BASE}/requests/{outside}.json").status_code == 200  # public: all areas
    _spec_error(client.get(f"{BASE}/requests.json", params={"api_key": "wg_bogus"}), 403)
    # a street's key may not file a request in another street: 404 (nothing of it is theirs), nothing is written
    with engine.connect() as conn:
        lon, lat, before = conn.execute(text(
            "SELECT ST_X(p), ST_Y(p), (SELECT count(*) FROM incidents) FROM (SELECT ST_PointOnSurface(geom) p "
            "FROM areas WHERE level = 'grid' AND code LIKE '110102001%' AND version_id = "
            "(SELECT id FROM grid_versions WHERE status = 'active') ORDER BY code LIMIT 1) s")).one()
    assert "no grid of your area" in _spec_error(_post(client, street_key, lon, lat), 404)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM incidents")).scalar() == before


def test_a_reporters_key_reads_only_their_own_requests(client, engine, grids):
    mine, theirs = make_token(engine, "reporter", "110102"), make_token(engine, "reporter", "110102")
    point = grids.geometry.iloc[88].representative_point()
    own = _post(client, mine, point.x, point.y, code="0101").json()[0]["service_request_id"]
    other = _post(client, theirs, point.x, point.y, code="0101").json()[0]["service_request_id"]
    listed = client.get(f"{BASE}/requests.json", params={"api_key": mine}).json()
    with engine.connect() as conn:
        user = conn.execute(text("SELECT reporter_id FROM incidents WHERE id = :id"), {"id": int(own)}).scalar()
        reporters = conn.execute(text("SELECT DISTINCT reporter_id FROM incidents WHERE id = ANY(:ids)"),
                                 {"ids": [int(r["service_request_id"]) for r in listed]}).scalars().all()
    assert reporters == [user] and own in [r["service_request_id"] for r in listed]
    _spec_error(client.get(f"{BASE}/requests/{other}.json", params={"api_key": mine}), 404)


def test_anonymous_reads_see_only_the_public_view(client, engine, grids, api_key):
    point = grids.geometry.iloc[99].representative_point()
    created = _post(client, api_key, point.x, point.y, code="0203", address_string="西单北大街 120号",
                    media_url="http://example.cn/p/2.jpg").json()[0]["service_request_id"]
    (public,) = client.get(f"{BASE}/requests/{created}.json").json()
    (own,) = client.get(f"{BASE}/requests/{created}.json", params={"api_key": api_key}).json()
    assert set(public) == set(own) == REQUEST_FIELDS
    assert own["description"] == "路边垃圾桶满溢" and own["address"] == "西单北大街 120号" and own["media_url"]
    assert public["description"] is None and public["media_url"] is None and public["address_id"] is None
    assert "120号" not in public["address"] and public["address"]  # the grid and street, not the address
    assert (public["lat"], public["long"]) == (round(own["lat"], 3), round(own["long"], 3))
    assert GEOD.inv(public["long"], public["lat"], own["long"], own["lat"])[2] < 120
    for field in ("status", "service_code", "requested_datetime", "agency_responsible"):
        assert public[field] == own[field]


def test_public_reads_are_off_by_default(engine, database_url, demo, api_key):
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.settings import Settings

    supervisor = make_token(engine, "supervisor", "110102")
    with TestClient(create_app(Settings(database_url=database_url, escalation_interval_s=0))) as private:
        for path in ("services.json", "services/0101.json", "requests.json", "requests/1.json"):
            assert "api_key" in _spec_error(private.get(f"{BASE}/{path}"), 403)
            assert private.get(f"{BASE}/{path}", params={"api_key": supervisor}).status_code == 200
        root = ET.fromstring(private.get(f"{BASE}/requests.xml").content)
        assert root.tag == "errors" and root.findtext("error/code") == "403"
        assert private.get(f"{BASE}/discovery.json").status_code == 200  # discovery says how to get a key
