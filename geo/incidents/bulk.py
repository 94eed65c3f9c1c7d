"""Bulk incident intake: read CSV/GeoJSON/GeoPackage in chunks, validate vectorised, COPY, assign set-based.

The staging and assignment half is shared with the demo loader (fixtures/load.py):

* ``copy_frame`` / ``copy_rows`` COPY DataFrames (CSV text, or binary COPY built with numpy for the import);
* ``due_times`` computes due times per category with ``timelimits.due_at_many``;
* ``create_stage`` makes the temporary ``stage_incidents`` table, ``assign`` files every staged row in one
  set-based statement: covering grid of the version (``ST_Covers``, lowest code on shared edges), its worker, the
  category's department, the likely duplicate, the incident rows and their events. Rows outside every grid are
  either kept as ``unassigned`` with the nearest grid as a suggestion, or returned as rejects with that grid.

The grid lookup uses a uniform cell index built per batch in temporary tables: for every cell that holds a staged
point, the grids whose geometry meets the (slightly widened) cell, and whether one grid contains the whole cell.
Points in such "sole" cells need no geometry test; the others are checked with ``ST_Covers`` against the few
candidate grids of their cell. The staging rows are hash-joined to the cells instead of probing a GiST index per
row: the same answer as ``LEFT JOIN LATERAL (... ST_Covers ... ORDER BY code LIMIT 1)``, several times faster.
Duplicates (same category, still open, within 50 m and the 24 h before the report) are found the same way, by a
join on 3×3 neighbourhoods of cells at least 50 m wide, against the incidents already in the database (rows of
the same batch are not compared with each other).

The nearest grid of a point outside every grid (``NearestGrid``, shapely) is searched in a worker thread while
the database runs the statement, so it costs no wall time.
"""

import codecs
import io
import re
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, text

from geo import crs as crs_
from geo.incidents import workflow
from geo.errors import Conflict, InvalidInput
from geo.incidents.intake import DUPLICATE_RADIUS_M, DUPLICATE_WINDOW, SOURCES
from geo.incidents.timelimits import TZ, due_at_many

CHUNK_ROWS = 100_000
MAX_DESCRIPTION = 4000
EARLIEST = pd.Timestamp("2000-01-01", tz=TZ)
FUTURE_SLACK = timedelta(minutes=10)  # clock skew allowed for reported_at
FORMATS = ("csv", "geojson", "gpkg")
Progress = Callable[[str, int, int | None], None]  # (phase, rows done, rows expected or None)

# Column names accepted in files (lower-cased, stripped), first match wins.
COORDINATE_COLUMNS = (("lon", "lat"), ("lng", "lat"), ("longitude", "latitude"), ("x", "y"), ("经度", "纬度"))
CATEGORY_COLUMNS = ("category", "category_code", "service_code", "类别")
DESCRIPTION_COLUMNS = ("description", "描述")
TIME_COLUMNS = ("reported_at", "requested_datetime", "上报时间")
SOURCE_COLUMNS = ("source",)


# ------------------------------------------------------------------------------------- shared with the loader

def _text_times(values: pd.Series) -> np.ndarray:
    """Timestamps as ISO 8601 UTC text for COPY (None for NaT), vectorised; naive values are taken as UTC."""
    stamps = pd.DatetimeIndex(values)
    if stamps.tz is not None:
        stamps = stamps.tz_convert("UTC").tz_localize(None)
    raw = stamps.as_unit("us").to_numpy()
    out = np.datetime_as_string(raw, unit="us", timezone="UTC").astype(object)
    out[np.isnat(raw)] = None
    return out


def _csv_text(frame: pd.DataFrame) -> str:
    """A frame as COPY csv text: geometries as hex EWKB, times as ISO 8601 UTC."""
    import geopandas as gpd
    import shapely

    columns = {}
    for column, values in frame.items():
        if isinstance(values.dtype, gpd.array.GeometryDtype):
            columns[column] = shapely.to_wkb(shapely.set_srid(np.asarray(values), 4326), hex=True, include_srid=True)
        elif pd.api.types.is_datetime64_any_dtype(values.dtype):
            columns[column] = _text_times(values)
        else:
            columns[column] = values.to_numpy()
    buffer = io.StringIO()
    pd.DataFrame(columns).to_csv(buffer, index=False, header=False)
    return buffer.getvalue()


_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # binary COPY header: flags 0, no extension
_TRAILER = b"\xff\xff"
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 UTC in Unix microseconds
_FIXED = {"int8": ">i8", "float8": ">f8", "timestamptz": ">i8", "int2": ">i2"}


