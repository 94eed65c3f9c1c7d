"""Plan edits: split, merge, move buildings, replace a boundary, set attributes — checked with shapely/geopandas
against the data read straight from PostGIS."""

import geopandas as gpd
import numpy as np
import pytest
import shapely
from shapely.ops import split as shapely_split
from sqlalchemy import text

from geo.crs import to_wgs84, wgs84_to_gcj02
from tests.conftest import make_token

AREA_TOL = 1e-9  # relative area difference allowed for "the same land" (float noise of overlay)


@pytest.fixture(scope="module")
def plan(client, admin_headers):
    plan = client.post("/plans", json={"name": "edit tests"}, headers=admin_headers).json()
    yield plan["id"]
    client.delete(f"/plans/{plan['id']}", headers=admin_headers)


def revision(client, headers, plan_id):
    return client.get(f"/plans/{plan_id}", headers=headers).json()["revision"]


def edit(client, headers, plan_id, **body):
    return client.post(f"/plans/{plan_id}/edits", headers=headers,
                       json={"revision": revision(client, headers, plan_id), **body})


def plan_grids(engine, plan_id, community=None):
    with engine.connect() as conn:
        return gpd.read_postgis(text(
            "SELECT code, name, kind, households, worker_id, geom FROM areas WHERE version_id = :v AND level = 'grid' "
            "AND (CAST(:c AS text) IS NULL OR left(code, 12) = CAST(:c AS text)) ORDER BY code"),
            conn, geom_col="geom", params={"v": plan_id, "c": community}).set_index("code")


def expected_households(engine, grids):
    """Households per grid recounted with geopandas: each building counts in the lowest code covering its
    point-on-surface."""
    with engine.connect() as conn:
        buildings = gpd.read_postgis(text("SELECT id, households, geom FROM buildings"), conn, geom_col="geom")
    points = buildings.set_geometry(buildings.geometry.representative_point())
    hits = gpd.sjoin(points, grids.reset_index()[["code", "geom"]].set_geometry("geom"), predicate="intersects")
    owner = hits.sort_values("code").drop_duplicates("id")
    counts = owner.groupby("code")["households"].sum()
    return counts.reindex(grids.index, fill_value=0)


def same_land(a, b) -> bool:
    return shapely.symmetric_difference(a, b).area <= AREA_TOL * max(a.area, b.area)


def communities(engine, plan_id):
    """Community codes of the plan with at least four grids, in order (each test takes its own)."""
    grids = plan_grids(engine, plan_id)
    sizes = grids.groupby(grids.index.str[:12]).size()
    return list(sizes[sizes >= 4].index)


def adjacent_pairs(grids):
    codes = list(grids.index)
    return [(a, b) for i, a in enumerate(codes) for b in codes[i + 1:]
            if grids.at[a, "geom"].intersection(grids.at[b, "geom"]).length > 1e-5]


def test_split_along_a_line_gives_two_grids_that_tile_the_original(client, admin_headers, engine, plan):
    community = communities(engine, plan)[0]
    before = plan_grids(engine, plan, community)
    for _, grid in before.iterrows():
        minx, miny, maxx, maxy = grid.geom.bounds
        y = miny + 0.3 * (maxy - miny)  # off centre, so that which part is larger is plain
        line = shapely.LineString([(minx - 0.001, y), (maxx + 0.001, y)])
        if len(shapely_split(grid.geom.geoms[0], line).geoms) == 2:
            break
    code = grid.name  # the grid's code: iterrows names each row by its index
    reply = edit(client, admin_headers, plan, op="split", code=code,
                 line={"type": "LineString", "coordinates": list(line.coords)})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["op"] == "split" and body["revision"] == revision(client, admin_headers, plan)
    new_code = next(c for c in body["changed"] if c not in before.index)
    after = plan_grids(engine, plan, community)
    assert set(after.index) == set(before.index) | {new_code} and new_code.startswith(community)
    kept, new = after.loc[code], after.loc[new_code]
    assert same_land(shapely.union(kept.geom, new.geom), grid.geom)
    assert shapely.intersection(kept.geom, new.geom).area <= AREA_TOL * grid.geom.area
    assert kept.geom.area >= new.geom.area  # the larger part keeps the code
    assert new.kind == grid.kind and new.worker_id is None or np.isnan(new.worker_id)
    assert new["name"].endswith(f"第{int(new_code[-3:])}网格")
    assert kept.households + new.households == grid.households
    assert after["households"].to_dict() == expected_households(engine, after).to_dict()
    features = {f["id"]: f for f in body["grids"]["features"]}
    assert features[new_code]["properties"]["households"] == new.households


