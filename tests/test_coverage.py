"""Coverage analysis: grid coverage, staffing, response coverage, stationing and hotspots, each checked
against an independent shapely / geopandas / pandas / numpy computation."""

import asyncio
from datetime import timedelta

import asyncpg
import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from sqlalchemy import text

from geo.analysis import coverage, hotspots
from geo.auth import Caller
from tests.conftest import FIRST_DAY, LAST_DAY, make_token

UTM = "EPSG:32650"
YEAR = {"from": FIRST_DAY.isoformat(), "to": (LAST_DAY + timedelta(days=1)).isoformat()}  # the demo year
OLD = 10**8  # max_age_s: every position counts, whatever the time the suite reaches this module


def _get(client, headers, path, **params):
    reply = client.get(path, params=params, headers=headers)
    assert reply.status_code == 200, reply.text
    return reply.json()


# -- grid coverage ------------------------------------------------------------------------------------------

def test_demo_district_is_covered_without_gaps_or_overlaps(client, admin_headers, grids, boundary):
    reply = _get(client, admin_headers, "/analysis/coverage", area="110102")
    union = shapely.union_all(grids.to_crs(UTM).geometry.values)
    area = gpd.GeoSeries([boundary], crs=4326).to_crs(UTM).iloc[0]
    assert reply["covered_share"] == pytest.approx(area.intersection(union).area / area.area, abs=1e-6)
    assert reply["area_m2"] == pytest.approx(area.area, rel=2e-3)  # UTM scale factor vs geodesic
    assert reply["grids"] == len(grids) and reply["gap_m2"] == 0 and reply["overlap_m2"] == 0
    assert reply["features"]["features"] == []
    assert len(reply["children"]) == 15 and sum(c["grids"] for c in reply["children"]) == len(grids)
    assert all(c["covered_share"] == pytest.approx(1, abs=1e-6) for c in reply["children"])


def test_hand_made_gap_and_overlap_match_shapely(database_url, demo):
    """District 990909 with three grids: one leaves a hole, two overlap; inside a rolled-back transaction."""
    district = shapely.box(116.0, 39.0, 116.01, 39.01)
    cells = [shapely.box(116.0, 39.0, 116.005, 39.01),  # west half
             shapely.box(116.004, 39.0, 116.01, 39.006),  # overlaps the west half by 0.001° × 0.006°
             shapely.box(116.005, 39.007, 116.01, 39.01)]  # leaves a gap 39.006..39.007 in the east

    async def main():
        conn = await asyncpg.connect(database_url.replace("+psycopg", ""))
        try:
            async with conn.transaction():
                did = await conn.fetchval("INSERT INTO areas (code, level, name, geom) VALUES "
                                          "('990909', 'district', 'test', ST_Multi(ST_GeomFromText($1, 4326))) "
                                          "RETURNING id", district.wkt)
                for i, cell in enumerate(cells, 1):
                    await conn.execute(
                        "INSERT INTO areas (code, level, name, parent_id, version_id, geom) VALUES "
                        "($1, 'grid', 'g', $2, (SELECT id FROM grid_versions WHERE status = 'active'), "
                        "ST_Multi(ST_GeomFromText($3, 4326)))", f"990909001001{i:03d}", did, cell.wkt)
                reply = await coverage.grid_coverage(conn, Caller(0, "t", "admin", None), "990909")
                raise Rollback(reply)
        except Rollback as done:
            return done.args[0]
        finally:
            await conn.close()

    reply = asyncio.run(main())

    def to_utm(g):
        return gpd.GeoSeries([g], crs=4326).to_crs(UTM).iloc[0]

    union = shapely.union_all(cells)
    gap, overlap = to_utm(district.difference(union)), to_utm(cells[0].intersection(cells[1]))
    assert reply["gap_count"] == 1 and reply["overlap_count"] == 1 and reply["overlapping_pairs"] == 1
    assert reply["gap_m2"] == pytest.approx(gap.area, rel=2e-3)
    assert reply["overlap_m2"] == pytest.approx(overlap.area, rel=2e-3)
    assert reply["covered_share"] == pytest.approx(1 - gap.area / to_utm(district).area, abs=1e-4)
    kinds = sorted(f["properties"]["kind"] for f in reply["features"]["features"])
    assert kinds == ["gap", "overlap"]
    got_gap = shapely.geometry.shape(next(f["geometry"] for f in reply["features"]["features"]
                                          if f["properties"]["kind"] == "gap"))
    assert got_gap.symmetric_difference(district.difference(union)).area < 1e-12


class Rollback(Exception):
    """Raised inside the transaction to roll it back while carrying the result out."""


# -- staffing -----------------------------------------------------------------------------------------------

