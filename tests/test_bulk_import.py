"""Bulk import: reject report, assignment against shapely, GeoJSON/GeoPackage and CRSs, atomicity, API and CLI."""

import re
from contextlib import contextmanager
from datetime import datetime, timedelta

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from sqlalchemy import text
from typer.testing import CliRunner

from geo.crs import wgs84_to_gcj02
from geo.errors import InvalidInput
from geo.incidents import bulk
from geo.incidents.timelimits import TZ, due_at
from tests.conftest import make_token

UTM50 = "EPSG:32650"
OUTSIDE = (116.4500, 39.9300)  # in 东城区, east of every grid


@contextmanager
def rolled_back(engine):
    """A connection in a transaction that is rolled back: the import's rows never reach other tests."""
    with engine.connect() as conn:
        transaction = conn.begin()
        try:
            yield conn
        finally:
            transaction.rollback()


@pytest.fixture(scope="module")
def grids(engine, demo) -> gpd.GeoDataFrame:
    with engine.connect() as conn:
        return gpd.read_postgis(text(
            "SELECT code, worker_id, geom FROM areas WHERE level = 'grid' "
            "AND version_id = (SELECT id FROM grid_versions WHERE status = 'active') ORDER BY code"),
            conn, geom_col="geom")


@pytest.fixture(scope="module")
def inside(grids) -> list[tuple[float, float, str]]:
    """An interior point of every 50th grid, with its code."""
    picks = grids.iloc[::50]
    points = shapely.point_on_surface(picks.geometry.values)
    return [(p.x, p.y, code) for p, code in zip(points, picks["code"], strict=False)]


def covering_code(grids: gpd.GeoDataFrame, lon, lat) -> list[str | None]:
    """Lowest code among the grids shapely says cover each point (None: outside every grid)."""
    points = shapely.points(np.asarray(lon), np.asarray(lat))
    which, grid = shapely.STRtree(grids.geometry.values).query(points, predicate="covered_by")
    codes = pd.Series(grids["code"].to_numpy()[grid]).groupby(which).min()
    return [codes.get(i) for i in range(len(points))]


def nearest_in_utm(grids: gpd.GeoDataFrame, lon: float, lat: float) -> tuple[str, float]:
    """Nearest grid and distance in metres, computed independently in UTM 50N."""
    projected = grids.to_crs(UTM50)
    point = gpd.GeoSeries([shapely.Point(lon, lat)], crs="EPSG:4326").to_crs(UTM50).iloc[0]
    distances = projected.distance(point)
    return projected["code"].iloc[int(distances.argmin())], float(distances.min())


def batch_rows(conn, batch_id: str) -> pd.DataFrame:
    return pd.read_sql(text("""
        SELECT (e.data ->> 'line')::int AS line, e.actor_id, e.action, e.to_status, e.note, i.*,
               ST_X(i.geom) AS x, ST_Y(i.geom) AS y
        FROM incident_events e JOIN incidents i ON i.id = e.incident_id
        WHERE e.data ->> 'batch' = :b ORDER BY line"""), conn, params={"b": batch_id})


def reject_pairs(report) -> list[tuple[int, str]]:
    return [(r["line"], r["reason"]) for r in report.rejected]


# ------------------------------------------------------------------------------------------- the reject report