def _binary_rows(frame: pd.DataFrame, kinds: dict[str, str]) -> bytes:
    """Rows of a frame in PostgreSQL's binary COPY format, built with numpy (no Python loop over fields).

    kinds maps each column to int8, int2, float8, timestamptz (tz-aware or UTC-naive datetimes) or text;
    None/NaN/NaT become NULL."""
    n = len(frame)
    fields = []  # (lengths with -1 for NULL, byte sizes, data as (n, width) array or flat bytes)
    for column, kind in kinds.items():
        values = frame[column]
        if kind == "text":
            null = values.isna().to_numpy()
            encoded = [b"" if missing else str(v).encode() for v, missing in zip(values.to_numpy(), null)]
            sizes = np.fromiter(map(len, encoded), dtype=np.int64, count=n)
            fields.append((np.where(null, -1, sizes), sizes, np.frombuffer(b"".join(encoded), dtype=np.uint8)))
            continue
        if kind == "timestamptz":
            stamps = pd.DatetimeIndex(values)
            if stamps.tz is not None:
                stamps = stamps.tz_convert("UTC").tz_localize(None)
            null = np.asarray(stamps.isna())
            numbers = stamps.as_unit("us").asi8 - _PG_EPOCH_US
        else:
            numbers = values.to_numpy(dtype=float if kind == "float8" else np.int64)
            null = np.isnan(numbers) if kind == "float8" else np.zeros(n, dtype=bool)
        width = np.dtype(_FIXED[kind]).itemsize
        sizes = np.where(null, 0, width)
        data = np.ascontiguousarray(numbers.astype(_FIXED[kind])).view(np.uint8).reshape(n, width)
        fields.append((np.where(null, -1, width), sizes, data))
    row_sizes = 2 + sum(4 + sizes for _, sizes, _ in fields)
    starts = np.concatenate([[0], np.cumsum(row_sizes)[:-1]]).astype(np.int64)
    out = np.empty(int(row_sizes.sum()), dtype=np.uint8)
    out[starts[:, None] + np.arange(2)] = np.frombuffer(len(fields).to_bytes(2, "big"), dtype=np.uint8)
    position = starts + 2
    for lengths, sizes, data in fields:
        out[position[:, None] + np.arange(4)] = lengths.astype(">i4").view(np.uint8).reshape(n, 4)
        position = position + 4
        if data.ndim == 2:  # fixed width: rows that are not NULL
            present = sizes > 0
            out[position[present][:, None] + np.arange(data.shape[1])] = data[present]
        elif len(data):  # variable width: scatter each row's bytes after its length word
            source_starts = np.cumsum(sizes) - sizes
            out[np.repeat(position - source_starts, sizes) + np.arange(len(data))] = data
        position = position + sizes
    return out.tobytes()


@contextmanager
def copy_rows(conn: Connection, table: str, kinds: dict[str, str]) -> Iterator[Callable[[pd.DataFrame], None]]:
    """One binary COPY into `table` left open for many frames: `write(frame)` queues a frame's rows (see
    _binary_rows for `kinds`) and returns while a thread sends them, so the next frame is prepared meanwhile."""
    from psycopg.copy import QueuedLibpqWriter

    started = False
    with conn.connection.cursor() as cursor:
        statement = f"COPY {table} ({', '.join(kinds)}) FROM STDIN WITH (FORMAT binary)"
        with cursor.copy(statement, writer=QueuedLibpqWriter(cursor)) as copy:
            def write(frame: pd.DataFrame) -> None:
                nonlocal started
                if len(frame):
                    copy.write((b"" if started else _SIGNATURE) + _binary_rows(frame, kinds))
                    started = True

            yield write
            if started:
                copy.write(_TRAILER)


def copy_frame(conn: Connection, table: str, frame: pd.DataFrame) -> None:
    """COPY a frame into `table` (columns by name); geometries go as hex EWKB, times as ISO 8601 UTC text."""
    with conn.connection.cursor() as cursor:
        with cursor.copy(f"COPY {table} ({', '.join(frame.columns)}) FROM STDIN WITH (FORMAT csv)") as copy:
            copy.write(_csv_text(frame))


def due_times(reported_at: pd.Series, category_codes: pd.Series, categories) -> pd.Series:
    """Due time of every row by its category's limit and clock (categories: dicts with code, time_limit,
    time_limit_unit, clock). Rows of unknown categories get NaT."""
    due = pd.Series(pd.NaT, index=reported_at.index, dtype="datetime64[us, Asia/Shanghai]")
    for category in categories:
        rows = category_codes.index[category_codes.to_numpy() == category["code"]]
        if len(rows):
            due.loc[rows] = due_at_many(reported_at.loc[rows], category["time_limit"], category["time_limit_unit"],
                                        category["clock"]).tz_convert(TZ).as_unit("us")
    return due


STAGE_COLUMNS = ("line", "category_code", "description", "source", "status", "reported_at", "due_at",
                 "dispatched_at", "handled_at", "closed_at", "rework_count", "input_crs", "lon", "lat")

_IMPORT_COLUMNS = {"line": "int8", "category_code": "text", "description": "text", "source": "text",
                   "reported_at": "timestamptz", "due_at": "timestamptz", "input_crs": "text", "lon": "float8",
                   "lat": "float8"}

_CREATE_STAGE = text("""
CREATE TEMP TABLE stage_incidents (
    line bigint NOT NULL, category_code text NOT NULL, description text, source text NOT NULL, status text,
    reported_at timestamptz NOT NULL, due_at timestamptz, dispatched_at timestamptz, handled_at timestamptz,
    closed_at timestamptz, rework_count smallint, input_crs text, lon float8 NOT NULL, lat float8 NOT NULL,
    geom geometry(Point, 4326) GENERATED ALWAYS AS (ST_SetSRID(ST_MakePoint(lon, lat), 4326)) STORED
) ON COMMIT DROP""")


