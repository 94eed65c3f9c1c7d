"""The lean path (api/fast.py) answers plain GET /grids/at byte for byte as its route, and leaves the rest to it."""

import numpy as np
import shapely
from sqlalchemy import text


def _lean(client, headers: dict, path: str, query: str) -> bytes | None:
    """What api/fast.py answers for GET path?query, run in the app's loop; None: left to the FastAPI route."""
    from api import fast

    scope = {"type": "http", "method": "GET", "path": path, "query_string": query.encode(),
             "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
             "app": client.app}
    return client.portal.call(fast.LEAN[path], scope)


def test_grids_at_on_the_lean_path_is_the_route_byte_for_byte(client, admin_headers, grids, boundary, engine):
    with engine.connect() as conn:
        active = conn.execute(text("SELECT id FROM grid_versions WHERE status = 'active'")).scalar_one()
    rng = np.random.default_rng(21)
    minx, miny, maxx, maxy = boundary.bounds
    inside = outside = 0
    for lon, lat in zip(rng.uniform(minx - 0.01, maxx + 0.01, 40), rng.uniform(miny - 0.01, maxy + 0.01, 40)):
        covered = bool(grids.geometry.covers(shapely.Point(lon, lat)).any())
        for extra in ("", f"&version={active}", "&crs=EPSG:4326"):
            query = f"lon={float(lon)!r}&lat={float(lat)!r}{extra}"
            lean = _lean(client, admin_headers, "/grids/at", query)
            routed = client.get(f"/grids/at?{query}&via=route", headers=admin_headers)  # unknown: the route answers
            served = client.get(f"/grids/at?{query}", headers=admin_headers)
            assert _lean(client, admin_headers, "/grids/at", query + "&via=route") is None
            if covered:
                assert lean is not None and routed.status_code == served.status_code == 200
                assert lean == routed.content == served.content
                assert served.headers["content-type"] == routed.headers["content-type"] == "application/geo+json"
            else:  # outside every grid: the route's 404 with the nearest grid
                assert lean is None and routed.status_code == served.status_code == 404
                assert served.json() == routed.json() and served.json()["error"]["code"] == "outside_every_grid"
        inside, outside = inside + covered, outside + (not covered)
    assert inside > 10 and outside > 3


def test_grids_at_errors_and_unusual_requests_go_to_the_route(client, admin_headers):
    cases = [
        ("lat=39.9", admin_headers, 422, "lon"),
        ("lon=116.38&lat=-91", admin_headers, 422, "lat"),
        ("lon=116.38&lat=39.9&version=v1", admin_headers, 422, "version"),
        ("lon=116.38&lat=39.9", {"Authorization": "Bearer wg_not-a-token"}, 401, "Invalid, expired or revoked"),
        ("lon=116.38&lat=39.9", {}, 401, "Missing bearer token"),
        ("lon=116.38&lat=39.9&crs=EPSG:9999", admin_headers, 400, "EPSG:9999"),
    ]
    for query, headers, status, message in cases:
        assert _lean(client, headers, "/grids/at", query) is None, query
        response = client.get(f"/grids/at?{query}", headers=headers)
        assert response.status_code == status, (query, response.text)
        assert message in response.json()["error"]["message"], (query, response.text)
    for query in ("lon=116.38&lat=39.9&crs=GCJ-02", "lon=116.38&lat=39.9&lat=39.91", "lon=116.38&lat=39.9&version="):
        assert _lean(client, admin_headers, "/grids/at", query) is None, query
    assert "/grids/at" in client.get("/openapi.json").json()["paths"]
