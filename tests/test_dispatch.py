"""Responders, position pings, freshness, nearest responders and dispatching, through the HTTP API."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import shapely
from pyproj import Geod
from sqlalchemy import text

from tests.conftest import lean, make_token

GEOD = Geod(ellps="WGS84")
TAG = "dt-"  # name prefix of every responder this module inserts; removed at the end
MAX_AGE = 1800  # the default position_max_age_s


def _geod(lon, lat, lons, lats):
    return GEOD.inv(np.full(len(lons), lon), np.full(len(lats), lat), np.asarray(lons), np.asarray(lats))[2]


def _offset(lon, lat, azimuth, metres):
    x, y, _ = GEOD.fwd(lon, lat, azimuth, metres)
    return float(x), float(y)


def _insert(engine, rows):
    """rows: (name, role, status, lon, lat, age_s, home_grid_code); returns their ids in order."""
    ids = []
    with engine.begin() as conn:
        for name, role, status, lon, lat, age_s, grid in rows:
            ids.append(conn.execute(text(
                "INSERT INTO responders (name, role, status, home_grid_code, position, position_at) "
                "VALUES (:n, :role, :status, :grid, ST_SetSRID(ST_MakePoint(:lon, :lat), 4326), "
                "now() - make_interval(secs => :age)) RETURNING id"),
                {"n": TAG + name, "role": role, "status": status, "grid": grid, "lon": lon, "lat": lat,
                 "age": age_s}).scalar_one())
    return ids


@pytest.fixture(scope="module", autouse=True)
def cleanup(engine, demo):
    with engine.connect() as conn:
        before = dict(conn.execute(text("SELECT id, status FROM responders WHERE NOT name LIKE :t"),
                                   {"t": TAG + "%"}).all())
    yield
    with engine.begin() as conn:
        conn.execute(text("UPDATE incidents SET assignee_id = NULL WHERE assignee_id IN "
                          "(SELECT id FROM responders WHERE name LIKE :t)"), {"t": TAG + "%"})
        conn.execute(text("DELETE FROM responders WHERE name LIKE :t"), {"t": TAG + "%"})
        for responder_id, status in before.items():
            conn.execute(text("UPDATE responders SET status = :s WHERE id = :i AND status <> :s"),
                         {"s": status, "i": responder_id})


@pytest.fixture(scope="module")
def patrols(engine, boundary):
    """300 patrols at seeded random points over the district, mixed statuses, some stale."""
    rng = np.random.default_rng(5)
    minx, miny, maxx, maxy = boundary.bounds
    statuses = rng.choice(["available", "available", "busy", "off_duty"], 300)
    ages = np.where(rng.random(300) < 0.2, MAX_AGE + 600, rng.uniform(0, 600, 300))
    rows = [(f"patrol-{i}", "patrol", str(statuses[i]), float(x), float(y), float(ages[i]), None)
            for i, (x, y) in enumerate(zip(rng.uniform(minx, maxx, 300), rng.uniform(miny, maxy, 300), strict=False))]
    return _insert(engine, rows)


def _everyone(engine):
    with engine.connect() as conn:
        return conn.execute(text(
            "SELECT id, role, status, ST_X(position) AS lon, ST_Y(position) AS lat, home_grid_code, "
            "position_at >= now() - make_interval(secs => :a) AS fresh FROM responders WHERE position IS NOT NULL "
            "ORDER BY id"), {"a": MAX_AGE}).mappings().all()


def _nearest(client, headers, **params):
    response = client.get("/dispatch/nearest", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_nearest_matches_an_independent_geodesic_ranking_over_all_responders(client, admin_headers, engine,
                                                                               patrols, grids, boundary):
    everyone = _everyone(engine)
    rng = np.random.default_rng(8)
    minx, miny, maxx, maxy = boundary.bounds
    for lon, lat in zip(rng.uniform(minx, maxx, 12), rng.uniform(miny, maxy, 12), strict=False):
        for k, status in ((5, "available"), (23, "available"), (7, "busy")):
            pool = [r for r in everyone if r["status"] == status and r["fresh"]]
            metres = _geod(lon, lat, [r["lon"] for r in pool], [r["lat"] for r in pool])
            expected = sorted(zip(metres, [r["id"] for r in pool], strict=False))[:k]
            body = _nearest(client, admin_headers, lon=lon, lat=lat, k=k, status=status)
            got = [(f["properties"]["distance_m"], f["id"]) for f in body["features"]]
            assert [i for _, i in got] == [i for _, i in expected]
            assert all(abs(a - b) < 0.1 for (a, _), (b, _) in zip(got, expected, strict=False))
            covering = grids[grids.geometry.covers(shapely.Point(lon, lat))]
            grid = covering.sort_values("code")["code"].iloc[0] if len(covering) else None
            assert body["query"]["grid_code"] == grid
            for f in body["features"]:
                p = f["properties"]
                assert p["same_grid"] == (grid is not None and p["home_grid_code"] == grid)
                assert p["eta_s"] == pytest.approx(p["distance_m"] / 4.2, abs=0.1)
                assert p["stale"] is False and 0 <= p["position_age_s"] < MAX_AGE
                assert set(p) >= {"responder_id", "name", "role", "status", "distance_m", "eta_s",
                                  "position_age_s", "same_grid"}


def test_equidistant_responders_come_in_id_order(client, admin_headers, engine):
    lon, lat = 100.0, 30.0  # far from everyone else
    east, west = _offset(lon, lat, 90, 250), _offset(lon, lat, -90, 250)
    ids = _insert(engine, [("tie-east", "patrol", "available", *east, 10, None),
                           ("tie-west", "patrol", "available", *west, 10, None),
                           ("tie-far", "patrol", "available", *_offset(lon, lat, 0, 400), 10, None)])
    body = _nearest(client, admin_headers, lon=lon, lat=lat, k=3)
    got = [(f["id"], f["properties"]["distance_m"]) for f in body["features"]]
    assert [i for i, _ in got] == ids
    assert got[0][1] == pytest.approx(250, abs=0.01) and got[1][1] == pytest.approx(250, abs=0.01)
    assert _nearest(client, admin_headers, lon=lon, lat=lat, k=1)["features"][0]["id"] == ids[0]


def test_stale_positions_are_excluded_or_flagged_never_current(client, admin_headers, engine):
    lon, lat = 101.0, 31.0
    fresh, stale = _insert(engine, [("fresh", "patrol", "available", *_offset(lon, lat, 45, 500), 60, None),
                                    ("stale", "patrol", "available", *_offset(lon, lat, 45, 100), MAX_AGE + 60, None)])
    body = _nearest(client, admin_headers, lon=lon, lat=lat, k=2, max_distance=2000)
    assert [f["id"] for f in body["features"]] == [fresh]
    body = _nearest(client, admin_headers, lon=lon, lat=lat, k=2, max_distance=2000, include_stale="true")
    assert [(f["id"], f["properties"]["stale"]) for f in body["features"]] == [(stale, True), (fresh, False)]
    assert body["features"][0]["properties"]["position_age_s"] > MAX_AGE
    listed = client.get("/responders", params={"status": "available", "limit": 1000}, headers=admin_headers).json()
    ids, after = {f["id"] for f in listed["features"]}, None
    while any(link["rel"] == "next" for link in listed["links"]):
        after = listed["features"][-1]["id"]
        listed = client.get("/responders", params={"status": "available", "limit": 1000, "after": after},
                            headers=admin_headers).json()
        ids |= {f["id"] for f in listed["features"]}
    assert fresh in ids and stale not in ids
    one = client.get(f"/responders/{stale}", headers=admin_headers).json()
    assert one["properties"]["stale"] is True


def test_max_distance_role_and_status_filters(client, admin_headers, engine):
    lon, lat = 102.0, 32.0
    ids = _insert(engine, [("d100", "patrol", "available", *_offset(lon, lat, 10, 100), 0, None),
                           ("d300", "department_crew", "available", *_offset(lon, lat, 100, 300), 0, None),
                           ("d900", "patrol", "available", *_offset(lon, lat, 200, 900), 0, None),
                           ("busy", "patrol", "busy", *_offset(lon, lat, 300, 50), 0, None)])

    def near(**p):
        return [f["id"] for f in _nearest(client, admin_headers, lon=lon, lat=lat, **p)["features"]]

    assert near(k=10, max_distance=500) == ids[:2]
    assert near(k=10, max_distance=299.9) == ids[:1]
    assert near(k=10, max_distance=2000, role="patrol") == [ids[0], ids[2]]
    assert near(k=10, max_distance=2000, role="department_crew") == [ids[1]]
    assert near(k=10, max_distance=2000, status="busy") == [ids[3]]
    assert near(k=10, max_distance=2000, status="available,busy", role="patrol") == [ids[3], ids[0], ids[2]]
    assert near(k=1, max_distance=2000) == ids[:1]
    assert len(near(k=1000, max_distance=100000)) <= 100  # k clamped
    bad = client.get("/dispatch/nearest", params={"lon": lon, "lat": lat, "role": "pilot"}, headers=admin_headers)
    assert bad.status_code == 400 and "Unknown role pilot" in bad.json()["error"]["message"]


def test_gcj02_input_is_converted(client, admin_headers, engine):
    from geo.crs import wgs84_to_gcj02

    lon, lat = 104.0, 34.0
    here, = _insert(engine, [("gcj", "patrol", "available", lon, lat, 0, None)])
    gx, gy = wgs84_to_gcj02(lon, lat)
    body = _nearest(client, admin_headers, lon=gx, lat=gy, crs="GCJ-02", k=1)
    assert body["features"][0]["id"] == here and body["features"][0]["properties"]["distance_m"] < 0.5
    raw = _nearest(client, admin_headers, lon=gx, lat=gy, k=1, max_distance=5000)
    assert raw["features"][0]["properties"]["distance_m"] > 100  # undeclared GCJ-02 is hundreds of metres off


def test_network_mode_without_a_road_network_says_how_to_load_one(client, admin_headers):
    response = client.get("/dispatch/nearest", params={"lon": 116.36, "lat": 39.92, "mode": "network"},
                          headers=admin_headers)
    assert response.status_code in (400, 501)
    assert "wangge fixtures load --network" in response.json()["error"]["message"]


def test_network_mode_reranks_the_straight_candidates_by_road_eta(client, admin_headers, engine, monkeypatch):
    from geo.dispatch import nearest as dispatch

    lon, lat = 105.0, 35.0
    ids = _insert(engine, [(f"net-{i}", "patrol", "available", *_offset(lon, lat, 30 * i, 100 * (i + 1)), 0, None)
                           for i in range(4)])
    seen = []

    async def fake_etas(conn, plon, plat, candidates):  # road ETAs: the farthest is the quickest by road
        seen.append(candidates)
        return [{"responder_id": rid, "eta_s": None if rid == ids[1] else 1000.0 - n, "distance_m": 50.0 * n,
                 "reason": "no_path" if rid == ids[1] else None} for n, (rid, _, _) in enumerate(candidates)]

    monkeypatch.setattr(dispatch, "_network_etas", lambda: fake_etas)
    body = _nearest(client, admin_headers, lon=lon, lat=lat, k=3, mode="network", max_distance=1000)
    assert [c[0] for c in seen[0]] == ids  # all straight candidates (network_candidates ≥ k), nearest first
    assert [f["id"] for f in body["features"]] == [ids[3], ids[2], ids[0]]
    top = body["features"][0]["properties"]
    assert top["eta_s"] == 997.0 and top["reachable"] and top["straight_distance_m"] == pytest.approx(400, abs=0.01)
    assert body["query"]["mode"] == "network"


def test_candidates_that_cannot_prove_the_answer_fall_back_to_the_exhaustive_search(client, admin_headers, engine):
    # At 60°N Web Mercator stretches north-south distances 0.17 % more than east-west ones (and more to the north):
    # the Mercator-nearest candidates are the responders east and west at 1000.5 m and more, while the
    # geodesically nearest stands due north at 1000 m, beyond the candidates' Mercator reach.
    from geo.dispatch import nearest as dispatch

    lon, lat = 106.0, 60.0
    azimuths = [80, 84, 88, 92, 96, 100, 260, 264, 268, 272, 276, 280]
    rows = [(f"side-{i}", "patrol", "available", *_offset(lon, lat, az, 1000.5 + 0.05 * i), 0, None)
            for i, az in enumerate(azimuths)]
    ids = _insert(engine, rows + [("north", "patrol", "available", *_offset(lon, lat, 0, 1000), 0, None)])
    for k in (1, 3):
        params = {"lon": lon, "lat": lat, "k": k, "m": dispatch.candidates(k), "scope": "", "statuses": ["available"],
                  "roles": None, "include_stale": False, "max_age": MAX_AGE, "max_distance": 5000.0, "speed": 4.2}
        with engine.connect() as conn:
            found = conn.execute(text(dispatch.CANDIDATES_SQL), params).mappings().all()
        assert ids[-1] not in [row["id"] for row in found]  # the candidates miss it ...
        near = dispatch.ranked(found, k, 5000.0)
        assert not dispatch.proven(found, near, lat, k, params["m"], 5000.0)  # ... and know they may have
        body = _nearest(client, admin_headers, lon=lon, lat=lat, k=k, max_distance=5000)
        metres = _geod(lon, lat, [x for _, _, _, x, _, _, _ in rows], [y for _, _, _, _, y, _, _ in rows])
        expected = [ids[-1]] + [i for _, i in sorted(zip(metres, ids, strict=False))][:k - 1]
        assert [f["id"] for f in body["features"]] == expected
        assert body["features"][0]["properties"]["distance_m"] == pytest.approx(1000, abs=0.01)


def test_the_mercator_bound_holds_around_the_world():
    # radius_3857(d, lat) must hold every point within d geodesic metres: checked against pyproj's Web Mercator
    # for points in 72 directions at several distances and latitudes (the bound is what proven() relies on).
    import math

    from pyproj import Transformer

    from geo.dispatch import nearest as dispatch

    mercator = Transformer.from_crs(4326, 3857, always_xy=True)
    for lat in (-75.0, -40.0, 0.0, 22.5, 39.9, 60.0, 80.0):
        for metres in (5.0, 300.0, 5000.0, 50000.0):
            lons, lats, _ = GEOD.fwd(np.full(72, 116.0), np.full(72, lat), np.arange(0, 360, 5.0), np.full(72, metres))
            x, y = mercator.transform(lons, lats)
            x0, y0 = mercator.transform(116.0, lat)
            farthest = max(math.hypot(a - x0, b - y0) for a, b in zip(x, y, strict=False))
            assert farthest < dispatch.radius_3857(metres, lat), (lat, metres)
            assert farthest > 0.95 * dispatch.radius_3857(metres, lat) / 1.01  # and it is not loose


def _lean(client, headers: dict, query: str) -> bytes | None:
    """The lean path's body for a 200 to GET /dispatch/nearest?query, else None."""
    response = lean(client, headers, "/dispatch/nearest", query)
    return response.body if response is not None and response.status_code == 200 else None


