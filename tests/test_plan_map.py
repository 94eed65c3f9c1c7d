"""The planner map draws a draft's grids, findings, diff and buildings offline, and a line drawn on it splits a
grid through POST /plans/{id}/edits, after which the page redraws itself at the new revision."""

import json
import re
import shutil
import time
from pathlib import Path

import geopandas as gpd
import pytest
import shapely
from shapely.ops import split as shapely_split
from sqlalchemy import text

from geo.auth import Caller, create_user
from geo.planning import plans
from tests import browser
from tests.conftest import make_token

SHOTS = Path(__file__).resolve().parent.parent / ".wangge" / "screenshots"
COMMUNITY, STREET = "110102001001", "110102001"




def _bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def planner(engine, demo):
    return make_token(engine, "planner", STREET)


@pytest.fixture(scope="module")
def plan(engine, demo):
    """A draft of the session demo (the active version is untouched), discarded afterwards."""
    with engine.begin() as conn:
        caller = Caller(create_user(conn, "plan-map-tester", "planner", STREET), "plan-map-tester", "planner", STREET)
        plan_id = plans.create(conn, caller, "规划图测试 plan map test")["id"]
    yield plan_id
    with engine.begin() as conn:
        plans.discard(conn, caller, plan_id)


def _config(page: str) -> dict:
    return json.loads(re.search(r"var WG = (\{.*?\});\n", page).group(1))


def _grids(engine, plan_id: int, prefix: str) -> gpd.GeoDataFrame:
    with engine.connect() as conn:
        return gpd.read_postgis(text("SELECT code, households, geom FROM areas WHERE version_id = :v AND level = "
                                     "'grid' AND code LIKE :p ORDER BY code"), conn, geom_col="geom",
                                params={"v": plan_id, "p": prefix + "%"})


def _buildings_in(engine, code: str) -> int:
    """Buildings whose point-on-surface lies in the area, counted with shapely."""
    with engine.connect() as conn:
        area = gpd.read_postgis(text("SELECT geom FROM areas WHERE code = :c AND version_id IS NULL"), conn,
                                geom_col="geom", params={"c": code}).geometry.iloc[0]
        b = gpd.read_postgis(text("SELECT id, geom FROM buildings WHERE geom && ST_GeomFromText(:w, 4326)"), conn,
                             geom_col="geom", params={"w": shapely.box(*area.bounds).wkt})
    return int(shapely.covers(area, shapely.point_on_surface(b.geometry.values)).sum())


def _split_line(grids: gpd.GeoDataFrame, skip: str):
    """A grid and a straight line through its representative point that shapely cuts into exactly two parts."""
    for row in grids.itertuples():
        if row.code == skip:
            continue
        p = row.geom.representative_point()
        minx, miny, maxx, maxy = row.geom.bounds
        dx = max(p.x - minx, maxx - p.x) + 2e-4
        dy = max(p.y - miny, maxy - p.y) + 2e-4
        for line in (shapely.LineString([(p.x - dx, p.y), (p.x + dx, p.y)]),
                     shapely.LineString([(p.x, p.y - dy), (p.x, p.y + dy)])):
            parts = list(shapely_split(row.geom.geoms[0] if row.geom.geom_type == "MultiPolygon" else row.geom,
                                       line).geoms)
            if len(parts) == 2 and min(part.area for part in parts) > 0.2 * row.geom.area:
                return row.code, line, parts
    raise AssertionError("no grid in the community splits cleanly")


def test_page_is_small_offline_and_inlines_only_the_areas_buildings(client, engine, planner, plan):
    reply = client.get(f"/maps/plans/{plan}", params={"area": COMMUNITY}, headers=_bearer(planner))
    assert reply.status_code == 200, reply.text
    page = reply.text
    assert len(page) < 150_000  # grids, findings and the diff are fetched by the page, not inlined
    assert "cdn" not in page.lower()  # Leaflet.draw comes from /static too
    assert "/static/vendor/leaflet.draw/leaflet.draw.js" in page and "/static/plans.js" in page
    config = _config(page)
    assert config["plan"]["id"] == plan and config["plan"]["revision"] == 0
    assert config["area"]["code"] == COMMUNITY
    assert "token" not in config and config["csrf"] is None  # opened with a bearer header: no session
    assert len(config["buildings"]) == _buildings_in(engine, COMMUNITY)
    assert {c["code"] for c in config["choices"]} >= {STREET, COMMUNITY}
    for asset in ("/static/plans.js", "/static/vendor/leaflet.draw/leaflet.draw.js",
                  "/static/vendor/leaflet.draw/leaflet.draw.css", "/static/vendor/leaflet.draw/images/spritesheet.svg"):
        assert client.get(asset).status_code == 200, asset