def test_csv_reject_report_gives_the_physical_line_and_reason_of_every_bad_row(engine, grids, inside):
    (x1, y1, code1), (x2, y2, code2), (x3, y3, code3) = inside[:3]
    future = (datetime.now(TZ) + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%S+08:00")
    csv = "\n".join([
        "lon,lat,category,description,reported_at",                          # 1
        f'{x1!r},{y1!r},0101,"garbage by the gate,',                         # 2  a quoted value over two lines
        'second line",2026-11-20T10:00:00+08:00',                           # 3
        f"{x2!r},{y2!r},0301,,",                                             # 4
        "",                                                                  # 5  blank: not a row
        f"{x1!r},abc,0101,,",                                                # 6
        f",{y1!r},0101,,",                                                   # 7
        f"200,{y1!r},0101,,",                                                # 8
        f"{y1!r},{x1!r},0101,,",                                             # 9
        f"{x1!r},{y1!r},9999,,",                                             # 10
        f"{OUTSIDE[0]},{OUTSIDE[1]},0101,,",                                 # 11
        f"{x1!r},{y1!r},0101,,yesterday",                                    # 12
        f"{x1!r},{y1!r},0101,one,two,three",                                 # 13
        f"{x1!r},x,zz,,",                                                    # 14
        f"{x1!r},{y1!r},0101,,{future}",                                     # 15
        f"{x3!r},{y3!r},暴露垃圾,by name,2026-11-20 09:30",                  # 16  naive time: Asia/Shanghai
        ",,,,",                                                              # 17 empty: not a row
    ]) + "\n"
    with rolled_back(engine) as conn:
        report = bulk.import_incidents(conn, csv.encode(), file_name="mixed.csv")
        rows = batch_rows(conn, report.batch_id)
    nearest, metres = nearest_in_utm(grids, *OUTSIDE)
    pairs = reject_pairs(report)
    assert pairs[:5] == [
        (6, "bad coordinates: lat 'abc' is not a number"),
        (7, "missing coordinates"),
        (8, f"coordinates out of range: lon 200.0, lat {y1!r} (lon -180..180, lat -90..90)"),
        (9, f"coordinates out of range: lon {y1!r}, lat {x1!r} (lon -180..180, lat -90..90; are lon and lat swapped?)"),
        (10, "unknown category '9999'"),
    ]
    line, reason = pairs[5]
    match = re.fullmatch(r"outside every grid \(nearest (\d{15}) at (\d+) m\)", reason)
    assert line == 11 and match and match.group(1) == nearest
    assert abs(int(match.group(2)) - metres) <= max(2, 0.005 * metres)
    assert pairs[6:9] == [
        (12, "unparseable reported_at 'yesterday' (use ISO 8601, e.g. 2025-03-01T08:30:00+08:00)"),
        (13, "expected 5 fields, found 6 (quote values that contain commas)"),
        (14, "bad coordinates: lat 'x' is not a number; unknown category 'zz'"),
    ]
    assert pairs[9][0] == 15 and pairs[9][1].endswith("is in the future")
    assert len(pairs) == 10
    assert (report.total_rows, report.imported, report.rejected_count, report.blank_lines) == (13, 3, 10, 2)
    assert list(rows["line"]) == [2, 4, 16]
    assert list(rows["grid_code"]) == [code1, code2, code3]
    assert rows["description"].iloc[0] == "garbage by the gate,\nsecond line"
    assert rows["category_code"].iloc[2] == "0101"  # given by name
    assert rows["reported_at"].iloc[2] == pd.Timestamp("2026-11-20 09:30", tz=TZ)


def test_reject_report_csv_and_summary(engine, demo, tmp_path):
    csv = b"x,y,category\n1,2,0101\n116.37,oops,0101\n"
    with rolled_back(engine) as conn:
        report = bulk.import_incidents(conn, csv)
    path = tmp_path / "rejects.csv"
    report.write_rejects(path)
    written = pd.read_csv(path)
    assert list(written.columns) == ["line", "reason"]
    assert written["line"].tolist() == [2, 3]
    assert written["reason"].iloc[1] == "bad coordinates: lat 'oops' is not a number"
    summary = report.summary(limit=1)
    assert summary["rejected_count"] == 2 and len(summary["rejected"]) == 1 and summary["report_truncated"]
    assert summary["rejected"][0]["nearest_grid"] and summary["rejected"][0]["reason"].startswith("outside every")


# ------------------------------------------------------------------------------------- assignment vs shapely

def test_imported_rows_go_to_the_grid_shapely_says_covers_them_with_worker_department_and_due(engine, grids):
    rng = np.random.default_rng(7)
    minx, miny, maxx, maxy = grids.total_bounds
    lon, lat = rng.uniform(minx, maxx, 300), rng.uniform(miny, maxy, 300)
    # Vertices shared by two or more grids: on edges, where the lowest code must win.
    vertices = shapely.get_coordinates(shapely.boundary(grids.geometry.values[::15]))
    lon, lat = np.concatenate([lon, vertices[::7, 0]]), np.concatenate([lat, vertices[::7, 1]])
    categories = np.array(["0101", "0202", "0301", "0901", "0501"])[np.arange(len(lon)) % 5]
    csv = "lon,lat,category,reported_at\n" + "".join(
        f"{x!r},{y!r},{c},2026-11-18T{8 + i % 10:02d}:15:00+08:00\n"
        for i, (x, y, c) in enumerate(zip(lon.tolist(), lat.tolist(), categories, strict=False)))
    with rolled_back(engine) as conn:
        report = bulk.import_incidents(conn, csv.encode(), actor_id=None)
        rows = batch_rows(conn, report.batch_id)
        limits = pd.read_sql(text("SELECT code, department_code, time_limit, time_limit_unit, clock "
                                  "FROM incident_categories"), conn).set_index("code")
    expected = covering_code(grids, lon, lat)
    inside_lines = [i + 2 for i, code in enumerate(expected) if code is not None]
    assert list(rows["line"]) == inside_lines
    assert report.imported == len(inside_lines) and report.rejected_count == len(lon) - len(inside_lines)
    assert sum(code is not None for code in expected) > 150  # the sample does reach inside and outside
    assert [expected[line - 2] for line in rows["line"]] == list(rows["grid_code"])
    workers = grids.set_index("code")["worker_id"]
    assert (rows["assignee_id"].to_numpy() == workers.reindex(rows["grid_code"]).to_numpy()).all()
    assert (rows["department_code"].to_numpy()
            == limits["department_code"].reindex(rows["category_code"]).to_numpy()).all()
    for _, row in rows.iloc[::17].iterrows():
        limit = limits.loc[row["category_code"]]
        assert row["due_at"] == due_at(row["reported_at"].to_pydatetime(), int(limit["time_limit"]),
                                       limit["time_limit_unit"], limit["clock"])
    assert (rows["status"] == "reported").all() and (rows["source"] == "import").all()
    assert (rows["action"] == "report").all() and rows["id"].is_unique and rows["id"].is_monotonic_increasing
    outside = [r for r in report.rejected if r["reason"].startswith("outside every grid")]
    assert len(outside) == report.rejected_count and all(r["nearest_grid"] for r in outside)


def test_a_report_near_an_open_incident_of_the_same_category_is_linked_as_its_duplicate(engine, demo):
    with rolled_back(engine) as conn:
        target = conn.execute(text(
            "SELECT id, category_code, reported_at, ST_X(geom), ST_Y(geom) FROM incidents "
            "WHERE status = 'in_progress' ORDER BY id LIMIT 1")).one()
        later = (target.reported_at + timedelta(hours=2)).isoformat()
        far = (target.reported_at + timedelta(hours=30)).isoformat()
        csv = (f"lon,lat,category,reported_at\n{target[3]!r},{target[4] + 0.0002!r},{target.category_code},{later}\n"
               f"{target[3]!r},{target[4] + 0.0002!r},{target.category_code},{far}\n")
        report = bulk.import_incidents(conn, csv.encode())
        rows = batch_rows(conn, report.batch_id)
        again = bulk.import_incidents(conn, csv.encode())  # a second batch in the same transaction
        repeated = batch_rows(conn, again.batch_id)
    assert report.duplicates == 1
    assert rows["duplicate_of"].tolist()[0] == target.id and pd.isna(rows["duplicate_of"].tolist()[1])
    assert rows["note"].iloc[0] == f"likely duplicate of {target.id}"
    assert again.duplicates == 2 and repeated["duplicate_of"].tolist() == rows["id"].tolist()  # nearest: 0 m


def test_points_outside_can_be_kept_as_unassigned_with_the_nearest_grid(engine, grids):
    with rolled_back(engine) as conn:
        report = bulk.import_incidents(conn, f"lon,lat,category\n{OUTSIDE[0]},{OUTSIDE[1]},0101\n".encode(),
                                       keep_outside=True)
        row = batch_rows(conn, report.batch_id).iloc[0]
    nearest, metres = nearest_in_utm(grids, *OUTSIDE)
    assert report.imported == 1 and report.rejected_count == 0
    assert row["status"] == "unassigned" and row["to_status"] == "unassigned" and row["grid_code"] is None
    assert row["suggested_grid_code"] == nearest and abs(row["suggested_distance_m"] - metres) <= max(2, 0.005 * metres)


# ----------------------------------------------------------------------------------- GeoJSON, GeoPackage, CRSs

def _features(inside, crs: str) -> gpd.GeoDataFrame:
    (x1, y1, _), (x2, y2, _), (x3, y3, _) = inside[3:6]
    geometry = [shapely.Point(x1, y1), shapely.Point(), shapely.LineString([(x1, y1), (x2, y2)]),
                shapely.MultiPoint([(x1, y1), (x2, y2)]), shapely.Point(x3, y3)]
    return gpd.GeoDataFrame({
        "category": ["0101", "0101", "0202", "0301", "0402"],
        "description": ["a", "b", "c", "d", "e"],
        "reported_at": ["2026-11-20T10:00:00+08:00"] * 5,
    }, geometry=geometry, crs=crs)


@pytest.mark.parametrize("driver, suffix, first_fid", [("GPKG", "gpkg", 1), ("GeoJSON", "geojson", 0)])
def test_geopackage_and_geojson_in_cgcs2000_report_feature_numbers_and_fids(engine, inside, tmp_path, driver, suffix,
                                                                          first_fid):
    path = tmp_path / f"incidents.{suffix}"
    _features(inside, "EPSG:4490").to_file(path, driver=driver)
    with rolled_back(engine) as conn:
        report = bulk.import_incidents(conn, path)
        rows = batch_rows(conn, report.batch_id)
    assert (report.format, report.crs, report.imported) == (suffix, "EPSG:4490", 2)
    assert [(r["line"], r["fid"]) for r in report.rejected] == [(n, n - 1 + first_fid) for n in (2, 3, 4)]
    assert [r["reason"] for r in report.rejected] == [
        "empty geometry", "not a Point geometry (got LineString)",
        "not a Point geometry (got a MultiPoint of 2 points)"]
    assert list(rows["grid_code"]) == [inside[3][2], inside[5][2]]
    assert (rows["input_crs"] == "EPSG:4490").all()


def test_geojson_sent_as_bytes_is_read_too(engine, inside):
    data = _features(inside, "EPSG:4326").iloc[[0, 4]].to_json().encode()
    with rolled_back(engine) as conn:
        report = bulk.import_incidents(conn, data)
    assert (report.format, report.imported, report.rejected_count) == ("geojson", 2, 0)


def test_csv_declared_gcj02_is_converted_to_wgs84(engine, inside):
    points = np.array([(x, y) for x, y, _ in inside[6:12]])
    gx, gy = wgs84_to_gcj02(points[:, 0], points[:, 1])
    csv = "lng,lat,category\n" + "".join(f"{x!r},{y!r},0101\n" for x, y in zip(gx.tolist(), gy.tolist(), strict=False))
    with rolled_back(engine) as conn:
        report = bulk.import_incidents(conn, csv.encode(), crs="gcj02")
        rows = batch_rows(conn, report.batch_id)
    assert report.crs == "GCJ-02" and report.imported == 6 and (rows["input_crs"] == "GCJ-02").all()
    assert np.abs(rows[["x", "y"]].to_numpy() - points).max() < 1e-7  # back within a centimetre
    assert list(rows["grid_code"]) == [code for _, _, code in inside[6:12]]


def test_a_layer_in_a_projected_crs_is_refused_with_how_to_fix_it(engine, inside, tmp_path):
    path = tmp_path / "utm.gpkg"
    _features(inside, "EPSG:4326").to_crs(UTM50).to_file(path, driver="GPKG")
    with pytest.raises(InvalidInput, match=r"EPSG:32650.*Reproject it first"):
        bulk.import_incidents(engine, path)


@pytest.mark.parametrize("data, message", [
    (b"a,b,category\n1,2,0101\n", "CSV has no lon/lat columns; expected lon,lat or x,y"),
    (b"lon,lat\n1,2\n", "CSV has no category column"),
    (b"", "The CSV is empty"),
    (b'lon,lat,category\n"1,2,0101\n', "The CSV is malformed"),
    (b"SQLite format 3\x00garbage", "Cannot read the gpkg file"),
])
def test_malformed_files_are_refused_with_what_is_wrong(engine, demo, data, message):
    with pytest.raises(InvalidInput, match=re.escape(message)):
        bulk.import_incidents(engine, data)


# --------------------------------------------------------------------------------------------------- atomicity

def test_a_failure_after_the_rows_are_written_leaves_nothing_of_the_batch(engine, inside, monkeypatch):
    seen = {}

    def fail_at_the_audit_log(conn, report, actor_id, scope):
        seen["batch"] = report.batch_id
        seen["written"] = conn.execute(text("SELECT count(*) FROM incident_events WHERE data ->> 'batch' = :b"),
                                       {"b": report.batch_id}).scalar()
        raise RuntimeError("disk full")

    def counts():
        with engine.connect() as conn:
            return conn.execute(text("SELECT (SELECT count(*) FROM incidents), (SELECT count(*) FROM incident_events), "
                                     "(SELECT count(*) FROM audit_log)")).one()

    monkeypatch.setattr(bulk, "_record", fail_at_the_audit_log)
    csv = "lon,lat,category\n" + "".join(f"{x!r},{y!r},0101\n" for x, y, _ in inside[:10])
    before = counts()
    with pytest.raises(RuntimeError, match="disk full"):
        bulk.import_incidents(engine, csv.encode())
    assert seen["written"] == 10  # the rows were in, inside the transaction
    assert counts() == before
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM incident_events WHERE data ->> 'batch' = :b"),
                            {"b": seen["batch"]}).scalar() == 0


