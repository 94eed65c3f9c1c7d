"""The bulk import's sources: CSV, GeoJSON and GeoPackage read in chunks, columns recognised by name, every
row validated vectorised (rejects keep their line and reason)."""

import codecs
import io
import re
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from geo import crs as crs_
from geo.errors import InvalidInput
from geo.file_messages import reader_message
from geo.incidents.bulk_assign import STAGE_COLUMNS, due_times
from geo.incidents.intake import SOURCES
from geo.incidents.timelimits import TZ

MAX_DESCRIPTION = 4000
EARLIEST = pd.Timestamp("2000-01-01", tz=TZ)
FUTURE_SLACK = timedelta(minutes=10)  # clock skew allowed for reported_at
FORMATS = ("csv", "geojson", "gpkg")
MAX_COLUMNS = 200  # columns of a CSV, properties of a layer (WANGGE_BULK_MAX_COLUMNS)
Progress = Callable[[str, int, int | None], None]  # (phase, rows done, rows expected or None)

# Column names accepted in files (lower-cased, stripped), first match wins.
COORDINATE_COLUMNS = (("lon", "lat"), ("lng", "lat"), ("longitude", "latitude"), ("x", "y"), ("经度", "纬度"))
CATEGORY_COLUMNS = ("category", "category_code", "service_code", "类别")
DESCRIPTION_COLUMNS = ("description", "描述")
TIME_COLUMNS = ("reported_at", "requested_datetime", "上报时间")
SOURCE_COLUMNS = ("source",)


# --------------------------------------------------------------------------------------------------- sources

@dataclass
class Source:
    """An uploaded file: its format, name and where its bytes are."""
    format: str
    name: str | None
    path: Path | None = None
    data: bytes | None = None

    @classmethod
    def open(cls, path_or_bytes, format: str | None, file_name: str | None) -> "Source":
        """The source for a path or bytes, its format given, from the file name or sniffed from the content."""
        if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
            data, path = bytes(path_or_bytes), None
            head = data[:64]
        else:
            path, data = Path(path_or_bytes), None
            if not path.is_file():
                raise InvalidInput(f"No such file: {path}", field="file")
            with open(path, "rb") as f:
                head = f.read(64)
        name = file_name or (path.name if path else None)
        fmt = (format or "").strip().lower().lstrip(".") or None
        if fmt in ("json", "geo+json"):
            fmt = "geojson"
        if fmt is None and name:
            fmt = {".csv": "csv", ".txt": "csv", ".geojson": "geojson", ".json": "geojson",
                   ".gpkg": "gpkg"}.get(Path(name).suffix.lower())
        if fmt is None:
            stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
            fmt = "gpkg" if head.startswith(b"SQLite format 3\0") else "geojson" if stripped[:1] == b"{" else "csv"
        if fmt not in FORMATS:
            raise InvalidInput(f"Unknown format {format!r}; use csv, geojson or gpkg.", field="format")
        if fmt == "gpkg" and not head.startswith(b"SQLite format 3\0"):
            raise InvalidInput("The file is not a GeoPackage (it does not start with the SQLite header).",
                               field="file")
        return cls(fmt, name, path, data)


def _columns(names, wanted) -> str | None:
    lowered = {str(n).strip().lower(): n for n in names}
    return next((lowered[w] for w in wanted if w in lowered), None)


def _pick(names) -> dict:
    """Map the file's column names to ours (lon, lat, category, description, reported_at, source)."""
    found = {}
    for lon, lat in COORDINATE_COLUMNS:
        a, b = _columns(names, (lon,)), _columns(names, (lat,))
        if a is not None and b is not None:
            found["lon"], found["lat"] = a, b
            break
    for key, wanted in (("category", CATEGORY_COLUMNS), ("description", DESCRIPTION_COLUMNS),
                        ("reported_at", TIME_COLUMNS), ("source", SOURCE_COLUMNS)):
        column = _columns(names, wanted)
        if column is not None:
            found[key] = column
    return found


