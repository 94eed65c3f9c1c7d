"""Plan files: export in four formats, import round trip, CRSs, all-or-nothing errors, POST /plans with a file, CLI
— checked with geopandas/shapely against data read straight from PostGIS."""

import io
import re
import zipfile

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from sqlalchemy import text
from typer.testing import CliRunner

from geo.crs import to_wgs84, wgs84_to_bd09, wgs84_to_gcj02
from tests.conftest import make_token

AREA_TOL = 1e-9  # relative area difference allowed for "the same land"
ACCEPTED = "GeoPackage (.gpkg), a zipped Shapefile"
MEDIA = {"gpkg": "application/geopackage+sqlite3", "geojson": "application/geo+json", "shp": "application/zip",
         "parquet": "application/vnd.apache.parquet"}


@pytest.fixture
def drafts(client, admin_headers):
    """Plans made by a test, discarded afterwards."""
    made = []

    def new(name="file tests"):
        plan = client.post("/plans", json={"name": name}, headers=admin_headers).json()
        made.append(plan["id"])
        return plan["id"]

    new.made = made
    yield new
    for plan_id in made:
        client.delete(f"/plans/{plan_id}", headers=admin_headers)


@pytest.fixture(scope="module")
def active(engine, demo) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT id FROM grid_versions WHERE status = 'active'")).scalar_one()


def db_grids(engine, version, community=None) -> gpd.GeoDataFrame:
    """A version's grids with the export attributes, straight from the tables."""
    with engine.connect() as conn:
        return gpd.read_postgis(text("""
            SELECT a.code, a.name, c.code AS community_code, s.code AS street_code, a.kind, a.households,
                   a.worker_id, r.name AS worker_name, a.version_id, a.geom
            FROM areas a JOIN areas c ON c.id = a.parent_id JOIN areas s ON s.id = c.parent_id
            LEFT JOIN responders r ON r.id = a.worker_id
            WHERE a.version_id = :v AND a.level = 'grid' AND (CAST(:c AS text) IS NULL OR c.code = CAST(:c AS text))
            ORDER BY a.code"""), conn, geom_col="geom", params={"v": version, "c": community}).set_index("code")


def same_land(a, b, tol=AREA_TOL) -> bool:
    return shapely.symmetric_difference(a, b).area <= tol * max(a.area, b.area)


def community_with_grids(engine, version, n=4) -> str:
    grids = db_grids(engine, version)
    sizes = grids.groupby("community_code").size()
    return sizes[sizes >= n].index[0]


def file_bytes(frame: gpd.GeoDataFrame, tmp_path, driver: str, name: str = "grids") -> bytes:
    """A GeoDataFrame as the bytes of a GeoPackage, GeoJSON or zipped Shapefile, written by geopandas."""
    if driver == "ESRI Shapefile":
        folder = tmp_path / f"{name}-shp"
        folder.mkdir()
        frame.to_file(folder / f"{name}.shp", encoding="UTF-8")
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for part in folder.iterdir():
                archive.write(part, f"{name}/{part.name}")  # in a folder, as zips made by hand often are
        return buffer.getvalue()
    path = tmp_path / f"{name}.{'gpkg' if driver == 'GPKG' else 'geojson'}"
    frame.to_file(path, driver=driver)
    return path.read_bytes()


def post_file(client, headers, plan_id, content, revision=0, **params):
    return client.post(f"/plans/{plan_id}/import", content=content, headers=headers,
                       params={"revision": revision, **params})


def revision_of(client, headers, plan_id) -> int:
    return client.get(f"/plans/{plan_id}", headers=headers).json()["revision"]


# ------------------------------------------------------------------------------------------------------ export

