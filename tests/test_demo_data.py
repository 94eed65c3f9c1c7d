"""The loaded demo district, checked in PostGIS against independent shapely computations."""

import geopandas as gpd
import numpy as np
import shapely
from shapely.strtree import STRtree
from sqlalchemy import text

UTM50 = "EPSG:32650"


def _frame(engine, sql: str) -> gpd.GeoDataFrame:
    with engine.connect() as conn:
        return gpd.read_postgis(text(sql), conn, geom_col="geom")


def _grids(engine) -> gpd.GeoDataFrame:
    return _frame(engine, """
        SELECT a.code, a.kind, a.households, a.worker_id, p.code AS parent_code, a.geom
        FROM areas a JOIN areas p ON p.id = a.parent_id
        WHERE a.level = 'grid' AND a.version_id = (SELECT id FROM grid_versions WHERE status = 'active')""")


def test_grids_cover_the_real_district_boundary_without_gaps(engine, demo, boundary):
    grids = _grids(engine).to_crs(UTM50)
    district = gpd.GeoSeries([boundary], crs="EPSG:4326").to_crs(UTM50).iloc[0]
    union = shapely.union_all(grids.geometry.values)
    assert union.symmetric_difference(district).area < 1e-6 * district.area
    assert abs(district.area / 1e6 - 50.4) < 0.5  # km²: the real 西城区 boundary, not a stand-in


def test_grids_do_not_overlap(engine, demo):
    grids = _grids(engine).to_crs(UTM50)
    geoms = grids.geometry.values
    left, right = STRtree(geoms).query(geoms, predicate="intersects")
    pairs = left < right
    overlap = shapely.area(shapely.intersection(geoms[left[pairs]], geoms[right[pairs]])).sum()
    assert overlap < 1e-6 * shapely.area(geoms).sum()


def test_every_level_nests_in_its_parent_and_codes_extend_the_parent(engine, demo):
    areas = _frame(engine, """
        SELECT a.code, a.level, p.code AS parent_code, a.geom
        FROM areas a JOIN areas p ON p.id = a.parent_id
        WHERE a.version_id IS NULL OR a.version_id = (SELECT id FROM grid_versions WHERE status = 'active')""")
    parents = _frame(engine, "SELECT code, geom FROM areas WHERE version_id IS NULL").set_index("code")
    assert areas["code"].str.len().map({9: "street", 12: "community", 15: "grid"}).eq(areas["level"]).all()
    assert all(c.startswith(p) for c, p in zip(areas["code"], areas["parent_code"], strict=False))
    child = areas.geometry.to_crs(UTM50)
    parent = parents.geometry.reindex(areas["parent_code"]).to_crs(UTM50)
    outside = shapely.area(shapely.difference(child.values, parent.values))
    assert (outside <= 1e-6 * child.area.to_numpy()).all()


def test_counts_follow_the_real_names(engine, demo):
    with engine.connect() as conn:
        counts = dict(conn.execute(text("SELECT level, count(*) FROM areas GROUP BY level")).all())
    assert counts["district"] == 1 and counts["street"] == 15 and counts["community"] == 261
    assert 1300 <= counts["grid"] <= 1800


def test_households_per_grid_are_close_to_300_by_independent_count(engine, demo):
    grids = _grids(engine)
    buildings = _frame(engine, "SELECT households, geom FROM buildings")
    joined = gpd.sjoin(buildings, grids[["code", "geom"]], predicate="within", how="inner")
    counted = joined.groupby("code")["households"].sum().reindex(grids["code"], fill_value=0)
    assert (counted.to_numpy() == grids["households"].to_numpy()).all()  # stored figure is the real sum
    assert abs(np.median(counted) - 300) <= 30
    assert counted.between(150, 450).all()
    assert 400_000 <= buildings["households"].sum() <= 500_000  # ~1.1M residents at ~2.45 per household


def test_both_grid_kinds_and_a_worker_for_every_grid(engine, demo):
    grids = _grids(engine)
    assert set(grids["kind"]) == {"residential", "commercial"}
    assert grids["worker_id"].notna().all() and grids["worker_id"].is_unique


def test_a_year_of_incidents_each_in_the_grid_that_covers_it(engine, demo):
    incidents = _frame(engine, """
        SELECT id, grid_code, grid_version_id, assignee_id, department_code, status, reported_at, due_at, geom
        FROM incidents WHERE is_synthetic""")  # the demo's own history, not what other tests filed
    assert len(incidents) >= 100_000
    span = incidents["reported_at"].max() - incidents["reported_at"].min()
    assert span.days >= 360
    assert incidents["grid_version_id"].notna().all() and incidents["assignee_id"].notna().all()
    assert (incidents["due_at"] > incidents["reported_at"]).mean() > 0.99
    assert incidents["status"].nunique() >= 5
    sample = incidents.sample(3000, random_state=1)
    grids = _grids(engine)
    hit = gpd.sjoin(sample, grids[["code", "geom"]], predicate="covered_by", how="left")
    expected = hit.sort_values("code").groupby("id")["code"].first()  # lowest code on shared edges
    assert (expected.reindex(sample["id"]).to_numpy() == sample["grid_code"].to_numpy()).all()
