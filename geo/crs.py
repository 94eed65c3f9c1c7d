"""Coordinate systems: WGS84/CGCS2000 and the Chinese GCJ-02 and BD-09 offsets, vectorised."""

import math

import numpy as np

from geo.errors import UnknownCRS

SUPPORTED = ("EPSG:4326", "EPSG:4490", "GCJ-02", "BD-09")

_ALIASES = {
    "EPSG:4326": "EPSG:4326", "4326": "EPSG:4326", "WGS84": "EPSG:4326", "WGS-84": "EPSG:4326",
    "EPSG:4490": "EPSG:4490", "4490": "EPSG:4490", "CGCS2000": "EPSG:4490",
    "GCJ-02": "GCJ-02", "GCJ02": "GCJ-02",
    "BD-09": "BD-09", "BD09": "BD-09",
}

# Krasovsky 1940 ellipsoid, as used by the GCJ-02 obfuscation.
_A = 6378245.0
_EE = 0.00669342162296594323
_X_PI = np.pi * 3000.0 / 180.0


def normalize_crs(crs: str) -> str:
    """Return the canonical name from SUPPORTED for a crs string, or raise UnknownCRS."""
    key = str(crs).strip().upper().replace("_", "-") if crs is not None else ""
    if key not in _ALIASES:
        raise UnknownCRS(crs)
    return _ALIASES[key]


def _out(lon, lat, x, y):
    # Give back Python floats for scalar input, arrays otherwise.
    if np.ndim(lon) == 0 and np.ndim(lat) == 0:
        return float(x), float(y)
    return x, y


def out_of_china(lon, lat):
    """True where the point lies outside the rough China box in which GCJ-02 applies."""
    lon, lat = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
    return (lon < 72.004) | (lon > 137.8347) | (lat < 0.8293) | (lat > 55.8271)