_BAD_LINE = re.compile(r"Skipping line (\d+): (.*)")
_WARNINGS = threading.Lock()  # warnings.catch_warnings is process-global: one CSV chunk parse at a time


class CsvReader:
    """CSV in chunks; `line` is the physical line in the file (quoted line breaks and blank lines counted)."""

    crs = None
    extra_columns = ()

    def __init__(self, source: Source, chunk_rows: int, max_columns: int = MAX_COLUMNS):
        """Check the header's width, sniff the encoding and count the lines of a CSV source."""
        self.source, self.chunk_rows = source, chunk_rows
        self._check_width(max_columns)
        self.encoding, lines = self._sniff()
        self.expected = max(lines - 1, 0) or None
        self.blank_lines = 0
        try:
            names = list(pd.read_csv(self._handle(), nrows=0, dtype=str, encoding=self.encoding).columns)
        except pd.errors.EmptyDataError:
            raise InvalidInput("The CSV is empty: expected a header line such as lon,lat,category.",
                               field="file") from None
        except pd.errors.ParserError as exc:
            raise InvalidInput(f"The CSV is malformed: {reader_message(exc)}. Quote values that contain commas, "
                               "quotes or line breaks.", field="file") from exc
        self.map = _pick(names)
        if "lon" not in self.map:
            raise InvalidInput("CSV has no lon/lat columns; expected lon,lat or x,y (also lng,lat or "
                               f"longitude,latitude). Columns found: {', '.join(map(str, names)) or 'none'}.",
                               field="file")
        if "category" not in self.map:
            raise InvalidInput("CSV has no category column; expected category (or category_code, service_code) "
                               f"holding a category code. Columns found: {', '.join(map(str, names))}.",
                               field="file")
        self.ignored = [str(n) for n in names if n not in self.map.values()]

    def _check_width(self, max_columns: int) -> None:
        """Refuse a header of more than `max_columns` columns, counted on the first record alone: before the file
        is decoded or any row parsed. Commas, quotes and line breaks are ASCII in UTF-8 and GB18030 alike, so the
        record is split as Latin-1 text."""
        import csv

        with (io.BytesIO(self.source.data) if self.source.data is not None
              else open(self._path(), "rb")) as raw:
            text_ = io.TextIOWrapper(raw, encoding="latin-1", newline="")
            try:
                header = next(csv.reader(text_), [])
            except csv.Error:  # e.g. a field over csv's size limit: pandas names what is wrong
                return
        if len(header) > max_columns:
            raise InvalidInput(f"The CSV has {len(header):,} columns; at most {max_columns:,} are accepted "
                               "(WANGGE_BULK_MAX_COLUMNS). Keep lon, lat, category and the columns you need.",
                               field="file")

    def _path(self) -> Path:
        assert self.source.path is not None  # a source without data has a path
        return self.source.path

    def _sniff(self) -> tuple[str, int]:
        """UTF-8 (with or without BOM), else GB18030 (GBK as written by Chinese Excel); count the lines."""
        for encoding in ("utf-8", "gb18030"):
            decoder = codecs.getincrementaldecoder(encoding)()
            newlines = 0
            try:
                for block in self._blocks():
                    decoder.decode(block)
                    newlines += block.count(b"\n")
                decoder.decode(b"", final=True)
                return ("utf-8-sig" if encoding == "utf-8" else encoding), newlines + 1
            except UnicodeDecodeError:
                continue
        raise InvalidInput("The CSV is neither UTF-8 nor GB18030/GBK text; save it as UTF-8.", field="file")

    def _blocks(self) -> Iterator[bytes]:
        if self.source.data is not None:
            yield self.source.data
            return
        with open(self._path(), "rb") as f:
            while block := f.read(1 << 24):
                yield block

    def _handle(self):
        return io.BytesIO(self.source.data) if self.source.data is not None else self.source.path

    def chunks(self) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
        """The CSV in chunks: the rows as text columns with their line numbers, and the rows that could not be
        parsed."""
        record, extra = 2, 0  # record number of the next row (the header is 1), quoted line breaks so far
        try:
            with pd.read_csv(self._handle(), dtype=str, keep_default_na=False, skip_blank_lines=False,
                             chunksize=self.chunk_rows, encoding=self.encoding, on_bad_lines="warn") as reader:
                while True:
                    # Rows with too many fields are skipped by the parser with a warning naming their record
                    # number: collect them so that they are reported, never dropped.
                    with _WARNINGS, warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        frame = next(reader, None)
                    if frame is None:
                        return
                    bad = [(int(number), why.strip()) for w in caught
                           for number, why in _BAD_LINE.findall(str(w.message))]
                    rows, early, extra = self._chunk(frame, bad, record, extra)
                    record += len(frame) + len(bad)
                    yield rows, early
        except pd.errors.ParserError as exc:
            raise InvalidInput(f"The CSV is malformed: {reader_message(exc)}. Quote values that contain commas, "
                               "quotes or line breaks.", field="file") from exc

    def _chunk(self, frame: pd.DataFrame, bad: list, record: int, extra: int):
        values = frame.astype(object).where(frame.notna(), "")
        newlines = np.zeros(len(values), dtype=np.int64)
        for column in values.columns:
            col = values[column].to_numpy()
            if "\n" in "".join(col):  # one C-level pass; count per row only when some value has a line break
                newlines += pd.Series(col).str.count("\n").to_numpy()
        # Record numbers of the rows read (the skipped ones excluded), then physical lines: plus the line
        # breaks inside quoted values of every earlier row.
        bad_numbers = np.array([number for number, _ in bad], dtype=np.int64)
        records = np.setdiff1d(np.arange(record, record + len(values) + len(bad_numbers)), bad_numbers)[:len(values)]
        breaks = np.concatenate([[0], np.cumsum(newlines)])
        lines = records + extra + breaks[:-1]
        early = pd.DataFrame({
            "line": (bad_numbers + extra + breaks[np.searchsorted(records, bad_numbers)]).astype(np.int64),
            "reason": [f"{why.replace('saw', 'found')} (quote values that contain commas)" for _, why in bad],
        })
        blank = (values == "").all(axis=1).to_numpy()
        self.blank_lines += int(blank.sum())
        m = self.map
        rows = pd.DataFrame({
            "line": lines,
            "lon": values[m["lon"]].to_numpy(), "lat": values[m["lat"]].to_numpy(),
            "category": values[m["category"]].to_numpy(),
            "description": values[m["description"]].to_numpy() if "description" in m else "",
            "reported_at": values[m["reported_at"]].to_numpy() if "reported_at" in m else "",
            "source": values[m["source"]].to_numpy() if "source" in m else "",
        })[~blank].reset_index(drop=True)
        return rows, early, extra + int(breaks[-1])


