"""Plan diff: grids, building flows, open incidents and workers that a draft changes, checked against the same
figures computed independently with geopandas/shapely from the rows read straight from PostGIS."""

import geopandas as gpd
import pandas as pd
import pytest
import shapely
from pyproj import Geod
from sqlalchemy import text

from tests.conftest import make_token

# The open statuses as the workflow defines them (written out here, independently of geo/incidents/workflow.py).
OPEN = ["unassigned", "reported", "filed", "dispatched", "in_progress", "handled", "verified", "returned",
        "suspended"]
GEOD = Geod(ellps="WGS84")


# -- building a modified draft (plain SQL: the test's own edits) -------------------------------------------------

def reshape_draft(conn, plan_id: int, active: int) -> dict:
    """Three edits to a draft: land next to an open incident moves from its grid B to the neighbour A (taking
    the incident with it), grid C of another community is split east/west (the east half gets a new code and A's
    worker), grid D of a third community gets B's worker. Households are recounted. Returns the codes."""
    a, b, distance = conn.execute(text("""
        SELECT a.code, b.code, ST_Distance(i.geom, a.geom)
        FROM incidents i JOIN areas b ON b.id = i.grid_id
        JOIN areas a ON a.version_id = b.version_id AND a.level = 'grid' AND a.code <> b.code
                    AND left(a.code, 12) = left(b.code, 12) AND a.geom && b.geom
                    AND ST_Relate(a.geom, b.geom, 'F***1****')
        WHERE i.status = ANY(:open) AND b.version_id = :active
        ORDER BY ST_Distance(i.geom, a.geom), i.id LIMIT 1"""), {"open": OPEN, "active": active}).one()
    conn.execute(text("""
        WITH piece AS (SELECT ST_Intersection(b.geom, ST_Buffer(a.geom, :d)) AS g
                       FROM areas a, areas b WHERE a.version_id = :v AND a.code = :a AND b.version_id = :v
                                                AND b.code = :b)
        UPDATE areas x SET geom = ST_Multi(CASE WHEN x.code = :a THEN ST_Union(x.geom, piece.g)
                                                ELSE ST_Difference(x.geom, piece.g) END)
        FROM piece WHERE x.version_id = :v AND x.code IN (:a, :b)"""),
        {"v": plan_id, "a": a, "b": b, "d": distance + 0.0003})

    def busiest(exclude: list[str]) -> str:
        return conn.execute(text("""
            SELECT g.code FROM areas g JOIN incidents i ON i.grid_id = g.id AND i.status = ANY(:open)
            WHERE g.version_id = :active AND NOT left(g.code, 12) = ANY(:exclude)
            GROUP BY g.code ORDER BY count(*) DESC, g.code LIMIT 1"""),
            {"open": OPEN, "active": active, "exclude": exclude}).scalar_one()

    c = busiest([a[:12]])
    split = conn.execute(text("SELECT to_char(max(right(code, 3)::int) + 1, 'FM000') FROM areas "
                              "WHERE level = 'grid' AND left(code, 12) = :c"), {"c": c[:12]}).scalar_one()
    new = c[:12] + split
    conn.execute(text("""
        WITH src AS (SELECT *, ST_MakeEnvelope(-180, -90, ST_X(ST_Centroid(geom)), 90, 4326) AS west
                     FROM areas WHERE version_id = :v AND code = :c),
        east AS (INSERT INTO areas (code, level, name, parent_id, version_id, kind, worker_id, geom)
                 SELECT :new, 'grid', 'split east', parent_id, version_id, kind,
                        (SELECT worker_id FROM areas WHERE version_id = :v AND code = :a),
                        ST_Multi(ST_CollectionExtract(ST_Difference(geom, west), 3)) FROM src)
        UPDATE areas x SET geom = ST_Multi(ST_CollectionExtract(ST_Intersection(x.geom, src.west), 3))
        FROM src WHERE x.id = src.id"""), {"v": plan_id, "c": c, "new": new, "a": a})
    d = busiest([a[:12], c[:12]])
    conn.execute(text("UPDATE areas SET worker_id = (SELECT worker_id FROM areas WHERE version_id = :v AND code = :b) "
                      "WHERE version_id = :v AND code = :d"), {"v": plan_id, "b": b, "d": d})
    from geo.planning import plans

    plans.recount(conn, plan_id, [a, b, c, new])
    return {"a": a, "b": b, "c": c, "new": new, "d": d}