def _without_ages(body: dict) -> tuple[dict, list[float]]:
    ages = [f["properties"].pop("position_age_s") for f in body["features"]]
    return body, ages


def test_the_lean_path_answers_plain_queries_exactly_as_the_route(client, admin_headers, patrols, boundary):
    import orjson

    rng = np.random.default_rng(12)
    minx, miny, maxx, maxy = boundary.bounds
    for lon, lat in zip(rng.uniform(minx, maxx, 4), rng.uniform(miny, maxy, 4), strict=False):
        for extra in ("", "&k=23&status=busy", "&k=7&status=available,busy&role=patrol&max_distance=1500.5"
                      "&include_stale=true", "&k=1000&crs=EPSG:4326&mode=straight", "&k=0&status=&role="):
            query = f"lon={float(lon)!r}&lat={float(lat)!r}{extra}"
            lean = _lean(client, admin_headers, query)
            assert lean is not None, query
            # An unknown parameter is ignored by the route, but the lean path leaves such a request to it.
            assert _lean(client, admin_headers, query + "&via=route") is None
            routed = client.get(f"/dispatch/nearest?{query}&via=route", headers=admin_headers)
            served = client.get(f"/dispatch/nearest?{query}", headers=admin_headers)
            for response in (routed, served):
                assert response.status_code == 200 and response.headers["content-type"] == "application/geo+json"
            lean_body, lean_ages = _without_ages(orjson.loads(lean))
            for response in (routed, served):
                body, ages = _without_ages(response.json())
                assert body == lean_body, query
                assert ages == pytest.approx(lean_ages, abs=1.0)
            assert 1 <= len(lean_body["features"]) <= 100


