"""Coordinate conversion between WGS84, CGCS2000, GCJ-02 and BD-09."""

import geopandas as gpd
import numpy as np
import pytest
import shapely
from pyproj import Geod
from shapely.geometry import LineString, Point, Polygon

from geo import crs
from geo.errors import DomainError, UnknownCRS

GEOD = Geod(ellps="WGS84")
TIANANMEN = (116.391349, 39.907375)  # WGS84


def metres(lon1, lat1, lon2, lat2):
    return np.asarray(GEOD.inv(lon1, lat1, lon2, lat2)[2])


def china_grid():
    lon, lat = np.meshgrid(np.linspace(74, 134, 25), np.linspace(18, 53, 25))
    return lon.ravel(), lat.ravel()


def test_wgs_gcj_round_trip_is_under_half_a_metre():
    lon, lat = china_grid()
    back = crs.gcj02_to_wgs84(*crs.wgs84_to_gcj02(lon, lat))
    assert metres(lon, lat, *back).max() < 0.5


def test_wgs_bd_round_trip_is_under_half_a_metre():
    lon, lat = china_grid()
    back = crs.bd09_to_wgs84(*crs.wgs84_to_bd09(lon, lat))
    assert metres(lon, lat, *back).max() < 0.5


def test_gcj_bd_round_trip_is_under_half_a_metre():
    lon, lat = china_grid()
    back = crs.bd09_to_gcj02(*crs.gcj02_to_bd09(lon, lat))
    assert metres(lon, lat, *back).max() < 0.5


def test_wgs_to_gcj_matches_published_reference():
    # Reference output of the widely used coordTransform_utils for (128.543, 37.065).
    assert crs.wgs84_to_gcj02(128.543, 37.065) == pytest.approx(
        (128.54820547949757, 37.065651049489816), abs=1e-9)
    assert crs.gcj02_to_bd09(128.543, 37.065) == pytest.approx(
        (128.54944656269413, 37.07113427883019), abs=1e-9)


def test_gcj_offset_in_beijing_is_hundreds_of_metres():
    glon, glat = crs.wgs84_to_gcj02(*TIANANMEN)
    assert glon == pytest.approx(116.397590, abs=1e-5)
    assert glat == pytest.approx(39.908776, abs=1e-5)
    assert 100 < metres(*TIANANMEN, glon, glat) < 700


def test_scalars_in_give_floats_out():
    lon, lat = crs.to_wgs84(116.4, 39.9, "GCJ-02")
    assert isinstance(lon, float) and isinstance(lat, float)


def test_outside_china_is_identity():
    lon, lat = np.array([2.3522, -74.006, 151.2093]), np.array([48.8566, 40.7128, -33.8688])
    for fn in (crs.wgs84_to_gcj02, crs.gcj02_to_wgs84, crs.wgs84_to_bd09, crs.bd09_to_wgs84):
        out = fn(lon, lat)
        np.testing.assert_array_equal(out[0], lon)
        np.testing.assert_array_equal(out[1], lat)


@pytest.mark.parametrize("name", ["EPSG:4326", "4326", "wgs84", "EPSG:4490", "cgcs2000"])
def test_wgs84_and_cgcs2000_pass_through(name):
    assert crs.to_wgs84(116.4, 39.9, name) == (116.4, 39.9)


@pytest.mark.parametrize("name", ["GCJ-02", "gcj02", "Gcj-02"])
def test_gcj_aliases_convert(name):
    glon, glat = crs.wgs84_to_gcj02(*TIANANMEN)
    assert metres(*TIANANMEN, *crs.to_wgs84(glon, glat, name)) < 0.5


@pytest.mark.parametrize("name", ["BD-09", "bd09"])
def test_bd_aliases_convert(name):
    blon, blat = crs.wgs84_to_bd09(*TIANANMEN)
    assert metres(*TIANANMEN, *crs.to_wgs84(blon, blat, name)) < 0.5


def test_unknown_crs_says_what_is_supported():
    with pytest.raises(UnknownCRS, match=r"Unknown coordinate system 'EPSG:3857'.*GCJ-02.*BD-09") as exc:
        crs.to_wgs84(116.4, 39.9, "EPSG:3857")
    assert isinstance(exc.value, DomainError)
    assert exc.value.code == "unknown_crs"
    assert exc.value.field == "crs"


def test_geoseries_converts_every_geometry_type():
    wgs = gpd.GeoSeries(
        [Point(TIANANMEN), LineString([(116.3, 39.9), (116.4, 39.95)]),
         Polygon([(116.3, 39.9), (116.4, 39.9), (116.4, 40.0), (116.3, 39.9)])],
        index=[10, 11, 12], crs="EPSG:4326")
    gcj = gpd.GeoSeries(shapely.transform(
        wgs.values, lambda xy: np.column_stack(crs.wgs84_to_gcj02(xy[:, 0], xy[:, 1]))), index=wgs.index)
    out = crs.to_wgs84_geoseries(gcj, "GCJ-02")
    assert out.crs.to_epsg() == 4326
    assert list(out.index) == [10, 11, 12]
    assert out.geom_equals_exact(wgs, tolerance=1e-7).all()
