"""Areas of the hierarchy and point → grid lookup, answered as GeoJSON built inside PostGIS."""

from typing import Any

from sqlalchemy import Float, Integer, String, bindparam, case, func, literal_column, null, select, text
from sqlalchemy.dialects.postgresql import JSON, aggregate_order_by
from sqlalchemy.orm import aliased

from geo.auth import Caller
from geo.crs import radius_3857
from geo.errors import NotFound, OutsideEveryGrid
from geo.models import Area, GridVersion, Responder
from geo.sql import Query

GEOJSON_DECIMALS = 7  # ~1 cm
MAP_SIMPLIFY_DEG = 5e-6  # ~0.5 m: drops the densified collinear vertices, invisible on a map

ACTIVE_VERSION = select(GridVersion.id).where(GridVersion.status == "active").scalar_subquery()
VERSION = func.coalesce(bindparam("version", type_=Integer), ACTIVE_VERSION)
SCOPE = bindparam("scope", type_=String)


def _chain(area):
    """Ancestors of `area`, nearest first: codes are prefixes, so no recursion is needed."""
    parent = aliased(Area)
    entry = func.json_build_object("code", parent.code, "name", parent.name, "level", parent.level)
    return (
        select(func.json_agg(aggregate_order_by(entry, func.length(parent.code).desc())))
        .where(
            parent.version_id.is_(None),
            parent.code.in_([func.left(area.code, n) for n in (6, 9, 12)]),
            parent.code != area.code,
        )
        .scalar_subquery()
    )


def _feature(area, worker, geometry: bool):
    """One area as GeoJSON Feature text, with households, worker and parent chain."""
    worker_json = case(
        (worker.id.is_(None), null()),
        else_=func.json_build_object("id", worker.id, "name", worker.name, "phone", worker.phone,
                                     "status", worker.status),
    )
    props = func.json_build_object(
        "code", area.code, "name", area.name, "level", area.level, "kind", area.kind,
        "households", area.households, "grid_version", area.version_id,
        "is_synthetic", area.is_synthetic, "worker", worker_json, "chain", _chain(area),
    )
    geom = func.ST_AsGeoJSON(area.geom, GEOJSON_DECIMALS).cast(JSON) if geometry else null()
    return func.json_build_object("type", "Feature", "id", area.code, "geometry", geom,
                                  "properties", props).cast(String)


def _area_query(geometry: bool):
    area, worker = aliased(Area, name="a"), aliased(Responder, name="w")
    stmt = select(_feature(area, worker, geometry)).select_from(area).outerjoin(worker, worker.id == area.worker_id)
    return area, stmt


def _visible(area):
    """The caller's subtree, in SQL, and only the stable levels or the chosen grid version."""
    return (
        area.code.startswith(SCOPE, autoescape=False),
        (area.version_id.is_(None)) | (area.version_id == VERSION),
    )


NEAREST_CANDIDATES = 8  # grids a KNN scan ranks first; nearest_proven() says whether they decide


def _build_statements():
    statements: dict[object, Any] = {}
    for geometry in (True, False):
        area, stmt = _area_query(geometry)
        statements["area", geometry] = stmt.where(area.code == bindparam("code"), *_visible(area)).limit(1)
        parent = aliased(Area)
        parent_id = (
            select(parent.id)
            .where(parent.code == bindparam("code"), parent.version_id.is_(None))
            .scalar_subquery()
        )
        statements["children", geometry] = (
            stmt.where(area.parent_id == parent_id, area.code > bindparam("after"), *_visible(area))
            .order_by(area.code)
            .limit(bindparam("limit"))
        )
    area, stmt = _area_query(True)
    point = func.ST_SetSRID(func.ST_MakePoint(bindparam("lon", type_=Float), bindparam("lat", type_=Float)), 4326)
    # ST_Covers finds points on edges; a point on a shared edge goes to the lowest code.
    statements["grid_at"] = (
        stmt.where(area.level == "grid", area.version_id == VERSION, func.ST_Covers(area.geom, point),
                   area.code.startswith(SCOPE, autoescape=False))
        .order_by(area.code)
        .limit(1)
    )
    # The grid nearest to a point outside every grid, by geodesic metres (nearest_grid). First one KNN scan in
    # Web Mercator (GiST areas_grid_version_mercator) takes the nearest candidates with their geodesic metres and
    # Mercator distance; nearest_proven() says whether they must hold the nearest. 3857 and 'grid' are literals,
    # never parameters, so that a generic plan uses that partial expression index.
    grids = (Area.version_id == VERSION, Area.code.startswith(SCOPE, autoescape=False))
    distance = func.ST_Distance(func.geography(Area.geom), func.geography(point))
    srid: Any = literal_column("3857")
    mercator_point = func.ST_Transform(point, srid)
    mercator = func.ST_Transform(Area.geom, srid).op("<->", return_type=Float)(mercator_point)
    knn_grids = (Area.level == literal_column("'grid'"), *grids)
    statements["nearest_candidates"] = (
        select(Area.code, distance, mercator.label("mercator")).where(*knn_grids)
        .order_by(mercator).limit(NEAREST_CANDIDATES)
    )
    # Where they cannot: every grid within the Mercator reach of the best candidate's metres (none beyond it can
    # be nearer), ranked by geodesic metres.
    statements["nearest_within"] = (
        select(Area.code, distance)
        .where(*knn_grids, func.ST_DWithin(func.ST_Transform(Area.geom, srid), mercator_point,
                                           bindparam("reach", type_=Float)))
        .order_by(distance, Area.code).limit(1)
    )
    return statements


STATEMENTS = _build_statements()
QUERIES = {key: Query(statement) for key, statement in STATEMENTS.items()}


