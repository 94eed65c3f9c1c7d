"""The dispatch and coverage maps render in headless Chromium, stay light, respect the scope and check params."""

import re
import time
import urllib.request
from pathlib import Path

import pytest
from pyproj import Geod
from sqlalchemy import text

from tests import browser
from tests.conftest import make_token

SHOTS = Path(__file__).resolve().parent.parent / ".wangge" / "screenshots"
TAG = "dcm-"  # responders this module inserts; removed at the end
GEOD = Geod(ellps="WGS84")
NO_TILES = "--host-resolver-rules=MAP tile.openstreetmap.org ~NOTFOUND"
MAX_PAGE_BYTES = 3_000_000


def _offset(lon, lat, azimuth, metres):
    x, y, _ = GEOD.fwd(lon, lat, azimuth, metres)
    return float(x), float(y)


@pytest.fixture(scope="module")
def point(engine, demo):
    """A point inside grid 110102001001001 with two fresh responders and one nearer stale one around it."""
    with engine.begin() as conn:
        lon, lat = conn.execute(text(
            "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) AS p FROM areas WHERE code = "
            "'110102001001001' AND version_id = (SELECT id FROM grid_versions WHERE status = 'active')) x")).one()
        rows = [("fresh-a", 90, 120, 60), ("fresh-b", 250, 260, 120), ("stale", 30, 40, 7200)]
        for name, azimuth, metres, age in rows:
            x, y = _offset(lon, lat, azimuth, metres)
            conn.execute(text(
                "INSERT INTO responders (name, role, status, home_grid_code, position, position_at) VALUES "
                "(:n, 'patrol', 'available', '110102001001001', ST_SetSRID(ST_MakePoint(:x, :y), 4326), "
                "now() - make_interval(secs => :age))"), {"n": TAG + name, "x": x, "y": y, "age": age})
    yield lon, lat
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM responders WHERE name LIKE :t"), {"t": TAG + "%"})


def _timed_dom(url: str, token: str) -> tuple[str, float]:
    started = time.perf_counter()
    dom = browser.dom(url, token)
    return dom, time.perf_counter() - started


def _shot(url: str, name: str, token: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / name
    browser.screenshot(url, str(path), token)
    return path


def _get(url: str, token: str) -> tuple[int, float]:
    started = time.perf_counter()
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"}),
                                timeout=120) as reply:
        return len(reply.read()), time.perf_counter() - started


def test_dispatch_page_draws_point_grid_responders_lines_and_greys_stale_ones(live_server, engine, point):
    lon, lat = point
    token = make_token(engine, "dispatcher", "110102001")
    url = f"{live_server}/maps/dispatch?lon={lon}&lat={lat}&k=5"
    size, fetch_s = _get(url, token)
    dom, seconds = _timed_dom(url, token)
    print(f"\n/maps/dispatch: {size / 1e3:.0f} kB, HTTP {fetch_s:.2f} s, Chromium run {seconds:.2f} s")
    assert size < 200_000
    fresh = re.findall(r'<path[^>]*class="[^"]*wg-responder wg-fresh', dom)
    stale = re.findall(r'<path[^>]*class="[^"]*wg-responder wg-stale', dom)
    assert len(fresh) == 5 and len(stale) == 1  # k fresh ones ranked; the nearer stale one shown, greyed
    assert re.search(r'<path[^>]*stroke="#b0b0b0"|fill="#b0b0b0"', dom)  # grey fill of the stale marker
    assert len(re.findall(r'<path[^>]*class="[^"]*wg-line', dom)) == 6  # one line per responder to the point
    assert re.search(r'<path[^>]*class="[^"]*wg-grid', dom)  # the grid outline
    assert 'class="wg-target"' in dom  # the point
    assert re.search(r'class="[^"]*wg-eta[^"]*"[^>]*>1 · \d+ m · ', dom)  # distance · ETA labels
    assert 'tr class="wg-stale"' in dom and TAG + "stale" in dom  # the side table greys it too
    assert "所在网格" in dom and "110102001001001" in dom
    assert 'class="wg-panel wg-legend leaflet-control"' in dom
    for entry in ("网格 grid", "处置力量 responders (5)", "连线 distance · ETA", "定位过期 stale (1)",
                  "事发地点 point"):
        assert entry in dom  # layer control entries
    shot = _shot(url, "dispatch.png", token)
    assert shot.stat().st_size > 20_000


def test_dispatch_page_outside_every_grid_names_the_nearest(client, admin_headers, boundary):
    minx, miny, maxx, maxy = boundary.bounds
    reply = client.get("/maps/dispatch", params={"lon": minx - 0.01, "lat": (miny + maxy) / 2},
                       headers=admin_headers)
    assert reply.status_code == 200, reply.text
    assert "不在任何网格内" in reply.text and "最近网格" in reply.text
    assert len(re.findall(r'"rank":\d', reply.text)) >= 1  # responders still listed
    assert "cdn" not in reply.text.lower()


