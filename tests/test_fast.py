"""The lean path (api/fast.py) answers plain GET /grids/at byte for byte as its route, and leaves the rest to it."""

import numpy as np
import shapely
from sqlalchemy import text

from tests.conftest import lean


def _lean(client, headers: dict, path: str, query: str) -> bytes | None:
    """The lean path's body for a 200, else None."""
    response = lean(client, headers, path, query)
    return response.body if response is not None and response.status_code == 200 else None


def test_grids_at_on_the_lean_path_is_the_route_byte_for_byte(client, admin_headers, grids, boundary, engine):
    with engine.connect() as conn:
        active = conn.execute(text("SELECT id FROM grid_versions WHERE status = 'active'")).scalar_one()
    rng = np.random.default_rng(21)
    minx, miny, maxx, maxy = boundary.bounds
    inside = outside = 0
    for lon, lat in zip(rng.uniform(minx - 0.01, maxx + 0.01, 40), rng.uniform(miny - 0.01, maxy + 0.01, 40),
                        strict=True):
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


def test_grids_at_errors_are_the_routes_byte_for_byte(client, admin_headers):
    cases = [
        ("lat=39.9", admin_headers, 422, "lon"),
        ("lon=116.38&lat=-91", admin_headers, 422, "lat"),
        ("lon=116.38&lat=39.9&version=v1", admin_headers, 422, "version"),
        ("lon=116.38&lat=39.9", {"Authorization": "Bearer wg_not-a-token"}, 401, "Invalid, expired or revoked"),
        ("lon=116.38&lat=39.9", {}, 401, "Missing bearer token"),
        ("lon=116.38&lat=39.9&crs=EPSG:9999", admin_headers, 400, "EPSG:9999"),
        ("lon=100.0&lat=20.0", admin_headers, 404, "outside every active grid"),
    ]
    for query, headers, status, message in cases:
        answered = lean(client, headers, "/grids/at", query)
        routed = client.get(f"/grids/at?{query}&via=route", headers=headers)  # unknown parameter: the route
        assert routed.status_code == status, (query, routed.text)
        assert message in routed.json()["error"]["message"], (query, routed.text)
        assert answered is not None and answered.status_code == status, query
        assert answered.body == routed.content, query
        assert answered.headers.get("www-authenticate") == routed.headers.get("www-authenticate")
    # Requests the lean path leaves to the route: repeated or unknown parameters, a token in the URL.
    for query in ("lon=116.38&lat=39.9&lat=39.91", "lon=116.38&lat=39.9&via=route",
                  "lon=116.38&lat=39.9&access_token=x"):
        assert lean(client, admin_headers, "/grids/at", query) is None, query
    assert "/grids/at" in client.get("/openapi.json").json()["paths"]


def test_the_lean_path_is_installed_inside_the_middleware_stack(client, admin_headers):
    from api.fast import LeanPath

    assert any(m.cls is LeanPath for m in client.app.user_middleware)
    # the body limit and the error handling wrap it: a plain GET still answers through the whole stack
    reply = client.get("/grids/at?lon=116.3655&lat=39.9125", headers=admin_headers)
    assert reply.status_code == 200 and reply.headers["content-type"] == "application/geo+json"


def test_dependency_overrides_apply_to_the_hot_paths(settings, admin_headers):
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.deps import get_caller
    from geo.errors import Forbidden

    def refuse():
        raise Forbidden("overridden", field=None)

    app = create_app(settings)
    app.dependency_overrides[get_caller] = refuse
    with TestClient(app) as client:
        for path in ("/grids/at?lon=116.3655&lat=39.9125", "/dispatch/nearest?lon=116.3655&lat=39.9125"):
            reply = client.get(path, headers=admin_headers)
            assert reply.status_code == 403 and reply.json()["error"]["message"] == "overridden", path
