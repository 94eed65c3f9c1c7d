"""Plan files: grids into a draft from GeoPackage, zipped Shapefile, GeoJSON or GeoParquet, and any version out."""

import io
import re
import tempfile
import warnings
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from sqlalchemy import Connection, text

from geo import crs as crs_
from geo import unzip
from geo.auth import Caller
from geo.errors import DomainError, InvalidInput
from geo.file_messages import reader_message
from geo.planning import plans
from geo.unzip import ZipLimits

FORMATS = ("gpkg", "shp", "geojson", "parquet")
ACCEPTED = ("GeoPackage (.gpkg), a zipped Shapefile (.zip holding .shp, .shx, .dbf and .prj), GeoJSON (.geojson) "
            "or GeoParquet (.parquet)")
MEDIA_TYPES = {"gpkg": "application/geopackage+sqlite3", "shp": "application/zip",
               "geojson": "application/geo+json", "parquet": "application/vnd.apache.parquet"}
SUFFIXES = {"gpkg": ".gpkg", "shp": ".shp.zip", "geojson": ".geojson", "parquet": ".parquet"}
_FORMAT_NAMES = {"gpkg": "gpkg", "geopackage": "gpkg", "shp": "shp", "shapefile": "shp", "zip": "shp",
                 "geojson": "geojson", "json": "geojson", "parquet": "parquet", "geoparquet": "parquet"}
_BY_SUFFIX = {".gpkg": "gpkg", ".zip": "shp", ".geojson": "geojson", ".json": "geojson", ".parquet": "parquet",
              ".geoparquet": "parquet"}
_TITLES = {"gpkg": "a GeoPackage", "shp": "a zipped Shapefile", "geojson": "GeoJSON", "parquet": "GeoParquet"}

# Attribute names accepted in files, compared lower-cased; the first present wins.
ALIASES = {
    "code": ("code", "grid_code", "gridcode", "网格编码", "网格代码", "编码"),
    "name": ("name", "grid_name", "网格名称", "名称"),
    "kind": ("kind", "grid_kind", "grid_type", "type", "网格类型", "类型"),
    "worker_id": ("worker_id", "workerid", "worker", "网格员id", "网格员编号"),
    "id": ("id",),
    "fid": ("fid",),
}
KINDS = {"residential": "residential", "commercial": "commercial", "n": "residential", "x": "commercial",
         "住宅": "residential", "居住": "residential", "商业": "commercial"}
_CODE = re.compile(r"^\d{12}(?!000)\d{3}$")

# Exported columns whose names are too long for a Shapefile (at most 10 characters).
SHAPEFILE_NAMES = {"community_code": "comm_code", "street_code": "street_cd", "worker_name": "worker_nm"}
REPORT_LIMIT = 20  # bad features named in the error message
LISTED_LIMIT = 1000  # bad features listed in the reply's `features`; the rest are counted
MAX_FEATURES = 20_000  # a district has ~1,500 grids: a file of more is no grid plan
MAX_VERTICES = 100_000  # per grid: a real boundary has hundreds


class BadFeatures(InvalidInput):
    """Some features cannot be imported; `features` lists each with its identifier and reason."""

    code = "invalid_features"

    def __init__(self, features: list[dict], total: int):
        """Keep the rejected features and say which, up to the report's limit."""
        self.features = features
        shown = "; ".join(f"{f['id']}: {f['reason']}" for f in features[:REPORT_LIMIT])
        more = f"; … and {len(features) - REPORT_LIMIT} more (see `features`)" if len(features) > REPORT_LIMIT else ""
        super().__init__(f"{len(features)} of {total} features cannot be imported, so nothing was imported: "
                         f"{shown}{more}. Fix them and import the file again.", field="file")


@dataclass
class Upload:
    """A file read and converted to WGS84: `frame` has feature (1-based), id (how to name the feature), code,
    name, kind, worker_id (raw text or None) and geometry."""

    frame: gpd.GeoDataFrame
    format: str
    crs: str
    file_name: str | None


# ------------------------------------------------------------------------------------------------- reading