def test_the_lean_path_answers_every_error_as_the_route(client, admin_headers):
    cases = [
        ("lat=39.9", admin_headers, 422, "lon"),
        ("lon=116.38&lat=91", admin_headers, 422, "lat"),
        ("lon=116.38&lat=39.9&k=abc", admin_headers, 422, "k"),
        ("lon=116.38&lat=39.9&max_distance=0", admin_headers, 422, "max_distance"),
        ("lon=116.38&lat=39.9&mode=teleport", admin_headers, 422, "mode"),
        ("lon=116.38&lat=39.9&include_stale=maybe", admin_headers, 422, "include_stale"),
        ("lon=1e400&lat=39.9", admin_headers, 422, "lon"),
        ("lon=116.38&lat=39.9&status=flying", admin_headers, 400, "Unknown status flying"),
        ("lon=116.38&lat=39.9&role=pilot", admin_headers, 400, "Unknown role pilot"),
        ("lon=116.38&lat=39.9&crs=EPSG:9999", admin_headers, 400, "EPSG:9999"),
        ("lon=116.38&lat=39.9", {"Authorization": "Bearer wg_not-a-token"}, 401, "Invalid, expired or revoked"),
        ("lon=116.38&lat=39.9", {}, 401, "Missing bearer token"),
        ("lon=116.38&lat=39.9", {"Authorization": "Basic d2c6d2c="}, 401, "Missing bearer token"),
    ]
    for query, headers, status, message in cases:
        answered = lean(client, headers, "/dispatch/nearest", query)
        routed = client.get(f"/dispatch/nearest?{query}&via=route", headers=headers)
        assert routed.status_code == status, (query, routed.text)
        assert message in routed.json()["error"]["message"], (query, routed.text)
        assert answered is not None and answered.status_code == status, query
        assert answered.body == routed.content, query
    # Repeated or unknown parameters go to the route, which answers them.
    for query in ("lon=116.38&lat=39.9&lon=116.39", "lon=116.38&lat=39.9&via=route"):
        assert lean(client, admin_headers, "/dispatch/nearest", query) is None, query
    assert client.get("/dispatch/nearest?lon=116.38&lat=39.9&include_stale=yes",
                      headers=admin_headers).status_code == 200
    assert "/dispatch/nearest" in client.get("/openapi.json").json()["paths"]


