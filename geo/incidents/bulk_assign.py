"""Staged incidents filed set-based: due times, the staging table, and the one statement that assigns every
staged row (covering grid, worker, department, likely duplicate, incident rows and events).

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

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sqlalchemy import Connection, text

from geo.errors import Conflict
from geo.incidents import workflow
from geo.incidents.intake import DUPLICATE_RADIUS_M, DUPLICATE_WINDOW
from geo.incidents.timelimits import TZ, due_at_many


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

IMPORT_COLUMNS = {"line": "int8", "category_code": "text", "description": "text", "source": "text",
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
FROM (SELECT ST_Extent(geom)::geometry AS e FROM areas
      WHERE level = 'grid' AND version_id = CAST(:version AS int)) t""")
_GRID_SHAPES = text("SELECT code, ST_AsBinary(geom) FROM areas "
                    "WHERE level = 'grid' AND version_id = CAST(:version AS int) ORDER BY code")

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
_ASSIGN = text("""
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
        """Index grid shapes (WKB, by code) for nearest-grid searches; `k` scales longitude to metres."""
        import shapely

        self.k = k
        self.codes = np.asarray(codes, dtype=object)
        self.scaled = shapely.transform(shapely.from_wkb(np.asarray(wkb, dtype=object)), lambda xy: xy * [k, 1.0])
        self.tree = shapely.STRtree(self.scaled)

    @classmethod
    def load(cls, conn: Connection, version_id: int, k: float) -> "NearestGrid":
        """The grids of a version, from the database."""
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
    """What the set-based assignment filed, and the staged rows it did not."""
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
    reason[in_scope] = "in no grid of your area"
    near = ~in_scope & rejects["nearest_grid"].notna().to_numpy()
    reason[near] = ("outside every grid (nearest " + rejects["nearest_grid"][near].astype(str) + " at "
                    + rejects["distance_m"][near].round().astype(np.int64).astype(str) + " m)")
    reason[~in_scope & ~near] = "outside every grid (the active grid version has no grids)"
    rejects.insert(1, "reason", reason)
    return Assigned(int(row.imported), int(row.duplicates), rejects.reset_index(drop=True), phases)