_TEMP_TABLES = ("stage_incidents", "bulk_grids", "bulk_cell_envelopes", "bulk_cells", "bulk_open")


def create_stage(conn: Connection) -> None:
    """The temporary staging table (dropped at commit); fill it with `copy_frame(conn, "stage_incidents", ...)`:
    `line` numbers the rows (incident ids follow it), geom is built from lon/lat (WGS84). A second batch in the
    same transaction starts from scratch."""
    conn.execute(text("DROP TABLE IF EXISTS " + ", ".join(f"pg_temp.{t}" for t in _TEMP_TABLES)))
    conn.execute(_CREATE_STAGE)


_GRIDS = text("""
CREATE TEMP TABLE bulk_grids ON COMMIT DROP AS
SELECT id, code, version_id, worker_id, geom FROM areas WHERE level = 'grid' AND version_id = CAST(:version AS int)""")
_GRID_INDEX = (text("CREATE INDEX ON bulk_grids USING gist (geom)"), text("ANALYZE bulk_grids"))
_GRID_SCALE = text("""
SELECT cos(radians((ST_YMin(e) + ST_YMax(e)) / 2)),
       (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY sqrt(ST_Area(Box2D(geom)))) FROM areas
        WHERE level = 'grid' AND version_id = CAST(:version AS int))
FROM (SELECT ST_Extent(geom)::geometry AS e FROM areas WHERE level = 'grid' AND version_id = CAST(:version AS int)) t""")
_GRID_SHAPES = text("SELECT code, ST_AsBinary(geom) FROM areas WHERE level = 'grid' AND version_id = CAST(:version AS int) "
                    "ORDER BY code")

# The cells holding a staged point, as envelopes widened by 1e-9° (a point whose floor() lands in a cell is always
# inside it); then, grid by grid (so that PostGIS reuses each grid's prepared geometry), the grids meeting each cell
# and whether the only such grid contains the cell in its interior.
_CELL_ENVELOPES = text("""
CREATE TEMP TABLE bulk_cell_envelopes ON COMMIT DROP AS
SELECT cx, cy, ST_Expand(ST_MakeEnvelope(cx * CAST(:cell AS float8), cy * CAST(:cell AS float8),
                                         (cx + 1) * CAST(:cell AS float8), (cy + 1) * CAST(:cell AS float8), 4326),
                         1e-9) AS env
FROM (SELECT DISTINCT floor(lon / CAST(:cell AS float8))::int AS cx, floor(lat / CAST(:cell AS float8))::int AS cy
      FROM stage_incidents) c""")
_CELL_INDEX = (text("CREATE INDEX ON bulk_cell_envelopes USING gist (env)"), text("ANALYZE bulk_cell_envelopes"))
_CELLS = text("""
CREATE TEMP TABLE bulk_cells ON COMMIT DROP AS
WITH hit AS MATERIALIZED (
    SELECT e.cx, e.cy, g.id AS grid_id, g.code, ST_ContainsProperly(g.geom, e.env) AS inside
    FROM bulk_grids g JOIN bulk_cell_envelopes e ON e.env && g.geom AND ST_Intersects(g.geom, e.env))
SELECT cx, cy, grid_id, code, inside AND count(*) OVER (PARTITION BY cx, cy) = 1 AS sole FROM hit""")

_OPEN = "ARRAY[" + ", ".join(f"'{s}'" for s in sorted(workflow.OPEN)) + "]"

# Open incidents a staged row may repeat (same category, reported in the 24 h before it), each listed under the 3×3
# duplicate cells around it: a staged row meets its candidates by an equi-join on its own cell.
_OPEN_NEARBY = text(f"""
CREATE TEMP TABLE bulk_open ON COMMIT DROP AS
SELECT i.id, i.category_code, i.reported_at, i.geom,
       floor(ST_X(i.geom) / CAST(:dup_cell AS float8))::int + dx AS cx,
       floor(ST_Y(i.geom) / CAST(:dup_cell AS float8))::int + dy AS cy
FROM incidents i, (VALUES (-1), (0), (1)) x (dx), (VALUES (-1), (0), (1)) y (dy)
WHERE CAST(:find_duplicates AS boolean) AND i.status = ANY({_OPEN})
  AND i.reported_at > (SELECT min(reported_at) FROM stage_incidents) - make_interval(secs => CAST(:window AS float8))
  AND i.reported_at <= (SELECT max(reported_at) FROM stage_incidents)""")

