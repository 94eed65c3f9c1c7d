"""Replies about unreadable files name no server path and quote no SQL: corrupt GeoPackages and Shapefile zips
sent to the bulk import and to plan imports, and the readers' raw messages, which do."""

import io
import os
import re
import zipfile

import geopandas as gpd
import pyogrio
import pytest
import shapely

from geo.file_messages import reader_message
from tests.test_plan_files import drafts  # noqa: F401  (a fixture)

LEAKS = re.compile(r"/|\\|tmp|select|sqlite|vsizip|wangge-", re.IGNORECASE)


def _gpkg(tmp_path) -> bytes:
    path = tmp_path / "points.gpkg"
    gpd.GeoDataFrame({"category": ["0101"] * 50}, geometry=[shapely.Point(116.36, 39.91)] * 50,
                     crs=4326).to_file(path, driver="GPKG")
    return path.read_bytes()


def corrupt_gpkgs(tmp_path) -> dict[str, bytes]:
    """A GeoPackage cut short, and one with a page in the middle zeroed (its table list unreadable)."""
    data = _gpkg(tmp_path)
    return {"cut short": data[:len(data) // 3], "zeroed page": data[:4096] + b"\0" * 8192 + data[12288:]}


def corrupt_shapefile_zips(tmp_path) -> dict[str, bytes]:
    """Zipped Shapefiles: without their .shx, with random bytes for every part, and with the .shp cut short."""
    folder = tmp_path / "shp"
    folder.mkdir(exist_ok=True)
    gpd.GeoDataFrame({"code": ["1"]}, geometry=[shapely.box(116.3, 39.9, 116.31, 39.91)],
                     crs=4326).to_file(folder / "g.shp")
    parts = {p.name: p.read_bytes() for p in folder.iterdir()}

    def zipped(members: dict[str, bytes]) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for name, blob in members.items():
                archive.writestr(name, blob)
        return buffer.getvalue()

    return {
        "no .shx": zipped({k: v for k, v in parts.items() if not k.endswith(".shx")}),
        "random bytes": zipped({k: os.urandom(len(v) or 100) for k, v in parts.items() if k[-4:] != ".prj"}),
        "cut short": zipped({k: (v[:60] if k.endswith(".shp") else v) for k, v in parts.items()}),
    }


def _clean(message: str) -> None:
    assert message.strip() and not LEAKS.search(message), message


def test_the_readers_own_messages_do_leak_and_are_scrubbed(tmp_path):
    """The premise, checked: GDAL's messages name the temporary files and quote SQL; reader_message removes both."""
    raw = []
    for name, blob in {**corrupt_gpkgs(tmp_path), **{f"zip {k}": v for k, v in
                                                   corrupt_shapefile_zips(tmp_path).items()}}.items():
        suffix = ".zip" if name.startswith("zip") else ".gpkg"
        path = tmp_path / f"tmpx{len(raw)}{suffix}"
        path.write_bytes(blob)
        target = f"/vsizip/{path}/g.shp" if suffix == ".zip" else str(path)
        try:
            pyogrio.read_dataframe(target)
        except Exception as exc:  # noqa: BLE001  (whatever GDAL raises)
            raw.append(str(exc))
            _clean(reader_message(exc))
    assert any("SELECT" in r for r in raw) and any(str(tmp_path) in r for r in raw), raw
    assert reader_message(RuntimeError("Failed to read GeoJSON data; At line 1, character 15: Unterminated object")) \
        == "Failed to read GeoJSON data; At line 1, character 15: Unterminated object"


def test_bulk_import_of_a_corrupt_geopackage_names_no_path_and_no_sql(client, admin_headers, tmp_path):
    for name, blob in corrupt_gpkgs(tmp_path).items():
        reply = client.post("/incidents/bulk", content=blob,
                            headers={**admin_headers, "Content-Type": "application/geopackage+sqlite3"})
        assert reply.status_code == 400, (name, reply.text)
        error = reply.json()["error"]
        assert error["message"].startswith("Cannot read the gpkg file: it is damaged"), (name, error)
        _clean(error["message"])


def test_plan_imports_of_corrupt_files_name_no_path_and_no_sql(client, admin_headers, drafts, tmp_path):  # noqa: F811
    plan_id = drafts()
    files = [("application/geopackage+sqlite3", blob) for blob in corrupt_gpkgs(tmp_path).values()]
    files += [("application/zip", blob) for blob in corrupt_shapefile_zips(tmp_path).values()]
    for media, blob in files:
        for path in (f"/plans/{plan_id}/import?revision=0", "/plans/from-file"):
            reply = client.post(path, content=blob, headers={**admin_headers, "Content-Type": media})
            assert reply.status_code == 400, (path, media, reply.text)
            error = reply.json()["error"]
            assert error["message"].startswith("Cannot read the file as a"), error
            _clean(error["message"])


@pytest.mark.parametrize("message, plain", [
    ("'/vsizip//tmp/wangge-plan-x1/upload.zip/g.shp' not recognized as being in a supported file format.; It "
     "might help to specify the correct driver explicitly", "it is not in a format that can be read"),
    ("Unable to open /vsizip//tmp/a.zip/g.shx or /vsizip//tmp/a.zip/g.SHX. Set SHAPE_RESTORE_SHX config option",
     "the .shx index of the Shapefile is missing or unreadable"),
    ("sqlite3_prepare_v2(SELECT COUNT(*) FROM sqlite_master WHERE name IN ('gpkg_metadata')) failed: database "
     "disk image is malformed; database disk image is malformed", "it is damaged (database disk image is malformed)"),
    (r"C:\Users\srv\AppData\Local\Temp\tmpab12.gpkg: cannot open", "the file: cannot open"),
    ("Error in /tmp/tmpq1w2e3/x.parquet at offset 12", "Error in the file at offset 12"),
])
def test_reader_messages_are_said_plainly(message, plain):
    assert reader_message(RuntimeError(message)) == plain