@pytest.mark.parametrize("fmt", ["gpkg", "geojson", "shp", "parquet"])
def test_export_writes_every_grid_with_its_attributes_in_each_format(client, admin_headers, engine, active, fmt,
                                                                     tmp_path):
    reply = client.get(f"/plans/{active}/export", params={"format": fmt}, headers=admin_headers)
    assert reply.status_code == 200 and reply.headers["content-type"] == MEDIA[fmt]
    name = re.search(r'filename="([^"]+)"', reply.headers["content-disposition"]).group(1)
    assert name == f"plan-{active}" + {"gpkg": ".gpkg", "geojson": ".geojson", "shp": ".shp.zip",
                                        "parquet": ".parquet"}[fmt]
    path = tmp_path / name
    path.write_bytes(reply.content)
    got = gpd.read_parquet(path) if fmt == "parquet" else gpd.read_file(path)
    if fmt == "shp":
        assert all(len(c) <= 10 for c in got.columns)
        assert {".shp", ".shx", ".dbf", ".prj"} <= {p[-4:] for p in zipfile.ZipFile(path).namelist()}
        got = got.rename(columns={"comm_code": "community_code", "street_cd": "street_code",
                                  "worker_nm": "worker_name"})
    assert got.crs.to_epsg() == 4326
    want = db_grids(engine, active)
    got = got.set_index("code")
    assert list(got.index) == list(want.index)
    for column in ("name", "community_code", "street_code", "kind", "worker_name"):
        assert got[column].fillna("").tolist() == want[column].fillna("").tolist(), column
    for column in ("households", "worker_id", "version_id"):
        assert got[column].fillna(-1).astype(int).tolist() == want[column].fillna(-1).astype(int).tolist(), column
    difference = shapely.area(shapely.symmetric_difference(got.geometry.values, want.geometry.values))
    assert (difference <= AREA_TOL * shapely.area(want.geometry.values)).all()


def test_export_is_scoped_to_the_caller_and_works_for_drafts_and_retired_versions(client, engine, admin_headers,
                                                                                   drafts, active):
    street = db_grids(engine, active)["street_code"].iloc[0]
    headers = {"Authorization": f"Bearer {make_token(engine, 'supervisor', street)}"}
    plan_id = drafts()
    with engine.begin() as conn:  # a version that is history: what a publish leaves behind
        conn.execute(text("UPDATE grid_versions SET status = 'retired' WHERE id = :v"), {"v": plan_id})
    try:
        for version in (active, plan_id):
            reply = client.get(f"/plans/{version}/export", params={"format": "geojson"}, headers=headers)
            got = gpd.read_file(io.BytesIO(reply.content))
            want = db_grids(engine, version)
            assert sorted(got["code"]) == sorted(want.index[want["street_code"] == street])
            assert set(got["version_id"]) == {version}
    finally:
        with engine.begin() as conn:
            conn.execute(text("UPDATE grid_versions SET status = 'draft' WHERE id = :v"), {"v": plan_id})
    missing = client.get("/plans/999999/export", headers=admin_headers)
    assert missing.status_code == 404 and "No plan 999999" in missing.json()["error"]["message"]
    worker = {"Authorization": f"Bearer {make_token(engine, 'grid_worker', street)}"}
    assert client.get(f"/plans/{active}/export", headers=worker).status_code == 403


# ------------------------------------------------------------------------------------------------------ import