def test_default_area_is_the_first_community_of_a_big_plan(client, planner, plan):
    config = _config(client.get(f"/maps/plans/{plan}", headers=_bearer(planner)).text)
    assert config["area"]["code"] == COMMUNITY  # the planner's street has more grids than fit one view


def test_supervisors_and_published_versions_get_a_read_only_map(client, engine, planner, plan):
    supervisor = make_token(engine, "supervisor", STREET)
    page = client.get(f"/maps/plans/{plan}", params={"area": COMMUNITY}, headers=_bearer(supervisor)).text
    assert "only planners edit" in _config(page)["readOnly"] and "leaflet.draw" not in page
    with engine.connect() as conn:
        active = conn.execute(text("SELECT id FROM grid_versions WHERE status = 'active'")).scalar()
    page = client.get(f"/maps/plans/{active}", params={"area": COMMUNITY}, headers=_bearer(planner)).text
    assert "not a draft" in _config(page)["readOnly"] and "leaflet.draw" not in page
    page = client.get(f"/maps/plans/{plan}", params={"area": COMMUNITY}, headers=_bearer(planner)).text
    assert _config(page)["readOnly"] is None and "leaflet.draw.js" in page


def test_a_district_view_leaves_out_its_buildings_and_says_why(client, admin_headers, plan):
    config = _config(client.get(f"/maps/plans/{plan}", params={"area": "110102"}, headers=admin_headers).text)
    assert config["buildings"] == [] and "pick a street or community" in config["buildingsNote"]
    assert len(config["children"]) == 15  # the street outlines


@pytest.mark.parametrize("params,role,area,status,message", [
    ({"area": "110102003001"}, "planner", STREET, 404, "in your area"),
    ({"area": COMMUNITY}, "dispatcher", STREET, 403, "planner"),
    ({"area": "110102001999"}, "planner", STREET, 404, "No district, street or community"),
    ({"area": "1101"}, "planner", STREET, 422, "area"),
])
def test_page_checks_scope_role_and_area(client, engine, plan, params, role, area, status, message):
    token = make_token(engine, role, area)
    reply = client.get(f"/maps/plans/{plan}", params=params, headers=_bearer(token))
    assert reply.status_code == status and message in reply.json()["error"]["message"]


def test_unknown_plan_is_404(client, planner, demo):
    reply = client.get("/maps/plans/999999", headers=_bearer(planner))
    assert reply.status_code == 404 and "No plan 999999" in reply.json()["error"]["message"]


