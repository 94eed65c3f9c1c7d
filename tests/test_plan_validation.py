"""Plan validation: planted defects are found exactly, with areas matching shapely in UTM; slivers snap away."""

from collections import Counter

import geopandas as gpd
import pytest
import shapely
from pyproj import Transformer
from sqlalchemy import text

from tests.conftest import make_token

UTM = "EPSG:32650"  # Beijing: metric areas, independent of PostGIS's geography
NOISE_M2 = 0.01  # overlay residue below this is not a finding (both sides ignore it)
GEOMETRIC = ("invalid_geometry", "overlap", "gap", "outside_community", "multipart", "hole")
TO_WGS84 = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True).transform


def _wgs(geom):
    return gpd.GeoSeries([geom], crs=UTM).to_crs("EPSG:4326").iloc[0]


def _grids(conn, plan_id: int) -> gpd.GeoDataFrame:
    return gpd.read_postgis(text("SELECT code, households, worker_id, geom FROM areas WHERE version_id = :v "
                                 "AND level = 'grid' ORDER BY code"), conn, geom_col="geom", params={"v": plan_id})


def _communities(conn) -> gpd.GeoDataFrame:
    return gpd.read_postgis(text("SELECT code, geom FROM areas WHERE level = 'community' AND version_id IS NULL "
                                 "AND code LIKE '110102%' ORDER BY code"), conn, geom_col="geom")


def _set_geom(conn, plan_id: int, code: str, geom) -> None:
    conn.execute(text("UPDATE areas SET geom = ST_Multi(ST_SetSRID(ST_GeomFromWKB(decode(:wkb, 'hex')), 4326)) "
                      "WHERE version_id = :v AND code = :c"),
                 {"wkb": shapely.to_wkb(geom, hex=True), "v": plan_id, "c": code})


def _parts(geom) -> list:
    return [p for p in shapely.get_parts(shapely.get_parts(geom)) if p.geom_type == "Polygon" and p.area >= NOISE_M2]


def expected_geometric(conn, plan_id: int) -> dict[tuple, list[float]]:
    """(kind, codes) → areas (m², UTM) of every geometric finding, computed with shapely alone."""
    raw = _grids(conn, plan_id)
    found: dict[tuple, list[float]] = {}
    for code in raw.loc[~raw.is_valid, "code"]:
        found[("invalid_geometry", (code,))] = [None]
    grids = raw.to_crs(UTM)
    grids["geom"] = shapely.make_valid(grids.geometry.values, method="structure")
    grids["community"] = grids["code"].str[:12]
    communities = _communities(conn).to_crs(UTM).set_index("code").geometry
    holes = [(g.code, shapely.Polygon(ring)) for g in grids.itertuples()
             for p in shapely.get_parts(g.geom) for ring in p.interiors]
    for community, members in grids.groupby("community"):
        for part in _parts(communities[community].difference(shapely.union_all(members.geometry.values))):
            inside = part.representative_point()
            owner = [code for code, hole in holes if code[:12] == community and hole.contains(inside)]
            touching = tuple(members.loc[members.distance(part) < 1e-3, "code"])
            key = ("hole", tuple(owner[:1])) if owner else ("gap", touching)
            found.setdefault(key, []).append(part.area)
    for g in grids.itertuples():
        for part in _parts(g.geom.difference(communities[g.community])):
            found.setdefault(("outside_community", (g.code,)), []).append(part.area)
        parts = sorted(_parts(g.geom), key=lambda p: -p.area)
        if len(parts) > 1:
            found[("multipart", (g.code,))] = [sum(p.area for p in parts[1:])]
    geoms = grids.geometry.values
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    for i, j in zip(left, right, strict=False):
        if grids.code.iloc[i] < grids.code.iloc[j]:
            for part in _parts(shapely.intersection(geoms[i], geoms[j])):
                found.setdefault(("overlap", (grids.code.iloc[i], grids.code.iloc[j])), []).append(part.area)
    return found


def findings(body: dict, kinds=None) -> dict[tuple, list[float]]:
    out: dict[tuple, list] = {}
    for f in body["features"]:
        p = f["properties"]
        if kinds is None or p["kind"] in kinds:
            out.setdefault((p["kind"], tuple(p["codes"])), []).append(p["area_m2"])
    return out


