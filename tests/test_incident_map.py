"""The supervisor map: light with the full demo year, renders offline in Chromium, filters are checked against SQL."""

import json
import re
import time
from datetime import UTC
from pathlib import Path

from sqlalchemy import text

from tests import browser
from tests.conftest import FIRST_DAY, LAST_DAY, make_token

SHOTS = Path(__file__).resolve().parent.parent / ".wangge" / "screenshots"
YEAR = {"from": FIRST_DAY.isoformat(), "to": LAST_DAY.isoformat()}  # the demo year's first and last local day
MAX_PAGE_BYTES = 3_000_000
# Basemap tiles cannot load here (no network) and the sandbox's DNS takes 1-5 s to say so; in the field
# they load alongside the page. Fail them at once so the timing measures the page itself.
NO_TILES = "--host-resolver-rules=MAP tile.openstreetmap.org ~NOTFOUND"


def _timed_dom(url: str, token: str) -> tuple[str, float, int]:
    """The DOM after scripts ran (signed in with `token`), the wall time of the whole Chromium run, and the
    page's own ready time."""
    started = time.perf_counter()
    dom = browser.dom(url, token)
    seconds = time.perf_counter() - started
    ready = re.search(r'data-wg-ready-ms="(\d+)"', dom)
    return dom, seconds, int(ready.group(1)) if ready else -1


def _heat(html: str) -> list:
    return json.loads(re.search(r"L\.heatLayer\(\s*(\[.*?\])\s*,\s*\{", html, re.S).group(1))


def _grid_features(html: str) -> list:
    for line in html.splitlines():
        found = re.search(r"geo_json_\w+_add\((\{.*\})\);\s*$", line)
        if found and '"m":' in found.group(1):
            return json.loads(found.group(1))["features"]
    raise AssertionError("no grid layer in the page")


def _overdue_rows(html: str) -> list:
    return json.loads(re.search(r"var data = (\[.*?\]);\s*$", html, re.M).group(1))


def _count(engine, sql: str, **params) -> int:
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def _active_grids(engine, prefix: str) -> int:
    return _count(engine, "SELECT count(*) FROM areas WHERE level = 'grid' AND code LIKE :p AND version_id = "
                          "(SELECT id FROM grid_versions WHERE status = 'active')", p=prefix + "%")


def test_district_page_with_the_full_year_is_light_and_renders_every_layer_in_chromium(live_server, engine):
    token = make_token(engine, "supervisor", "110102")
    url = f"{live_server}/maps/incidents?area=110102&status=all&from={YEAR['from']}&to={YEAR['to']}"
    import urllib.request

    with urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})) as reply:
        size = len(reply.read())
    dom, seconds, ready = _timed_dom(url, token)
    print(f"\n/maps/incidents?area=110102, full demo year, all statuses: {size / 1e6:.2f} MB, "
          f"Chromium run {seconds:.2f} s (start-up, HTTP and rendering), layers ready at {ready} ms")
    assert size < MAX_PAGE_BYTES
    assert seconds < 10, f"rendering took {seconds:.1f} s (target 3 s)"  # generous: CI machines are noisy
    assert 0 < ready < 10_000
    paths = len(re.findall(r'<path[^>]*class="leaflet-interactive"', dom))
    assert paths >= _active_grids(engine, "110102")  # one path per grid
    assert "marker-cluster-overdue" in dom  # overdue red lights, clustered
    assert re.search(r'<canvas[^>]*class="leaflet-heatmap-layer', dom)
    assert "每网格事件数 incidents / grid" in dom and 'class="wg-panel wg-legend leaflet-control"' in dom
    assert dom.count('<svg class="wg-chart"') == 2 and "按时处置率" in dom and "每周上报" in dom
    for field in ('name="category"', 'name="status"', 'name="from"', 'name="to"'):
        assert field in dom
    assert "热力 heat" in dom and "超期事件 overdue" in dom  # layer control entries
    # drill down
    assert re.search(rf'href="/maps/incidents\?area=110102001&amp;status=all&amp;from={YEAR["from"]}', dom)


def test_default_view_screenshot_and_street_page(live_server, engine):
    token = make_token(engine, "supervisor", "110102")
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.screenshot(f"{live_server}/maps/incidents?area=110102", str(SHOTS / "incidents_110102.png"), token)
    assert (SHOTS / "incidents_110102.png").stat().st_size > 50_000
    street = make_token(engine, "supervisor", "110102001")
    dom, seconds, ready = _timed_dom(f"{live_server}/maps/incidents", street)  # default: own area
    print(f"\n/maps/incidents?area=110102001 (default view): Chromium run {seconds:.2f} s, layers ready at {ready} ms")
    assert "110102001" in dom and 'class="wg-panel wg-head leaflet-control"' in dom
    assert len(re.findall(r'<path[^>]*class="leaflet-interactive"', dom)) >= _active_grids(engine, "110102001")


def test_heat_is_aggregated_and_sums_to_the_sql_count(client, admin_headers, engine):
    html = client.get("/maps/incidents", params={"area": "110102", "status": "all", **YEAR},
                      headers=admin_headers).text
    cells = _heat(html)
    total = _count(engine, "SELECT count(*) FROM incidents WHERE grid_code LIKE '110102%' AND reported_at >= "
                           "CAST(:f AS date)::timestamp AT TIME ZONE 'Asia/Shanghai' AND reported_at < "
                           "(CAST(:t AS date) + 1)::timestamp AT TIME ZONE 'Asia/Shanghai'",
                   f=YEAR["from"], t=YEAR["to"])
    assert total > 100_000
    assert sum(c[2] for c in cells) == total
    assert len(cells) < total / 10  # cells, not incidents
    assert html.count('"type": "Feature"') <= _active_grids(engine, "110102") + 20  # grids + outlines only
    assert len(_overdue_rows(html)) <= 1000