def test_merge_two_adjacent_grids_keeps_the_lowest_code(client, admin_headers, engine, plan):
    community = communities(engine, plan)[1]
    before = plan_grids(engine, plan, community)
    a, b = adjacent_pairs(before)[0]
    reply = edit(client, admin_headers, plan, op="merge", codes=[b, a])
    assert reply.status_code == 200, reply.text
    assert reply.json()["grids"]["removed"] == [b]
    after = plan_grids(engine, plan, community)
    assert b not in after.index
    assert same_land(after.at[a, "geom"], shapely.union(before.at[a, "geom"], before.at[b, "geom"]))
    assert after.at[a, "households"] == before.at[a, "households"] + before.at[b, "households"]
    assert after.at[a, "worker_id"] == before.at[a, "worker_id"]
    assert after["households"].to_dict() == expected_households(engine, after).to_dict()


def test_merging_grids_that_do_not_touch_is_refused(client, admin_headers, engine, plan):
    community = communities(engine, plan)[2]
    before = plan_grids(engine, plan, community)
    codes = list(before.index)
    a, b = next((a, b) for i, a in enumerate(codes) for b in codes[i + 1:]
                if before.at[a, "geom"].distance(before.at[b, "geom"]) > 1e-4)
    reply = edit(client, admin_headers, plan, op="merge", codes=[a, b])
    assert reply.status_code == 400 and "not all adjacent" in reply.json()["error"]["message"]
    assert plan_grids(engine, plan, community).index.tolist() == codes


def test_move_buildings_to_a_neighbour_moves_their_households_and_land(client, admin_headers, engine, plan):
    community = communities(engine, plan)[3]
    before = plan_grids(engine, plan, community)
    with engine.connect() as conn:
        buildings = gpd.read_postgis(text("SELECT id, households, geom FROM buildings"), conn, geom_col="geom")
    buildings = buildings.set_geometry(buildings.geometry.representative_point())
    owner = gpd.sjoin(buildings, before.reset_index()[["code", "geom"]].set_geometry("geom"),
                      predicate="intersects").sort_values("code").drop_duplicates("id")
    source, target = next((s, t) for a, b in adjacent_pairs(before) for s, t in ((a, b), (b, a))
                          if (owner["code"] == s).sum() >= 3)
    mine = owner[owner["code"] == source]
    nearest = shapely.distance(mine.geometry.values, before.at[target, "geom"]).argmin()
    moved = mine.iloc[[nearest]]  # the building nearest the target
    reply = edit(client, admin_headers, plan, op="move_buildings", to=target, building_ids=moved["id"].tolist())
    assert reply.status_code == 200, reply.text
    assert set(reply.json()["changed"]) >= {source, target}
    after = plan_grids(engine, plan, community)
    shift = int(moved["households"].sum())
    assert after.at[target, "households"] == before.at[target, "households"] + shift
    assert after.at[source, "households"] == before.at[source, "households"] - shift
    assert shapely.covers(after.at[target, "geom"], moved.geometry.values).all()
    assert not shapely.covers(after.at[source, "geom"], moved.geometry.values).any()
    old = shapely.union(before.at[source, "geom"], before.at[target, "geom"])
    assert same_land(shapely.union(after.at[source, "geom"], after.at[target, "geom"]), old)
    assert shapely.intersection(after.at[source, "geom"], after.at[target, "geom"]).area <= AREA_TOL * old.area
    assert after["households"].to_dict() == expected_households(engine, after).to_dict()

    # the same by a block polygon drawn around another building of the source grid
    rest = owner[(owner["code"] == source) & ~owner["id"].isin(moved["id"])]
    other = rest.geometry.values[shapely.distance(rest.geometry.values, after.at[target, "geom"]).argmin()]
    block = other.buffer(1e-6, quad_segs=2)
    inside = buildings[buildings.within(block)]
    reply = edit(client, admin_headers, plan, op="move_buildings", to=target,
                 area={"type": "Polygon", "coordinates": [list(block.exterior.coords)]})
    assert reply.status_code == 200, reply.text
    again = plan_grids(engine, plan, community)
    assert again.at[target, "households"] == after.at[target, "households"] + int(inside["households"].sum())
    assert shapely.covers(again.at[target, "geom"], inside.geometry.values).all()