def test_the_lean_path_and_the_routes_share_the_apps_one_pool(settings, admin_headers):
    """One pool per worker: with its only connection held, the lean path waits for it like a route does, and
    answers 503 after db_acquire_timeout_s; given back, both answer from it, with generic plans."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from tests.conftest import lean

    one = settings.model_copy(update={"pool_size": 1, "db_acquire_timeout_s": 0.3})
    with TestClient(create_app(one)) as client:
        query = "lon=116.3655&lat=39.9127&k=2"
        assert lean(client, admin_headers, "/dispatch/nearest", query).status_code == 200
        pool = client.app.state.pool

        async def hold():
            return await pool.acquire()

        held = client.portal.call(hold)
        assert pool.get_size() == 1 and pool.get_idle_size() == 0
        waited = lean(client, admin_headers, "/dispatch/nearest", query)
        assert waited.status_code == 503, waited.body
        assert client.get(f"/dispatch/nearest?{query}", headers=admin_headers).status_code == 503
        client.portal.call(pool.release, held)
        answered = lean(client, admin_headers, "/dispatch/nearest", query)
        routed = client.get(f"/dispatch/nearest?{query}&via=route", headers=admin_headers)
        assert answered.status_code == routed.status_code == 200 and pool.get_size() == 1

        async def plan_mode():
            async with pool.acquire() as conn:
                return await conn.fetchval("SELECT current_setting('plan_cache_mode')")

        assert client.portal.call(plan_mode) == "force_generic_plan"


def _track(engine, ids):
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM responder_positions WHERE responder_id = ANY(:i)"),
                            {"i": list(ids)}).scalar()


def _last(engine, responder_id):
    with engine.connect() as conn:
        return conn.execute(text("SELECT ST_X(position), ST_Y(position), position_at FROM responders WHERE id = :i"),
                            {"i": responder_id}).one()


def test_responder_crud(client, admin_headers, grids):
    grid = grids["code"].iloc[3]
    created = client.post("/responders", headers=admin_headers, json={
        "name": TAG + "crew", "role": "department_crew", "department": "CGZF", "home_grid_code": grid})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["geometry"] is None and body["properties"]["stale"] is True
    assert body["properties"]["status"] == "available" and body["properties"]["home_grid_code"] == grid
    changed = client.patch(f"/responders/{body['id']}", headers=admin_headers,
                           json={"status": "off_duty", "phone": "13900000000"}).json()["properties"]
    assert changed["status"] == "off_duty" and changed["phone"] == "13900000000" \
        and changed["role"] == "department_crew"
    bad = client.patch(f"/responders/{body['id']}", headers=admin_headers, json={"home_grid_code": "110102999999999"})
    assert bad.status_code == 400 and "No active grid" in bad.json()["error"]["message"]
    listed = client.get("/responders", params={"role": "department_crew", "area": grid}, headers=admin_headers).json()
    assert body["id"] in [f["id"] for f in listed["features"]]
    assert client.delete(f"/responders/{body['id']}", headers=admin_headers).status_code == 204
    assert client.get(f"/responders/{body['id']}", headers=admin_headers).status_code == 404
    worker = int(grids["worker_id"].iloc[3])  # works a grid: deleting would erase history
    refused = client.delete(f"/responders/{worker}", headers=admin_headers)
    assert refused.status_code == 409 and "off_duty" in refused.json()["error"]["message"]


@pytest.fixture(scope="module")
def pingers(client, admin_headers, grids):
    return [client.post("/responders", headers=admin_headers, json={
        "name": TAG + f"p-{i}", "role": "patrol", "home_grid_code": grids["code"].iloc[10]}).json()["id"]
        for i in range(3)]


def test_ping_ingest_keeps_the_newest_position_and_the_whole_track(client, admin_headers, engine, pingers):
    from geo.crs import wgs84_to_bd09

    a, b, c = pingers
    now = datetime.now(UTC)

    def at(minutes):
        return (now - timedelta(minutes=minutes)).isoformat()

    pings = [{"responder_id": a, "lon": 116.36, "lat": 39.91, "at": at(10)},
             {"responder_id": a, "lon": 116.37, "lat": 39.92, "at": at(1), "accuracy_m": 5, "source": "gps"},
             {"responder_id": a, "lon": 116.35, "lat": 39.90, "at": at(5)},
             {"responder_id": b, "lon": 116.38, "lat": 39.93, "at": at(2)}]
    response = client.post("/responders/positions", headers=admin_headers, json=pings)
    assert response.status_code == 200, response.text
    assert response.json() == {"received": 4, "written": 4, "positions_updated": 2, "responders": 2}
    x, y, when = _last(engine, a)
    assert (x, y) == pytest.approx((116.37, 39.92)) \
        and abs((when - (now - timedelta(minutes=1))).total_seconds()) < 1e-3
    # An older ping (wrapped form, BD-09) goes to the track but does not move the responder back.
    bx, by = wgs84_to_bd09(116.30, 39.95)
    old = client.post("/responders/positions", headers=admin_headers,
                      json={"crs": "BD-09", "pings": [{"responder_id": a, "lon": bx, "lat": by, "at": at(30)},
                                                      {"responder_id": c, "lon": bx, "lat": by}]}).json()
    assert old == {"received": 2, "written": 2, "positions_updated": 1, "responders": 2}
    assert _last(engine, a)[:2] == pytest.approx((116.37, 39.92))
    cx, cy, _ = _last(engine, c)
    assert GEOD.inv(cx, cy, 116.30, 39.95)[2] < 0.5
    assert _track(engine, [a, b, c]) == 6
    # The single-ping endpoint: GCJ-02, newer, so it moves.
    from geo.crs import wgs84_to_gcj02

    gx, gy = wgs84_to_gcj02(116.40, 39.91)
    one = client.post(f"/responders/{b}/position", headers=admin_headers, json={"lon": gx, "lat": gy, "crs": "GCJ-02"})
    assert one.status_code == 200 and one.headers["X-Position-Updated"] == "true"
    lon, lat = one.json()["geometry"]["coordinates"]
    assert GEOD.inv(lon, lat, 116.40, 39.91)[2] < 0.5 and one.json()["properties"]["stale"] is False


def test_unknown_responders_reject_the_whole_batch(client, admin_headers, engine, pingers):
    a = pingers[0]
    before_track, before_last = _track(engine, [a]), _last(engine, a)
    response = client.post("/responders/positions", headers=admin_headers, json=[
        {"responder_id": a, "lon": 116.39, "lat": 39.90},
        {"responder_id": 987654321, "lon": 116.39, "lat": 39.90},
        {"responder_id": 987654322, "lon": 116.39, "lat": 39.90}])
    assert response.status_code == 404
    assert "987654321, 987654322" in response.json()["error"]["message"]
    assert "Nothing was written" in response.json()["error"]["message"]
    assert _track(engine, [a]) == before_track and _last(engine, a) == before_last


def test_future_pings_are_rejected_with_the_clock_skew(client, admin_headers, engine, pingers):
    a = pingers[0]
    future = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
    response = client.post(f"/responders/{a}/position", headers=admin_headers,
                           json={"lon": 116.39, "lat": 39.90, "at": future})
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "in the future" in message and "clock skew" in message
    soon = (datetime.now(UTC) + timedelta(seconds=30)).isoformat()
    assert client.post(f"/responders/{a}/position", headers=admin_headers,
                       json={"lon": 116.39, "lat": 39.90, "at": soon}).status_code == 200


def test_too_many_pings_get_413(client, admin_headers, pingers):
    pings = [{"responder_id": pingers[0], "lon": 116.39, "lat": 39.90}] * 10_001
    response = client.post("/responders/positions", headers=admin_headers, json=pings)
    assert response.status_code == 413 and "at most 10,000" in response.json()["error"]["message"]


@pytest.fixture(scope="module")
def dispatcher(engine, demo):
    return {"Authorization": f"Bearer {make_token(engine, 'dispatcher', '110102')}"}


def _incident(client, headers, point):
    response = client.post("/incidents", headers=headers, json={"category": "0101", "lon": point.x, "lat": point.y})
    assert response.status_code == 201, response.text
    return response.json()


def test_dispatch_sends_the_nearest_available_responder(client, dispatcher, grids):
    point = grids.geometry.iloc[200].representative_point()
    incident = _incident(client, dispatcher, point)
    assert incident["properties"]["status"] == "reported"
    expected = _nearest(client, dispatcher, lon=point.x, lat=point.y, k=1)["features"][0]
    response = client.post(f"/incidents/{incident['id']}/dispatch", headers=dispatcher)
    assert response.status_code == 200, response.text
    props = response.json()["properties"]
    assert props["status"] == "dispatched" and props["assignee_id"] == expected["id"]
    assert [(e["action"], e["from"], e["to"]) for e in props["events"]][-2:] == [
        ("file", "reported", "filed"), ("dispatch", "filed", "dispatched")]
    assert props["events"][-1]["data"]["assignee_id"] == expected["id"]
    responder = client.get(f"/responders/{expected['id']}", headers=dispatcher).json()
    assert responder["properties"]["status"] == "busy"
    again = _nearest(client, dispatcher, lon=point.x, lat=point.y, k=5)
    assert expected["id"] not in [f["id"] for f in again["features"]]


def test_dispatching_a_busy_responder_is_refused_and_changes_nothing(client, dispatcher, grids, engine):
    point = grids.geometry.iloc[300].representative_point()
    first, second = _incident(client, dispatcher, point), _incident(client, dispatcher, point)
    chosen = _nearest(client, dispatcher, lon=point.x, lat=point.y, k=1)["features"][0]["id"]
    ok = client.post(f"/incidents/{first['id']}/dispatch", headers=dispatcher, json={"responder_id": chosen})
    assert ok.status_code == 200 and ok.json()["properties"]["assignee_id"] == chosen
    refused = client.post(f"/incidents/{second['id']}/dispatch", headers=dispatcher, json={"responder_id": chosen})
    assert refused.status_code == 409
    assert f"Responder {chosen}" in refused.json()["error"]["message"] and "busy" in refused.json()["error"]["message"]
    after = client.get(f"/incidents/{second['id']}", headers=dispatcher).json()["properties"]
    assert after["status"] == "reported" and [e["action"] for e in after["events"]] == ["report"]
    # An already dispatched incident cannot be dispatched again, and the responder chosen stays available.
    spare = _nearest(client, dispatcher, lon=point.x, lat=point.y, k=1)["features"][0]["id"]
    twice = client.post(f"/incidents/{first['id']}/dispatch", headers=dispatcher, json={"responder_id": spare})
    assert twice.status_code == 409 and "'dispatched'" in twice.json()["error"]["message"]
    assert client.get(f"/responders/{spare}", headers=dispatcher).json()["properties"]["status"] == "available"