def test_dispatch_page_network_mode_draws_the_road_route(client, admin_headers, point, monkeypatch):
    from geo.dispatch import nearest as dispatch

    lon, lat = point

    def fake_etas(conn, x, y, candidates, **kwargs):
        out = []
        for n, (rid, clon, clat) in enumerate(candidates):
            out.append({"responder_id": rid, "eta_s": 60.0 + n, "distance_m": 300.0 + n,
                        "route": {"type": "LineString", "coordinates": [[clon, clat], [x, clat], [x, y]]}
                        if n == 0 else None, "reason": None})
        return out

    monkeypatch.setattr(dispatch, "_network_etas", lambda: fake_etas)
    reply = client.get("/maps/dispatch", params={"lon": lon, "lat": lat, "mode": "network", "k": 3},
                       headers=admin_headers)
    assert reply.status_code == 200, reply.text
    assert '"route":{"type":"LineString"' in reply.text and "最快道路路线 fastest road route" in reply.text
    assert "道路路线 road route" in reply.text and "道路 network" in reply.text


def test_coverage_street_page_renders_every_layer_legend_and_chart(live_server, engine, point):
    token = make_token(engine, "supervisor", "110102001")
    url = f"{live_server}/maps/coverage?area=110102001&distance=500"
    size, fetch_s = _get(url, token)
    dom, seconds = _timed_dom(url, token)
    print(f"\n/maps/coverage?area=110102001: {size / 1e3:.0f} kB, HTTP {fetch_s:.2f} s, Chromium run {seconds:.2f} s")
    assert size < 1_000_000
    assert re.search(r'<path[^>]*class="[^"]*wg-reach', dom)  # dissolved reach discs
    assert re.search(r'<path[^>]*class="[^"]*wg-outline', dom)
    assert re.search(r'<canvas[^>]*class="leaflet-zoom-animated"', dom)  # buildings, on one canvas
    assert re.search(r'<path[^>]*class="[^"]*wg-today', dom)  # today's positions
    assert 'class="wg-post leaflet-marker-icon' in dom or 'wg-post-icon' in dom  # proposed posts
    assert '<svg class="wg-curve"' in dom and "<polyline" in dom  # the coverage curve
    assert 'class="wg-panel wg-legend leaflet-control"' in dom and "图例 Legend" in dom
    for entry in ("边界 outline", "覆盖范围 reach 500 m", "已覆盖 covered", "未覆盖 uncovered", "今日位置 today",
                  "建议站点 proposed posts"):
        assert entry in dom  # layer control entries
    assert "户数覆盖率" in dom and "建议布点 proposed posts" in dom and "热点 hotspots" in dom
    shot = _shot(url, "coverage_110102001.png", token)
    assert shot.stat().st_size > 20_000


def test_coverage_district_page_stays_light(live_server, engine, demo):
    token = make_token(engine, "supervisor", "110102")
    size, seconds = _get(f"{live_server}/maps/coverage?area=110102&distance=500", token)
    print(f"\n/maps/coverage?area=110102: {size / 1e6:.2f} MB in {seconds:.2f} s")
    assert size < MAX_PAGE_BYTES


def test_maps_outside_scope_are_404(client, engine, point):
    token = make_token(engine, "supervisor", "110102001")
    reply = client.get("/maps/coverage", params={"area": "110102003"},
                       headers={"Authorization": f"Bearer {token}"})
    assert reply.status_code == 404
    with engine.connect() as conn:
        lon, lat = conn.execute(text(
            "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) AS p FROM areas WHERE level = 'grid' "
            "AND code LIKE '110102003%' AND version_id = (SELECT id FROM grid_versions WHERE status = 'active') "
            "ORDER BY code LIMIT 1) x")).one()
    reply = client.get("/maps/dispatch", params={"lon": lon, "lat": lat},
                       headers={"Authorization": f"Bearer {token}"})
    assert reply.status_code == 404 and "110102003" not in reply.text  # names nothing outside the caller's area


@pytest.mark.parametrize("path,params,status", [
    ("/maps/dispatch", {"lon": 116.36}, 422),  # no lat
    ("/maps/dispatch", {"lon": 116.36, "lat": 139.9}, 422),
    ("/maps/dispatch", {"lon": 116.36, "lat": 39.9, "mode": "fly"}, 422),
    ("/maps/dispatch", {"lon": 116.36, "lat": 39.9, "k": 0}, 422),
    ("/maps/dispatch", {"lon": 116.36, "lat": 39.9, "role": "wizard"}, 400),
    ("/maps/dispatch", {"lon": 116.36, "lat": 39.9, "crs": "EPSG:9999"}, 400),
    ("/maps/coverage", {"area": "110102001", "distance": 0}, 422),
    ("/maps/coverage", {"area": "110102001", "distance": 99999}, 422),
    ("/maps/coverage", {"area": "abc"}, 422),
    ("/maps/coverage", {"area": "110102001", "k": 0}, 422),
    ("/maps/coverage", {"area": "110102999"}, 404),
])
def test_bad_parameters_are_4xx(client, admin_headers, path, params, status):
    assert client.get(path, params=params, headers=admin_headers).status_code == status