def assert_same_findings(got: dict, expected: dict) -> None:
    assert Counter({k: len(v) for k, v in got.items()}) == Counter({k: len(v) for k, v in expected.items()})
    for key, areas in expected.items():
        if areas[0] is None:
            continue
        for a, b in zip(sorted(got[key]), sorted(areas), strict=False):
            assert a == pytest.approx(b, rel=0.01, abs=0.005), key


def _shared_edge(a, b):
    """The longest piece of a's boundary that lies on b (UTM)."""
    lines = [p for p in shapely.get_parts(a.boundary.intersection(b.buffer(0.01))) if p.geom_type == "LineString"]
    return max(lines, key=lambda line: line.length) if lines else None


def _neighbours(grids: gpd.GeoDataFrame, min_edge_m: float):
    """(a, b, shared edge) of single-part grids sharing an edge of at least min_edge_m (UTM); a < b, in code order."""
    geoms, codes = grids.geometry.values, grids.code.values
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    for i, j in sorted(zip(left, right, strict=False), key=lambda ij: (codes[ij[0]], codes[ij[1]])):
        if codes[i] < codes[j] and shapely.get_num_geometries(geoms[i]) == shapely.get_num_geometries(geoms[j]) == 1:
            edge = _shared_edge(geoms[i], geoms[j])
            if edge is not None and edge.length >= min_edge_m:
                yield codes[i], codes[j], edge


def _square(center, side_m: float):
    return shapely.box(center.x - side_m / 2, center.y - side_m / 2, center.x + side_m / 2, center.y + side_m / 2)


def _new_plan(client, headers, name: str) -> dict:
    reply = client.post("/plans", json={"name": name}, headers=headers)
    assert reply.status_code == 201, reply.text
    return reply.json()


@pytest.fixture(scope="module")
def defects(client, admin_headers, engine):
    """A draft of the demo with one of each defect planted, each in its own community."""
    plan = _new_plan(client, admin_headers, "validation defects")
    v = plan["id"]
    with engine.begin() as conn:
        wgs = _grids(conn, v).set_index("code").geometry
        grids = _grids(conn, v).to_crs(UTM)
        communities = _communities(conn).to_crs(UTM).set_index("code").geometry
        used: set[str] = set()

        def pick(condition) -> str:
            for g in grids.itertuples():
                if g.code[:12] not in used and len(shapely.get_parts(g.geom)) == 1 and condition(g):
                    used.add(g.code[:12])
                    return g.code
            raise AssertionError("no grid fits")

        planted = {}
        # overlap: A grows 5 m into its neighbour B
        a, b, _ = next(p for p in _neighbours(grids, 100) if p[0][:12] == p[1][:12])
        used.add(a[:12])
        grow = _wgs(grids.set_index("code").geometry[a].buffer(5)).intersection(wgs[b])
        _set_geom(conn, v, a, wgs[a].union(grow))
        planted["overlap"] = (a, b)
        # gap: C shrinks by 3 m
        c = pick(lambda g: not g.geom.buffer(-10).is_empty)
        _set_geom(conn, v, c, _wgs(grids.set_index("code").geometry[c].buffer(-3)))
        planted["gap"] = c
        # self-intersection: a bow-tie (10 m) inside E, added as a second part; stored without any check
        e = pick(lambda g: not g.geom.buffer(-20).is_empty)
        x, y = grids.set_index("code").geometry[e].buffer(-20).representative_point().coords[0]
        tie = _wgs(shapely.Polygon([(x - 5, y - 5), (x + 5, y + 5), (x + 5, y - 5), (x - 5, y + 5)]))
        wkt = shapely.to_wkt(shapely.MultiPolygon([*wgs[e].geoms, tie]), rounding_precision=-1)
        conn.execute(text("UPDATE areas SET geom = ST_GeomFromText(:wkt, 4326) WHERE version_id = :v AND code = :c"),
                     {"wkt": wkt, "v": v, "c": e})
        planted["invalid_geometry"] = (e, TO_WGS84(x, y))
        # crossing the community boundary: F, on its community's edge, grows 8 m beyond it
        f = pick(lambda g: communities[g.code[:12]].boundary.intersection(g.geom.boundary).length > 50)
        beyond = _wgs(grids.set_index("code").geometry[f].buffer(8).difference(
            communities[f[:12]]))
        _set_geom(conn, v, f, wgs[f].union(beyond))
        planted["outside_community"] = f
        # a 10 m × 10 m hole in J
        j = pick(lambda g: not g.geom.buffer(-20).is_empty)
        hole = _wgs(_square(grids.set_index("code").geometry[j].buffer(-20).representative_point(), 10))
        _set_geom(conn, v, j, wgs[j].difference(hole))
        planted["hole"] = j
        # a grid in two parts: K takes a 10 m square from the middle of L, a grid of its community it does not touch
        def far_sibling(k) -> str | None:
            return next((g.code for g in grids.itertuples() if g.code[:12] == k.code[:12] and g.code != k.code
                         and not g.geom.buffer(-20).is_empty and not g.geom.intersects(k.geom)), None)

        k = pick(lambda g: far_sibling(g) is not None)
        ell = far_sibling(next(g for g in grids.itertuples() if g.code == k))
        piece = _wgs(_square(grids.set_index("code").geometry[ell].buffer(-20).representative_point(), 10))
        _set_geom(conn, v, k, wgs[k].union(piece))
        _set_geom(conn, v, ell, wgs[ell].difference(piece))
        planted["multipart"] = k
        # unbalanced and unstaffed grids
        high, low, w = (pick(lambda g: 255 <= g.households <= 345) for _ in range(3))
        conn.execute(text("UPDATE areas SET households = CASE code WHEN :h THEN 520 ELSE 120 END "
                          "WHERE version_id = :v AND code IN (:h, :l)"), {"h": high, "l": low, "v": v})
        conn.execute(text("UPDATE areas SET worker_id = NULL WHERE version_id = :v AND code = :c"), {"c": w, "v": v})
        planted["households_out_of_band"] = (high, low)
        planted["no_worker"] = w
    yield v, planted
    client.delete(f"/plans/{v}", headers=admin_headers)