def test_round_trip_a_split_grid_replaces_its_community_and_keeps_the_other_codes(client, admin_headers, engine,
                                                                                  drafts, active, tmp_path):
    plan_id = drafts("round trip")
    exported = client.get(f"/plans/{plan_id}/export", params={"format": "gpkg"}, headers=admin_headers)
    (tmp_path / "plan.gpkg").write_bytes(exported.content)
    grids = gpd.read_file(tmp_path / "plan.gpkg")
    community = community_with_grids(engine, plan_id)
    target = grids[grids["community_code"] == community].iloc[1]
    x0, y0, x1, y1 = target.geometry.bounds
    cut = x0 + 0.3 * (x1 - x0)  # a 30/70 split: the larger part is on the old grid's place, the smaller is new
    left = target.geometry.intersection(shapely.box(x0 - 1, y0 - 1, cut, y1 + 1))
    right = target.geometry.intersection(shapely.box(cut, y0 - 1, x1 + 1, y1 + 1))
    pieces = gpd.GeoDataFrame({"code": [None, None], "name": [None, None], "kind": ["residential"] * 2},
                              geometry=[left, right], crs="EPSG:4326")
    edited = pd.concat([grids[grids["code"] != target["code"]], pieces], ignore_index=True)
    with engine.connect() as conn:
        taken = set(conn.execute(text("SELECT code FROM areas WHERE level = 'grid' AND left(code, 12) = :c"),
                                 {"c": community}).scalars())
    content = file_bytes(edited, tmp_path, "GPKG", "edited")
    reply = post_file(client, {**admin_headers, "Content-Type": "application/geopackage+sqlite3"}, plan_id, content,
                      filename="edited.gpkg")
    assert reply.status_code == 200, reply.text
    report = reply.json()
    before = db_grids(engine, active)
    assert report["revision"] == 1 and report["imported"] == len(edited) and report["replaced"] == len(before)
    assert report["communities"] == sorted(before["community_code"].unique())
    assert report["unchanged"] == [c for c in report["communities"] if c != community]  # left as they were

    after = db_grids(engine, plan_id)
    new_code = (set(after.index) - set(before.index)).pop()
    assert set(after.index) == set(before.index) | {new_code} and new_code not in taken
    assert new_code.startswith(community) and report["codes"][-2:] == [new_code, target["code"]]
    assert same_land(after.geometry[target["code"]], right) and same_land(after.geometry[new_code], left)
    mine = after[after["community_code"] == community]
    assert same_land(shapely.union_all(mine.geometry.values),
                     shapely.union_all(edited.geometry.values[edited["code"].fillna(community).str.startswith(
                         community)]))
    others = after.index[(after["community_code"] != community)]
    assert (after.loc[others, ["name", "kind", "worker_id", "households"]].fillna(-1)
            == before.loc[others, ["name", "kind", "worker_id", "households"]].fillna(-1)).all().all()
    difference = shapely.area(shapely.symmetric_difference(after.geometry[others].values,
                                                           before.geometry[others].values))
    assert (difference <= AREA_TOL * shapely.area(before.geometry[others].values)).all()
    with engine.connect() as conn:
        logged = conn.execute(text("SELECT detail FROM audit_log WHERE action = 'plan.import' AND target = :t"),
                              {"t": f"grid_version:{plan_id}"}).scalar_one()
    assert logged["file"] == "edited.gpkg" and logged["imported"] == len(edited)


@pytest.mark.parametrize("crs", ["EPSG:4490", "GCJ-02", "BD-09"])
def test_cgcs2000_files_and_declared_gcj02_bd09_are_converted_to_wgs84(client, admin_headers, engine, drafts, active,
                                                                        crs, tmp_path):
    plan_id = drafts()
    community = community_with_grids(engine, active)
    grids = db_grids(engine, active, community).reset_index()[["code", "kind", "geom"]].set_geometry("geom")
    if crs == "EPSG:4490":
        sent = grids.set_crs(4490, allow_override=True)  # the file says CGCS2000: no crs= needed
        params = {}
    else:
        shift = wgs84_to_gcj02 if crs == "GCJ-02" else wgs84_to_bd09
        sent = grids.set_geometry(shapely.transform(grids.geometry.values,
                                                    lambda xy: np.column_stack(shift(xy[:, 0], xy[:, 1]))))
        params = {"crs": crs}
    content = file_bytes(sent, tmp_path, "GPKG" if crs == "EPSG:4490" else "GeoJSON")
    reply = post_file(client, admin_headers, plan_id, content, filename="grids.gpkg" if not params else "g.geojson",
                      **params)
    assert reply.status_code == 200, reply.text
    assert reply.json()["crs"] == crs and reply.json()["communities"] == [community]
    expected = shapely.transform(sent.geometry.values,
                                 lambda xy: np.column_stack(to_wgs84(xy[:, 0], xy[:, 1], crs)))
    after = db_grids(engine, plan_id, community)
    assert list(after.index) == list(grids["code"])
    assert all(same_land(a, b) for a, b in zip(after.geometry.values, expected, strict=False))
    # back where it was, to the offset formulas' round-trip accuracy (well under a millimetre)
    assert all(same_land(a, b, 1e-5) for a, b in zip(after.geometry.values, grids.geometry.values, strict=False))
    assert len(db_grids(engine, plan_id)) == len(db_grids(engine, active))  # other communities kept