# One statement: covering grid (lowest code on shared edges), worker, department, likely duplicate, incident ids in
# line order, the incidents, their events; it returns the lines not filed or filed without a grid.
_ASSIGN = text(f"""
WITH dup AS (
    SELECT DISTINCT ON (s.line) s.line, o.id AS dup_id
    FROM stage_incidents s
    JOIN bulk_open o ON o.cx = floor(s.lon / CAST(:dup_cell AS float8))::int
                    AND o.cy = floor(s.lat / CAST(:dup_cell AS float8))::int AND o.category_code = s.category_code
    WHERE o.reported_at > s.reported_at - make_interval(secs => CAST(:window AS float8))
      AND o.reported_at <= s.reported_at
      AND ST_DWithin(geography(o.geom), geography(s.geom), CAST(:radius AS float8))
    ORDER BY s.line, ST_Distance(geography(o.geom), geography(s.geom)), o.id
),
pick AS (
    SELECT DISTINCT ON (s.line) s.*, g.id AS grid_id, g.code AS grid_code, g.version_id AS grid_version_id,
           g.worker_id, cat.department_code, d.dup_id
    FROM stage_incidents s
    LEFT JOIN (bulk_cells c JOIN bulk_grids g ON g.id = c.grid_id)
           ON c.cx = floor(s.lon / CAST(:cell AS float8))::int AND c.cy = floor(s.lat / CAST(:cell AS float8))::int
          AND (c.sole OR ST_Covers(g.geom, s.geom))
    LEFT JOIN incident_categories cat ON cat.code = s.category_code
    LEFT JOIN dup d ON d.line = s.line
    ORDER BY s.line, c.code
),
j AS MATERIALIZED (
    SELECT x.*, CASE WHEN x.accepted THEN nextval('incidents_id_seq') END AS id  -- drawn in line order
    FROM (SELECT p.*, CASE WHEN p.grid_id IS NULL THEN CAST(:keep_outside AS boolean)
                           ELSE starts_with(p.grid_code, CAST(:scope AS text)) END AS accepted
          FROM pick p ORDER BY p.line) x
),
ins AS (
    INSERT INTO incidents (id, category_code, description, source, reporter_id, input_crs, status, reported_at,
                           due_at, dispatched_at, handled_at, closed_at, rework_count, grid_id, grid_code,
                           grid_version_id, assignee_id, department_code, duplicate_of, is_synthetic, geom)
    SELECT id, category_code, description, source, CAST(:reporter AS int), coalesce(input_crs, 'EPSG:4326'),
           CASE WHEN grid_id IS NULL THEN 'unassigned' ELSE coalesce(status, 'reported') END,
           reported_at, due_at, dispatched_at, handled_at, closed_at, coalesce(rework_count, 0),
           grid_id, grid_code, grid_version_id, worker_id, department_code, dup_id, CAST(:synthetic AS boolean), geom
    FROM j WHERE id IS NOT NULL
    RETURNING duplicate_of
),
ev AS (
    INSERT INTO incident_events (incident_id, at, actor_id, action, from_status, to_status, note, data)
    SELECT id, reported_at, CAST(:actor AS int), 'report', NULL,
           CASE WHEN grid_id IS NULL THEN 'unassigned' ELSE 'reported' END,
           coalesce(CAST(:note AS text), 'likely duplicate of ' || dup_id),
           CASE WHEN CAST(:batch AS text) IS NOT NULL
                THEN jsonb_build_object('batch', CAST(:batch AS text), 'line', line, 'crs', input_crs) END
    FROM j WHERE id IS NOT NULL
    UNION ALL  -- the workflow history of staged rows that carry one (the demo loader's)
    SELECT id, dispatched_at, NULL, 'transition', 'filed', 'dispatched', NULL, NULL
    FROM j WHERE CAST(:history AS boolean) AND id IS NOT NULL AND dispatched_at IS NOT NULL
    UNION ALL
    SELECT id, handled_at, NULL, 'transition', 'in_progress', 'handled', NULL, NULL
    FROM j WHERE CAST(:history AS boolean) AND id IS NOT NULL AND handled_at IS NOT NULL
    UNION ALL
    SELECT id, closed_at, NULL, 'transition', 'verified', status, NULL, NULL
    FROM j WHERE CAST(:history AS boolean) AND id IS NOT NULL AND closed_at IS NOT NULL AND status IN ('closed', 'void')
)
SELECT (SELECT count(*) FROM ins) AS imported, (SELECT count(duplicate_of) FROM ins) AS duplicates,
       r.lines, r.ids, r.grid_codes, r.lons, r.lats
FROM (SELECT array_agg(line ORDER BY line) AS lines, array_agg(id ORDER BY line) AS ids,
             array_agg(grid_code ORDER BY line) AS grid_codes, array_agg(lon ORDER BY line) AS lons,
             array_agg(lat ORDER BY line) AS lats
      FROM j WHERE id IS NULL OR grid_id IS NULL) r""")

_SUGGEST = text("""
UPDATE incidents i SET suggested_grid_code = s.code, suggested_distance_m = s.distance_m
FROM unnest(CAST(:ids AS bigint[]), CAST(:codes AS text[]), CAST(:distances AS float8[])) AS s (id, code, distance_m)
WHERE i.id = s.id""")


