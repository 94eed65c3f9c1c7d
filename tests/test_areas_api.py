"""GET /areas/{code} and /children: features, chains, paging, errors, and area scope."""

import shapely
from sqlalchemy import text

from tests.conftest import make_token


def test_area_feature_with_chain_and_households(client, admin_headers, engine):
    feature = client.get("/areas/110102001", headers=admin_headers).json()
    assert feature["type"] == "Feature" and feature["id"] == "110102001"
    props = feature["properties"]
    assert props["level"] == "street" and props["name"].endswith("街道")
    assert props["chain"] == [{"code": "110102", "name": "西城区", "level": "district"}]
    with engine.connect() as conn:
        expected = conn.execute(text(
            "SELECT sum(households) FROM areas WHERE level = 'grid' AND code LIKE '110102001%' "
            "AND version_id = (SELECT id FROM grid_versions WHERE status = 'active')")).scalar()
    assert props["households"] == expected
    assert shapely.geometry.shape(feature["geometry"]).area > 0


def test_geometry_false_omits_geometry(client, admin_headers):
    feature = client.get("/areas/110102", params={"geometry": "false"}, headers=admin_headers).json()
    assert feature["geometry"] is None and feature["properties"]["chain"] is None


def test_children_are_paged_with_next_links(client, admin_headers):
    seen, url, params = [], "/areas/110102/children", {"geometry": "false", "limit": 4}
    while True:
        page = client.get(url, params=params, headers=admin_headers).json()
        assert page["type"] == "FeatureCollection"
        seen += [f["id"] for f in page["features"]]
        nxt = [link for link in page["links"] if link["rel"] == "next"]
        if not nxt:
            break
        url, params = nxt[0]["href"], None
    assert len(seen) == 15 and seen == sorted(seen) and len(set(seen)) == 15


def test_unknown_and_malformed_codes(client, admin_headers):
    missing = client.get("/areas/110102999", headers=admin_headers)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    malformed = client.get("/areas/11010", headers=admin_headers)
    assert malformed.status_code == 422 and malformed.json()["error"]["field"] == "code"


def test_missing_and_bad_tokens_are_401(client):
    assert client.get("/areas/110102").status_code == 401
    reply = client.get("/areas/110102", headers={"Authorization": "Bearer wg_nope"})
    assert reply.status_code == 401 and "Invalid" in reply.json()["error"]["message"]
    assert client.get("/health").status_code == 200  # health needs no token


def test_street_user_sees_only_its_subtree(client, engine, demo):
    headers = {"Authorization": f"Bearer {make_token(engine, 'supervisor', '110102001')}"}
    assert client.get("/areas/110102001/children", headers=headers).status_code == 200
    other = client.get("/areas/110102003", headers=headers)
    assert other.status_code == 404 and "in your area" in other.json()["error"]["message"]
    assert client.get("/areas/110102", headers=headers).status_code == 404
    # a point in another street's grid is not found for this user: the nearest visible grid is named
    with engine.connect() as conn:
        lon, lat, code = conn.execute(text(
            "SELECT ST_X(p), ST_Y(p), code FROM (SELECT ST_PointOnSurface(geom) p, code FROM areas "
            "WHERE level = 'grid' AND code LIKE '110102003%' ORDER BY code LIMIT 1) s")).one()
    reply = client.get("/grids/at", params={"lon": lon, "lat": lat}, headers=headers)
    assert reply.status_code == 404 and reply.json()["error"]["nearest_grid"].startswith("110102001")


def test_health_reports_database_and_active_version(client):
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["database"] == "ok" and body["active_grid_version"] >= 1


def test_health_is_503_when_the_database_is_unreachable():
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.settings import Settings

    with TestClient(create_app(Settings(database_url="postgresql://nobody:x@127.0.0.1:1/none"))) as down:
        reply = down.get("/health")
    assert reply.status_code == 503 and reply.json()["database"] == "unreachable"
