"""Zip bombs and odd archives sent as plan files: refused while unpacking, quickly, with a small reply in the one
error shape — and never handed to GDAL. The archives are built here with zipfile, their sizes checked first."""

import io
import struct
import time
import zipfile

import geopandas as gpd
import pytest
import shapely

from geo.errors import InvalidInput, PayloadTooLarge
from geo.planning import files as plan_files
from geo.unzip import ZipLimits
from tests.test_plan_files import drafts  # noqa: F401  (a fixture)

MB = 1 << 20


@pytest.fixture(scope="module")
def shapefile_parts(tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("bomb")
    gpd.GeoDataFrame({"code": ["1"]}, geometry=[shapely.box(116.36, 39.91, 116.361, 39.911)],
                     crs=4326).to_file(folder / "g.shp")
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _zip(parts: dict[str, bytes], extra: dict[str, int] | None = None) -> bytes:
    """A zip of `parts`, plus members of as many zero bytes as `extra` says, streamed in (never held in memory)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, blob in parts.items():
            archive.writestr(name, blob)
        for name, size in (extra or {}).items():
            with archive.open(name, "w", force_zip64=True) as member:
                for _ in range(size // MB):
                    member.write(bytes(MB))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def bomb(shapefile_parts) -> bytes:
    """A Shapefile whose .dbf is 512 MB of zeros: about half a megabyte zipped."""
    parts = {k: v for k, v in shapefile_parts.items() if not k.endswith(".dbf")}
    return _zip(parts, {"g.dbf": 512 * MB})


def _posts(client, headers, plan_id, body):
    """The reply of each route that takes a plan file, with the seconds it took."""
    for path in (f"/plans/{plan_id}/import?revision=0", "/plans/from-file"):
        started = time.perf_counter()
        reply = client.post(path, content=body, headers={**headers, "Content-Type": "application/zip"})
        yield path, reply, time.perf_counter() - started


def test_a_zip_bomb_is_refused_at_once_with_a_small_413(client, admin_headers, drafts, bomb):  # noqa: F811
    assert len(bomb) < 2 * MB
    with zipfile.ZipFile(io.BytesIO(bomb)) as archive:
        assert sum(e.file_size for e in archive.infolist()) > 500 * MB
    for path, reply, took in _posts(client, admin_headers, drafts(), bomb):
        assert reply.status_code == 413, (path, reply.text)
        error = reply.json()["error"]
        assert (error["code"], error["field"]) == ("payload_too_large", "file")
        assert error["message"].startswith("The zip expands to more than 200,000,000 bytes (WANGGE_UNZIP_MAX_BYTES)")
        assert took < 3 and len(reply.content) < 400, (path, took, len(reply.content))


def test_a_member_under_the_total_cap_that_expands_absurdly_is_refused(shapefile_parts, tmp_path):
    parts = {k: v for k, v in shapefile_parts.items() if not k.endswith(".dbf")}
    path = tmp_path / "ratio.zip"
    path.write_bytes(_zip(parts, {"g.dbf": 64 * MB}))  # about 1,000:1
    started = time.perf_counter()
    with pytest.raises(InvalidInput, match=r"g\.dbf in the zip expands more than 200 times its compressed size"):
        plan_files.read(path)
    assert time.perf_counter() - started < 2


def test_headers_that_understate_a_member_do_not_let_more_out(shapefile_parts, tmp_path):
    """The .dbf's size in the central directory is rewritten to 1 KB, its data is 300 MB: at most what the
    directory says is unpacked, and the mismatch is refused."""
    parts = {k: v for k, v in shapefile_parts.items() if not k.endswith(".dbf")}
    data = bytearray(_zip(parts, {"g.dbf": 300 * MB}))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        entry = archive.getinfo("g.dbf")
    assert entry.file_size == 300 * MB
    # its central directory entry ("PK\1\2", the uncompressed size at byte 24, the name at 46) says 1,024 bytes
    at = data.index(b"PK\x01\x02")
    while data[at + 46:at + 46 + 5] != b"g.dbf":
        at = data.index(b"PK\x01\x02", at + 4)
    assert struct.unpack_from("<I", data, at + 24)[0] == 300 * MB
    struct.pack_into("<I", data, at + 24, 1024)
    path = tmp_path / "liar.zip"
    path.write_bytes(bytes(data))
    with zipfile.ZipFile(path) as archive:
        assert archive.getinfo("g.dbf").file_size == 1024
    started = time.perf_counter()
    with pytest.raises(InvalidInput) as refused:
        plan_files.read(path)
    assert time.perf_counter() - started < 2
    assert refused.value.message.startswith("Cannot read the file as a zipped Shapefile (Bad CRC-32"), \
        refused.value.message


def test_the_running_count_stops_a_member_past_the_cap(shapefile_parts, tmp_path):
    parts = {k: v for k, v in shapefile_parts.items() if not k.endswith(".dbf")}
    path = tmp_path / "big.zip"
    path.write_bytes(_zip(parts, {"g.dbf": 8 * MB}))
    with pytest.raises(PayloadTooLarge, match=r"more than 4,194,304 bytes"):
        plan_files.read(path, limits=ZipLimits(max_bytes=4 * MB, max_ratio=10_000))


@pytest.mark.parametrize("extra, message", [
    ({f"readme{i}.txt": b"x" for i in range(101)}, "The zip holds 105 entries; at most 100 are accepted"),
    ({"more.zip": b"PK\x03\x04"}, "The zip holds another archive (more.zip)"),
    ({"g.cpg": _zip({"inner.txt": b"x"})}, "g.cpg in the zip is itself an archive"),
])
def test_too_many_entries_and_nested_archives_are_400s(client, admin_headers, drafts, shapefile_parts,  # noqa: F811
                                                      extra, message):
    body = _zip({**{k: v for k, v in shapefile_parts.items() if not k.endswith(".cpg")}, **extra})
    for path, reply, took in _posts(client, admin_headers, drafts(), body):
        assert reply.status_code == 400, (path, reply.text)
        assert reply.json()["error"]["message"].startswith(message), reply.json()
        assert took < 3


def test_an_honest_zipped_shapefile_in_a_folder_still_reads(shapefile_parts, tmp_path):
    path = tmp_path / "ok.zip"
    path.write_bytes(_zip({f"grids/{k}": v for k, v in shapefile_parts.items()} | {"__MACOSX/grids/._g.shp": b"x"}))
    upload = plan_files.read(path)
    assert len(upload.frame) == 1 and upload.crs == "EPSG:4326"
    assert shapely.equals(upload.frame.geometry.iloc[0], shapely.box(116.36, 39.91, 116.361, 39.911))