class NearestGrid:
    """Nearest grid of points outside every grid: the grid closest in (lon·cos φ0, lat), where a degree of longitude
    counts for what it measures on the ground (lowest code on ties), and the geodesic distance in metres to its
    closest point. Vectorised with shapely; used from a worker thread while the database files the rows."""

    def __init__(self, codes, wkb, k: float):
        import shapely

        self.k = k
        self.codes = np.asarray(codes, dtype=object)
        self.scaled = shapely.transform(shapely.from_wkb(np.asarray(wkb, dtype=object)), lambda xy: xy * [k, 1.0])
        self.tree = shapely.STRtree(self.scaled)

    @classmethod
    def load(cls, conn: Connection, version_id: int, k: float) -> "NearestGrid":
        rows = conn.execute(_GRID_SHAPES, {"version": version_id}).all()
        return cls([r[0] for r in rows], [bytes(r[1]) for r in rows], k)

    def find(self, lon, lat) -> tuple[np.ndarray, np.ndarray]:
        """(code, distance_m) of the nearest grid for each point (None, NaN when there are no grids)."""
        import shapely
        from pyproj import Geod

        n = len(lon)
        codes, distances = np.full(n, None, dtype=object), np.full(n, np.nan)
        if not n or not len(self.codes):
            return codes, distances
        points = shapely.points(np.asarray(lon, dtype=float) * self.k, np.asarray(lat, dtype=float))
        (which, grid), _ = self.tree.query_nearest(points, return_distance=True, all_matches=True)
        order = np.lexsort((self.codes[grid].astype(str), which))  # ties: lowest code first
        which, grid = which[order], grid[order]
        first = np.unique(which, return_index=True)[1]
        which, grid = which[first], grid[first]
        ends = shapely.get_coordinates(shapely.shortest_line(self.scaled[grid], points[which])).reshape(-1, 2, 2)
        _, _, metres = Geod(ellps="WGS84").inv(ends[:, 0, 0] / self.k, ends[:, 0, 1], ends[:, 1, 0] / self.k,
                                               ends[:, 1, 1])
        codes[which], distances[which] = self.codes[grid], metres
        return codes, distances

    def outside(self, lon, lat) -> np.ndarray:
        """Mask of the points no grid touches (a first guess; PostGIS has the last word)."""
        import shapely

        points = shapely.points(np.asarray(lon, dtype=float) * self.k, np.asarray(lat, dtype=float))
        hit = self.tree.query(points, predicate="intersects")[0]
        mask = np.ones(len(points), dtype=bool)
        mask[hit] = False
        return mask

    def guess(self, lines, lon, lat, chunk: int = 200_000) -> pd.DataFrame:
        """Nearest grids of the points that look outside, by line: run while the statement decides."""
        lines, lon, lat = np.asarray(lines), np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
        parts = []
        for i in range(0, len(lines), chunk):
            part = slice(i, i + chunk)
            out = self.outside(lon[part], lat[part])
            codes, distances = self.find(lon[part][out], lat[part][out])
            parts.append(pd.DataFrame({"nearest_grid": codes, "distance_m": distances},
                                      index=pd.Index(lines[part][out], name="line")))
        return pd.concat(parts) if parts else pd.DataFrame({"nearest_grid": [], "distance_m": []})


@dataclass
class Assigned:
    imported: int
    duplicates: int
    rejects: pd.DataFrame  # line, reason, grid_code (out of scope), nearest_grid, distance_m (outside)
    phases: dict = field(default_factory=dict)


def active_version(conn: Connection) -> int:
    """The active grid version, locked against publishing (FOR SHARE) until the transaction ends."""
    version = conn.execute(text("SELECT id FROM grid_versions WHERE status = 'active' FOR SHARE")).scalar()
    if version is None:
        raise Conflict("There is no active grid version to assign incidents to; publish one first.",
                       field="grid_version")
    return version


def grid_scale(conn: Connection, version_id: int) -> tuple[float, float]:
    """cos of the grids' middle latitude (for nearest-grid searches), and the cell size of the lookup index in
    degrees: a quarter of the median grid's bounding-box side, so that most cells lie inside one grid."""
    k, side = conn.execute(_GRID_SCALE, {"version": version_id}).one()
    return (float(k) if k else 1.0), float(np.clip((side or 0.002) / 4, 1e-4, 0.05))