def detect_format(path: Path, format: str | None, file_name: str | None) -> str:
    """The declared format, else the file name's, else the content's (magic bytes)."""
    if format:
        fmt = _FORMAT_NAMES.get(format.strip().lower().lstrip("."))
        if fmt is None:
            raise InvalidInput(f"Unknown format {format!r}; use gpkg, shp (zipped), geojson or parquet.",
                               field="format")
        return fmt
    if fmt := format_of(file_name or path.name):
        return fmt
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"SQLite format 3\0"):
        return "gpkg"
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"PK\x03\x04"):
        return "shp"
    if head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"{":
        return "geojson"
    raise InvalidInput(f"Cannot tell what kind of file this is; send {ACCEPTED}, or say which with format=.",
                       field="file")


def format_of(file_name: str) -> str | None:
    """The format a file name says (.gpkg, .zip, .geojson/.json, .parquet), if any."""
    name = file_name.lower()
    if name.endswith(".shp"):
        raise InvalidInput("Send a Shapefile as a .zip holding its .shp, .shx, .dbf and .prj files.", field="file")
    return _BY_SUFFIX.get(Path(name).suffix)


@contextmanager
def _named(path: Path, suffix: str):
    """The file under a name GDAL recognises (/vsizip/ needs .zip), linked into a temporary folder if needed."""
    if path.name.lower().endswith(suffix):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="wangge-plan-") as folder:
        link = Path(folder) / f"upload{suffix}"
        link.symlink_to(path.resolve())
        yield link


def _read_frame(path: Path, fmt: str, limits: ZipLimits) -> gpd.GeoDataFrame:
    if fmt == "parquet":
        return gpd.read_parquet(path)
    if fmt == "shp":
        with tempfile.TemporaryDirectory(prefix="wangge-plan-") as folder:
            return _read_layer(_unpack_shapefile(path, Path(folder), limits))
    with _named(path, {"gpkg": ".gpkg", "geojson": ".geojson"}[fmt]) as named:
        return _read_layer(str(named))


def _unpack_shapefile(path: Path, folder: Path, limits: ZipLimits) -> str:
    """The one Shapefile of a zip unpacked into `folder` (its .shp and the parts beside it, under the caps of
    `limits`, counted while unpacking): GDAL then reads plain files, never the archive itself."""
    with zipfile.ZipFile(path) as archive:
        entries = unzip.members(archive, limits)
        shps = [e for e in entries if e.filename.lower().endswith(".shp") and not e.filename.startswith("__MACOSX/")]
        if len(shps) != 1:
            names = ", ".join(PurePosixPath(e.filename).name for e in shps[:10])
            raise InvalidInput(f"The zip must hold exactly one Shapefile (.shp with its .shx, .dbf and .prj); "
                               f"it holds {len(shps)}{': ' + names if names else ''}.", field="file")
        stem = PurePosixPath(shps[0].filename.lower()).with_suffix("")
        written = 0
        for entry in entries:  # the parts beside the .shp: same folder, same name (.shx, .dbf, .prj, .cpg, ...)
            member = PurePosixPath(entry.filename.lower())
            if entry.is_dir() or member.with_suffix("") != stem or not member.suffix[1:].isalnum():
                continue
            written = unzip.extract(archive, entry, folder / f"upload{member.suffix}", limits, written)
    return str(folder / "upload.shp")


def _read_layer(target: str) -> gpd.GeoDataFrame:
    import pyogrio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        layers = pyogrio.list_layers(target)
        if not len(layers):
            raise InvalidInput("The file has no layers.", field="file")
        polygons = [name for name, kind in layers if kind and "Polygon" in kind]
        return pyogrio.read_dataframe(target, layer=polygons[0] if polygons else layers[0][0])


def read(path: str | Path, format: str | None = None, file_name: str | None = None,
         crs: str | None = None, limits: ZipLimits | None = None) -> Upload:
    """Read a plan file into WGS84. The file's own CRS is used (a GeoJSON is EPSG:4326) unless GCJ-02 or BD-09 is
    declared, which wins; a file without a CRS is taken to be in `crs` (default EPSG:4326). A zip is unpacked
    within `limits` (PayloadTooLarge when it expands too far, InvalidInput for too many entries, nested archives
    or absurd compression)."""
    path = Path(path)
    declared = crs_.normalize_crs(crs) if crs else None
    fmt = detect_format(path, format, file_name)
    try:
        frame = _read_frame(path, fmt, limits or ZipLimits())
    except DomainError:
        raise
    except Exception as exc:  # GDAL, Arrow, zip and geopandas all say it their own way
        raise InvalidInput(f"Cannot read the file as {_TITLES[fmt]} ({reader_message(exc)}). "
                           f"Send {ACCEPTED}.", field="file") from exc
    if not len(frame):
        raise InvalidInput("The file holds no features: expected one polygon per grid.", field="file")
    if len(frame) > MAX_FEATURES:
        raise InvalidInput(f"The file holds {len(frame):,} features; a grid plan has at most {MAX_FEATURES:,} "
                           "(one polygon per grid). Import it community by community.", field="file")
    geometry, source = _to_wgs84(frame, declared)
    return Upload(_attributes(frame, geometry), fmt, source, file_name or path.name)