# --------------------------------------------------------------------------------------------------- API, CLI

def _csv(inside, rows=slice(12, 16)) -> bytes:
    lines = [f"{x!r},{y!r},0101,api" for x, y, _ in inside[rows]]
    return ("lon,lat,category,description\n" + "\n".join(lines) + f"\n{OUTSIDE[0]},{OUTSIDE[1]},0101,api\n").encode()


def test_post_bulk_imports_a_csv_body_and_records_the_batch(client, admin_headers, engine, inside):
    response = client.post("/incidents/bulk?filename=api.csv", content=_csv(inside),
                           headers={**admin_headers, "Content-Type": "text/csv"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["total_rows"], body["imported"], body["rejected_count"], body["report_truncated"]) == (5, 4, 1, False)
    assert body["rejected"][0]["line"] == 6 and body["rejected"][0]["reason"].startswith("outside every grid (nearest ")
    with engine.connect() as conn:
        detail = conn.execute(text("SELECT detail FROM audit_log WHERE action = 'incidents.import' AND target = :t"),
                              {"t": f"batch:{body['batch_id']}"}).scalar_one()
    assert detail["file"] == "api.csv" and detail["imported"] == 4 and detail["rejected"] == 1


def test_post_bulk_is_for_admins_supervisors_and_dispatchers_in_their_own_area(client, engine, inside):
    worker = {"Authorization": f"Bearer {make_token(engine, 'grid_worker', '110102003')}"}
    response = client.post("/incidents/bulk", content=_csv(inside), headers={**worker, "Content-Type": "text/csv"})
    assert response.status_code == 403 and "supervisor, dispatcher" in response.json()["error"]["message"]
    street = inside[12][2][:9]
    supervisor = {"Authorization": f"Bearer {make_token(engine, 'supervisor', street)}"}
    response = client.post("/incidents/bulk", content=_csv(inside), headers={**supervisor, "Content-Type": "text/csv"})
    body = response.json()
    in_street = sum(code.startswith(street) for _, _, code in inside[12:16])
    assert response.status_code == 200 and body["imported"] == in_street
    others = [r["reason"] for r in body["rejected"] if not r["reason"].startswith("outside every grid")]
    assert len(others) == 4 - in_street and all(r == "in no grid of your area" for r in others)


@pytest.mark.parametrize("headers, content, message", [
    ({"Content-Type": "text/csv"}, b"a,b\n1,2\n", "CSV has no lon/lat columns; expected lon,lat or x,y"),
    ({"Content-Type": "multipart/form-data; boundary=x"}, b"--x--", "not as a multipart form"),
    ({"Content-Type": "text/csv"}, b"", "The request body is empty"),
])
def test_post_bulk_refuses_a_malformed_upload_with_400(client, admin_headers, headers, content, message):
    response = client.post("/incidents/bulk", content=content, headers={**admin_headers, **headers})
    assert response.status_code == 400 and message in response.json()["error"]["message"]


def test_post_bulk_over_the_size_limit_gets_413(settings, admin_headers, inside):
    from fastapi.testclient import TestClient

    from api.app import create_app

    small = settings.model_copy(update={"bulk_max_bytes": 2048, "escalation_interval_s": 0})
    body = _csv(inside) + b"116.37,39.91,0101," + b"x" * 3000 + b"\n"
    with TestClient(create_app(small)) as client:
        response = client.post("/incidents/bulk", content=body, headers={**admin_headers, "Content-Type": "text/csv"})
        assert response.status_code == 413 and "2,048 bytes" in response.json()["error"]["message"]
        chunked = client.post("/incidents/bulk", content=iter([body[:1500], body[1500:]]),
                              headers={**admin_headers, "Content-Type": "text/csv"})
        assert chunked.status_code == 413
        assert client.post("/incidents/bulk", content=_csv(inside),
                           headers={**admin_headers, "Content-Type": "text/csv"}).status_code == 200


def _open_0101_within_50_m(engine, points) -> int:
    """How many of the points have an open 0101 incident within 50 m of the last 24 h (the demo's last day
    falls differently with each anchor), counted straight from the table."""
    with engine.connect() as conn:
        return sum(bool(conn.execute(text(
            "SELECT EXISTS (SELECT 1 FROM incidents WHERE category_code = '0101' "
            "AND status NOT IN ('closed', 'rejected', 'void') AND reported_at > now() - interval '24 hours' "
            "AND ST_DWithin(geography(geom), geography(ST_SetSRID(ST_MakePoint(:x, :y), 4326)), 50))"),
            {"x": x, "y": y}).scalar()) for x, y, _ in points)


def test_cli_import_prints_the_counts_and_writes_the_reject_report(database_url, engine, demo, inside, tmp_path,
                                                                   monkeypatch):
    from wangge.cli import app

    monkeypatch.setenv("WANGGE_DATABASE_URL", database_url)
    path, report = tmp_path / "cli.csv", tmp_path / "rejects.csv"
    path.write_bytes(_csv(inside, slice(16, 18)) + b"116.37,39.91,9999,bad\n")
    expected_duplicates = _open_0101_within_50_m(engine, inside[16:18])
    result = CliRunner().invoke(app, ["incidents", "import", str(path), "--report", str(report)])
    assert result.exit_code == 0, result.output
    assert (f"cli.csv: 4 rows, imported 2 ({expected_duplicates} likely duplicates), rejected 2"
            in " ".join(result.output.split()))
    assert pd.read_csv(report).to_dict("list") == {
        "line": [4, 5], "reason": [pd.read_csv(report)["reason"][0], "unknown category '9999'"]}
    assert pd.read_csv(report)["reason"][0].startswith("outside every grid (nearest ")
    result = CliRunner().invoke(app, ["incidents", "import", str(path), "--crs", "EPSG:9999"])
    assert result.exit_code == 1 and "Unknown coordinate system" in result.output


# ----------------------------------------------------------------------------------------------------- bench

def test_bench_runs_on_a_small_file_and_agrees_with_the_raw_join(engine, demo, database_url):
    from sqlalchemy.engine import make_url

    from bench.bulk_import import bulk_import
    from bench.context import Bench

    url = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    result = bulk_import(Bench(url=url, engine=engine, seconds=1, n_points=0), n=3000)
    assert result.failures == [] and result.rows[0].wangge > 0 and result.rows[0].raw > 0


# ----------------------------------------------------------------------------------------------- column caps

def _wide_csv(columns: int, rows: int = 20) -> bytes:
    header = "lon,lat,category," + ",".join(f"c{i}" for i in range(3, columns))
    row = "116.36,39.91,0101," + ",".join("1" for _ in range(3, columns))
    return (header + "\n" + "\n".join([row] * rows) + "\n").encode()


def test_a_csv_wider_than_the_cap_is_refused_and_one_at_the_cap_is_read(engine, inside):
    lines = "".join(f"{x!r},{y!r},0101,a,b\n" for x, y, _ in inside[:3])
    with rolled_back(engine) as conn:
        report = bulk.import_incidents(conn, ("lon,lat,category,d,e\n" + lines).encode(), max_columns=5)
        assert report.total_rows == 3 and report.ignored_columns == ["d", "e"]
        with pytest.raises(InvalidInput, match=re.escape("The CSV has 6 columns; at most 5 are accepted")):
            bulk.import_incidents(conn, ("lon,lat,category,d,e,f\n" + lines).encode(), max_columns=5)


def test_post_bulk_refuses_a_csv_of_100000_columns_at_once_naming_the_limit(client, admin_headers, engine):
    import time

    body = _wide_csv(100_000)
    assert len(body) > 4_000_000
    before = _count_incidents(engine)
    started = time.perf_counter()
    response = client.post("/incidents/bulk", content=body, headers={**admin_headers, "Content-Type": "text/csv"})
    took = time.perf_counter() - started
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("invalid_input", "file")
    assert error["message"].startswith("The CSV has 100,000 columns; at most 200 are accepted "
                                       "(WANGGE_BULK_MAX_COLUMNS).")
    assert len(response.content) < 500 and took < 2, (len(response.content), took)
    assert _count_incidents(engine) == before


def test_cli_import_refuses_a_csv_of_100000_columns_in_one_line(database_url, demo, tmp_path, monkeypatch):
    from wangge.cli import app

    monkeypatch.setenv("WANGGE_DATABASE_URL", database_url)
    path = tmp_path / "wide.csv"
    path.write_bytes(_wide_csv(100_000))
    result = CliRunner().invoke(app, ["incidents", "import", str(path)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == ("error: The CSV has 100,000 columns; at most 200 are accepted "
                                                      "(WANGGE_BULK_MAX_COLUMNS). Keep lon, lat, category and the "
                                                      "columns you need.")


def _count_incidents(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM incidents")).scalar_one()