def assign(conn: Connection, version_id: int, *, scope: str = "", keep_outside: bool = False,
           find_duplicates: bool = True, actor_id: int | None = None, reporter_id: int | None = None,
           batch_id: str | None = None, note: str | None = None, synthetic: bool = False,
           points: tuple | None = None) -> Assigned:
    """File every row of stage_incidents in one set-based statement (see the module docstring).

    Rows in a grid outside `scope` (a code prefix) and, unless `keep_outside`, rows outside every grid are not
    inserted: they come back in `rejects` with the reason (outside: with the nearest grid). Kept rows outside every
    grid get the nearest grid as suggested_grid_code/suggested_distance_m. `points` (lines, lon, lat of the staged
    rows) lets the nearest grids of points that look outside be found while the statement runs."""
    from concurrent.futures import ThreadPoolExecutor

    phases, started = {}, time.perf_counter()
    conn.execute(text("SET LOCAL work_mem = '256MB'"))
    conn.execute(text("ANALYZE stage_incidents"))
    k, cell = grid_scale(conn, version_id)
    nearest = NearestGrid.load(conn, version_id, k)
    conn.execute(_GRIDS, {"version": version_id})
    for statement in _GRID_INDEX:
        conn.execute(statement)
    conn.execute(_CELL_ENVELOPES, {"cell": cell})
    for statement in _CELL_INDEX:
        conn.execute(statement)
    conn.execute(_CELLS)
    conn.execute(text("ANALYZE bulk_cells"))
    max_lat = conn.execute(text("SELECT max(abs(lat)) FROM stage_incidents")).scalar() or 0.0
    # Duplicate cells at least 50 m wide in both directions, so that a 3×3 neighbourhood holds every point in reach.
    dup_cell = max(0.001, DUPLICATE_RADIUS_M / (111_320 * max(np.cos(np.radians(min(max_lat, 89.0))), 1e-3)))
    conn.execute(_OPEN_NEARBY, {"dup_cell": dup_cell, "find_duplicates": find_duplicates,
                                "window": DUPLICATE_WINDOW.total_seconds()})
    conn.execute(text("ANALYZE bulk_open"))
    phases["grid cell index"] = time.perf_counter() - started
    started = time.perf_counter()
    # Every join in the statement matches the staged rows to small tables on equal keys (cells, lines,
    # categories): hash joins, whatever the estimates for the computed keys say.
    conn.execute(text("SET LOCAL enable_mergejoin = off"))
    conn.execute(text("SET LOCAL enable_nestloop = off"))
    with ThreadPoolExecutor(max_workers=1) as pool:
        early = pool.submit(nearest.guess, *points) if points is not None else None
        row = conn.execute(_ASSIGN, {
            "cell": cell, "dup_cell": dup_cell, "window": DUPLICATE_WINDOW.total_seconds(),
            "radius": DUPLICATE_RADIUS_M, "keep_outside": keep_outside,
            "scope": scope or "", "reporter": reporter_id, "actor": actor_id, "note": note, "batch": batch_id,
            "synthetic": synthetic, "history": batch_id is None,
        }).one()
        phases["assign and insert"] = time.perf_counter() - started
        guessed = early.result() if early is not None else None
    conn.execute(text("SET LOCAL enable_mergejoin = on"))
    conn.execute(text("SET LOCAL enable_nestloop = on"))
    started = time.perf_counter()
    left = pd.DataFrame({
        "line": np.asarray(row.lines or [], dtype=np.int64),
        "id": pd.array(row.ids or [], dtype="Int64"),
        "grid_code": pd.Series(row.grid_codes or [], dtype=object),
        "lon": np.asarray(row.lons or [], dtype=float), "lat": np.asarray(row.lats or [], dtype=float),
    })
    outside = left["grid_code"].isna().to_numpy()
    codes, distances = np.full(len(left), None, dtype=object), np.full(len(left), np.nan)
    todo = outside.copy()
    if guessed is not None and len(guessed):
        known = outside & left["line"].isin(guessed.index).to_numpy()
        hits = guessed.loc[left["line"][known]]
        codes[known], distances[known] = hits["nearest_grid"].to_numpy(), hits["distance_m"].to_numpy()
        todo &= ~known
    if todo.any():  # points PostGIS found outside that the guess did not (on an edge, or no guess made)
        codes[todo], distances[todo] = nearest.find(left["lon"][todo], left["lat"][todo])
    kept = outside & left["id"].notna().to_numpy()
    if kept.any():
        conn.execute(_SUGGEST, {"ids": left["id"][kept].astype(int).tolist(), "codes": list(codes[kept]),
                                "distances": [float(d) for d in distances[kept]]})
    phases["nearest grids"] = time.perf_counter() - started
    rejected = left["id"].isna().to_numpy()
    rejects = pd.DataFrame({"line": left["line"][rejected].to_numpy(), "grid_code": left["grid_code"][rejected],
                            "nearest_grid": codes[rejected], "distance_m": distances[rejected]})
    reason = np.full(len(rejects), "", dtype=object)
    in_scope = rejects["grid_code"].notna().to_numpy()
    reason[in_scope] = ("in grid " + rejects["grid_code"][in_scope].astype(str) + f", outside your area {scope}")
    near = ~in_scope & rejects["nearest_grid"].notna().to_numpy()
    reason[near] = ("outside every grid (nearest " + rejects["nearest_grid"][near].astype(str) + " at "
                    + rejects["distance_m"][near].round().astype(np.int64).astype(str) + " m)")
    reason[~in_scope & ~near] = "outside every grid (the active grid version has no grids)"
    rejects.insert(1, "reason", reason)
    return Assigned(int(row.imported), int(row.duplicates), rejects.reset_index(drop=True), phases)


# ------------------------------------------------------------------------------------------------ the import

@dataclass
class ImportReport:
    batch_id: str
    total_rows: int
    imported: int
    rejects: pd.DataFrame  # line (CSV: physical line; features: 1-based index), reason, fid, ...
    seconds: float
    duplicates: int = 0
    file_name: str | None = None
    format: str | None = None
    crs: str | None = None
    grid_version: int | None = None
    blank_lines: int = 0
    ignored_columns: list[str] = field(default_factory=list)
    phases: dict = field(default_factory=dict)

    @property
    def rejected_count(self) -> int:
        return len(self.rejects)

    @property
    def rejected(self) -> list[dict]:
        """Every rejected row as {line, reason, ...} (fid for GeoJSON/GeoPackage, nearest_grid and distance_m
        for points outside every grid), in line order."""
        return _records(self.rejects)

    def summary(self, limit: int | None = None) -> dict:
        """JSON-ready counts and the rejected rows (the first `limit` of them)."""
        shown = self.rejects if limit is None else self.rejects.head(limit)
        return {
            "batch_id": self.batch_id, "file_name": self.file_name, "format": self.format, "crs": self.crs,
            "grid_version": self.grid_version, "total_rows": self.total_rows, "imported": self.imported,
            "duplicates": self.duplicates, "rejected_count": self.rejected_count, "rejected": _records(shown),
            "report_truncated": len(shown) < self.rejected_count,
            "blank_lines": self.blank_lines, "ignored_columns": self.ignored_columns,
            "seconds": round(self.seconds, 3),
        }

    def write_rejects(self, path) -> None:
        """The reject report as CSV: line, (fid,) reason."""
        columns = ["line", "fid", "reason"] if "fid" in self.rejects and self.rejects["fid"].notna().any() \
            else ["line", "reason"]
        self.rejects.reindex(columns=columns).to_csv(path, index=False)