def test_zipped_shapefile_in_a_projected_crs_is_reprojected_and_keeps_codes(client, admin_headers, engine, drafts,
                                                                           active, tmp_path):
    plan_id = drafts()
    community = community_with_grids(engine, active)
    grids = db_grids(engine, active, community).reset_index()[["code", "name", "kind", "geom"]].set_geometry("geom")
    grids.loc[0, "kind"] = "commercial"
    sent = grids.to_crs("EPSG:32650")  # the .prj says UTM 50N
    content = file_bytes(sent, tmp_path, "ESRI Shapefile")
    reply = post_file(client, {**admin_headers, "Content-Type": "application/zip"}, plan_id, content)
    assert reply.status_code == 200, reply.text
    assert reply.json()["format"] == "shp" and reply.json()["crs"] == "EPSG:32650"
    after = db_grids(engine, plan_id, community)
    assert list(after.index) == list(grids["code"]) and list(after["name"]) == list(grids["name"])
    assert list(after["kind"]) == list(grids["kind"])
    back = sent.to_crs(4326).geometry.values
    assert all(same_land(a, b) for a, b in zip(after.geometry.values, back, strict=False))


def test_a_bow_tie_and_a_feature_outside_are_both_listed_and_nothing_is_written(client, admin_headers, engine,
                                                                                 drafts, tmp_path):
    plan_id = drafts()
    community = community_with_grids(engine, plan_id)
    before = db_grids(engine, plan_id)
    grids = before[before["community_code"] == community].reset_index()[["code", "geom"]].set_geometry("geom")
    x0, y0, x1, y1 = grids.geometry.iloc[0].bounds
    bow_tie = shapely.Polygon([(x0, y0), (x1, y1), (x1, y0), (x0, y1)])
    grids.loc[0, "geom"] = bow_tie
    outside = gpd.GeoDataFrame({"code": [None]}, geometry=[shapely.box(10.0, 10.0, 10.01, 10.01)], crs=4326)
    sent = pd.concat([grids, outside.rename_geometry("geom")], ignore_index=True)
    reply = post_file(client, {**admin_headers, "Content-Type": "application/geo+json"}, plan_id,
                      file_bytes(sent, tmp_path, "GeoJSON"))
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["features"] == [
        {"feature": 1, "id": f"code {grids['code'][0]}",
         "reason": f"invalid geometry: {shapely.is_valid_reason(bow_tie)}"},
        {"feature": len(sent), "id": f"feature {len(sent)}", "reason": "outside every community"}]
    assert "2 of" in error["message"] and "nothing was imported" in error["message"]
    assert "Self-intersection[" in error["message"]
    assert revision_of(client, admin_headers, plan_id) == 0
    after = db_grids(engine, plan_id)
    assert list(after.index) == list(before.index)
    assert all(a.equals_exact(b, 0) for a, b in zip(after.geometry.values, before.geometry.values, strict=False))


