"""Hostile input answers a 4xx in the one error shape, naming the field, never a 500: integers past the
database's range, NUL characters, dates at the ends of the calendar, and fuzzed numbers (the probes of the
trust issue, each written out)."""

import base64

import pytest

from tests.conftest import make_token

HUGE = 99999999999  # past 32 bits
BEYOND = 2**63  # past 64 bits


@pytest.fixture(scope="module")
def staff(engine, demo):
    return {"Authorization": f"Bearer {make_token(engine, 'supervisor', '110102')}"}


def _error(reply, status: int, field: str | None = None):
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["message"]
    if field is not None:
        assert field in (error["field"] or ""), error
    return error


def test_integers_past_the_database_range(client, admin_headers):
    _error(client.get(f"/incidents/{HUGE}", headers=admin_headers), 404)  # incident ids are bigints
    _error(client.post(f"/incidents/{HUGE}/actions", json={"action": "close"}, headers=admin_headers), 404)
    _error(client.get(f"/incidents/{BEYOND}", headers=admin_headers), 422, "incident_id")
    _error(client.get(f"/responders/{HUGE}", headers=admin_headers), 422, "responder_id")
    _error(client.get(f"/jobs/{HUGE}", headers=admin_headers), 422, "job_id")
    _error(client.get(f"/plans/{HUGE}", headers=admin_headers), 422, "plan_id")
    _error(client.get("/incidents", params={"assignee": HUGE}, headers=admin_headers), 422, "assignee")
    _error(client.get("/responders", params={"after": HUGE}, headers=admin_headers), 422, "after")
    _error(client.get("/grids/at", params={"lon": 116.36, "lat": 39.91, "version": HUGE}, headers=admin_headers),
           422, "version")
    _error(client.get("/areas/110102", params={"version": HUGE}, headers=admin_headers), 422, "version")


def test_nul_characters_in_text(client, staff, admin_headers):
    body = {"category": "0101", "description": "trash\u0000bin", "lon": 116.36, "lat": 39.91}
    _error(client.post("/incidents", json=body, headers=staff), 422, "description")
    _error(client.post("/incidents", json=body | {"category": "01\u000001", "description": "x"}, headers=staff),
           422, "category")
    _error(client.get("/incidents", params={"category": "01\x0001"}, headers=staff), 400, "category")
    _error(client.get("/analysis/hotspots", params={"category": "\x00"}, headers=staff), 400, "category")
    _error(client.get("/areas/110102/children", params={"after": "\x00"}, headers=staff), 400, "after")
    token = staff["Authorization"].split()[1]
    form = {"api_key": token, "service_code": "01\x0001", "lat": "39.91", "long": "116.36"}
    for reply in (client.post("/open311/v2/requests.json", data=form),
                  client.post("/open311/v2/requests.json", data=form | {"service_code": "0101",
                                                                        "description": "a\x00b"}),
                  client.post("/open311/v2/requests.json", json=form | {"service_code": "0101",
                                                                        "description": "a\x00b"}),
                  client.post("/open311/v2/requests.xml", data=form)):
        assert reply.status_code == 400 and "NUL" in reply.text, reply.text


def test_dates_at_the_ends_of_the_calendar(client, staff, admin_headers, engine):
    for name, value in (("since", "0001-01-01T00:00:00+08:00"), ("until", "9999-12-31T23:59:59+08:00")):
        _error(client.get("/incidents", params={name: value}, headers=staff), 422, name)
    for name, value in (("from", "0001-01-01"), ("to", "9999-12-31")):
        _error(client.get("/analysis/performance", params={name: value}, headers=staff), 400, name)
    responder = client.get("/responders", params={"limit": 1}, headers=admin_headers).json()["features"][0]["id"]
    ping = {"lon": 116.36, "lat": 39.91, "at": "9999-12-31T00:00:00+08:00"}
    _error(client.post(f"/responders/{responder}/position", json=ping, headers=admin_headers), 422, "at")
    _error(client.post(f"/incidents/{HUGE}/actions", json={"action": "extend", "due_at": "0001-01-01T00:00:00Z"},
                       headers=admin_headers), 422, "due_at")
    for at in ("0001-01-01T00:00:00+00:00", "9999-12-31T00:00:00+00:00"):
        cursor = base64.urlsafe_b64encode(f"{at}|5".encode()).decode().rstrip("=")
        _error(client.get("/incidents", params={"cursor": cursor}, headers=staff), 400, "cursor")
    token = staff["Authorization"].split()[1]
    reply = client.get("/open311/v2/requests.json", params={"api_key": token, "start_date": "0001-01-01T00:00:00Z"})
    assert reply.status_code == 400 and "between the years" in reply.text
    csv = b"lon,lat,category,reported_at\n116.36,39.91,0101,9999-12-31T00:00:00+08:00\n"
    reply = client.post("/incidents/bulk", content=csv, headers={**admin_headers, "Content-Type": "text/csv"})
    assert reply.status_code in (200, 400), reply.text  # the row is rejected, with its reason
    assert reply.status_code == 400 or reply.json()["imported"] == 0


def test_fuzzed_numbers(client, admin_headers):
    reply = client.get("/dispatch/nearest", params={"lon": 116.36, "lat": -90, "max_distance": "5e-324",
                                                    "include_stale": "true"}, headers=admin_headers)
    assert reply.status_code < 500, reply.text
    for params in ({"lon": "nan", "lat": 39.9}, {"lon": "inf", "lat": 39.9}, {"lon": 1e308, "lat": 39.9}):
        assert 400 <= client.get("/grids/at", params=params, headers=admin_headers).status_code < 500
        assert 400 <= client.get("/dispatch/nearest", params=params, headers=admin_headers).status_code < 500


def test_a_bug_is_a_500_in_the_one_shape_with_a_request_id_logged_once_and_the_connection_lives_on(settings,
                                                                                                  caplog):
    from fastapi.testclient import TestClient

    from api.app import create_app

    app = create_app(settings)

    async def broken() -> dict:
        raise ZeroDivisionError("a bug")

    app.add_api_route("/broken-for-test", broken)  # after create_app: the policy check has run
    with TestClient(app, raise_server_exceptions=False) as client:
        caplog.clear()
        reply = client.get("/broken-for-test")
        assert reply.status_code == 500 and reply.headers["content-type"] == "application/json"
        error = reply.json()["error"]
        request_id = reply.headers["x-request-id"]
        assert error["code"] == "internal_error" and request_id in error["message"]
        assert "ZeroDivisionError" not in reply.text and "Traceback" not in reply.text
        logged = [r for r in caplog.records if request_id in r.getMessage()]
        assert len(logged) == 1 and logged[0].exc_info is not None
        assert client.get("/health").status_code == 200  # the same client, on after the 500