def _records(frame: pd.DataFrame) -> list[dict]:
    out = []
    for record in frame.to_dict("records"):
        item = {}
        for key, value in record.items():
            if value is None or (isinstance(value, float) and np.isnan(value)):
                continue
            item[key] = value.item() if isinstance(value, np.generic) else value
        if "distance_m" in item:
            item["distance_m"] = round(item["distance_m"], 1)
        out.append(item)
    return out


def import_incidents(engine: Engine | Connection, path_or_bytes: str | Path | bytes, format: str | None = None,
                     crs: str = "EPSG:4326", actor_id: int | None = None, progress: Progress | None = None, *,
                     file_name: str | None = None, scope: str = "", keep_outside: bool = False,
                     find_duplicates: bool = True, chunk_rows: int = CHUNK_ROWS) -> ImportReport:
    """Import a file of incident points in one transaction: all valid rows filed, every other row reported.

    `engine`: an Engine (the import commits at the end) or a Connection inside a transaction the caller owns.
    `format`: csv, geojson or gpkg (default: from the file name, else sniffed). `crs`: the coordinates' system
    when the file does not say (CSV, or a layer without a CRS), or GCJ-02/BD-09, which no file can declare.
    `scope`: code prefix of the caller's area; rows in other grids are rejected. Rows outside every grid are
    rejected with the nearest grid, or kept as 'unassigned' with `keep_outside`.
    Raises InvalidInput (unreadable file, missing columns, CRS not accepted), UnknownCRS, Conflict."""
    started = time.perf_counter()
    progress = progress or (lambda phase, done, total: None)
    declared = crs_.normalize_crs(crs)
    source = _Source.open(path_or_bytes, format, file_name)
    # Opening the reader checks the file (encoding, columns, layer, CRS) before the database is touched.
    reader = _CsvReader(source, chunk_rows) if source.format == "csv" else _FeatureReader(source, declared, chunk_rows)
    options = dict(actor_id=actor_id, progress=progress, scope=scope, keep_outside=keep_outside,
                   find_duplicates=find_duplicates, started=started)
    if isinstance(engine, Connection):
        return _import(engine, source, reader, reader.crs or declared, **options)
    with engine.begin() as conn:
        report = _import(conn, source, reader, reader.crs or declared, **options)
    report.seconds = time.perf_counter() - started  # with the commit
    return report


def _import(conn, source, reader, input_crs, *, actor_id, progress, scope, keep_outside, find_duplicates,
            started) -> ImportReport:
    batch_id = uuid.uuid4().hex
    now = pd.Timestamp(datetime.now(TZ))
    # Before reading the active version: a publish (which locks incidents first) either finishes before this
    # import reads it, or waits for the import to commit (geo/publish.py).
    conn.execute(text("LOCK TABLE incidents IN ROW EXCLUSIVE MODE"))
    version = active_version(conn)
    categories = _categories(conn)
    create_stage(conn)
    rejects, staged, total, phases = [], [], 0, {}
    progress("reading", 0, reader.expected)
    with copy_rows(conn, "stage_incidents", _IMPORT_COLUMNS) as write:
        for chunk, early_rejects in reader.chunks():
            rejects.append(early_rejects)
            total += len(chunk) + len(early_rejects)
            good, bad = _validate(chunk, categories, now, input_crs)
            rejects.append(bad)
            if len(good):
                write(good)
                staged.append(good[["line", "lon", "lat"]])
            progress("reading", total, reader.expected)
    phases["read, validate and COPY"] = time.perf_counter() - started
    imported = duplicates = 0
    if staged:
        progress("assigning", total, reader.expected)
        points = pd.concat(staged, ignore_index=True)
        assigned = assign(conn, version, scope=scope, keep_outside=keep_outside, find_duplicates=find_duplicates,
                          actor_id=actor_id, batch_id=batch_id,
                          points=(points["line"].to_numpy(), points["lon"].to_numpy(), points["lat"].to_numpy()))
        del points
        phases.update(assigned.phases)
        imported, duplicates = assigned.imported, assigned.duplicates
        outside = assigned.rejects.drop(columns=["grid_code"])
        if "fid" in reader.extra_columns:
            outside = outside.merge(reader.fids(), on="line", how="left")
        rejects.append(outside)
    rejects = [r for r in rejects if len(r)]
    columns = ("line", "fid", "reason", "nearest_grid", "distance_m")
    frame = (pd.concat(rejects, ignore_index=True).sort_values("line", kind="stable").reset_index(drop=True)
             if rejects else pd.DataFrame({"line": pd.Series([], dtype=np.int64), "reason": []}))
    report = ImportReport(
        batch_id=batch_id, total_rows=total, imported=imported,
        rejects=frame.reindex(columns=[c for c in columns if c in frame]),
        seconds=0.0, duplicates=duplicates, file_name=source.name, format=source.format, crs=input_crs,
        grid_version=version, blank_lines=reader.blank_lines, ignored_columns=reader.ignored, phases=phases)
    if report.total_rows != report.imported + report.rejected_count:  # no row may go missing
        raise RuntimeError(f"Import accounting is off: {report.total_rows} rows read, {report.imported} imported, "
                           f"{report.rejected_count} rejected.")
    report.seconds = time.perf_counter() - started
    _record(conn, report, actor_id, scope)
    progress("done", total, total)
    return report