def test_drawn_line_splits_a_grid_and_the_page_redraws(live_server, client, engine, planner, plan):
    headers = {"Authorization": f"Bearer {planner}"}
    before = _grids(engine, plan, COMMUNITY)
    # a planner's earlier edit: shrink one grid, which opens a gap around it (a red finding) and changes it
    # against the active version (a diff outline)
    shrunk = before.code.iloc[0]
    smaller = shapely.buffer(before.geom.iloc[0], -1.5e-4)
    reply = client.post(f"/plans/{plan}/edits", headers=headers, json={
        "op": "replace_geometry", "code": shrunk, "revision": 0, "geometry": shapely.geometry.mapping(smaller)})
    assert reply.status_code == 200, reply.text
    code, line, parts = _split_line(before, skip=shrunk)

    with browser.Chrome() as chrome:
        chrome.sign_in(live_server, planner)  # the session cookie; its CSRF value comes with the page
        chrome.send("Page.navigate", url=f"{live_server}/maps/plans/{plan}?area={COMMUNITY}")
        chrome.wait("document.documentElement.dataset.wgState === 'ready'")
        validation = client.get(f"/plans/{plan}/validation", headers=headers).json()
        here = [f for f in validation["features"] if f["properties"]["community"] == COMMUNITY
                or any(c.startswith(COMMUNITY) for c in f["properties"]["codes"])]
        gaps = [f for f in here if f["properties"]["kind"] == "gap"]
        dom = chrome.js("""({
            grids: document.querySelectorAll('path.wg-grid').length,
            findings: document.querySelectorAll('path.wg-finding').length,
            gapFills: Array.from(document.querySelectorAll('path.wg-finding-gap')).map(p => p.getAttribute('fill')),
            changed: document.querySelectorAll('path.wg-diff-changed').length,
            canvas: document.querySelectorAll('.leaflet-wgBuildings-pane canvas').length,
            buildings: WG.buildings.length,
            revision: document.querySelector('.wg-revision').textContent,
            panel: document.querySelector('.wg-findings').textContent,
            status: document.querySelector('.wg-status').textContent,
            layers: document.querySelector('.leaflet-control-layers').textContent,
            legend: document.querySelector('.wg-legend').textContent,
            toolbar: document.querySelectorAll('.leaflet-draw-draw-polyline, .leaflet-draw-draw-polygon').length})""")
        assert dom["grids"] == len(before) and dom["revision"] == "1"
        assert gaps and len(dom["gapFills"]) == len(gaps) and set(dom["gapFills"]) == {"#d7191c"}
        assert dom["findings"] >= len(here) and f"本区域 {len(here)}" in dom["panel"]
        assert "gap" in dom["panel"] and gaps[0]["properties"]["message"] in dom["panel"]
        assert dom["changed"] >= 1  # the shrunk grid against the active version
        assert dom["canvas"] == 1 and dom["buildings"] == _buildings_in(engine, COMMUNITY)
        assert ("✗ 未通过" in dom["status"]) == (not validation["summary"]["passes"])
        for entry in ("网格 grids", "diff vs active", "validation findings", "buildings"):
            assert entry in dom["layers"]
        assert "households vs target 300" in dom["legend"] and dom["toolbar"] == 2
        SHOTS.mkdir(parents=True, exist_ok=True)
        chrome.send("Input.dispatchMouseEvent", type="mouseMoved", x=5, y=940)  # no hover tooltip in the shot
        chrome.screenshot(SHOTS / "plan_map_before.png")

        # draw the line with real mouse events: the polyline tool, a click at each end, a click on the last
        # vertex to finish
        tool = chrome.js("(r => [r.x + r.width / 2, r.y + r.height / 2])("
                         "document.querySelector('.leaflet-draw-draw-polyline').getBoundingClientRect())")
        chrome.click(*tool)
        ends = [chrome.js(f"(p => [p.x, p.y])(wgPlan.map.latLngToContainerPoint([{y}, {x}]))")
                for x, y in line.coords]
        for x, y in [*ends, ends[-1]]:
            chrome.click(x, y)
            time.sleep(0.3)
        pending = chrome.wait("document.documentElement.dataset.wgPending")
        assert pending == f"split:{code}"  # the grid under the line's midpoint
        chrome.js("document.querySelector('.wg-confirm').click()")
        chrome.wait("document.documentElement.dataset.wgAction === 'ok' && "
                    "document.documentElement.dataset.wgState === 'ready'")
        after_validation = client.get(f"/plans/{plan}/validation", headers=headers).json()
        dom = chrome.js("""({
            grids: document.querySelectorAll('path.wg-grid').length,
            added: document.querySelectorAll('path.wg-diff-added').length,
            revision: document.querySelector('.wg-revision').textContent,
            refreshes: document.documentElement.dataset.wgRefreshes,
            panel: document.querySelector('.wg-findings').textContent,
            last: document.querySelector('.wg-last').textContent,
            sketch: Object.keys(wgPlan.map._layers).length})""")
        here = [f for f in after_validation["features"] if f["properties"]["community"] == COMMUNITY
                or any(c.startswith(COMMUNITY) for c in f["properties"]["codes"])]
        assert dom["grids"] == len(before) + 1 and dom["revision"] == "2" and dom["refreshes"] == "2"
        assert dom["added"] >= 1 and f"本区域 {len(here)}" in dom["panel"]
        assert code in dom["last"] and "revision 2" in dom["last"]
        chrome.send("Input.dispatchMouseEvent", type="mouseMoved", x=5, y=940)
        chrome.screenshot(SHOTS / "plan_map.png")
        shutil.copy(SHOTS / "plan_map.png", "/tmp/plan_map.png")

        # an edit based on an old revision (someone else edited meanwhile) is refused; the page says reload
        with engine.begin() as conn:
            conn.execute(text("UPDATE grid_versions SET revision = revision + 1 WHERE id = :id"), {"id": plan})
        chrome.js(f"""wgPlan.select('{code}');
            wgPlan.map.fire('draw:created', {{layerType: 'polygon',
                layer: L.polygon({json.dumps([[y, x] for x, y in parts[0].exterior.coords])})}}); null""")
        chrome.js("document.querySelector('.wg-confirm').click()")
        chrome.wait("document.documentElement.dataset.wgAction === 'error'")
        last = chrome.js("document.querySelector('.wg-last').textContent")
        assert "revision 3" in last and "based on revision 2" in last and "reload" in last

    after = _grids(engine, plan, COMMUNITY).set_index("code")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT revision FROM grid_versions WHERE id = :id"), {"id": plan}).scalar() == 3
    new = sorted(set(after.index) - set(before.code))
    assert len(after) == len(before) + 1 and len(new) == 1
    big, small = sorted(parts, key=lambda p: -p.area)
    # the larger part keeps the code, the smaller one is the new grid (the line was drawn on screen, so
    # its ends are off by up to a pixel: compare by overlap)
    for geom, part in ((after.at[code, "geom"], big), (after.at[new[0], "geom"], small)):
        assert geom.intersection(part).area / geom.union(part).area > 0.97