def test_staffing_matches_pandas(client, admin_headers, engine):
    reply = _get(client, admin_headers, "/analysis/staffing", area="110102003", target=300, tolerance=0.15)
    with engine.connect() as conn:
        frame = pd.read_sql(text(
            "SELECT code, households, worker_id FROM areas WHERE level = 'grid' AND code LIKE '110102003%' "
            "AND version_id = (SELECT id FROM grid_versions WHERE status = 'active')"), conn)
    staffed = frame.dropna(subset=["worker_id"])
    per_worker = staffed.groupby("worker_id").households.sum().sort_values(ascending=False, kind="stable")
    assert reply["grids"] == len(frame) and reply["households"] == frame.households.sum()
    assert reply["grids_without_worker_count"] == frame.worker_id.isna().sum()
    assert reply["households_per_worker"] == pytest.approx(staffed.households.sum() / staffed.worker_id.nunique())
    assert reply["grids_over_count"] == (frame.households > 345).sum()
    assert reply["grids_under_count"] == (frame.households < 255).sum()
    assert {g["code"] for g in reply["grids_over"]} == set(frame.code[frame.households > 345])
    top = reply["most_overloaded_workers"]
    assert [w["households"] for w in top] == list(per_worker.iloc[:len(top)])
    assert top[0]["load"] == pytest.approx(per_worker.iloc[0] / 300)


def test_staffing_rejects_a_bad_tolerance_and_grid_workers(client, admin_headers, engine):
    bad = client.get("/analysis/staffing", params={"area": "110102", "tolerance": 1.5}, headers=admin_headers)
    assert bad.status_code == 422
    worker = {"Authorization": f"Bearer {make_token(engine, 'grid_worker', '110102001')}"}
    denied = client.get("/analysis/staffing", params={"area": "110102001"}, headers=worker)
    assert denied.status_code == 403 and "grid_worker" in denied.json()["error"]["message"]


# -- response coverage --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def nearest(engine):
    """Each building's distance (UTM 50N metres) to the nearest available responder, via geopandas."""
    with engine.connect() as conn:
        buildings = gpd.read_postgis(text("SELECT id, households, geom FROM buildings"), conn, geom_col="geom")
        responders = gpd.read_postgis(text("SELECT id AS rid, position AS geom FROM responders "
                                           "WHERE status = 'available' AND position IS NOT NULL"),
                                      conn, geom_col="geom")
    joined = gpd.sjoin_nearest(buildings.to_crs(UTM), responders.to_crs(UTM), distance_col="d")
    return joined.drop_duplicates("id").set_index("id")


def test_response_coverage_matches_geopandas(client, admin_headers, nearest):
    reply = _get(client, admin_headers, "/analysis/response-coverage", area="110102", distance=100, max_age_s=OLD)
    want = nearest.households[nearest.d <= 100].sum() / nearest.households.sum()
    assert reply["buildings"] == len(nearest) and reply["households"] == nearest.households.sum()
    assert reply["share_covered"] == pytest.approx(want, abs=0.003)  # UTM scale vs geodesic, at the threshold
    assert reply["nearest_responder_m"]["max"] == pytest.approx(nearest.d.max(), rel=2e-3)
    uncovered = {f["id"] for f in reply["uncovered"]["features"]}
    clearly = set(nearest.index[nearest.d > 101])
    assert clearly <= uncovered or reply["uncovered"]["truncated"]


def test_curve_is_monotonic_and_consistent(client, admin_headers):
    reply = _get(client, admin_headers, "/analysis/response-coverage", area="110102001", distance=300, max_age_s=OLD)
    shares = [p["share"] for p in reply["curve"]]
    assert [p["distance_m"] for p in reply["curve"]] == list(range(100, 2001, 100))
    assert shares == sorted(shares) and shares[-1] <= 1
    assert next(p for p in reply["curve"] if p["distance_m"] == 300)["share"] == reply["share_covered"]
    assert reply["households_covered"] + reply["households_uncovered"] == reply["households"]


def test_stale_positions_cover_nobody(client, admin_headers):
    reply = _get(client, admin_headers, "/analysis/response-coverage", area="110102001", distance=500,
                 max_age_s=0.001)
    assert reply["share_covered"] == 0 and reply["responders_in_area"]["available_fresh"] == 0
    assert reply["responders_in_area"]["available_stale"] > 0


def test_chart_is_svg(client, admin_headers):
    reply = client.get("/analysis/response-coverage/chart.svg", params={"area": "110102001", "max_age_s": OLD},
                       headers=admin_headers)
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("image/svg+xml")
    assert reply.text.startswith("<svg") and "<polyline" in reply.text


def test_network_mode_needs_a_road_network(client, admin_headers):
    reply = client.get("/analysis/response-coverage", params={"area": "110102001", "mode": "network", "minutes": 5},
                       headers=admin_headers)
    assert reply.status_code == 400 and "wangge network import" in reply.json()["error"]["message"]


# -- stationing ---------------------------------------------------------------------------------------------