def test_moving_buildings_from_a_grid_that_is_not_a_neighbour_is_refused(client, admin_headers, engine, plan):
    community = communities(engine, plan)[4]
    before = plan_grids(engine, plan, community)
    codes = list(before.index)
    far, target = next((a, b) for a in codes for b in codes
                       if before.at[a, "geom"].distance(before.at[b, "geom"]) > 1e-4)
    with engine.connect() as conn:
        building = conn.execute(text(
            "SELECT b.id FROM buildings b JOIN areas a ON ST_Covers(a.geom, ST_PointOnSurface(b.geom)) "
            "WHERE a.version_id = :v AND a.code = :c AND NOT EXISTS (SELECT 1 FROM areas o WHERE o.version_id = :v "
            "AND o.code < a.code AND ST_Covers(o.geom, ST_PointOnSurface(b.geom))) LIMIT 1"),
            {"v": plan, "c": far}).scalar_one()
    reply = edit(client, admin_headers, plan, op="move_buildings", to=target, building_ids=[building])
    assert reply.status_code == 400 and "not neighbours" in reply.json()["error"]["message"]


def test_moving_every_building_of_a_grid_says_merge_instead(client, admin_headers, engine, plan):
    community = communities(engine, plan)[8]
    before = plan_grids(engine, plan, community)
    source, target = adjacent_pairs(before)[0]
    with engine.connect() as conn:
        ids = conn.execute(text(
            "SELECT b.id FROM buildings b JOIN areas a ON ST_Covers(a.geom, ST_PointOnSurface(b.geom)) "
            "WHERE a.version_id = :v AND a.code = :c"), {"v": plan, "c": source}).scalars().all()
    current = revision(client, admin_headers, plan)
    reply = edit(client, admin_headers, plan, op="move_buildings", to=target, building_ids=ids)
    assert reply.status_code == 400 and "merge" in reply.json()["error"]["message"]
    assert revision(client, admin_headers, plan) == current


def test_a_line_that_does_not_cross_the_grid_does_not_split_it(client, admin_headers, engine, plan):
    community = communities(engine, plan)[8]
    code, grid = next(plan_grids(engine, plan, community).iterrows())
    c = grid.geom.representative_point()
    reply = edit(client, admin_headers, plan, op="split", code=code,
                 line={"type": "LineString", "coordinates": [[c.x, c.y], [c.x + 1e-5, c.y]]})  # ends inside
    assert reply.status_code == 400 and "does not cut grid" in reply.json()["error"]["message"]


def test_a_bow_tie_is_refused_as_self_intersecting(client, admin_headers, engine, plan):
    community = communities(engine, plan)[5]
    code, grid = next(plan_grids(engine, plan, community).iterrows())
    minx, miny, maxx, maxy = grid.geom.buffer(-1e-4).bounds
    bow_tie = [[minx, miny], [maxx, maxy], [maxx, miny], [minx, maxy], [minx, miny]]
    reply = edit(client, admin_headers, plan, op="replace_geometry", code=code,
                 geometry={"type": "Polygon", "coordinates": [bow_tie]})
    assert reply.status_code == 400
    assert "Self-intersection" in reply.json()["error"]["message"]


def test_a_geometry_outside_its_community_is_refused_with_the_area_outside(client, admin_headers, engine, plan):
    community = communities(engine, plan)[5]
    code, grid = next(plan_grids(engine, plan, community).iterrows())
    grown = grid.geom.geoms[0].buffer(0.01)
    with engine.connect() as conn:
        outside_m2 = conn.execute(text(
            "SELECT ST_Area(ST_Difference(ST_GeomFromText(:g, 4326), geom)::geography) FROM areas "
            "WHERE code = :c AND level = 'community'"), {"g": grown.wkt, "c": community}).scalar_one()
    reply = edit(client, admin_headers, plan, op="replace_geometry", code=code,
                 geometry=shapely.geometry.mapping(grown))
    message = reply.json()["error"]["message"]
    assert reply.status_code == 400 and "outside its community" in message
    stated = float(message.split(" m² outside")[0].split()[-1].replace(",", ""))
    assert abs(stated - outside_m2) < 0.005 * outside_m2


def test_a_gcj02_geometry_is_converted_to_wgs84(client, admin_headers, engine, plan):
    community = communities(engine, plan)[6]
    before = plan_grids(engine, plan, community)
    code, grid = next(before.iterrows())
    wgs = grid.geom.geoms[0].buffer(-2e-4).simplify(1e-5)  # well inside the grid, hence its community
    gcj = shapely.transform(wgs, lambda xy: np.column_stack(wgs84_to_gcj02(xy[:, 0], xy[:, 1])))
    reply = edit(client, admin_headers, plan, op="replace_geometry", code=code, crs="GCJ-02",
                 geometry=shapely.geometry.mapping(gcj))
    assert reply.status_code == 200, reply.text
    expected = shapely.transform(gcj, lambda xy: np.column_stack(to_wgs84(xy[:, 0], xy[:, 1], "GCJ-02")))
    stored = plan_grids(engine, plan, community).at[code, "geom"]
    assert len(stored.geoms) == 1 and stored.geoms[0].equals_exact(expected, 1e-9)
    assert stored.geoms[0].equals_exact(wgs, 1e-8)  # and that is where the planner drew it
    after = plan_grids(engine, plan, community)
    assert after["households"].to_dict() == expected_households(engine, after).to_dict()