# -- the independent computation --------------------------------------------------------------------------------

def version_grids(conn, version: int) -> gpd.GeoDataFrame:
    return gpd.read_postgis(text("SELECT id, code, kind, households, worker_id, geom FROM areas "
                                 "WHERE version_id = :v AND level = 'grid' ORDER BY code"),
                            conn, geom_col="geom", params={"v": version})


def lowest_covering(points: gpd.GeoDataFrame, grids: gpd.GeoDataFrame) -> pd.Series:
    """Code of the lowest-coded grid covering each point (index of `points`), NaN where none does."""
    hits = gpd.sjoin(points[[points.geometry.name]], grids[["code", grids.geometry.name]], predicate="covered_by")
    return hits.groupby(level=0)["code"].min().reindex(points.index)


def expected_impact(conn, old: int, new: int) -> dict:
    before, after = version_grids(conn, old), version_grids(conn, new)
    both = pd.DataFrame(before.drop(columns="id")).merge(pd.DataFrame(after.drop(columns="id")), on="code",
                                                           how="outer", suffixes=("_before", "_after"))
    for side in ("geom_before", "geom_after"):
        both[side] = both[side].astype(object).where(both[side].notna(), None)
    both["moved_m2"] = gpd.GeoSeries(shapely.symmetric_difference(both["geom_before"].to_numpy(),
                                                                  both["geom_after"].to_numpy()), crs=4326) \
        .to_crs("EPSG:32650").area.to_numpy()
    change = {}
    for r in both.itertuples():
        if r.geom_before is None:
            change[r.code] = "added"
        elif r.geom_after is None:
            change[r.code] = "removed"
        elif (r.moved_m2 > 0.01 or r.kind_before != r.kind_after
              or not _same(r.worker_id_before, r.worker_id_after)):
            change[r.code] = "changed"
        else:
            change[r.code] = "unchanged"
    both["change"] = both["code"].map(change)

    buildings = gpd.read_postgis(text("SELECT id, households, geom FROM buildings"), conn, geom_col="geom")
    points = buildings.set_geometry(buildings.geometry.representative_point()).set_index("id")
    owners = pd.DataFrame({"from": lowest_covering(points, before), "to": lowest_covering(points, after),
                           "households": points["households"]})
    moved = owners[owners["from"].fillna("") != owners["to"].fillna("")]
    moves = sorted((None if pd.isna(f) else f, None if pd.isna(t) else t, int(len(g)), int(g["households"].sum()))
                   for (f, t), g in moved.groupby(["from", "to"], dropna=False))
    households = {side: owners.groupby(side)["households"].sum() for side in ("from", "to")}

    incidents = gpd.read_postgis(text("""
        SELECT i.id, i.status, i.grid_code, i.assignee_id, g.worker_id AS old_worker, i.geom
        FROM incidents i LEFT JOIN areas g ON g.id = i.grid_id
        WHERE i.status = ANY(:open) AND (i.grid_version_id = :old OR i.grid_id IS NULL) ORDER BY i.id"""),
        conn, geom_col="geom", params={"open": OPEN, "old": old}).set_index("id")
    incidents["to_grid"] = lowest_covering(incidents, after)
    worker_of = after.set_index("code")["worker_id"]
    reassigned = []
    for i, r in incidents.iterrows():
        to_grid = None if pd.isna(r.to_grid) else r.to_grid
        from_grid = None if pd.isna(r.grid_code) else r.grid_code
        assignee, old_worker = _int(r.assignee_id), _int(r.old_worker)
        if assignee is not None and assignee != old_worker:
            to_worker = assignee  # dispatched to someone other than the grid's worker: stays with them
        elif to_grid is not None:
            to_worker = _int(worker_of[to_grid])
        elif r.status in ("unassigned", "reported"):
            to_worker = None
        else:
            to_worker = assignee
        if to_grid != from_grid or to_worker != assignee:
            reassigned.append({"id": int(i), "status": r.status, "from_grid": from_grid, "to_grid": to_grid,
                               "from_worker": assignee, "to_worker": to_worker})
    return {"grids": both, "moves": moves, "households": households, "incidents": reassigned,
            "before": before, "after": after}