class FeatureReader:
    """GeoJSON or GeoPackage points through pyogrio; `line` is the 1-based feature number, `fid` GDAL's FID."""

    extra_columns = ("fid",)
    blank_lines = 0

    def __init__(self, source: Source, declared: str, chunk_rows: int, max_columns: int = MAX_COLUMNS):
        """Open a GeoJSON or GeoPackage source; `declared` is the crs the caller gave."""
        import pyogrio

        self.source, self.chunk_rows, self._tmp = source, chunk_rows, None
        target: Path | str | None = source.path
        if source.data is not None:  # GDAL reads files: SQLite needs one, and layer names must stay put
            self._tmp = tempfile.NamedTemporaryFile(suffix=f".{source.format}")
            self._tmp.write(source.data)
            self._tmp.flush()
            target = self._tmp.name
        self.target = target
        try:
            layers = pyogrio.list_layers(target)
            if not len(layers):
                raise InvalidInput(f"The {source.format} file has no layers.", field="file")
            points = [name for name, kind in layers if kind in ("Point", "MultiPoint", "Point Z", "MultiPoint Z")]
            self.layer = points[0] if points else layers[0][0]
            info = pyogrio.read_info(target, layer=self.layer)
        except InvalidInput:
            raise
        except Exception as exc:
            raise InvalidInput(f"Cannot read the {source.format} file: {reader_message(exc)}.", field="file") from exc
        self.expected = int(info["features"]) if info["features"] is not None and info["features"] >= 0 else None
        names = list(info["fields"])
        if len(names) > max_columns:
            raise InvalidInput(f"The {source.format} layer has {len(names):,} properties; at most {max_columns:,} "
                               "are accepted (WANGGE_BULK_MAX_COLUMNS). Keep category and the properties you need.",
                               field="file")
        self.map = _pick(names)
        if "category" not in self.map:
            raise InvalidInput("The features have no category property; expected category (or category_code, "
                               f"service_code). Properties found: {', '.join(names) or 'none'}.", field="file")
        self.ignored = [n for n in names if n not in self.map.values()]
        self.crs = self._crs(info.get("crs"), declared)
        self._fids: list[pd.DataFrame] = []

    def _crs(self, file_crs: str | None, declared: str) -> str:
        if not file_crs:
            return declared
        from pyproj import CRS

        parsed = CRS.from_user_input(file_crs)
        epsg = parsed.to_epsg()
        if epsg is None and parsed.is_geographic and "WGS 84" in parsed.name:
            epsg = 4326  # OGC:CRS84, GeoJSON's lon/lat default
        if epsg not in (4326, 4490):
            raise InvalidInput(
                f"The {self.source.format} layer is in {parsed.to_string()} ({parsed.name}); Wangge accepts "
                "EPSG:4326 or EPSG:4490 (and GCJ-02/BD-09 declared with crs). Reproject it first, e.g. "
                "`ogr2ogr -t_srs EPSG:4326 out.gpkg in.gpkg`.", field="crs")
        if declared in ("GCJ-02", "BD-09"):
            return declared  # files cannot say GCJ-02/BD-09: they are labelled EPSG:4326
        return f"EPSG:{epsg}"

    def _read(self, skip: int, count: int | None):
        import pyogrio

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return pyogrio.read_dataframe(self.target, layer=self.layer, fid_as_index=True, datetime_as_string=True,
                                          columns=list(self.map.values()), skip_features=skip, max_features=count)

    def chunks(self) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
        """The features in chunks: columns as text with lon/lat in WGS84, and the features rejected."""
        import shapely

        try:
            if self.source.format == "gpkg" and self.expected is not None:
                frames = (self._read(skip, self.chunk_rows) for skip in range(0, self.expected, self.chunk_rows))
            else:  # GeoJSON is one document: parse it once, then work through it in chunks
                whole = self._read(0, None)
                frames = (whole.iloc[i:i + self.chunk_rows] for i in range(0, len(whole), self.chunk_rows))
            done = 0
            for frame in frames:
                n = len(frame)
                geoms = np.asarray(frame.geometry.values, dtype=object)
                kind = shapely.get_type_id(geoms)
                parts = shapely.get_num_geometries(geoms)
                empty = shapely.is_missing(geoms) | shapely.is_empty(geoms)
                single = np.where(kind == 4, shapely.get_geometry(geoms, 0), geoms)  # one-point MultiPoint is fine
                ok = ~empty & ((kind == 0) | ((kind == 4) & (parts == 1)))
                problem = np.full(n, "", dtype=object)
                problem[empty] = "empty geometry"
                names = np.array(["Point", "LineString", "LinearRing", "Polygon", "MultiPoint", "MultiLineString",
                                  "MultiPolygon", "GeometryCollection"], dtype=object)
                wrong = ~ok & ~empty
                problem[wrong] = "not a Point geometry (got " + names[np.clip(kind[wrong], 0, 7)] + ")"
                several = wrong & (kind == 4)
                problem[several] = "not a Point geometry (got a MultiPoint of " + \
                    parts[several].astype(str).astype(object) + " points)"
                x = np.full(n, np.nan)
                y = np.full(n, np.nan)
                x[ok], y[ok] = shapely.get_x(single[ok]), shapely.get_y(single[ok])

                def col(key, frame=frame):
                    if key not in self.map:
                        return ""
                    values = frame[self.map[key]]
                    return values.astype(object).where(values.notna(), "").astype(str).to_numpy()

                fids = frame.index.to_numpy()
                lines = np.arange(done + 1, done + n + 1)
                self._fids.append(pd.DataFrame({"line": lines, "fid": fids}))
                out = pd.DataFrame({"line": lines, "fid": fids, "lon": x, "lat": y, "geometry_problem": problem,
                                    "category": col("category"), "description": col("description"),
                                    "reported_at": col("reported_at"), "source": col("source")})
                done += n
                yield out, pd.DataFrame({"line": pd.Series([], dtype=np.int64), "reason": []})
        except InvalidInput:
            raise
        except Exception as exc:
            if type(exc).__module__.startswith("pyogrio"):
                raise InvalidInput(f"Cannot read the {self.source.format} file: {reader_message(exc)}.",
                                   field="file") from exc
            raise
        finally:
            if self._tmp is not None:
                self._tmp.close()

    def fids(self) -> pd.DataFrame:
        """Line number → feature id of every feature read."""
        return pd.concat(self._fids, ignore_index=True) if self._fids else pd.DataFrame({"line": [], "fid": []})