def _to_wgs84(frame: gpd.GeoDataFrame, declared: str | None) -> tuple[gpd.GeoSeries, str]:
    """The geometry in EPSG:4326 and the name of the CRS it came from."""
    file_crs = frame.crs
    if declared in ("GCJ-02", "BD-09"):
        if file_crs is not None and not file_crs.is_geographic:
            raise InvalidInput(f"crs={declared} was declared, but the file is in {file_crs.name}, a projected "
                               f"system: {declared} coordinates are longitude/latitude. Drop crs= to use the "
                               "file's own CRS.", field="crs")
        geometry, source = crs_.to_wgs84_geoseries(frame.geometry, declared), declared
    else:
        if file_crs is None:
            file_crs = declared or "EPSG:4326"
        series = gpd.GeoSeries(frame.geometry.values, index=frame.index, crs=file_crs)
        epsg = series.crs.to_epsg()
        source = f"EPSG:{epsg}" if epsg else series.crs.name
        if epsg != 4326 and series.crs.name not in ("WGS 84 (CRS84)", "WGS 84"):
            try:
                series = series.to_crs(4326)
            except Exception as exc:
                raise InvalidInput(f"The file is in {series.crs.name}, which cannot be converted to WGS84 "
                                   f"({reader_message(exc)}). Reproject it to EPSG:4326 first, e.g. "
                                   "`ogr2ogr -t_srs EPSG:4326 out.gpkg in.gpkg`.", field="crs") from exc
        geometry = series.set_crs(4326, allow_override=True)
    present = geometry[~(geometry.isna() | geometry.is_empty)]
    if len(present):
        x0, y0, x1, y1 = present.total_bounds
        if not (np.isfinite([x0, y0, x1, y1]).all() and -180 <= x0 and x1 <= 180 and -90 <= y0 and y1 <= 90):
            raise InvalidInput(f"The coordinates are not longitude/latitude (bounds {x0:.6g}, {y0:.6g}, {x1:.6g}, "
                               f"{y1:.6g}) although the file is taken to be in {source}. Give the file its CRS "
                               "(a .prj, the GeoPackage's srs) or reproject it to EPSG:4326.", field="crs")
    return geometry, source


def _text(values: pd.Series) -> pd.Series:
    """Attribute values as stripped text (None when blank); whole floats lose their '.0' (15-digit codes fit)."""
    def one(v):
        if v is None or v is pd.NA or (isinstance(v, (float, np.floating)) and not np.isfinite(v)):
            return None
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            v = int(v)
        s = str(v).strip()
        return s or None

    return pd.Series([one(v) for v in values.to_numpy(dtype=object)], index=values.index, dtype=object)


def _attributes(frame: gpd.GeoDataFrame, geometry: gpd.GeoSeries) -> gpd.GeoDataFrame:
    lowered = {str(c).strip().lower(): c for c in frame.columns if c != frame.geometry.name}
    n = len(frame)
    out: dict[str, Any] = {"feature": np.arange(1, n + 1)}  # the feature numbers, then a Series per alias
    for key, names in ALIASES.items():
        column = next((lowered[a] for a in names if a in lowered), None)
        out[key] = _text(frame[column]) if column is not None else pd.Series([None] * n, index=frame.index,
                                                                              dtype=object)
    ident = pd.Series([f"feature {i}" for i in out["feature"]], index=frame.index, dtype=object)
    for key in ("fid", "id", "code"):  # the last one present wins
        ident = ident.where(out[key].isna(), key + " " + out[key].astype(str))
    return gpd.GeoDataFrame({"feature": out["feature"], "id": ident.to_numpy(),
                             **{k: out[k].to_numpy() for k in ("code", "name", "kind", "worker_id")}},
                            geometry=geometry.values, crs="EPSG:4326")


