"""The grid map renders its own layers offline in headless Chromium."""

import re
from pathlib import Path

from sqlalchemy import text

from tests import browser
from tests.conftest import make_token

SHOTS = Path(__file__).resolve().parent.parent / ".wangge" / "screenshots"


def _grid_count(engine, prefix: str) -> int:
    with engine.connect() as conn:
        return conn.execute(text(
            "SELECT count(*) FROM areas WHERE level = 'grid' AND code LIKE :p "
            "AND version_id = (SELECT id FROM grid_versions WHERE status = 'active')"), {"p": prefix + "%"}).scalar()


def test_street_map_draws_every_grid_outline_legend_and_layers(live_server, engine):
    token = make_token(engine, "supervisor", "110102001")
    url = f"{live_server}/maps/grids?area=110102001"
    html = browser.dom(url, token)
    grids = _grid_count(engine, "110102001")
    paths = len(re.findall(r'<path[^>]*class="leaflet-interactive"', html))
    # one path per grid + each community + the street outline (no district: it is outside the scope)
    assert paths >= grids + 1
    assert "Households per grid" in html  # the colormap legend, drawn by d3
    for label in ("grids", "streets", "communities"):
        assert label in html  # layer control entries
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.screenshot(url, str(SHOTS / "grids_110102001.png"), token)
    assert (SHOTS / "grids_110102001.png").stat().st_size > 20_000


def test_map_popups_carry_code_households_and_worker(client, admin_headers):
    html = client.get("/maps/grids", params={"area": "110102001001"}, headers=admin_headers).text
    assert '"households"' in html and '"worker"' in html and "110102001001001" in html
    assert "cdn" not in html.lower()  # nothing but basemap tiles needs the network


def test_map_outside_scope_is_404(client, engine):
    token = make_token(engine, "supervisor", "110102001")
    reply = client.get("/maps/grids", params={"area": "110102003"},
                       headers={"Authorization": f"Bearer {token}"})
    assert reply.status_code == 404


def test_pages_are_not_cached_and_send_no_referrer_elsewhere(client, admin_headers):
    page = client.get("/maps/grids", params={"area": "110102001"}, headers=admin_headers)
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store" and page.headers["referrer-policy"] == "same-origin"
    refused = client.get("/maps/grids", params={"area": "110102001"})
    assert refused.status_code == 401 and refused.headers["cache-control"] == "no-store"
    assert "cache-control" not in client.get("/health").headers