# ---------------------------------------------------------------------------------------------- validation

_AWARE = r"[T ]\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*(?:Z|[+-]\d{2}(?::?\d{2})?)$"


def _quoted(values: pd.Series, width: int = 40) -> pd.Series:
    return "'" + values.astype(str).str.slice(0, width) + "'"


def _times(raw: pd.Series, now: pd.Timestamp) -> tuple[pd.Series, pd.Series]:
    """ISO 8601 text → tz-aware times (naive = Asia/Shanghai, empty = now); also the mask of unparseable ones."""
    s = raw.astype(str).str.strip()
    empty = s == ""
    aware = s.str.contains(_AWARE, regex=True) & ~empty
    naive = ~aware & ~empty
    out = pd.Series(now, index=s.index).dt.as_unit("us")
    if aware.any():
        out[aware] = pd.to_datetime(s[aware], format="ISO8601", utc=True, errors="coerce").dt.tz_convert(TZ)
    if naive.any():
        parsed = pd.to_datetime(s[naive], format="ISO8601", errors="coerce")
        out[naive] = parsed.dt.tz_localize(TZ, ambiguous="NaT", nonexistent="NaT")
    return out, out.isna()


def validate(chunk: pd.DataFrame, categories: list[dict], now: pd.Timestamp,
              input_crs: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a chunk into staging rows (converted to WGS84, with due times) and rejects (line, reason[, fid])."""
    n = len(chunk)
    reasons = np.full(n, "", dtype=object)

    def flag(mask, message):
        """Add a reason to the rows in mask; message is text or a function of the mask giving one per row."""
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            text_ = message(mask) if callable(message) else message
            prior = reasons[mask]
            reasons[mask] = np.where(prior == "", "", prior + "; ") + np.asarray(text_, dtype=object)

    # geometry and coordinates
    if "geometry_problem" in chunk:
        problem = chunk["geometry_problem"].to_numpy()
        flag(problem != "", lambda m: problem[m])
        geometry_ok = problem == ""
        lon, lat = chunk["lon"].astype(float), chunk["lat"].astype(float)
    else:
        geometry_ok = np.ones(n, dtype=bool)
        raw_lon, raw_lat = chunk["lon"].astype(str), chunk["lat"].astype(str)
        lon, lat = pd.to_numeric(raw_lon, errors="coerce"), pd.to_numeric(raw_lat, errors="coerce")
        missing = ((raw_lon == "") | (raw_lat == "")).to_numpy()
        flag(missing, "missing coordinates")
        flag(~missing & lon.isna().to_numpy(),
             lambda m: "bad coordinates: lon " + _quoted(raw_lon[m]) + " is not a number")
        flag(~missing & lat.isna().to_numpy(),
             lambda m: "bad coordinates: lat " + _quoted(raw_lat[m]) + " is not a number")
    x, y = lon.to_numpy(dtype=float), lat.to_numpy(dtype=float)
    number = ~np.isnan(x) & ~np.isnan(y) & geometry_ok
    in_range = (np.abs(x) <= 180) & (np.abs(y) <= 90)  # False for NaN and inf
    out_of_range = number & ~in_range

    def range_message(m):
        swapped = (np.abs(y[m]) <= 180) & (np.abs(x[m]) <= 90)
        return ("coordinates out of range: lon " + pd.Series(x[m]).astype(str) + ", lat " + pd.Series(y[m]).astype(str)
                + " (lon -180..180, lat -90..90" + np.where(swapped, "; are lon and lat swapped?", "") + ")").to_numpy()

    flag(out_of_range, range_message)

    # category: a code, or the exact name
    codes = {c["code"] for c in categories}
    by_name = {c["name"]: c["code"] for c in categories}
    category = chunk["category"].astype(str)
    plain = category.isin(codes)
    if not plain.all():
        category = category.where(plain, category.str.strip())
        plain = category.isin(codes)
    code = category.where(plain, category.map(by_name))
    blank_category = (category == "").to_numpy()
    flag(blank_category, "missing category")
    flag(~blank_category & code.isna().to_numpy(), lambda m: "unknown category " + _quoted(category[m]))

    # reported_at
    reported, unparseable = _times(chunk["reported_at"], now)
    unparseable = unparseable.to_numpy()
    flag(unparseable, lambda m: "unparseable reported_at " + _quoted(chunk["reported_at"][m])
         + " (use ISO 8601, e.g. 2025-03-01T08:30:00+08:00)")
    flag(~unparseable & (reported < EARLIEST).to_numpy(),
         lambda m: "reported_at " + reported[m].astype(str) + " is before 2000")
    flag(~unparseable & (reported > now + FUTURE_SLACK).to_numpy(),
         lambda m: "reported_at " + reported[m].astype(str) + " is in the future")

    # source and description
    source = chunk["source"].astype(str)
    given = source != ""
    if given.any():
        source = source.where(~given, source.str.strip().str.lower())
    source = source.where(source != "", "import")
    flag(~source.isin(SOURCES).to_numpy(),
         lambda m: "unknown source " + _quoted(chunk["source"][m]) + f" (use one of: {', '.join(SOURCES)})")
    description = chunk["description"].astype(str)
    flag((description.str.len() > MAX_DESCRIPTION).to_numpy(), f"description longer than {MAX_DESCRIPTION} characters")

    good = reasons == ""
    rejects = pd.DataFrame({"line": chunk["line"].to_numpy()[~good].astype(np.int64), "reason": reasons[~good]})
    if "fid" in chunk:
        rejects.insert(1, "fid", chunk["fid"].to_numpy()[~good])
    if not good.any():
        return pd.DataFrame(columns=STAGE_COLUMNS), rejects

    x, y = x[good], y[good]
    if input_crs in ("GCJ-02", "BD-09"):
        x, y = crs_.to_wgs84(x, y, input_crs)
    index = chunk.index[good]
    reported, code = reported[good], code[good]
    staged = pd.DataFrame({
        "line": chunk["line"][good].astype(np.int64),
        "category_code": code,
        "description": description[good].where(description[good] != "", None),
        "source": source[good],
        "reported_at": reported,
        "due_at": due_times(reported, code, categories),
        "input_crs": input_crs,
        "lon": pd.Series(x, index=index), "lat": pd.Series(y, index=index),
    }, index=index)
    return staged, rejects