# ----------------------------------------------------------------------------------------------- importing

_TYPE_NAMES = np.array(["Point", "LineString", "LinearRing", "Polygon", "MultiPoint", "MultiLineString",
                        "MultiPolygon", "GeometryCollection"], dtype=object)


def _check(conn: Connection, caller: Caller, frame: gpd.GeoDataFrame) -> tuple[pd.Series, list[dict]]:
    """Each feature's community (None where it has none) and the list of bad features with their reasons."""
    geoms = np.asarray(frame.geometry.values, dtype=object)
    n = len(frame)
    reasons: list[list[str]] = [[] for _ in range(n)]

    def flag(mask, message):
        for i in np.flatnonzero(mask):
            reasons[i].append(message(i) if callable(message) else message)

    missing = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    flag(missing, "missing or empty geometry")
    kind = shapely.get_type_id(geoms)
    polygon = ~missing & np.isin(kind, (3, 6))
    flag(~missing & ~polygon, lambda i: f"not a polygon (got a {_TYPE_NAMES[np.clip(kind[i], 0, 7)]})")
    vertices = np.zeros(n, dtype=np.int64)
    vertices[polygon] = shapely.get_num_coordinates(geoms[polygon])
    too_big = vertices > MAX_VERTICES
    flag(too_big, lambda i: f"{vertices[i]:,} vertices (at most {MAX_VERTICES:,} per grid: simplify it)")
    polygon &= ~too_big  # not checked further: validity of a huge ring costs more than it tells
    valid = np.zeros(n, dtype=bool)
    valid[polygon] = shapely.is_valid(geoms[polygon])
    flag(polygon & ~valid, lambda i: f"invalid geometry: {shapely.is_valid_reason(geoms[i])}")

    # Community: the one holding most of the feature, among all communities; it must be in the caller's scope.
    community = pd.Series([None] * n, index=frame.index, dtype=object)
    if valid.any():
        x0, y0, x1, y1 = shapely.total_bounds(geoms[valid])
        communities = gpd.read_postgis(text(
            "SELECT code, geom FROM areas WHERE level = 'community' AND version_id IS NULL "
            "AND geom && ST_MakeEnvelope(:x0, :y0, :x1, :y1, 4326)"), conn, geom_col="geom",
            params={"x0": x0, "y0": y0, "x1": x1, "y1": y1})
        features = gpd.GeoDataFrame({"i": np.flatnonzero(valid)}, geometry=geoms[valid], crs="EPSG:4326")
        pairs = features.sjoin(communities, predicate="intersects")
        if len(pairs):
            overlap = shapely.area(shapely.intersection(pairs.geometry.values,
                                                        communities.geometry.values[pairs["index_right"]]))
            pairs = pairs.assign(overlap=overlap)
            pairs = pairs[pairs["overlap"] > 0].sort_values("overlap", ascending=False).drop_duplicates("i")
            community.iloc[pairs["i"].to_numpy()] = pairs["code"].to_numpy()
    where = f" in your area ({caller.scope})" if caller.scope else ""
    inside = community.notna().to_numpy()
    flag(valid & ~inside, f"outside every community{where}")
    foreign = inside & ~np.array([c is not None and caller.can_see(c) for c in community], dtype=bool)
    flag(foreign, f"outside every community{where}")
    community[foreign] = None

    codes = frame["code"]
    given = codes.notna().to_numpy()
    well_formed = given & codes.fillna("").str.match(_CODE).to_numpy()
    flag(given & ~well_formed, lambda i: f"code {codes.iloc[i]!r} is not a 15-digit grid code "
                                         "(12-digit community code + 3-digit number from 001)")
    mismatch = well_formed & community.notna().to_numpy() & \
        (codes.fillna("").str[:12].to_numpy() != community.fillna("").to_numpy())
    flag(mismatch, lambda i: f"code {codes.iloc[i]} is of community {codes.iloc[i][:12]}, but the feature lies "
                             f"in community {community.iloc[i]}")
    repeated = codes[given].groupby(codes[given]).groups
    for code, index in repeated.items():
        if len(index) > 1:
            numbers = frame.loc[index, "feature"].tolist()
            for i, number in zip(frame.index.get_indexer(index), numbers, strict=False):
                others = ", ".join(str(m) for m in numbers if m != number)
                reasons[i].append(f"duplicate code {code} (also on feature {others})")

    kinds = frame["kind"]
    flag(kinds.notna().to_numpy() & ~kinds.fillna("").str.lower().isin(list(KINDS)).to_numpy(),
         lambda i: f"unknown kind {kinds.iloc[i]!r}; use residential or commercial")

    workers = frame["worker_id"]
    numeric = workers.fillna("").str.fullmatch(r"\d{1,9}").to_numpy()
    ids = sorted({int(w) for w in workers[numeric]})
    known = set(conn.execute(text("SELECT id FROM responders WHERE id = ANY(:ids)"), {"ids": ids}).scalars())
    unknown = workers.notna().to_numpy() & ~np.array([ok and int(w) in known
                                                      for ok, w in zip(numeric, workers, strict=False)])
    flag(unknown, lambda i: f"unknown worker_id {workers.iloc[i]!r}: no responder has this id")

    problems = [{"feature": int(frame["feature"].iloc[i]), "id": frame["id"].iloc[i], "reason": "; ".join(r)}
                for i, r in enumerate(reasons) if r]
    return community, problems


