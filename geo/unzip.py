"""Zip archives unpacked with care: members streamed out under caps on the bytes written, the member count, the
expansion of each member, and no archive inside the archive (zip bombs are refused while unpacking, quickly)."""

import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from geo.errors import InvalidInput, PayloadTooLarge

BLOCK = 1 << 20  # bytes read from a member at a time
ARCHIVE_SUFFIXES = (".zip", ".gz", ".tgz", ".tar", ".7z", ".rar", ".bz2", ".xz", ".zst", ".kmz", ".jar")
ARCHIVE_MAGIC = (b"PK\x03\x04", b"\x1f\x8b", b"7z\xbc\xaf", b"Rar!", b"BZh", b"\xfd7zXZ", b"\x28\xb5\x2f\xfd")


@dataclass(frozen=True)
class ZipLimits:
    """How far an archive may expand: `max_bytes` unpacked in all, `max_members` entries, and each member at most
    `max_ratio` times its compressed size once it is past `ratio_floor` bytes (small members may compress well)."""

    max_bytes: int = 200_000_000
    max_members: int = 100
    max_ratio: float = 200
    ratio_floor: int = 1_000_000


def members(archive: zipfile.ZipFile, limits: ZipLimits) -> list[zipfile.ZipInfo]:
    """The archive's entries, refused before anything is unpacked when the directory alone breaks a limit: too
    many entries, a nested archive, or declared sizes over the caps."""
    entries = archive.infolist()
    if len(entries) > limits.max_members:
        raise InvalidInput(f"The zip holds {len(entries):,} entries; at most {limits.max_members:,} are accepted "
                           "(WANGGE_UNZIP_MAX_MEMBERS).", field="file")
    nested = [e.filename for e in entries if e.filename.lower().endswith(ARCHIVE_SUFFIXES)]
    if nested:
        raise InvalidInput(f"The zip holds another archive ({_name(nested[0])}); archives inside archives are not "
                           "accepted: put the files themselves in one zip.", field="file")
    _check_total(sum(e.file_size for e in entries), limits)
    for entry in entries:
        _check_ratio(entry, entry.file_size, limits)
    return entries


def extract(archive: zipfile.ZipFile, entry: zipfile.ZipInfo, target: Path, limits: ZipLimits,
            written: int = 0) -> int:
    """Stream one member to `target`, counting the bytes as they come against the caps (whatever the headers
    said); returns the bytes written by the archive so far, `written` included."""
    size = 0
    with archive.open(entry) as source, open(target, "wb") as sink:
        while block := source.read(BLOCK):
            if size == 0 and block.startswith(ARCHIVE_MAGIC):
                raise InvalidInput(f"{_name(entry.filename)} in the zip is itself an archive; archives inside "
                                   "archives are not accepted.", field="file")
            size += len(block)
            _check_total(written + size, limits)
            _check_ratio(entry, size, limits)
            sink.write(block)
    return written + size


def _check_total(size: int, limits: ZipLimits) -> None:
    if size > limits.max_bytes:
        raise PayloadTooLarge(f"The zip expands to more than {limits.max_bytes:,} bytes (WANGGE_UNZIP_MAX_BYTES); "
                              "send a smaller file, e.g. one community or street at a time.", field="file")


def _check_ratio(entry: zipfile.ZipInfo, size: int, limits: ZipLimits) -> None:
    if size > limits.ratio_floor and size > limits.max_ratio * max(entry.compress_size, 1):
        raise InvalidInput(f"{_name(entry.filename)} in the zip expands more than {limits.max_ratio:g} times its "
                           "compressed size (WANGGE_UNZIP_MAX_RATIO): that is no map data.", field="file")


def _name(member: str) -> str:
    """A member's own name, without its folders, for a message."""
    return PurePosixPath(member).name[:100] or "an entry"