def nearest_proven(rows, lat: float) -> tuple[str, float] | None:
    """The nearest grid (code, metres) among the KNN candidate rows, if no grid beyond them can be as near: any
    such grid is farther in Mercator than the last candidate, so out of reach when the nearest's metres fit in
    that Mercator distance (geo.crs.radius_3857). None: not proven."""
    if not rows:
        return None
    code, metres = best(rows)
    if len(rows) < NEAREST_CANDIDATES or radius_3857(metres, lat) < max(row[2] for row in rows):
        return code, metres
    return None


def best(rows) -> tuple[str, float]:
    """The (code, metres) of the nearest row, ties to the lowest code."""
    return min(((row[0], row[1]) for row in rows), key=lambda pair: (pair[1], pair[0]))


def _check_scope(caller: Caller, code: str) -> None:
    caller.require_area(code, "code")


async def get(conn, caller: Caller, code: str, geometry: bool = True,
              version: int | None = None) -> str:
    """One area as Feature JSON text."""
    _check_scope(caller, code)
    params = {"code": code, "scope": caller.scope, "version": version}
    text = await QUERIES["area", geometry].fetchval(conn, **params)
    if text is None:
        raise NotFound(f"No area with code {code!r}" + (f" in grid version {version}." if version else "."),
                       field="code")
    return text


async def children(conn, caller: Caller, code: str, geometry: bool = True,
                   version: int | None = None, after: str = "", limit: int = 100) -> tuple[list[str], bool]:
    """Children of an area as Feature JSON texts, keyset-paged by code; also whether more follow."""
    await get(conn, caller, code, geometry=False, version=version)  # 404/403 for the parent itself
    params = {"code": code, "scope": caller.scope, "version": version, "after": after, "limit": limit + 1}
    rows = [row[0] for row in await QUERIES["children", geometry].fetch(conn, **params)]
    return rows[:limit], len(rows) > limit


async def grid_at(conn, caller: Caller, lon: float, lat: float,
                  version: int | None = None) -> str:
    """The grid covering a WGS84 point, as Feature JSON text; OutsideEveryGrid names the nearest."""
    params = {"lon": lon, "lat": lat, "scope": caller.scope, "version": version}
    text = await QUERIES["grid_at"].fetchval(conn, **params)
    if text is not None:
        return text
    raise OutsideEveryGrid(lon, lat, *(await nearest_grid(conn, lon, lat, caller.scope, version) or (None, None)))


async def nearest_grid(conn, lon: float, lat: float, scope: str = "", version: int | None = None):
    """(code, geodesic metres) of the grid nearest to a WGS84 point, in `scope` and `version` (default: the
    active one); None if there is no grid."""
    params = {"lon": lon, "lat": lat, "scope": scope, "version": version}
    rows = await QUERIES["nearest_candidates"].fetch(conn, **params)
    if not rows:
        return None
    nearest = nearest_proven(rows, lat)
    if nearest is not None:
        return nearest
    # many grids about as near: every grid that may be nearer than the best candidate, by geodesic metres
    row = await QUERIES["nearest_within"].fetchrow(conn, **params, reach=radius_3857(best(rows)[1], lat))
    return row[0], row[1]


SUBTREE = Query(
    select(Area.code, Area.level, Area.name, Area.kind, Area.households, Responder.name.label("worker"),
           func.ST_AsGeoJSON(func.ST_SimplifyPreserveTopology(Area.geom, MAP_SIMPLIFY_DEG), 6).label("geojson"))
    .outerjoin(Responder, Responder.id == Area.worker_id)
    .where(Area.code.startswith(bindparam("code", type_=String), autoescape=False),
           Area.code.startswith(SCOPE, autoescape=False),
           (Area.version_id.is_(None)) | (Area.version_id == VERSION))
    .order_by(Area.code)
)


async def subtree(conn, caller: Caller, code: str, version: int | None = None) -> list:
    """Every area under `code` (itself included), with worker name and GeoJSON geometry, for maps."""
    _check_scope(caller, code)
    rows = await SUBTREE.fetch(conn, code=code, scope=caller.scope, version=version)
    if not rows:
        raise NotFound(f"No area with code {code!r}.", field="area")
    return rows


# Published boundaries of one grid code: the active version and every retired one, newest first.
_HISTORY = Query(text("""
SELECT json_build_object(
    'type', 'Feature', 'id', v.id, 'geometry', ST_AsGeoJSON(a.geom, 7)::json,
    'properties', json_build_object(
        'code', a.code, 'name', a.name, 'version_id', v.id, 'version_name', v.name, 'status', v.status,
        'activated_at', v.activated_at, 'retired_at', v.retired_at, 'households', a.households, 'kind', a.kind,
        'worker_id', a.worker_id, 'worker_name', w.name, 'area_m2', round(ST_Area(geography(a.geom))::numeric, 1))
)::text
FROM areas a JOIN grid_versions v ON v.id = a.version_id LEFT JOIN responders w ON w.id = a.worker_id
WHERE a.level = 'grid' AND a.code = CAST(:code AS text) AND v.status IN ('active', 'retired')
  AND starts_with(a.code, CAST(:scope AS text))
ORDER BY v.activated_at DESC NULLS LAST, v.id DESC"""))


async def history(conn, caller: Caller, code: str) -> list[str]:
    """A grid code's boundaries in every published version (active, then retired ones), as Feature JSON texts."""
    _check_scope(caller, code)
    rows = [row[0] for row in await _HISTORY.fetch(conn, code=code, scope=caller.scope)]
    if not rows:
        raise NotFound(f"Grid {code} has never been published: no active or retired grid version has that code.",
                       field="code")
    return rows