def import_grids(conn: Connection, caller: Caller, plan_id: int, revision: int, upload: Upload) -> dict:
    """Replace the grids of every community the file touches with the file's features, all or nothing.

    A grid on the same place as an old one keeps its code (unless the file gives one); new grids get the next
    free numbers. Any bad feature → BadFeatures listing all of them, and nothing is written."""
    caller.require_role(*plans.WRITE_ROLES)
    new_revision = plans.bump(conn, plan_id, revision)
    frame = upload.frame
    community, problems = _check(conn, caller, frame)
    if problems:
        raise BadFeatures(problems, len(frame))
    def plain(values, convert=lambda v: v):  # object columns with None: what replace_community_grids expects
        return pd.Series([convert(v) if pd.notna(v) else None for v in values], index=frame.index, dtype=object)

    frame = gpd.GeoDataFrame({
        "code": plain(frame["code"]), "name": plain(frame["name"]),
        "kind": plain(frame["kind"], lambda k: KINDS[k.lower()]), "worker_id": plain(frame["worker_id"], int),
        "community": plain(community)}, geometry=frame.geometry.values, crs="EPSG:4326")
    touched = sorted(set(frame["community"]))
    current = gpd.read_postgis(text("SELECT code, name, kind, worker_id, geom FROM areas WHERE version_id = :v "
                                    "AND level = 'grid' AND left(code, 12) = ANY(:c)"),
                               conn, geom_col="geom", params={"v": plan_id, "c": touched})
    unchanged = _unchanged(frame, current)
    codes = frame["code"].copy()
    for code in touched:
        if code not in unchanged:  # rewriting a community as it is costs a recount and changes nothing
            part = frame[frame["community"] == code]
            codes[part.index] = plans.replace_community_grids(
                conn, plan_id, code, part[["code", "name", "kind", "worker_id", "geometry"]])
    report = {"plan_id": plan_id, "revision": new_revision, "imported": len(frame), "communities": touched,
              "unchanged": sorted(unchanged), "codes": codes.tolist(), "replaced": len(current),
              "format": upload.format, "crs": upload.crs}
    plans.audit(conn, caller, "plan.import", plan_id, {
        "file": upload.file_name, "format": upload.format, "crs": upload.crs, "imported": len(frame),
        "communities": touched, "unchanged": len(unchanged), "replaced": len(current), "revision": new_revision})
    return report