def test_planted_defects_are_found_exactly_with_their_areas(client, admin_headers, engine, defects):
    v, planted = defects
    body = client.get(f"/plans/{v}/validation", headers=admin_headers).json()
    with engine.connect() as conn:
        expected = expected_geometric(conn, v)
        grids = _grids(conn, v)
    assert_same_findings(findings(body, GEOMETRIC), expected)
    got = findings(body)
    a, b = planted["overlap"]
    assert ("overlap", (a, b)) in got and got[("overlap", (a, b))][0] > 100
    assert any(k[0] == "gap" and planted["gap"] in k[1] for k in got)
    assert ("hole", (planted["hole"],)) in got and got[("hole", (planted["hole"],))] == [pytest.approx(100, rel=0.01)]
    assert ("outside_community", (planted["outside_community"],)) in got
    assert got[("multipart", (planted["multipart"],))] == [pytest.approx(100, rel=0.01)]
    assert [k for k in got if k[0] == "invalid_geometry"] == [("invalid_geometry", (planted["invalid_geometry"][0],))]
    invalid = next(f for f in body["features"] if f["properties"]["kind"] == "invalid_geometry")
    assert invalid["properties"]["severity"] == "error" and "Self-intersection" in invalid["properties"]["message"]
    assert invalid["geometry"]["coordinates"] == pytest.approx(planted["invalid_geometry"][1], abs=1e-7)
    # warnings, from the stored attributes
    band = grids[(grids.households < 255) | (grids.households > 345)]
    assert set(k[1][0] for k in got if k[0] == "households_out_of_band") == set(band.code)
    assert set(planted["households_out_of_band"]) <= set(band.code)
    assert [k[1] for k in got if k[0] == "no_worker"] == [(c,) for c in grids.loc[grids.worker_id.isna(), "code"]]
    assert [k[1] for k in got if k[0] == "no_worker"] == [(planted["no_worker"],)]
    # severities and the summary
    severity = {f["properties"]["kind"]: f["properties"]["severity"] for f in body["features"]}
    assert {severity[k] for k in ("overlap", "gap", "hole", "outside_community")} == {"error"}
    assert {severity[k] for k in ("households_out_of_band", "no_worker", "multipart")} == {"warning"}
    summary = body["summary"]
    assert summary["passes"] is False and summary["errors"] == sum(
        f["properties"]["severity"] == "error" for f in body["features"])
    assert summary["by_kind"]["no_worker"] == 1 and body["plan_id"] == v and body["parameters"]["target"] == 300


