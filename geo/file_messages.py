"""What a file reader (GDAL/pyogrio, Arrow, zipfile, pyproj) said, in words fit for a reply: no server paths, no SQL.

GDAL names the files it opened (temporary spools such as /tmp/wangge-upload-…, /vsizip/… paths) and its
GeoPackage driver quotes the SQL it ran on SQLite. Every such message goes through `reader_message` before it
becomes an InvalidInput, so neither reaches a reply or the command line.
"""

import re

LIMIT = 300  # characters of the reader's own words kept

# Known complaints, said plainly: (pattern in the reader's message, what to tell the user).
_KNOWN = (
    (re.compile(r"not recognized as (?:being in )?a supported file format", re.I),
     "it is not in a format that can be read"),
    (re.compile(r"Unable to open \S+\.shx", re.I), "the .shx index of the Shapefile is missing or unreadable"),
    (re.compile(r"Unable to open \S+\.dbf", re.I), "the .dbf table of the Shapefile is missing or unreadable"),
    (re.compile(r"No such file or directory", re.I), "a part of the file is missing"),
    (re.compile(r"\.shp file is unreadable, or corrupt", re.I), "the .shp file is damaged or cut short"),
    (re.compile(r"file is not a database|file is encrypted", re.I), "it is damaged: it is not a database"),
)
# SQLite's own reason after GDAL's "sqlite3_prepare_v2(<SQL>) failed: <reason>".
_SQLITE_REASON = re.compile(r"sqlite3?_\w+\(.*?\)\s*failed:\s*([^;]+)", re.I | re.S)
_SQL = re.compile(r"(?i:sqlite)|\b(?:SELECT|INSERT|UPDATE|DELETE|PRAGMA|CREATE|FROM|WHERE)\b")
# A path: Unix (/tmp/x, /vsizip//tmp/x.zip/y.shp) or Windows (C:\x), quoted or not.
_PATH = re.compile(r"""(?:[A-Za-z]:\\|(?<![\w.:])/)[^\s'"(),;:]*""")
_TEMP_NAME = re.compile(r"\b(?:tmp\w+|wangge-(?:upload|plan)-\w+)", re.I)
_HINT = re.compile(r";?\s*It might help to specify the correct driver.*$", re.I | re.S)


def reader_message(exc: BaseException) -> str:
    """A short account of a reader's error, with every path replaced and no SQL; never empty."""
    raw = " ".join(str(exc).split())
    if sqlite := _SQLITE_REASON.search(raw):
        return f"it is damaged ({_clean(sqlite.group(1))})"
    for pattern, plain in _KNOWN:
        if pattern.search(raw):
            return plain
    text = _clean(_HINT.sub("", raw))
    if _SQL.search(text):
        return "it is damaged or not the kind of file it claims to be"
    return text or type(exc).__name__


def _clean(text: str) -> str:
    text = _PATH.sub("the file", text)
    text = _TEMP_NAME.sub("the file", text)
    text = text.replace("'the file'", "the file").replace('"the file"', "the file").strip(" .;")
    return text[:LIMIT] + ("…" if len(text) > LIMIT else "")