def test_every_kind_of_bad_feature_is_named_with_its_reason(client, admin_headers, engine, drafts, tmp_path):
    plan_id = drafts()
    community = community_with_grids(engine, plan_id)
    grids = db_grids(engine, plan_id)
    own = grids[grids["community_code"] == community]
    other = grids[grids["community_code"] != community].iloc[0]
    square = own.geometry.iloc[0]
    with engine.connect() as conn:
        no_worker = conn.execute(text("SELECT max(id) + 1 FROM responders")).scalar_one()
    rows = [
        {"code": own.index[0], "kind": "residential", "worker_id": None, "geometry": square},
        {"code": own.index[0], "kind": "residential", "worker_id": None, "geometry": own.geometry.iloc[1]},
        {"code": other.name, "kind": None, "worker_id": None, "geometry": own.geometry.iloc[2]},
        {"code": None, "kind": "park", "worker_id": None, "geometry": own.geometry.iloc[3]},
        {"code": None, "kind": None, "worker_id": str(no_worker), "geometry": own.geometry.iloc[3]},
        {"code": "12345", "kind": None, "worker_id": None, "geometry": own.geometry.iloc[3]},
        {"code": None, "kind": None, "worker_id": None, "geometry": square.centroid},
    ]
    features = [{"type": "Feature", "properties": {k: v for k, v in r.items() if k != "geometry"},
                 "geometry": shapely.geometry.mapping(r["geometry"])} for r in rows]
    features.append({"type": "Feature", "properties": {"id": "empty-one"}, "geometry": None})
    reply = client.post(f"/plans/{plan_id}/import", params={"revision": 0}, headers=admin_headers,
                        json={"type": "FeatureCollection", "features": features})
    assert reply.status_code == 400
    assert [(f["feature"], f["id"], f["reason"]) for f in reply.json()["error"]["features"]] == [
        (1, f"code {own.index[0]}", f"duplicate code {own.index[0]} (also on feature 2)"),
        (2, f"code {own.index[0]}", f"duplicate code {own.index[0]} (also on feature 1)"),
        (3, f"code {other.name}", f"code {other.name} is of community {other.name[:12]}, but the feature lies in "
                                  f"community {community}"),
        (4, "feature 4", "unknown kind 'park'; use residential or commercial"),
        (5, "feature 5", f"unknown worker_id '{no_worker}': no responder has this id"),
        (6, "code 12345", "code '12345' is not a 15-digit grid code (12-digit community code + 3-digit number "
                          "from 001)"),
        (7, "feature 7", "not a polygon (got a Point)"),
        (8, "id empty-one", "missing or empty geometry"),
    ]
    assert revision_of(client, admin_headers, plan_id) == 0


def test_a_planner_cannot_import_outside_their_area(client, engine, drafts, tmp_path):
    plan_id = drafts()
    grids = db_grids(engine, plan_id)
    streets = grids["street_code"].unique()
    headers = {"Authorization": f"Bearer {make_token(engine, 'planner', streets[0])}"}
    foreign = grids[grids["street_code"] == streets[1]].iloc[:1].reset_index()[["code", "geom"]]
    reply = post_file(client, headers, plan_id, file_bytes(foreign.set_geometry("geom"), tmp_path, "GeoJSON"))
    assert reply.status_code == 400
    assert reply.json()["error"]["features"] == [
        {"feature": 1, "id": f"code {foreign['code'][0]}", "reason": f"outside every community in your area "
                                                                    f"({streets[0]})"}]
    supervisor = {"Authorization": f"Bearer {make_token(engine, 'supervisor', streets[0])}"}
    assert post_file(client, supervisor, plan_id, b"{}").status_code == 403


@pytest.mark.parametrize("params,headers,content,message", [
    ({"format": "gpkg"}, {}, b"SQLite format 3\0 but not really", "Cannot read the file as a GeoPackage"),
    ({}, {}, b"\x00\x01\x02 what is this", "Cannot tell what kind of file this is"),
    ({}, {}, b"PAR1 not parquet at all", "Cannot read the file as GeoParquet"),
    ({}, {"Content-Type": "application/zip"}, b"PK\x03\x04 broken zip", "Cannot read the file as a zipped Shapefile"),
    ({}, {"Content-Type": "application/geo+json"}, b'{"type": "Feat', "Cannot read the file as GeoJSON"),
])
def test_malformed_files_are_refused_saying_which_formats_are_accepted(client, admin_headers, drafts, params, headers,
                                                                       content, message):
    plan_id = drafts()
    reply = post_file(client, {**admin_headers, **headers}, plan_id, content, **params)
    assert reply.status_code == 400
    assert message in reply.json()["error"]["message"] and ACCEPTED in reply.json()["error"]["message"]
    assert revision_of(client, admin_headers, plan_id) == 0