def test_low_compactness_matches_polsby_popper_in_utm(client, admin_headers, engine, defects):
    v, _ = defects
    body = client.get(f"/plans/{v}/validation", headers=admin_headers, params={"min_compactness": 0.3}).json()
    with engine.connect() as conn:
        grids = _grids(conn, v).to_crs(UTM)
    grids["geom"] = shapely.make_valid(grids.geometry.values, method="structure")
    pp = 4 * 3.141592653589793 * grids.area / grids.length ** 2
    flagged = {f["properties"]["codes"][0] for f in body["features"] if f["properties"]["kind"] == "low_compactness"}
    assert set(grids.code[pp < 0.3 - 0.01]) <= flagged <= set(grids.code[pp < 0.3 + 0.01])
    assert body["parameters"]["min_compactness"] == 0.3


def test_the_active_version_can_be_validated(client, admin_headers, engine):
    with engine.connect() as conn:
        active = conn.execute(text("SELECT id FROM grid_versions WHERE status = 'active'")).scalar_one()
    body = client.get(f"/plans/{active}/validation", headers=admin_headers).json()
    assert body["status"] == "active" and body["summary"]["passes"]


def test_band_follows_target_and_tolerance(client, admin_headers, engine, defects):
    v, _ = defects
    body = client.get(f"/plans/{v}/validation", headers=admin_headers,
                      params={"target": 250, "tolerance": 0.5}).json()
    with engine.connect() as conn:
        grids = _grids(conn, v)
    out = grids[(grids.households < 125) | (grids.households > 375)]
    assert body["parameters"]["band"] == [125, 375]
    assert sorted(k[1][0] for k in findings(body, ["households_out_of_band"])) == sorted(out.code)


def test_readers_see_only_their_area(client, engine, defects):
    v, planted = defects
    street = planted["no_worker"][:9]
    supervisor = {"Authorization": f"Bearer {make_token(engine, 'supervisor', street)}"}
    body = client.get(f"/plans/{v}/validation", headers=supervisor).json()
    assert body["features"] and all(f["properties"]["community"].startswith(street) for f in body["features"])
    assert ("no_worker", (planted["no_worker"],)) in findings(body)
    refused = client.post(f"/plans/{v}/fix-slivers", json={"revision": 0}, headers=supervisor)
    assert refused.status_code == 403 and "planner" in refused.json()["error"]["message"]
    dispatcher = {"Authorization": f"Bearer {make_token(engine, 'dispatcher', '110102')}"}
    reply = client.get(f"/plans/{v}/validation", headers=dispatcher)
    assert reply.status_code == 403 and "planner, supervisor" in reply.json()["error"]["message"]


def test_bad_parameters_and_unknown_plans_are_refused(client, admin_headers):
    reply = client.get("/plans/1/validation", headers=admin_headers, params={"sliver_m2": 1000})
    assert reply.status_code == 422 and reply.json()["error"]["field"] == "sliver_m2"
    reply = client.get("/plans/999999/validation", headers=admin_headers)
    assert reply.status_code == 404 and "No plan 999999" in reply.json()["error"]["message"]