def test_stationing_is_at_least_as_good_as_today(client, admin_headers):
    current = _get(client, admin_headers, "/analysis/response-coverage", area="110102001", max_age_s=OLD)
    k = current["responders_in_area"]["available_fresh"]
    reply = client.post("/analysis/stationing", json={"area": "110102001", "k": k, "distance": 120,
                                                      "max_age_s": OLD}, headers=admin_headers)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["current"]["responders"] == k and body["mclp"]["status"] == "optimal"
    assert body["proposed"]["model_households_covered"] >= body["current"]["model_households_covered"]
    assert len(body["mclp"]["posts"]["features"]) <= k
    assert body["lscp"]["status"] == "optimal" and body["lscp"]["posts_needed"] >= 1


def test_stationing_reports_infeasible_cover(client, admin_headers):
    reply = client.post("/analysis/stationing", json={"area": "110102001", "k": 1, "distance": 200,
                                                      "candidates": [[116.37, 39.90]], "max_age_s": 0.001},
                        headers=admin_headers)
    assert reply.status_code == 200, reply.text
    lscp = reply.json()["lscp"]
    assert lscp["covers_everyone"] is False and lscp["uncoverable_households"] > 0
    assert "Infeasible to cover everyone" in lscp["note"]


# -- hotspots -----------------------------------------------------------------------------------------------

def gi_star_numpy(x: np.ndarray, adjacency: np.ndarray) -> np.ndarray:
    """Getis-Ord Gi* z (binary weights, focal cell included), from the textbook formula."""
    w = adjacency + np.eye(len(x))
    n, mean = len(x), x.mean()
    s = np.sqrt((x**2).mean() - mean**2)
    wi = w.sum(1)
    return (w @ x - mean * wi) / (s * np.sqrt((n * (w**2).sum(1) - wi**2) / (n - 1)))


def bh_reference(p: np.ndarray, alpha: float) -> np.ndarray:
    m = len(p)
    ranked = np.sort(p)
    k = max([i for i in range(1, m + 1) if ranked[i - 1] <= alpha * i / m], default=0)
    return p <= ranked[k - 1] if k else np.zeros(m, dtype=bool)


def test_benjamini_hochberg_matches_the_definition():
    rng = np.random.default_rng(1)
    for _ in range(20):
        p = np.concatenate([rng.uniform(0, 0.01, rng.integers(0, 10)), rng.uniform(0, 1, 50)])
        assert (hotspots.benjamini_hochberg(p, 0.05) == bh_reference(p, 0.05)).all()


def test_grid_hotspots_match_an_independent_gi_star(client, admin_headers, engine, grids):
    reply = _get(client, admin_headers, "/analysis/hotspots", area="110102003", by="grid", windows=4, **YEAR)
    street = grids[grids.code.str.startswith("110102003")].reset_index(drop=True)
    with engine.connect() as conn:
        counts = pd.read_sql(text(
            "SELECT grid_code, count(*) AS n FROM incidents WHERE grid_code LIKE '110102003%' "
            "AND status NOT IN ('void', 'rejected') "
            "AND reported_at >= CAST(:f AS timestamp) AT TIME ZONE 'Asia/Shanghai' "
            "AND reported_at < CAST(:t AS timestamp) AT TIME ZONE 'Asia/Shanghai' GROUP BY 1"),
            conn, params={"f": YEAR["from"], "t": YEAR["to"]}).set_index("grid_code").n
    x = street.code.map(counts).fillna(0).to_numpy(float)
    geoms = street.geometry.values
    adjacency = np.array([[float(i != j and geoms[i].intersects(geoms[j])) for j in range(len(geoms))]
                          for i in range(len(geoms))])
    z = gi_star_numpy(x, adjacency)
    from scipy import stats

    significant = bh_reference(2 * stats.norm.sf(np.abs(z)), 0.05)
    assert reply["cells"] == len(street) and reply["incidents"] == x.sum()
    by_code = {f["id"]: f["properties"] for f in reply["features"]["features"]}
    assert {c for c, s in zip(street.code, significant, strict=True) if s} \
        == {c for c, p in by_code.items() if p["significant"]}
    for code, props in by_code.items():
        i = street.index[street.code == code][0]
        assert props["z"] == pytest.approx(z[i], abs=1e-3) and props["count"] == x[i]
        assert props["persistent"] == (props["windows_hot"] == 4)
    assert reply["hot_cells"] > 0 and len(reply["windows"]) == 4
    assert sum(w["incidents"] for w in reply["windows"]) == reply["incidents"]


def test_h3_hotspots_cover_the_area_and_scope_is_enforced(client, admin_headers, engine):
    reply = _get(client, admin_headers, "/analysis/hotspots", area="110102", by="h3", resolution=8, windows=2,
                 category="0101", **YEAR)
    assert reply["cells"] > 50 and reply["incidents"] > 0 and reply["category"] == "0101"
    for f in reply["features"]["features"]:
        assert f["geometry"]["type"] == "Polygon" and f["properties"]["significant"] or f["properties"]["persistent"]
    headers = {"Authorization": f"Bearer {make_token(engine, 'supervisor', '110102001')}"}
    denied = client.get("/analysis/hotspots", params={"area": "110102003"}, headers=headers)
    assert denied.status_code == 404 and "No area 110102003 in your area" in denied.json()["error"]["message"]