def geodesic_m2(geom) -> float:
    parts = geom.geoms if hasattr(geom, "geoms") else [geom]
    return sum(GEOD.geometry_area_perimeter(shapely.geometry.polygon.orient(p))[0] for p in parts)


def _int(value):
    return None if value is None or pd.isna(value) else int(value)


def _same(x, y) -> bool:
    return _int(x) == _int(y)


# -- tests ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def draft(client, admin_headers, engine):
    plan = client.post("/plans", json={"name": "diff test"}, headers=admin_headers).json()
    with engine.begin() as conn:
        active = conn.execute(text("SELECT id FROM grid_versions WHERE status = 'active'")).scalar_one()
        codes = reshape_draft(conn, plan["id"], active)
    with engine.connect() as conn:
        expected = expected_impact(conn, active, plan["id"])
    yield {"id": plan["id"], "active": active, "codes": codes, "expected": expected}
    client.delete(f"/plans/{plan['id']}", headers=admin_headers)


def test_diff_lists_exactly_the_changed_grids(client, admin_headers, draft):
    body = client.get(f"/plans/{draft['id']}/diff", headers=admin_headers).json()
    grids = draft["expected"]["grids"]
    counts = grids["change"].value_counts()
    assert body["plan_id"] == draft["id"] and body["against"] == draft["active"]
    for change in ("added", "removed", "changed", "unchanged"):
        assert body["summary"][change] == counts.get(change, 0)
    codes = draft["codes"]
    changed = {f["id"]: f["properties"] for f in body["grids"]["features"]}
    assert set(changed) == set(grids.loc[grids["change"] != "unchanged", "code"])
    assert {codes["a"], codes["b"], codes["c"], codes["d"]} <= set(changed)
    assert changed[codes["new"]]["change"] == "added" and changed[codes["a"]]["change"] == "changed"
    assert changed[codes["d"]]["worker_before"] != changed[codes["d"]]["worker_after"]
    assert changed[codes["d"]]["area_changed_m2"] == 0
    by_code = grids.set_index("code")
    for code, props in changed.items():
        row = by_code.loc[code]
        assert _int(props["worker_before"]) == _int(row.worker_id_before)
        assert _int(props["worker_after"]) == _int(row.worker_id_after)
        # households on both sides are what the buildings give by the lowest-code rule
        for side, key in (("from", "households_before"), ("to", "households_after")):
            if props[key] is not None:
                assert props[key] == draft["expected"]["households"][side].get(code, 0)


def test_a_reshaped_grid_is_drawn_as_the_land_that_changed_hands(client, admin_headers, draft):
    body = client.get(f"/plans/{draft['id']}/diff", headers=admin_headers).json()
    features = {f["id"]: f for f in body["grids"]["features"]}
    grids = draft["expected"]["grids"].set_index("code")
    for code in (draft["codes"]["a"], draft["codes"]["b"], draft["codes"]["c"]):
        land = grids.loc[code, "geom_before"].symmetric_difference(grids.loc[code, "geom_after"])
        drawn = shapely.geometry.shape(features[code]["geometry"])
        assert drawn.hausdorff_distance(land) < 1e-6  # GeoJSON keeps 7 decimals
        assert features[code]["properties"]["area_changed_m2"] == pytest.approx(geodesic_m2(drawn), rel=1e-3)
    added = draft["codes"]["new"]
    assert shapely.geometry.shape(features[added]["geometry"]).equals_exact(grids.loc[added, "geom_after"], 1e-7)


def test_building_moves_match_geopandas(client, admin_headers, draft):
    body = client.get(f"/plans/{draft['id']}/diff", headers=admin_headers).json()
    moves = sorted((m["from"], m["to"], m["buildings"], m["households"]) for m in body["moves"])
    assert moves == draft["expected"]["moves"] and moves
    assert body["summary"]["buildings_moved"] == sum(m[2] for m in moves)
    assert body["summary"]["households_moved"] == sum(m[3] for m in moves)
    codes = draft["codes"]
    assert (codes["b"], codes["a"]) in {(m[0], m[1]) for m in moves}
    assert (codes["c"], codes["new"]) in {(m[0], m[1]) for m in moves}