def _unchanged(frame: gpd.GeoDataFrame, current: gpd.GeoDataFrame) -> set[str]:
    """Communities whose grids in the file are the draft's already: the same codes, the same land (to float
    noise) and no attribute that differs."""
    db = current.set_index("code")
    known = frame["code"].isin(db.index).to_numpy()
    rows, same = frame[known], np.zeros(len(frame), dtype=bool)
    old = db.loc[rows["code"]]
    comparable = shapely.is_valid(old.geometry.values)  # a stored invalid grid is always rewritten
    land = np.zeros(len(rows), dtype=bool)
    land[comparable] = shapely.area(shapely.symmetric_difference(
        rows.geometry.values[comparable], old.geometry.values[comparable])) <= 1e-9 * shapely.area(
        old.geometry.values[comparable])
    for column in ("name", "kind", "worker_id"):
        given = rows[column].to_numpy(dtype=object)
        before = old[column].astype(object).to_numpy()
        land &= np.array([g is None or (not pd.isna(b) and g == b) for g, b in zip(given, before, strict=False)],
                         dtype=bool)
    same[known] = land
    everything = pd.Series(same).groupby(frame["community"].to_numpy()).all()
    in_file = frame.groupby("community").size()
    in_draft = db.groupby(db.index.str[:12]).size()
    return {c for c in everything.index[everything] if in_file[c] == in_draft.get(c, 0)}


def create_from_file(conn: Connection, caller: Caller, name: str, note: str | None, upload: Upload) -> dict:
    """A new draft copied from the active version with the file imported into it (one transaction)."""
    plan = plans.create(conn, caller, name, note)
    report = import_grids(conn, caller, plan["id"], plan["revision"], upload)
    return {**plans.get(conn, caller, plan["id"]), "import": report}


# ----------------------------------------------------------------------------------------------- exporting

@dataclass
class Export:
    """An exported plan file."""
    content: bytes
    media_type: str
    file_name: str
    grids: int


def export_frame(conn: Connection, caller: Caller, plan_id: int) -> gpd.GeoDataFrame:
    """A version's grids in the caller's area with the export attributes (EPSG:4326)."""
    caller.require_role(*plans.READ_ROLES)
    plans.get(conn, caller, plan_id)  # 404 for an unknown version
    grids = gpd.read_postgis(text("""
        SELECT a.code, a.name, left(a.code, 12) AS community_code, left(a.code, 9) AS street_code, a.kind,
               a.households, a.worker_id, r.name AS worker_name, a.version_id, a.geom
        FROM areas a LEFT JOIN responders r ON r.id = a.worker_id
        WHERE a.version_id = :v AND a.level = 'grid' AND a.code LIKE :scope || '%'
        ORDER BY a.code"""), conn, geom_col="geom", params={"v": plan_id, "scope": caller.scope})
    grids = grids.rename_geometry("geometry")
    grids["worker_id"] = grids["worker_id"].astype("Int64")
    grids["households"] = grids["households"].fillna(0).astype("int64")
    return grids


def export(conn: Connection, caller: Caller, plan_id: int, format: str) -> Export:
    """The grids of any version (draft, active, retired) in the caller's area as a file of `format`."""
    fmt = _FORMAT_NAMES.get((format or "").strip().lower().lstrip("."))
    if fmt is None:
        raise InvalidInput(f"Unknown format {format!r}; use gpkg, geojson, shp (zipped) or parquet.", field="format")
    grids = export_frame(conn, caller, plan_id)
    plans.audit(conn, caller, "plan.export", plan_id, {"format": fmt, "grids": len(grids), "scope": caller.scope})
    return Export(write(grids, fmt), MEDIA_TYPES[fmt], f"plan-{plan_id}{SUFFIXES[fmt]}", len(grids))


def write(grids: gpd.GeoDataFrame, fmt: str) -> bytes:
    """A GeoDataFrame as the bytes of a gpkg, geojson, zipped shp or parquet file."""
    import pyogrio

    if fmt == "parquet":
        buffer = io.BytesIO()
        grids.to_parquet(buffer, index=False)
        return buffer.getvalue()
    with tempfile.TemporaryDirectory(prefix="wangge-export-") as folder:
        if fmt == "shp":
            path = Path(folder) / "grids.shp"
            pyogrio.write_dataframe(grids.rename(columns=SHAPEFILE_NAMES), path, encoding="UTF-8",
                                    geometry_type="MultiPolygon", promote_to_multi=True)
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
                for part in sorted(Path(folder).glob("grids.*")):
                    archive.write(part, part.name)
            return buffer.getvalue()
        path = Path(folder) / f"grids{SUFFIXES[fmt]}"
        pyogrio.write_dataframe(grids, path, layer="grids", geometry_type="MultiPolygon", promote_to_multi=True,
                                driver="GPKG" if fmt == "gpkg" else "GeoJSON")
        return path.read_bytes()
