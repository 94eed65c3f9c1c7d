"""The synthetic demo district: exact coverage, hierarchy, codes, balance and determinism (no database)."""

import pandas as pd
import pytest
import shapely

from fixtures.synth import END, build


@pytest.fixture(scope="module")
def full():
    return build()


@pytest.fixture(scope="module")
def grids(full):
    return full.areas[full.areas.level == "grid"].reset_index(drop=True)


def district_geom(demo):
    return demo.areas.loc[demo.areas.level == "district", "geometry"].iloc[0]


def test_counts_follow_the_real_names(full):
    levels = full.areas.level.value_counts()
    assert levels["district"] == 1 and levels["street"] == 15 and levels["community"] == 261
    assert len(full.workers) == levels["grid"]
    assert full.workers.grid_code.is_unique


def test_grids_cover_the_district_exactly(full, grids):
    district = district_geom(full)
    union = shapely.union_all(grids.geometry.values)
    assert shapely.symmetric_difference(union, district).area < 1e-6 * district.area


def test_grids_do_not_overlap(full, grids):
    geoms = grids.geometry.values
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    pair = left < right
    overlap = shapely.area(shapely.intersection(geoms[left[pair]], geoms[right[pair]])).sum()
    # Measured ~6e-10: µm-wide slivers from reprojecting metric cuts, i.e. float noise.
    assert overlap < 1e-8 * district_geom(full).area


@pytest.mark.parametrize("level, parent_level", [("street", "district"), ("community", "street"), ("grid", "community")])
def test_each_area_lies_in_its_parent(full, level, parent_level):
    areas = full.areas
    child = areas[areas.level == level]
    parents = areas[areas.level == parent_level].set_index("code").geometry
    parent = parents.reindex(child.parent_code).values
    assert not pd.isna(parent).any()
    outside = shapely.area(shapely.difference(child.geometry.values, parent))
    assert (outside < 1e-7 * shapely.area(child.geometry.values)).all()


def test_geometries_are_valid_multipolygons_with_area(full):
    g = full.areas.geometry
    assert (g.geom_type == "MultiPolygon").all()
    assert g.is_valid.all() and (shapely.area(g.values) > 0).all()
    assert full.areas.crs.to_epsg() == 4326


def test_codes_nest_and_have_the_right_length(full):
    areas = full.areas.set_index("code")
    length = {"district": 6, "street": 9, "community": 12, "grid": 15}
    assert (areas.index.str.len() == areas.level.map(length)).all()
    assert areas.index.str.isdigit().all() and areas.index.is_unique
    sub = areas[areas.level != "district"]
    assert all(code.startswith(parent) for code, parent in zip(sub.index, sub.parent_code))
    assert pd.isna(areas.loc["110102", "parent_code"])  # pandas 3 str columns hold missing as NaN


def test_grid_households_are_balanced(grids):
    hh = grids.households
    # 300 ± 10 % at the median, and every grid within half a grid of the target.
    assert 270 <= hh.median() <= 330
    assert hh.min() >= 150 and hh.max() <= 450


def test_area_households_are_sums_of_buildings(full, grids):
    by_grid = full.buildings.groupby("grid_code").households.sum()
    assert (grids.set_index("code").households == by_grid.reindex(grids.code).values).all()
    areas = full.areas.set_index("code")
    for level in ("grid", "community", "street"):
        child = areas[areas.level == level]
        sums = child.groupby("parent_code").households.sum()
        assert (areas.loc[sums.index, "households"] == sums).all()


def test_both_grid_kinds_occur(grids):
    share = (grids.kind == "commercial").mean()
    assert 0.08 <= share <= 0.15
    assert set(grids.kind) == {"residential", "commercial"}


def test_each_building_lies_in_its_grid(full, grids):
    geom = grids.set_index("code").geometry.reindex(full.buildings.grid_code).values
    assert shapely.covers(geom, full.buildings.geometry.values).all()


def test_incidents_lie_in_the_district_within_the_year(full):
    inc = full.incidents
    assert len(inc) == 120_000
    assert shapely.covers(district_geom(full), inc.geometry.values).all()
    assert inc.reported_at.min() >= END - pd.Timedelta(days=365) and inc.reported_at.max() < END
    assert (inc.dispatched_at.dropna() >= inc.reported_at[inc.dispatched_at.notna()]).all()
    assert {"closed", "void", "reported", "dispatched", "in_progress"} <= set(inc.status)
    assert 0 < inc.reworked.mean() < 0.01


def frames_equal(a, b):
    pd.testing.assert_frame_equal(a.drop(columns="geometry"), b.drop(columns="geometry"))
    assert (shapely.to_wkb(a.geometry.values) == shapely.to_wkb(b.geometry.values)).all()


def test_same_seed_gives_identical_output():
    a, b = build(streets=1), build(streets=1)
    frames_equal(a.areas, b.areas)
    frames_equal(a.buildings, b.buildings)
    frames_equal(a.incidents, b.incidents)
    pd.testing.assert_frame_equal(a.workers, b.workers)


def test_street_subset_matches_the_full_build(full):
    small = build(streets=2)
    codes = small.areas.code[small.areas.level != "district"]
    same = full.areas.set_index("code").loc[codes].reset_index()
    frames_equal(small.areas[small.areas.level != "district"].reset_index(drop=True), same)
    assert len(small.incidents) < len(full.incidents) / 5