def _gcj_delta(lon, lat):
    x, y = lon - 105.0, lat - 35.0
    dlat = (-100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * np.sqrt(np.abs(x))
            + (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0
            + (20.0 * np.sin(y * np.pi) + 40.0 * np.sin(y / 3.0 * np.pi)) * 2.0 / 3.0
            + (160.0 * np.sin(y / 12.0 * np.pi) + 320.0 * np.sin(y * np.pi / 30.0)) * 2.0 / 3.0)
    dlon = (300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * np.sqrt(np.abs(x))
            + (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0
            + (20.0 * np.sin(x * np.pi) + 40.0 * np.sin(x / 3.0 * np.pi)) * 2.0 / 3.0
            + (150.0 * np.sin(x / 12.0 * np.pi) + 300.0 * np.sin(x / 30.0 * np.pi)) * 2.0 / 3.0)
    rad = lat / 180.0 * np.pi
    magic = 1.0 - _EE * np.sin(rad) ** 2
    sqrt_magic = np.sqrt(magic)
    dlat = (dlat * 180.0) / ((_A * (1.0 - _EE)) / (magic * sqrt_magic) * np.pi)
    dlon = (dlon * 180.0) / (_A / sqrt_magic * np.cos(rad) * np.pi)
    return dlon, dlat


def _wgs_to_gcj(lon, lat):
    dlon, dlat = _gcj_delta(lon, lat)
    outside = out_of_china(lon, lat)
    return np.where(outside, lon, lon + dlon), np.where(outside, lat, lat + dlat)


def _gcj_to_wgs(lon, lat):
    # The forward offset has no closed-form inverse: fixed-point iterate until it maps back.
    wlon, wlat = lon.copy(), lat.copy()
    for _ in range(20):
        glon, glat = _wgs_to_gcj(wlon, wlat)
        elon, elat = glon - lon, glat - lat
        wlon, wlat = wlon - elon, wlat - elat
        if np.all(np.abs(elon) < 1e-10) and np.all(np.abs(elat) < 1e-10):
            break
    outside = out_of_china(lon, lat)
    return np.where(outside, lon, wlon), np.where(outside, lat, wlat)


def _gcj_to_bd(lon, lat):
    z = np.sqrt(lon * lon + lat * lat) + 0.00002 * np.sin(lat * _X_PI)
    theta = np.arctan2(lat, lon) + 0.000003 * np.cos(lon * _X_PI)
    outside = out_of_china(lon, lat)
    return (np.where(outside, lon, z * np.cos(theta) + 0.0065),
            np.where(outside, lat, z * np.sin(theta) + 0.006))


def _bd_to_gcj(lon, lat):
    x, y = lon - 0.0065, lat - 0.006
    z = np.sqrt(x * x + y * y) - 0.00002 * np.sin(y * _X_PI)
    theta = np.arctan2(y, x) - 0.000003 * np.cos(x * _X_PI)
    glon, glat = z * np.cos(theta), z * np.sin(theta)
    # The textbook inverse is off by a few cm; two refinement steps make it exact.
    for _ in range(2):
        blon, blat = _gcj_to_bd(glon, glat)
        glon, glat = glon - (blon - lon), glat - (blat - lat)
    outside = out_of_china(lon, lat)
    return np.where(outside, lon, glon), np.where(outside, lat, glat)


def _arrays(lon, lat):
    lon, lat = np.broadcast_arrays(np.asarray(lon, dtype=float), np.asarray(lat, dtype=float))
    return lon.copy(), lat.copy()


def wgs84_to_gcj02(lon, lat):
    """WGS84 -> GCJ-02 (identity outside China)."""
    return _out(lon, lat, *_wgs_to_gcj(*_arrays(lon, lat)))


def gcj02_to_wgs84(lon, lat):
    """GCJ-02 -> WGS84 by iterative inversion, accurate to well under a centimetre."""
    return _out(lon, lat, *_gcj_to_wgs(*_arrays(lon, lat)))


def gcj02_to_bd09(lon, lat):
    """GCJ-02 -> BD-09."""
    return _out(lon, lat, *_gcj_to_bd(*_arrays(lon, lat)))


def bd09_to_gcj02(lon, lat):
    """BD-09 -> GCJ-02."""
    return _out(lon, lat, *_bd_to_gcj(*_arrays(lon, lat)))


def wgs84_to_bd09(lon, lat):
    """WGS84 -> BD-09 (identity outside China)."""
    return _out(lon, lat, *_gcj_to_bd(*_wgs_to_gcj(*_arrays(lon, lat))))


def bd09_to_wgs84(lon, lat):
    """BD-09 -> WGS84 (identity outside China)."""
    return _out(lon, lat, *_gcj_to_wgs(*_bd_to_gcj(*_arrays(lon, lat))))


def to_wgs84(lon, lat, crs: str):
    """Convert coordinates given in any SUPPORTED crs (or an alias) to WGS84."""
    name = normalize_crs(crs)
    if name == "GCJ-02":
        return gcj02_to_wgs84(lon, lat)
    if name == "BD-09":
        return bd09_to_wgs84(lon, lat)
    # CGCS2000 differs from WGS84 by well under a metre: treat it as the same datum.
    lon2, lat2 = _arrays(lon, lat)
    return _out(lon, lat, lon2, lat2)


def to_wgs84_geoseries(gs, crs: str):
    """Return a GeoSeries (EPSG:4326) with every geometry converted from crs to WGS84."""
    import geopandas as gpd
    import shapely

    name = normalize_crs(crs)
    geoms = np.asarray(gs.values, dtype=object)
    if name in ("GCJ-02", "BD-09"):
        def move(xy):
            x, y = to_wgs84(xy[:, 0], xy[:, 1], name)
            return np.column_stack([x, y])

        geoms = shapely.transform(geoms, move)
    return gpd.GeoSeries(geoms, index=gs.index, crs="EPSG:4326")


def radius_3857(metres: float, lat: float) -> float:
    """Web Mercator metres that hold every point within `metres` geodesic metres of a point at `lat` (inf near the
    poles). Along any path, Mercator length ≤ 1/(1 − e²) = 1.0067 × geodesic length / cos(latitude), and a path
    of `metres` stays within metres / 110,574 m of the point's latitude (one degree of it is at least that long)."""
    farthest = abs(lat) + metres / 110000.0
    return math.inf if farthest >= 89.0 else metres * 1.01 / math.cos(math.radians(farthest)) + 1e-6