@pytest.mark.filterwarnings("ignore:'crs' was not provided")
def test_upload_mistakes_get_clear_errors(client, admin_headers, drafts, tmp_path):
    plan_id = drafts()
    square = gpd.GeoDataFrame(geometry=[shapely.box(116.36, 39.91, 116.361, 39.911)], crs=4326)
    geojson = file_bytes(square, tmp_path, "GeoJSON")
    cases = [
        (post_file(client, admin_headers, plan_id, geojson, crs="EPSG:9999"), 400, "Unknown coordinate system"),
        (post_file(client, admin_headers, plan_id, geojson, revision=5), 409, "based on revision 5"),
        (post_file(client, admin_headers, plan_id, b""), 400, "The request body is empty"),
        (post_file(client, {**admin_headers, "Content-Type": "multipart/form-data; boundary=x"}, plan_id, b"--x--"),
         400, "not as a multipart form"),
        (post_file(client, admin_headers, plan_id, b"x", filename="grids.shp"), 400, "Send a Shapefile as a .zip"),
        (post_file(client, admin_headers, plan_id, file_bytes(  # metres, and no CRS to say so
            gpd.GeoDataFrame(geometry=[shapely.box(500_000, 4_400_000, 500_100, 4_400_100)]), tmp_path, "GPKG")),
         400, "not longitude/latitude"),
    ]
    for reply, status, message in cases:
        assert reply.status_code == status and message in reply.json()["error"]["message"], reply.text


def test_a_file_in_a_crs_that_cannot_become_wgs84_is_refused(tmp_path):
    from pyproj import CRS

    from geo.errors import InvalidInput
    from geo.planning import files as plan_files

    local = CRS.from_wkt('LOCAL_CS["site grid",LOCAL_DATUM["site",0],UNIT["metre",1],AXIS["X",EAST],AXIS["Y",NORTH]]')
    gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 10, 10)], crs=local).to_file(tmp_path / "local.gpkg")
    with pytest.raises(InvalidInput, match="cannot be converted to WGS84.*Reproject it to EPSG:4326"):
        plan_files.read(tmp_path / "local.gpkg")


def test_import_body_over_the_limit_gets_413(settings, admin_headers):
    from fastapi.testclient import TestClient

    from api.app import create_app

    small = settings.model_copy(update={"bulk_max_bytes": 2048, "escalation_interval_s": 0})
    with TestClient(create_app(small)) as client:
        reply = post_file(client, admin_headers, 1, b"{" + b" " * 4000 + b"}")
        assert reply.status_code == 413 and "2,048 bytes" in reply.json()["error"]["message"]


# -------------------------------------------------------------------------------- POST /plans/from-file

def test_post_plans_with_a_file_starts_a_draft_from_it(client, admin_headers, engine, drafts, active, tmp_path):
    community = community_with_grids(engine, active)
    grids = db_grids(engine, active, community)
    merged = gpd.GeoDataFrame({"网格编码": [grids.index[0]], "网格名称": ["合并网格"]},
                              geometry=[shapely.union_all(grids.geometry.values[:2])], crs=4326)
    reply = client.post("/plans/from-file", content=file_bytes(merged, tmp_path, "GeoJSON"),
                        headers={**admin_headers, "Content-Type": "application/geo+json"},
                        params={"filename": "合并.geojson"})
    assert reply.status_code == 201, reply.text
    plan = reply.json()
    drafts.made.append(plan["id"])
    assert plan["name"] == "合并" and plan["status"] == "draft" and plan["revision"] == 1
    assert plan["grids"] == len(db_grids(engine, active)) - len(grids) + 1
    assert plan["import"]["codes"] == [grids.index[0]] and plan["import"]["replaced"] == len(grids)
    after = db_grids(engine, plan["id"], community)
    assert list(after.index) == [grids.index[0]] and after["name"].iloc[0] == "合并网格"
    assert same_land(after.geometry.iloc[0], merged.geometry.iloc[0])
    bad = client.post("/plans/from-file", content=b"PAR1 nope",
                      headers={**admin_headers, "Content-Type": "application/x"}, params={"name": "broken"})
    assert bad.status_code == 400 and ACCEPTED in bad.json()["error"]["message"]
    assert "broken" not in [p["name"] for p in client.get("/plans", headers=admin_headers).json()]
    assert client.post("/plans", json={"note": "no name"}, headers=admin_headers).status_code == 422


