"""GET /grids/at agrees with shapely on random points, breaks edge ties, and explains misses."""

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

UTM50 = "EPSG:32650"


def _expected_code(grids, lon, lat):
    covering = grids[grids.geometry.covers(shapely.Point(lon, lat))]
    return covering["code"].min() if len(covering) else None


def test_random_points_match_shapely(client, admin_headers, grids, boundary):
    rng = np.random.default_rng(7)
    minx, miny, maxx, maxy = boundary.bounds
    lons, lats = rng.uniform(minx - 0.01, maxx + 0.01, 300), rng.uniform(miny - 0.01, maxy + 0.01, 300)
    inside = outside = 0
    metric = grids.geometry.to_crs(UTM50)
    for lon, lat in zip(lons, lats, strict=False):
        reply = client.get("/grids/at", params={"lon": lon, "lat": lat}, headers=admin_headers)
        expected = _expected_code(grids, lon, lat)
        if expected is None:
            outside += 1
            assert reply.status_code == 404
            body = reply.json()["error"]
            assert body["code"] == "outside_every_grid"
            # nearest grid and distance in metres, checked in a local projected CRS
            point = gpd.GeoSeries([shapely.Point(lon, lat)], crs="EPSG:4326").to_crs(UTM50).iloc[0]
            distances = metric.distance(point)
            assert body["nearest_grid"] == grids["code"][distances.idxmin()]
            assert abs(body["distance_m"] - distances.min()) < max(2.0, 0.01 * distances.min())
            assert f"{body['distance_m']:.0f} m" in body["message"]
        else:
            inside += 1
            assert reply.status_code == 200, reply.text
            assert reply.headers["content-type"].startswith("application/geo+json")
            assert reply.json()["id"] == expected
    assert inside > 100 and outside > 20


def test_feature_has_geometry_chain_and_worker(client, admin_headers, grids):
    point = grids.geometry.iloc[10].representative_point()
    feature = client.get("/grids/at", params={"lon": point.x, "lat": point.y}, headers=admin_headers).json()
    props = feature["properties"]
    assert feature["type"] == "Feature" and feature["id"] == grids["code"].iloc[10]
    assert shapely.geometry.shape(feature["geometry"]).covers(point)
    assert [a["level"] for a in props["chain"]] == ["community", "street", "district"]
    assert [a["code"] for a in props["chain"]] == [feature["id"][:12], feature["id"][:9], feature["id"][:6]]
    assert props["worker"]["name"] and props["level"] == "grid" and props["households"] > 0


def test_shared_vertex_goes_to_the_lowest_code(client, admin_headers, grids):
    a, b = grids.geometry.iloc[0], grids.geometry.iloc[1]
    shared = shapely.intersection(a.boundary, b.boundary)
    assert not shared.is_empty
    vertex = shapely.get_coordinates(shared)[0]
    lon, lat = float(vertex[0]), float(vertex[1])
    expected = _expected_code(grids, lon, lat)
    assert expected is not None
    for _ in range(3):  # deterministic across calls
        reply = client.get("/grids/at", params={"lon": lon, "lat": lat}, headers=admin_headers)
        assert reply.json()["id"] == expected


def test_gcj02_input_is_converted(client, admin_headers, grids):
    from geo.crs import wgs84_to_gcj02

    point = grids.geometry.iloc[42].representative_point()
    gx, gy = wgs84_to_gcj02(point.x, point.y)
    reply = client.get("/grids/at", params={"lon": gx, "lat": gy, "crs": "GCJ-02"}, headers=admin_headers)
    assert reply.json()["id"] == grids["code"].iloc[42]


def test_unknown_crs_is_a_clear_400(client, admin_headers):
    reply = client.get("/grids/at", params={"lon": 116.36, "lat": 39.91, "crs": "EPSG:3857"}, headers=admin_headers)
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "unknown_crs"
    assert "Supported: EPSG:4326, EPSG:4490, GCJ-02, BD-09" in reply.json()["error"]["message"]


def test_bad_coordinates_are_422_with_the_field(client, admin_headers):
    reply = client.get("/grids/at", params={"lon": 200, "lat": 39.9}, headers=admin_headers)
    assert reply.status_code == 422
    assert reply.json()["error"]["field"] == "lon"


def _geodesic_to_boundaries(grids, lon: float, lat: float) -> pd.Series:
    """Geodesic metres (pyproj Geod, WGS84) from the point to each grid's boundary, densified to ~2 m."""
    from pyproj import Geod

    geod = Geod(ellps="WGS84")
    rings = grids.geometry.boundary.segmentize(2e-5)  # degrees: ~2 m here
    coords = shapely.get_coordinates(rings.to_numpy(), return_index=True)
    xy, owner = coords[0], coords[1]
    _, _, metres = geod.inv(np.full(len(xy), lon), np.full(len(xy), lat), xy[:, 0], xy[:, 1])
    return pd.Series(metres).groupby(owner).min().set_axis(grids["code"].to_numpy())


def test_the_nearest_grid_outside_every_grid_matches_pyproj_from_a_metre_to_500_km(client, admin_headers, grids,
                                                                                 boundary):
    from pyproj import Geod

    geod = Geod(ellps="WGS84")
    rng = np.random.default_rng(11)
    outline = grids.geometry.union_all()
    centre = outline.centroid
    ring = shapely.get_coordinates(outline.exterior if outline.geom_type == "Polygon"
                                   else max(outline.geoms, key=lambda g: g.area).exterior)
    checked = 0
    for metres in (1, 10, 100, 1_000, 5_000, 20_000, 110_000, 500_000):
        for x, y in ring[rng.choice(len(ring), 3, replace=False)]:
            azimuth, _, _ = geod.inv(centre.x, centre.y, x, y)  # outwards, away from the district's centre
            lon, lat, _ = geod.fwd(x, y, azimuth, metres)
            if outline.covers(shapely.Point(lon, lat)):
                continue  # a concave bend: the point landed inside again
            reply = client.get("/grids/at", params={"lon": lon, "lat": lat}, headers=admin_headers)
            assert reply.status_code == 404, reply.text
            body = reply.json()["error"]
            expected = _geodesic_to_boundaries(grids, lon, lat)
            best = expected.min()
            assert abs(body["distance_m"] - best) <= 0.5 + 1e-6 * best, (metres, lon, lat, body, best)
            # the grid named is the nearest, or one within the densification's error of it
            assert expected[body["nearest_grid"]] <= best + 0.5, (metres, body["nearest_grid"], best)
            checked += 1
    assert checked >= 18
