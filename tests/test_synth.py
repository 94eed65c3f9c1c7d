"""The synthetic demo district: exact coverage, hierarchy, codes, balance and determinism (no database)."""

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import shapely
from pyproj import Geod, Transformer

from fixtures import synth
from fixtures.synth import build
from geo.crs import to_wgs84
from geo.incidents.timelimits import TZ

END = datetime(2027, 3, 3, 15, 20, 7, tzinfo=TZ)  # any moment: the demo year ends where it is told to


@pytest.fixture(scope="module")
def full():
    return build(end=END)


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


@pytest.mark.parametrize("level, parent_level",
                         [("street", "district"), ("community", "street"), ("grid", "community")])
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
    assert all(code.startswith(parent) for code, parent in zip(sub.index, sub.parent_code, strict=False))
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
    assert inc.reported_at.min() >= END - pd.Timedelta(days=365) and inc.reported_at.max() <= END
    assert (inc.dispatched_at.dropna() >= inc.reported_at[inc.dispatched_at.notna()]).all()
    assert {"closed", "void", "reported", "dispatched", "in_progress"} <= set(inc.status)
    assert 0 < inc.reworked.mean() < 0.01


def frames_equal(a, b):
    pd.testing.assert_frame_equal(a.drop(columns="geometry"), b.drop(columns="geometry"))
    assert (shapely.to_wkb(a.geometry.values) == shapely.to_wkb(b.geometry.values)).all()


def test_same_seed_gives_identical_output():
    a, b = build(streets=1, end=END), build(streets=1, end=END)
    frames_equal(a.areas, b.areas)
    frames_equal(a.buildings, b.buildings)
    frames_equal(a.incidents, b.incidents)
    pd.testing.assert_frame_equal(a.workers, b.workers)


def test_street_subset_matches_the_full_build(full):
    small = build(streets=2, end=END)
    codes = small.areas.code[small.areas.level != "district"]
    same = full.areas.set_index("code").loc[codes].reset_index()
    frames_equal(small.areas[small.areas.level != "district"].reset_index(drop=True), same)
    assert len(small.incidents) < len(full.incidents) / 5


def test_the_year_moves_with_its_end_and_keeps_its_offsets():
    later = END + timedelta(weeks=57)  # the same weekday and time of day, more than a year on
    a, b = build(streets=1, end=END), build(streets=1, end=later)
    assert b.end == later and b.incidents.reported_at.max() <= later
    pd.testing.assert_series_equal(a.incidents.reported_at - END, b.incidents.reported_at - later)
    assert (a.incidents.category_code == b.incidents.category_code).all()
    assert (shapely.to_wkb(a.incidents.geometry.values) == shapely.to_wkb(b.incidents.geometry.values)).all()


def test_default_end_is_now():
    before = datetime.now(TZ).replace(microsecond=0)
    assert before <= build(streets=1, incidents=100).end <= datetime.now(TZ)


def test_open_cases_at_the_end_are_mostly_on_time(full):
    inc = full.incidents
    pending = inc.status.isin(["reported", "filed", "dispatched", "in_progress"])
    from fixtures.catalog import CATEGORIES
    from geo.incidents.bulk_assign import due_times

    overdue = pending & (due_times(inc.reported_at, inc.category_code, CATEGORIES) < pd.Timestamp(END))
    assert 0 < overdue.sum() < 0.15 * pending.sum()  # a working district: a few late, not most


def _streets_table(full):
    streets = full.areas[full.areas.level == "street"].set_index("code")
    figures = {s["code"]: s for s in synth._load()[1]}
    return streets, figures


def test_each_street_holds_its_real_office_point(full):
    streets, figures = _streets_table(full)
    seeds = synth.street_seeds(list(figures.values()))
    geod = Geod(ellps="WGS84")
    for (code, f), (lon, lat) in zip(figures.items(), seeds, strict=False):
        if f["office_gcj02"] is None:
            continue  # 椿树: placed between its neighbours, checked below
        wgs = to_wgs84(*f["office_gcj02"], "GCJ-02")
        # The seed is the office point converted from GCJ-02 (independently: the same conversion, by pyproj's
        # geodesic, lands within a metre), moved inside the simplified boundary by at most 60 m.
        d = geod.inv(float(lon), float(lat), float(wgs[0]), float(wgs[1]))[2]
        assert d < 1.0, (code, d)
        geom = streets.geometry[code]
        at = shapely.Point(lon, lat)
        assert geom.covers(at) or geom.distance(at) < 60 / 111_000, (f["name"], geom.distance(at))
    # 椿树 lies south of 金融街 and 西长安街's offices, north of 陶然亭's, between 广安门内's and 大栅栏's.
    chunshu = streets.geometry["110102015"].representative_point()
    office = {c: to_wgs84(*figures[c]["office_gcj02"], "GCJ-02") for c in ("110102011", "110102016", "110102017",
                                                                          "110102013")}
    assert office["110102016"][1] < chunshu.y < office["110102011"][1]
    assert office["110102017"][0] < chunshu.x < office["110102013"][0]


def test_streets_are_in_the_right_part_of_the_district(full):
    streets, _ = _streets_table(full)
    centre = {c: g.representative_point() for c, g in streets.geometry.items()}
    # What a civil servant of 西城区 checks first: 德胜 is the north, 广安门外 the south-west, 天桥 the south-east.
    assert centre["110102010"].y == max(p.y for p in centre.values())
    assert centre["110102020"].x < centre["110102014"].x and centre["110102020"].y < centre["110102003"].y
    assert centre["110102014"].x > np.median([p.x for p in centre.values()])


def test_street_areas_and_households_follow_the_real_figures(full):
    streets, figures = _streets_table(full)
    utm = Transformer.from_crs("EPSG:4326", "EPSG:32650", always_xy=True)
    area = {c: shapely.transform(g, lambda xy: np.column_stack(utm.transform(xy[:, 0], xy[:, 1]))).area / 1e6
            for c, g in streets.geometry.items()}
    real = {c: f["area_km2"] for c, f in figures.items()}
    scale = sum(area.values()) / sum(real.values())  # the simplified boundary is 0.5 % smaller
    for code in streets.index:
        # within 15 % (什刹海's office sits 1.3 km from 新街口's, and its cell may not grow past it)
        assert abs(area[code] / (real[code] * scale) - 1) < 0.15, (figures[code]["name"], area[code], real[code])
    pop = {c: f["population"] for c, f in figures.items() if f["population"]}
    per_person = {c: streets.households[c] / p for c, p in pop.items()}
    assert max(per_person.values()) / min(per_person.values()) < 1.05  # households in proportion to population