def _record(conn: Connection, report: ImportReport, actor_id: int | None, scope: str) -> None:
    """The batch in the audit log, in the same transaction as its rows."""
    import orjson

    detail = {"file": report.file_name, "format": report.format, "crs": report.crs,
              "grid_version": report.grid_version, "total_rows": report.total_rows, "imported": report.imported,
              "rejected": report.rejected_count, "duplicates": report.duplicates, "scope": scope or None,
              "seconds": round(report.seconds, 3)}
    conn.execute(text("INSERT INTO audit_log (actor_id, action, target, detail) "
                      "VALUES (CAST(:actor AS int), 'incidents.import', CAST(:target AS text), CAST(:detail AS jsonb))"),
                 {"actor": actor_id, "target": f"batch:{report.batch_id}", "detail": orjson.dumps(detail).decode()})


def _categories(conn: Connection) -> list[dict]:
    rows = conn.execute(text("SELECT code, name, time_limit, time_limit_unit, clock FROM incident_categories "
                             "WHERE active ORDER BY code"))
    return [dict(r._mapping) for r in rows]


# --------------------------------------------------------------------------------------------------- sources

@dataclass
class _Source:
    format: str
    name: str | None
    path: Path | None = None
    data: bytes | None = None

    @classmethod
    def open(cls, path_or_bytes, format: str | None, file_name: str | None) -> "_Source":
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


class _CsvReader:
    """CSV in chunks; `line` is the physical line in the file (quoted line breaks and blank lines counted)."""

    crs = None
    extra_columns = ()

    def __init__(self, source: _Source, chunk_rows: int):
        self.source, self.chunk_rows = source, chunk_rows
        self.encoding, lines = self._sniff()
        self.expected = max(lines - 1, 0) or None
        self.blank_lines = 0
        try:
            names = list(pd.read_csv(self._handle(), nrows=0, dtype=str, encoding=self.encoding).columns)
        except pd.errors.EmptyDataError:
            raise InvalidInput("The CSV is empty: expected a header line such as lon,lat,category.", field="file")
        except pd.errors.ParserError as exc:
            raise InvalidInput(f"The CSV is malformed: {exc}. Quote values that contain commas, quotes or "
                               "line breaks.", field="file") from exc
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
        with open(self.source.path, "rb") as f:
            while block := f.read(1 << 24):
                yield block

    def _handle(self):
        return io.BytesIO(self.source.data) if self.source.data is not None else self.source.path

    def chunks(self) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
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
            raise InvalidInput(f"The CSV is malformed: {exc}. Quote values that contain commas, quotes or "
                               "line breaks.", field="file") from exc

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


class _FeatureReader:
    """GeoJSON or GeoPackage points through pyogrio; `line` is the 1-based feature number, `fid` GDAL's FID."""

    extra_columns = ("fid",)
    blank_lines = 0

    def __init__(self, source: _Source, declared: str, chunk_rows: int):
        import pyogrio

        self.source, self.chunk_rows, self._tmp = source, chunk_rows, None
        target = source.path
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
            raise InvalidInput(f"Cannot read the {source.format} file: {exc}", field="file") from exc
        self.expected = int(info["features"]) if info["features"] is not None and info["features"] >= 0 else None
        names = list(info["fields"])
        self.map = _pick(names)
        if "category" not in self.map:
            raise InvalidInput("The features have no category property; expected category (or category_code, "
                               f"service_code). Properties found: {', '.join(names) or 'none'}.", field="file")
        self.ignored = [n for n in names if n not in self.map.values()]
        self.crs = self._crs(info.get("crs"), declared)
        self._fids = []

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

                def col(key):
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
                raise InvalidInput(f"Cannot read the {self.source.format} file: {exc}", field="file") from exc
            raise
        finally:
            if self._tmp is not None:
                self._tmp.close()

    def fids(self) -> pd.DataFrame:
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


def _validate(chunk: pd.DataFrame, categories: list[dict], now: pd.Timestamp,
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
        flag(~missing & lon.isna().to_numpy(), lambda m: "bad coordinates: lon " + _quoted(raw_lon[m]) + " is not a number")
        flag(~missing & lat.isna().to_numpy(), lambda m: "bad coordinates: lat " + _quoted(raw_lat[m]) + " is not a number")
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