# ------------------------------------------------------------------------------------------------------- CLI

def test_cli_exports_and_imports_a_plan(database_url, engine, drafts, active, tmp_path, monkeypatch):
    from wangge.cli import app

    monkeypatch.setenv("WANGGE_DATABASE_URL", database_url)
    runner = CliRunner()
    out = tmp_path / "active.parquet"
    result = runner.invoke(app, ["plans", "export", str(active), str(out)])
    assert result.exit_code == 0, result.output
    exported = gpd.read_parquet(out)
    assert sorted(exported["code"]) == sorted(db_grids(engine, active).index)

    plan_id = drafts("cli")
    community = community_with_grids(engine, active)
    mine = exported[exported["community_code"] == community].copy()
    mine.loc[mine.index[0], "kind"] = "commercial"
    path = tmp_path / "mine.gpkg"
    mine.to_file(path)
    result = runner.invoke(app, ["plans", "import", str(plan_id), str(path)])
    assert result.exit_code == 0, result.output
    assert f"imported {len(mine)} grids into 1 communities" in " ".join(result.output.split())
    after = db_grids(engine, plan_id, community)
    assert list(after.index) == list(mine["code"]) and list(after["kind"]) == list(mine["kind"])

    mine.loc[mine.index[1], "worker_id"] = 10 ** 8
    mine.to_file(path)
    result = runner.invoke(app, ["plans", "import", str(plan_id), str(path)])
    assert result.exit_code == 1
    assert f"code {mine['code'].iloc[1]}: unknown worker_id '100000000'" in " ".join(result.output.split())
    result = runner.invoke(app, ["plans", "import", str(plan_id), str(path), "--revision", "0"])
    assert result.exit_code == 1 and "based on revision 0" in " ".join(result.output.split())


def test_imports_are_capped_in_features_vertices_and_listed_errors(client, admin_headers, drafts, tmp_path,
                                                                  monkeypatch):
    from geo.planning import files as plan_files

    plan_id = drafts()
    headers = {**admin_headers, "Content-Type": "application/geo+json"}
    angles = np.linspace(0, 2 * np.pi, 100_005, endpoint=False)
    circle = shapely.Polygon(np.c_[116.36 + 0.001 * np.cos(angles), 39.91 + 0.001 * np.sin(angles)])
    assert shapely.get_num_coordinates(circle) > plan_files.MAX_VERTICES
    huge = gpd.GeoDataFrame({"code": [None]}, geometry=[circle], crs=4326)
    reply = post_file(client, headers, plan_id, file_bytes(huge, tmp_path, "GeoJSON"))
    assert reply.status_code == 400
    (only,) = reply.json()["error"]["features"]
    assert "vertices (at most 100,000 per grid" in only["reason"]
    squares = gpd.GeoDataFrame({"code": [None] * 6}, crs=4326,
                               geometry=[shapely.box(10 + i, 10, 10.01 + i, 10.01) for i in range(6)])
    monkeypatch.setattr(plan_files, "LISTED_LIMIT", 2)
    error = post_file(client, headers, plan_id, file_bytes(squares, tmp_path, "GeoJSON", name="far")).json()["error"]
    assert len(error["features"]) == 2 and error["features_not_listed"] == 4
    monkeypatch.setattr(plan_files, "MAX_FEATURES", 5)
    reply = post_file(client, headers, plan_id, file_bytes(squares, tmp_path, "GeoJSON", name="many"))
    assert reply.status_code == 400 and "holds 6 features" in reply.json()["error"]["message"]
    assert revision_of(client, admin_headers, plan_id) == 0  # nothing was imported