def test_untouched_draft_passes_and_planted_slivers_snap_away(client, admin_headers, engine):
    plan = _new_plan(client, admin_headers, "slivers")  # one draft for both: discarding a full copy is slow
    v = plan["id"]
    try:
        # the demo's bisection partition is clean: no errors, nothing to fix (a few two-part grids are warnings)
        body = client.get(f"/plans/{v}/validation", headers=admin_headers).json()
        with engine.connect() as conn:
            expected = expected_geometric(conn, v)
        assert {k[0] for k in expected} <= {"multipart"}
        assert_same_findings(findings(body, GEOMETRIC), expected)
        assert body["summary"]["errors"] == 0 and body["summary"]["fixable"] == 0 and body["summary"]["passes"]
        assert body["revision"] == 0 and body["status"] == "draft"

        with engine.begin() as conn:
            wgs = _grids(conn, v).set_index("code").geometry
            utm = _grids(conn, v).to_crs(UTM)
            inside = (x for x in _neighbours(utm, 60) if x[0][:12] == x[1][:12])
            p, q, gap_edge = next(inside)
            r, s, overlap_edge = next(x for x in inside if x[0][:12] != p[:12])
            def stick_of(x):
                return _wgs(_square(x[2].interpolate(0.5, normalized=True), 1)).intersection(wgs[x[1]])

            # a stick that stays attached once in lon/lat (not an island that also makes the grid multipart)
            t, u, cross_edge = next(x for x in _neighbours(utm, 60) if x[0][:12] != x[1][:12]
                                    and not {x[0][:12], x[1][:12]} & {p[:12], r[:12]}
                                    and len(shapely.get_parts(wgs[x[0]].union(stick_of(x)))) == 1)
            # a 1 m square centred on a shared edge: half of it (0.5 m²) is cut from p, half of it is added to r
            # (inside its community) and to t (beyond its community, into u's)
            cut = _wgs(_square(gap_edge.interpolate(0.5, normalized=True), 1))
            _set_geom(conn, v, p, wgs[p].difference(cut))
            add = _wgs(_square(overlap_edge.interpolate(0.5, normalized=True), 1)).intersection(wgs[s])
            _set_geom(conn, v, r, wgs[r].union(add))
            stick = _wgs(_square(cross_edge.interpolate(0.5, normalized=True), 1)).intersection(wgs[u])
            _set_geom(conn, v, t, wgs[t].union(stick))
            before = expected_geometric(conn, v)
        body = client.get(f"/plans/{v}/validation", headers=admin_headers).json()
        assert_same_findings(findings(body, GEOMETRIC), before)
        fixable = findings(body, [k for k in GEOMETRIC if k != "multipart"])
        assert set(fixable) == {("gap", (p, q)), ("overlap", (r, s)), ("overlap", (t, u)), ("outside_community", (t,))}
        assert all(a == [pytest.approx(0.5, rel=0.05)] for a in fixable.values())
        assert body["summary"]["fixable"] == 4 and body["summary"]["errors"] == 0 and not body["summary"]["passes"]

        stale = client.post(f"/plans/{v}/fix-slivers", json={"revision": 7}, headers=admin_headers)
        assert stale.status_code == 409 and "based on revision 7" in stale.json()["error"]["message"]
        reply = client.post(f"/plans/{v}/fix-slivers", json={"revision": 0}, headers=admin_headers)
        assert reply.status_code == 200, reply.text
        out = reply.json()
        assert out["revision"] == 1 and out["fixed"] == {"gap": 1, "hole": 0, "overlap": 2, "outside_community": 1}
        assert out["changed"] == sorted([p, s, t])
        assert out["summary"]["fixable"] == 0 and out["summary"]["passes"]
        with engine.connect() as conn:
            after = expected_geometric(conn, v)
            grids = _grids(conn, v).to_crs(UTM).set_index("code").geometry
            community = _communities(conn).to_crs(UTM).set_index("code").geometry[p[:12]]
        assert {k[0] for k in after} <= {"multipart"}
        members = grids[grids.index.str.startswith(p[:12])]
        assert community.difference(shapely.union_all(members.values)).area < NOISE_M2
        assert grids[r].intersection(grids[s]).area < NOISE_M2 and grids[t].intersection(grids[u]).area < NOISE_M2
        # inside a community the lower code keeps an overlap: r (< s) still holds the piece it grew; across
        # communities the grid whose community it is in keeps it: u, not t
        add_utm, stick_utm = gpd.GeoSeries([add, stick], crs="EPSG:4326").to_crs(UTM)
        assert grids[r].intersection(add_utm).area == pytest.approx(add_utm.area, rel=0.01)
        assert grids[u].intersection(stick_utm).area == pytest.approx(stick_utm.area, rel=0.01)
        assert grids[t].intersection(stick_utm).area < NOISE_M2
        assert client.get(f"/plans/{v}", headers=admin_headers).json()["revision"] == 1
    finally:
        client.delete(f"/plans/{v}", headers=admin_headers)