def test_category_filter_reduces_every_count_to_what_sql_says(client, admin_headers, engine):
    params = {"area": "110102001", "status": "all", **YEAR}
    everything = client.get("/maps/incidents", params=params, headers=admin_headers).text
    garbage = client.get("/maps/incidents", params={**params, "category": "0101"}, headers=admin_headers).text
    expected = _count(engine, "SELECT count(*) FROM incidents WHERE grid_code LIKE '110102001%' AND category_code = "
                              "'0101' AND reported_at >= CAST(:f AS date)::timestamp AT TIME ZONE 'Asia/Shanghai' "
                              "AND reported_at < (CAST(:t AS date) + 1)::timestamp AT TIME ZONE 'Asia/Shanghai'",
                      f=YEAR["from"], t=YEAR["to"])
    heat_all, heat_0101 = sum(c[2] for c in _heat(everything)), sum(c[2] for c in _heat(garbage))
    grids_all = sum(f["properties"]["m"] for f in _grid_features(everything))
    grids_0101 = sum(f["properties"]["m"] for f in _grid_features(garbage))
    assert 0 < heat_0101 == expected < heat_all
    assert 0 < grids_0101 <= expected and grids_0101 < grids_all
    assert all(row[3] == "0101" for row in _overdue_rows(garbage))
    assert f'"keep":"&category=0101&status=all&from={YEAR["from"]}&to={YEAR["to"]}"' in garbage  # links keep filters


def test_overdue_markers_carry_history_and_a_json_link(client, admin_headers, engine):
    html = client.get("/maps/incidents", params={"area": "110102"}, headers=admin_headers).text
    rows = _overdue_rows(html)
    overdue = _count(engine, "SELECT count(*) FROM incidents WHERE grid_code LIKE '110102%' AND status IN "
                             "('unassigned', 'reported', 'filed', 'dispatched', 'in_progress', 'returned') "
                             "AND due_at < now()")
    assert len(rows) == min(overdue, 1000) > 0
    first = rows[0]
    assert first[13] and first[13][0][1] == "report"  # status history from incident_events, oldest first
    assert "WG.json + r[2]" in html and '"json":"/incidents/"' in html


def test_unknown_category_or_status_and_bad_period_are_rejected(client, admin_headers):
    reply = client.get("/maps/incidents", params={"area": "110102", "category": "9999"}, headers=admin_headers)
    assert reply.status_code == 400 and "Unknown category '9999'" in reply.json()["error"]["message"]
    reply = client.get("/maps/incidents", params={"area": "110102", "status": "lost"}, headers=admin_headers)
    assert reply.status_code == 400 and "Unknown status 'lost'" in reply.json()["error"]["message"]
    reply = client.get("/maps/incidents", params={"from": "2026-11-10", "to": "2026-11-01"}, headers=admin_headers)
    assert reply.status_code == 400 and "swap 'from' and 'to'" in reply.json()["error"]["message"]
    assert client.get("/maps/incidents", params={"from": "yesterday"}, headers=admin_headers).status_code == 422


def test_area_outside_scope_is_404(client, engine):
    token = make_token(engine, "supervisor", "110102001")
    reply = client.get("/maps/incidents", params={"area": "110102003"},
                       headers={"Authorization": f"Bearer {token}"})
    assert reply.status_code == 404 and "in your area" in reply.json()["error"]["message"]


def test_nothing_but_basemap_tiles_comes_from_the_network(client, admin_headers):
    html = client.get("/maps/incidents", params={"area": "110102001"}, headers=admin_headers).text
    urls = set(re.findall(r"https?://[^\s\"'<>)\\]+", html))
    assert urls <= {"https://tile.openstreetmap.org/{z}/{x}/{y}.png", "https://www.openstreetmap.org/copyright"}
    local = set(re.findall(r'(?:src|href)="(/static/[^"]+)"', html))
    assert any("markercluster" in path for path in local) and any("leaflet-heat" in path for path in local)
    for path in local:
        assert client.get(path).status_code == 200, path


def test_builder_is_pure_and_copes_with_an_area_without_incidents():
    from datetime import date, datetime

    from geo.incidents.incident_map import MapData, parse_filters
    from maps import incidents, offline

    square = '{"type":"Polygon","coordinates":[[[116.3,39.9],[116.301,39.9],[116.301,39.901],[116.3,39.9]]]}'
    data = MapData(
        area={"code": "110102001001001", "name": "测试网格", "level": "grid", "chain": None},
        filters=parse_filters(["0101"], None, None, date(2026, 1, 1), date(2026, 1, 31)),
        now=datetime(2026, 2, 1, tzinfo=UTC), categories=[("0101", "暴露垃圾", "市政市容")],
        grids=[("110102001001001", "测试网格", "residential", None, 0, 0, square)], children=[], outline=square,
        heat=[], heat_cell_deg=0.0001, overdue=[], overdue_total=0, weekly=[], monthly=[],
        summary={"matching": 0, "overdue": 0, "due": 0, "on_time": 0})
    html = offline.render(incidents.build(data))
    assert "<title>测试网格 事件监督" in html and 'class=\\"wg-chart\\"' in html
    assert '"token"' not in html and "access_token" not in html  # pages carry no token