def test_a_stale_revision_is_a_conflict_and_changes_nothing(client, admin_headers, engine, plan):
    community = communities(engine, plan)[7]
    before = plan_grids(engine, plan, community)
    current = revision(client, admin_headers, plan)
    a, b = adjacent_pairs(before)[0]
    reply = client.post(f"/plans/{plan}/edits", headers=admin_headers,
                        json={"revision": current - 1, "op": "merge", "codes": [a, b]})
    assert reply.status_code == 409 and f"revision {current}" in reply.json()["error"]["message"]
    assert revision(client, admin_headers, plan) == current
    after = plan_grids(engine, plan, community)
    assert list(after.index) == list(before.index)
    assert all(after.at[c, "geom"].equals(before.at[c, "geom"]) for c in before.index)


def test_set_attributes(client, admin_headers, engine, plan):
    community = communities(engine, plan)[7]
    code = plan_grids(engine, plan, community).index[0]
    reply = edit(client, admin_headers, plan, op="set_attributes", code=code, worker_id=99_999_999)
    assert reply.status_code == 404 and "No responder 99999999" in reply.json()["error"]["message"]
    reply = edit(client, admin_headers, plan, op="set_attributes", code=code, kind="commercial", worker_id=None)
    assert reply.status_code == 200, reply.text
    props = reply.json()["grids"]["features"][0]["properties"]
    assert props["kind"] == "commercial" and props["worker_id"] is None
    after = plan_grids(engine, plan, community)
    assert after.at[code, "kind"] == "commercial" and np.isnan(after.at[code, "worker_id"])


def test_a_malformed_edit_is_a_422_naming_the_field(client, admin_headers, plan):
    reply = client.post(f"/plans/{plan}/edits", headers=admin_headers, json={"revision": 0, "op": "explode"})
    assert reply.status_code == 422 and "op" in reply.json()["error"]["message"]
    reply = client.post(f"/plans/{plan}/edits", headers=admin_headers,
                        json={"revision": 0, "op": "split", "code": "110102001001001",
                              "line": {"type": "Point", "coordinates": [116.4, 39.9]}})
    assert reply.status_code == 422 and "LineString" in reply.json()["error"]["message"]


def test_a_dispatcher_may_not_edit(client, engine, plan):
    headers = {"Authorization": f"Bearer {make_token(engine, 'dispatcher', '110102')}"}
    reply = client.post(f"/plans/{plan}/edits", headers=headers,
                        json={"revision": 0, "op": "set_attributes", "code": "110102001001001", "kind": "commercial"})
    assert reply.status_code == 403 and "planner" in reply.json()["error"]["message"]


def test_a_planner_may_edit_only_grids_in_their_area(client, admin_headers, engine, plan):
    headers = {"Authorization": f"Bearer {make_token(engine, 'planner', '110102003')}"}
    code = plan_grids(engine, plan, "110102001001").index[0]
    current = revision(client, admin_headers, plan)
    reply = client.post(f"/plans/{plan}/edits", headers=headers,
                        json={"revision": current, "op": "set_attributes", "code": code, "kind": "commercial"})
    assert reply.status_code == 404 and f"No grid {code} in your area" in reply.json()["error"]["message"]
    assert revision(client, admin_headers, plan) == current


def test_plan_grids_are_geojson_scoped_to_the_caller(client, engine, plan):
    headers = {"Authorization": f"Bearer {make_token(engine, 'planner', '110102003')}"}
    reply = client.get(f"/plans/{plan}/grids", headers=headers, params={"target": 250})
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("application/geo+json")
    features = reply.json()["features"]
    grids = plan_grids(engine, plan)
    mine = grids[grids.index.str.startswith("110102003")]
    assert sorted(f["id"] for f in features) == list(mine.index)
    props = features[0]["properties"]
    assert props["households"] == mine.at[props["code"], "households"]
    assert props["deviation"] == pytest.approx(props["households"] / 250 - 1, abs=1e-4)
    assert props["community"] == props["code"][:12] and "worker_name" in props
    one = client.get(f"/plans/{plan}/grids", headers=headers, params={"community": props["community"]}).json()
    assert {f["id"] for f in one["features"]} == set(mine.index[mine.index.str.startswith(props["community"])])
    refused = client.get(f"/plans/{plan}/grids", headers=headers, params={"community": "110102001001"})
    assert refused.status_code == 404 and "in your area" in refused.json()["error"]["message"]