def test_open_incidents_that_would_move_match_shapely(client, admin_headers, draft):
    body = client.get(f"/plans/{draft['id']}/diff", params={"limit": 5000}, headers=admin_headers).json()
    expected = draft["expected"]["incidents"]
    assert body["incidents"] == expected and body["summary"]["incidents_reassigned"] == len(expected)
    moved_grids = {(i["from_grid"], i["to_grid"]) for i in expected}
    codes = draft["codes"]
    assert (codes["b"], codes["a"]) in moved_grids  # the incident next to A goes with the land
    assert any(i["from_grid"] == codes["d"] == i["to_grid"] for i in expected)  # D's worker changed
    limited = client.get(f"/plans/{draft['id']}/diff", params={"limit": 1}, headers=admin_headers).json()
    assert limited["incidents"] == expected[:1] and limited["incidents_truncated"] is (len(expected) > 1)
    assert limited["summary"]["incidents_reassigned"] == len(expected)


def test_workers_whose_areas_change_are_listed_with_both_sides(client, admin_headers, draft):
    body = client.get(f"/plans/{draft['id']}/diff", headers=admin_headers).json()
    grids = draft["expected"]["grids"]
    touched = grids[grids["change"] != "unchanged"]
    workers = {_int(w) for w in pd.concat([touched["worker_id_before"], touched["worker_id_after"]])} - {None}
    assert {w["worker_id"] for w in body["workers"]} == workers
    assert body["summary"]["workers_affected"] == len(workers)
    before, after = draft["expected"]["before"], draft["expected"]["after"]
    for w in body["workers"]:
        assert w["grids_before"] == sorted(before.loc[before["worker_id"] == w["worker_id"], "code"])
        assert w["grids_after"] == sorted(after.loc[after["worker_id"] == w["worker_id"], "code"])
        assert w["households_after"] == int(after.loc[after["worker_id"] == w["worker_id"], "households"].sum())
        assert w["name"]


def test_diff_against_a_version_id_equals_against_active(client, admin_headers, draft):
    by_id = client.get(f"/plans/{draft['id']}/diff", params={"against": draft["active"]}, headers=admin_headers)
    active = client.get(f"/plans/{draft['id']}/diff", headers=admin_headers)
    assert by_id.status_code == 200 and by_id.json() == active.json()
    itself = client.get(f"/plans/{draft['id']}/diff", params={"against": draft["id"]}, headers=admin_headers).json()
    assert [itself["summary"][k] for k in ("added", "removed", "changed")] == [0, 0, 0] and itself["moves"] == []


def test_diff_is_scoped_to_the_callers_area(client, engine, draft):
    street = draft["codes"]["c"][:9]
    headers = {"Authorization": f"Bearer {make_token(engine, 'supervisor', street)}"}
    body = client.get(f"/plans/{draft['id']}/diff", params={"limit": 5000}, headers=headers).json()
    grids = draft["expected"]["grids"]
    mine = grids[(grids["change"] != "unchanged") & grids["code"].str.startswith(street)]
    assert {f["id"] for f in body["grids"]["features"]} == set(mine["code"])
    assert body["summary"]["unchanged"] == int(((grids["change"] == "unchanged")
                                                & grids["code"].str.startswith(street)).sum())
    assert all(i["from_grid"].startswith(street) or (i["to_grid"] or "").startswith(street)
               for i in body["incidents"])
    assert all((m["from"] or "").startswith(street) or (m["to"] or "").startswith(street) for m in body["moves"])


def test_diff_errors_say_what_is_wrong(client, admin_headers, engine, draft):
    missing = client.get(f"/plans/{draft['id']}/diff", params={"against": 999999}, headers=admin_headers)
    assert missing.status_code == 404 and "No grid version 999999" in missing.json()["error"]["message"]
    bad = client.get(f"/plans/{draft['id']}/diff", params={"against": "latest"}, headers=admin_headers)
    assert bad.status_code == 422 and "against" in bad.json()["error"]["message"]
    no_plan = client.get("/plans/999999/diff", headers=admin_headers)
    assert no_plan.status_code == 404 and "No plan 999999" in no_plan.json()["error"]["message"]
    worker = {"Authorization": f"Bearer {make_token(engine, 'grid_worker', '110102')}"}
    denied = client.get(f"/plans/{draft['id']}/diff", headers=worker)
    assert denied.status_code == 403 and "planner" in denied.json()["error"]["message"]
