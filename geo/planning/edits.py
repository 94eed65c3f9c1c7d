"""Edits to a draft plan's grids — replace a boundary, split, merge, move buildings, set attributes — each one
revision-checked, scope-checked, validated as it is applied, recounted and audited."""

from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

import geopandas as gpd
import networkx as nx
import numpy as np
import orjson
import pandas as pd
import shapely
from pyproj import Transformer
from shapely.geometry import shape
from shapely.ops import split as split_by_line
from sqlalchemy import Connection, text

from geo import crs as crs_
from geo.areas import codes as grid_codes
from geo.auth import Caller
from geo.errors import InvalidInput, NotFound
from geo.models import GRID_KINDS
from geo.planning import plans

OUTSIDE_TOLERANCE_M2 = 1.0  # a hand-drawn boundary may stray this far past its community's edge
MIN_PART_M2 = 1.0  # a split must not leave crumbs smaller than this
TOUCH_DEG = 1e-7  # ~1 cm: boundaries closer than this count as shared
MIN_SHARED_DEG = 1e-5  # ~1 m of shared boundary makes two grids neighbours; a shared corner does not


@dataclass
class _Change:
    """What an op did: codes whose row it changed, codes it deleted, and the land it touched (for the recount)."""

    changed: list[str]
    removed: list[str] = field(default_factory=list)
    region: object = None  # shapely geometry, old ∪ new of every reshaped grid; None: no geometry changed


def apply(conn: Connection, caller: Caller, plan_id: int, revision: int, op: str, target: int = 300,
          **params) -> dict:
    """Apply one edit in the caller's transaction and return the new revision and the changed grids.

    Every op bumps the plan's revision first (a stale `revision` is a Conflict), needs the planner role and
    grids inside the caller's area, and recounts households around the land it reshaped."""
    if op not in OPS:
        raise InvalidInput(f"Unknown edit op {op!r}; use one of: {', '.join(OPS)}.", field="op")
    caller.require_role(*plans.WRITE_ROLES)
    new_revision = plans.bump(conn, plan_id, revision)
    change = OPS[op](conn, caller, plan_id, **params)
    changed = list(change.changed)
    before: dict[str, int] = {}
    after: dict[str, int] = {}
    if change.region is not None:
        around = conn.execute(text(
            "SELECT code, households FROM areas WHERE version_id = :v AND level = 'grid' "
            "AND ST_Intersects(geom, ST_SetSRID(ST_GeomFromWKB(:wkb), 4326))"),
            {"v": plan_id, "wkb": shapely.to_wkb(change.region)}).all()
        before = dict(around)
        plans.recount(conn, plan_id, sorted(before))
        after = dict(conn.execute(text(
            "SELECT code, households FROM areas WHERE version_id = :v AND level = 'grid' "
            "AND code = ANY(:codes)"), {"v": plan_id, "codes": sorted(before)}).all())
        # neighbours whose count moved (overlaps: the lowest code wins) are reported too, so a map can refresh them
        changed += sorted(c for c in after if after[c] != before[c] and c not in changed and caller.can_see(c))
    plans.audit(conn, caller, f"plan.edit.{op}", plan_id,
                {"op": op, "revision": new_revision, "codes": changed, "removed": change.removed},
                before={"revision": new_revision - 1, "households": before},
                after={"revision": new_revision, "households": after})
    features = [orjson.loads(f) for f in _features(conn, plan_id, caller.scope, target, codes=changed)]
    return {"plan_id": plan_id, "revision": new_revision, "op": op, "changed": changed,
            "grids": {"type": "FeatureCollection", "features": features, "removed": change.removed}}


def replace_geometry(conn: Connection, caller: Caller, plan_id: int, code: str, geometry: dict,
                     crs: str = "EPSG:4326") -> _Change:
    """Give grid `code` a new boundary (a GeoJSON Polygon/MultiPolygon in `crs`) inside its community.

    Neighbouring grids are NOT adjusted: if the new boundary overlaps a neighbour or leaves a gap, validation
    reports the overlap or gap, and the planner fixes the neighbours with further edits (or fix-slivers)."""
    grid = _load(conn, caller, plan_id, [code]).iloc[0]
    new = _polygon_input(geometry, crs, "geometry")
    community = _community(conn, code)
    outside = new.difference(community.geom)
    outside_m2 = _area_m2(outside)
    if outside_m2 > OUTSIDE_TOLERANCE_M2:
        where = outside.representative_point()
        raise InvalidInput(
            f"The new geometry of grid {code} reaches {outside_m2:,.0f} m² outside its community {community.code} "
            f"({community.name}), for example at ({where.x:.6f}, {where.y:.6f}) in EPSG:4326. A grid must lie inside "
            "its community: redraw it within the community boundary.", field="geometry")
    _update(conn, plan_id, {code: new})
    # the old boundary may be invalid (that is what this op repairs): recount over the envelope, no overlay
    return _Change([code], region=shapely.box(*shapely.total_bounds([grid.geom, new])))


def split(conn: Connection, caller: Caller, plan_id: int, code: str, line: dict, crs: str = "EPSG:4326") -> _Change:
    """Cut grid `code` along a line drawn across it. The largest part keeps the code, kind and worker; every
    other part becomes a new grid of the same kind, with a new code in reading order and no worker yet."""
    grid = _load(conn, caller, plan_id, [code], need_valid=True).iloc[0]
    cut = _line_input(line, crs)
    pieces, uncut = [], []
    for polygon in shapely.get_parts(grid.geom):
        parts = shapely.get_parts(split_by_line(polygon, cut))
        # polygons of a multipart grid that the line does not cross stay with the code
        if len(parts) > 1:
            pieces.extend(parts)
        else:
            uncut.append(polygon)
    if not pieces:
        raise InvalidInput(f"The line does not cut grid {code} into two or more parts. Draw it across the grid, "
                           "starting and ending outside the grid's boundary.", field="line")
    areas_m2 = np.array([_area_m2(p) for p in pieces])
    if areas_m2.min() < MIN_PART_M2:
        raise InvalidInput(f"The line cuts a sliver of {areas_m2.min():.2f} m² off grid {code}. Move the line so "
                           "that each part is a real piece of land.", field="line")
    order = np.argsort(-areas_m2, kind="stable")
    keep_geom = shapely.union_all([pieces[order[0]], *uncut])
    others = [pieces[i] for i in order[1:]]
    community = _community(conn, code)
    codes = grid_codes.new_codes(community.code, plans.taken_codes(conn, community.code), others)
    _update(conn, plan_id, {code: keep_geom})
    _insert(conn, plan_id, community,
            [{"code": c, "kind": grid.kind, "geom": g} for c, g in zip(codes, others, strict=False)])
    return _Change([code, *sorted(codes)], region=grid.geom)


def merge(conn: Connection, caller: Caller, plan_id: int, codes: list[str]) -> _Change:
    """Join adjacent grids of one community: the lowest code survives (with its name, kind and worker) and
    takes the union of their land; the others are deleted."""
    codes = sorted(set(codes))
    if len(codes) < 2:
        raise InvalidInput("Give at least two different grid codes to merge.", field="codes")
    communities = {c[:12] for c in codes}
    if len(communities) > 1:
        raise InvalidInput(f"Grids {', '.join(codes)} lie in different communities ({', '.join(sorted(communities))}); "
                           "only grids of one community can be merged.", field="codes")
    grids = _load(conn, caller, plan_id, codes, need_valid=True)
    graph = nx.Graph()
    graph.add_nodes_from(codes)
    graph.add_edges_from((a, b) for i, a in enumerate(codes) for b in codes[i + 1:]
                         if _share_boundary(grids.at[a, "geom"], grids.at[b, "geom"]))
    if not nx.is_connected(graph):
        pieces = "; ".join(", ".join(sorted(c)) for c in nx.connected_components(graph))
        raise InvalidInput(f"Grids {', '.join(codes)} are not all adjacent (they must share a boundary line, not "
                           f"just a corner): they form separate groups {pieces}. Merge only neighbouring grids.",
                           field="codes")
    union = shapely.union_all(list(grids["geom"]))
    _update(conn, plan_id, {codes[0]: union})
    conn.execute(text("DELETE FROM areas WHERE version_id = :v AND level = 'grid' AND code = ANY(:codes)"),
                 {"v": plan_id, "codes": codes[1:]})
    return _Change([codes[0]], removed=codes[1:], region=union)


def move_buildings(conn: Connection, caller: Caller, plan_id: int, to: str, building_ids: list[int] | None = None,
                   area: dict | None = None, crs: str = "EPSG:4326") -> _Change:
    """Move buildings (by id, or every building whose point-on-surface lies in the block `area`) from the
    neighbouring grids they belong to into grid `to`, together with their land.

    A building's land is its Voronoi cell among the buildings of its grid, clipped to that grid: the source
    grid gives those cells up and the target gains them, so the grids still tile the same area and each moved
    building's point-on-surface ends up covered by the target."""
    if (building_ids is None) == (area is None):
        raise InvalidInput("Give either building_ids or area (a block polygon), not both.", field="building_ids")
    target = _load(conn, caller, plan_id, [to], need_valid=True).iloc[0]
    if building_ids is not None:
        picked = _buildings(conn, plan_id, "b.id = ANY(:ids)", {"ids": sorted(set(building_ids))})
        missing = sorted(set(building_ids) - set(picked["id"]))
        if missing:
            raise NotFound(f"No building with id {', '.join(map(str, missing[:10]))}"
                           f"{' …' if len(missing) > 10 else ''}; check the ids.", field="building_ids")
    else:
        assert area is not None  # exactly one of building_ids and area, checked above
        block = _polygon_input(area, crs, "area")
        inside = ("ST_Intersects(b.geom, ST_SetSRID(ST_GeomFromWKB(:block), 4326)) "
                  "AND ST_Covers(ST_SetSRID(ST_GeomFromWKB(:block), 4326), ST_PointOnSurface(b.geom))")
        picked = _buildings(conn, plan_id, inside, {"block": shapely.to_wkb(block)})
        if picked.empty:
            raise InvalidInput("No building has its point inside the given area; draw the block around buildings.",
                               field="area")
    homeless = picked[picked["owner"].isna()]
    if len(homeless):
        raise InvalidInput(f"Buildings {_ids(homeless)} lie outside every grid of plan {plan_id}; there is no grid "
                           "to move them from.", field="building_ids")
    moving = picked[picked["owner"] != to]
    if moving.empty:
        raise InvalidInput(f"Every chosen building already belongs to grid {to}; nothing to move.",
                           field="building_ids")
    sources = sorted(moving["owner"].unique())
    foreign = [s for s in sources if s[:12] != to[:12]]
    if foreign:
        raise InvalidInput(f"Grids {', '.join(foreign)} lie in another community than grid {to}; buildings can only "
                           "move between grids of one community.", field="to")
    grids = _load(conn, caller, plan_id, sources, need_valid=True)
    far = [s for s in sources if not _share_boundary(grids.at[s, "geom"], target.geom)]
    if far:
        raise InvalidInput(f"Buildings {_ids(moving[moving['owner'].isin(far)])} belong to grids {', '.join(far)}, "
                           f"which are not neighbours of grid {to} (they share no boundary). Move buildings only from "
                           "a neighbouring grid.", field="building_ids")
    new_target, region = target.geom, target.geom
    updates = {}
    for source in sources:
        land = _land_of(conn, plan_id, source, grids.at[source, "geom"],
                        set(moving.loc[moving["owner"] == source, "id"]))
        updates[source] = shapely.difference(grids.at[source, "geom"], land)
        new_target = shapely.union(new_target, land)
        region = shapely.union(region, grids.at[source, "geom"])
    new_target = _polygonal(new_target)
    points = shapely.from_wkb(list(moving["p"]))
    uncovered = moving[~shapely.covers(new_target, points)]
    if len(uncovered):  # the invariant the whole op exists for: never write a move that misses a building
        raise InvalidInput(f"Moving the land of buildings {_ids(uncovered)} into grid {to} did not cover them "
                           "(numerical trouble at a boundary); redraw the boundary with replace_geometry instead.",
                           field="building_ids")
    _update(conn, plan_id, {**updates, to: new_target})
    still = conn.execute(text("""
        SELECT b.id, owner.code FROM buildings b
        CROSS JOIN LATERAL (SELECT a.code FROM areas a WHERE a.version_id = :v AND a.level = 'grid'
                            AND ST_Covers(a.geom, ST_PointOnSurface(b.geom)) ORDER BY a.code LIMIT 1) owner
        WHERE b.id = ANY(:ids) AND owner.code <> :to"""),
        {"v": plan_id, "ids": list(map(int, moving["id"])), "to": to}).all()
    if still:
        raise InvalidInput(f"Buildings {', '.join(str(r.id) for r in still[:10])} would still count in grid "
                           f"{still[0].code}, which overlaps grid {to} there (a building counts in the lowest code "
                           "covering it). Remove the overlap first.", field="building_ids")
    return _Change([to, *sources], region=region)


def set_attributes(conn: Connection, caller: Caller, plan_id: int, code: str, **values) -> _Change:
    """Set a grid's kind (residential|commercial) and/or worker (a responder id, or None to unassign)."""
    unknown = set(values) - {"kind", "worker_id"}
    if unknown or not values:
        raise InvalidInput("set_attributes takes kind and/or worker_id"
                           + (f", not {', '.join(sorted(unknown))}." if unknown else "; give at least one."),
                           field="op")
    _load(conn, caller, plan_id, [code])
    if "kind" in values and values["kind"] not in GRID_KINDS:
        raise InvalidInput(f"Unknown grid kind {values['kind']!r}; use one of: {', '.join(GRID_KINDS)}.", field="kind")
    worker = values.get("worker_id")
    if worker is not None and not conn.execute(text("SELECT 1 FROM responders WHERE id = :id"), {"id": worker}).first():
        raise NotFound(f"No responder {worker}; list responders with GET /responders, or send worker_id null to "
                       "leave the grid without a worker.", field="worker_id")
    conn.execute(text("UPDATE areas SET kind = coalesce(:kind, kind), "
                      "worker_id = CASE WHEN :set_worker THEN :worker ELSE worker_id END, updated_at = now() "
                      "WHERE version_id = :v AND level = 'grid' AND code = :code"),
                 {"kind": values.get("kind"), "set_worker": "worker_id" in values, "worker": worker,
                  "v": plan_id, "code": code})
    return _Change([code])


OPS: dict[str, Callable[..., _Change]] = {
    "replace_geometry": replace_geometry, "split": split, "merge": merge, "move_buildings": move_buildings,
    "set_attributes": set_attributes}


def grids_geojson(conn: Connection, caller: Caller, plan_id: int, target: int = 300,
                  community: str | None = None) -> list[str]:
    """The plan's grids in the caller's area as GeoJSON Feature texts, with households, worker and the
    deviation from the target household count."""
    caller.require_role(*plans.READ_ROLES)
    if conn.execute(text("SELECT 1 FROM grid_versions WHERE id = :id"), {"id": plan_id}).first() is None:
        raise NotFound(f"No plan {plan_id}; list plans with GET /plans.", field="plan_id")
    if community is not None and not caller.scope.startswith(community):
        caller.require_area(community, "community", what="community")
    return _features(conn, plan_id, caller.scope, target, community=community)


def _features(conn: Connection, plan_id: int, scope: str, target: int, codes: list[str] | None = None,
              community: str | None = None) -> list[str]:
    return list(conn.execute(text("""
        SELECT json_build_object(
            'type', 'Feature', 'id', a.code, 'geometry', ST_AsGeoJSON(a.geom, 7)::json,
            'properties', json_build_object(
                'code', a.code, 'name', a.name, 'community', left(a.code, 12), 'kind', a.kind,
                'households', a.households, 'worker_id', a.worker_id, 'worker_name', w.name,
                'deviation', round(a.households::numeric / :target - 1, 4)))::text
        FROM areas a LEFT JOIN responders w ON w.id = a.worker_id
        WHERE a.version_id = :v AND a.level = 'grid' AND starts_with(a.code, :scope)
          AND (CAST(:codes AS text[]) IS NULL OR a.code = ANY(CAST(:codes AS text[])))
          AND (CAST(:community AS text) IS NULL OR starts_with(a.code, CAST(:community AS text)))
        ORDER BY a.code"""),
        {"v": plan_id, "scope": scope, "target": target, "codes": codes, "community": community}).scalars())


def _load(conn: Connection, caller: Caller, plan_id: int, codes: list[str], need_valid: bool = False):
    """The plan's grids `codes` (GeoDataFrame indexed by code): each must be in the caller's area and exist."""
    for code in codes:
        caller.require_area(code, "code", what="grid")
    grids = gpd.read_postgis(text("SELECT code, name, kind, worker_id, geom FROM areas WHERE version_id = :v "
                                  "AND level = 'grid' AND code = ANY(:codes)"),
                             conn, geom_col="geom", params={"v": plan_id, "codes": list(codes)}).set_index("code")
    missing = [c for c in codes if c not in grids.index]
    if missing:
        raise NotFound(f"Plan {plan_id} has no grid {', '.join(missing)}; list its grids with "
                       f"GET /plans/{plan_id}/grids.", field="code")
    if need_valid:
        for code, geom in grids["geom"].items():
            if not geom.is_valid:
                raise InvalidInput(f"Grid {code} has an invalid geometry ({shapely.is_valid_reason(geom)}); give it "
                                   "a valid one with replace_geometry first.", field="code")
    return grids


def _community(conn: Connection, code: str):
    """The community of grid `code`: id, code, name and its geometry (shapely)."""
    row = conn.execute(text("SELECT id, code, name, ST_AsBinary(geom) AS geom FROM areas WHERE code = :c "
                            "AND level = 'community' AND version_id IS NULL"), {"c": code[:12]}).first()
    if row is None:
        raise NotFound(f"No community {code[:12]} for grid {code}.", field="code")
    return SimpleNamespace(**{**row._mapping, "geom": shapely.from_wkb(bytes(row.geom))})


def _update(conn: Connection, plan_id: int, geoms: dict) -> None:
    geoms = {code: _polygonal(g) for code, g in geoms.items()}
    empty = [code for code, g in geoms.items() if g.is_empty]
    if empty:
        raise InvalidInput(f"This edit would leave grid {', '.join(empty)} with no land; merge it into a neighbour "
                           "instead (op merge).", field="code")
    conn.execute(text("UPDATE areas SET geom = ST_Multi(ST_SetSRID(ST_GeomFromWKB(:wkb), 4326)), updated_at = now() "
                      "WHERE version_id = :v AND level = 'grid' AND code = :code"),
                 [{"v": plan_id, "code": code, "wkb": shapely.to_wkb(g)} for code, g in geoms.items()])


def _insert(conn: Connection, plan_id: int, community, rows: list[dict]) -> None:
    conn.execute(text("""
        INSERT INTO areas (code, level, name, parent_id, version_id, kind, worker_id, is_synthetic, geom)
        VALUES (:code, 'grid', :name, :parent, :v, :kind, NULL, false,
                ST_Multi(ST_SetSRID(ST_GeomFromWKB(:wkb), 4326)))"""),
        [{"code": r["code"], "name": f"{community.name}第{int(r['code'][-3:])}网格", "parent": community.id,
          "v": plan_id, "kind": r["kind"], "wkb": shapely.to_wkb(_polygonal(r["geom"]))} for r in rows])


def _buildings(conn: Connection, plan_id: int, where: str, params: dict):
    """Buildings matching `where` (a fixed SQL condition on b), each with its point-on-surface (WKB) and the grid
    of the plan it counts in (the lowest code covering that point; None outside every grid)."""
    return pd.DataFrame(conn.execute(text(f"""
        SELECT b.id, b.households, ST_AsBinary(ST_PointOnSurface(b.geom)) AS p, owner.code AS owner
        FROM buildings b
        LEFT JOIN LATERAL (SELECT a.code FROM areas a WHERE a.version_id = :v AND a.level = 'grid'
                           AND ST_Covers(a.geom, ST_PointOnSurface(b.geom)) ORDER BY a.code LIMIT 1) owner ON true
        WHERE {where} ORDER BY b.id"""), {"v": plan_id, **params}).all(),
        columns=["id", "households", "p", "owner"]).assign(p=lambda d: d["p"].map(bytes))


def _land_of(conn: Connection, plan_id: int, code: str, grid, moved: set[int]):
    """The part of grid `code` that goes with the `moved` buildings: the union of their Voronoi cells among all
    buildings whose point lies in the grid, clipped to the grid."""
    seeds = _seeds(conn, plan_id, code)
    points = shapely.from_wkb(list(seeds["p"]))
    xy = shapely.get_coordinates(points)
    location = {tuple(c): i for i, c in enumerate(np.unique(xy, axis=0))}
    where = np.array([location[tuple(c)] for c in xy])
    goes = np.zeros(len(location), bool)
    goes[where[seeds["id"].isin(moved).to_numpy()]] = True
    stays = np.zeros(len(location), bool)
    stays[where[~seeds["id"].isin(moved).to_numpy()]] = True
    shared = goes & stays
    if shared.any():
        together = seeds[np.isin(where, np.flatnonzero(shared))]
        raise InvalidInput(f"Buildings {_ids(together)} of grid {code} stand on the same point; move them together.",
                           field="building_ids")
    if not stays.any():
        raise InvalidInput(f"Every building of grid {code} would leave it, leaving a grid with no buildings: merge "
                           "the grids instead (op merge).", field="building_ids")
    unique = shapely.points(np.array(list(location)))
    cells = shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(unique), extend_to=grid, ordered=True))
    return _polygonal(shapely.intersection(shapely.union_all(cells[goes]), grid))


def _seeds(conn: Connection, plan_id: int, code: str):
    """Every building whose point-on-surface lies in grid `code` (whichever grid it counts in)."""
    return pd.DataFrame(conn.execute(text("""
        SELECT b.id, ST_AsBinary(ST_PointOnSurface(b.geom)) AS p
        FROM areas s JOIN buildings b ON ST_Intersects(s.geom, b.geom)
        WHERE s.version_id = :v AND s.level = 'grid' AND s.code = :code AND ST_Covers(s.geom, ST_PointOnSurface(b.geom))
        ORDER BY b.id"""), {"v": plan_id, "code": code}).all(),
        columns=["id", "p"]).assign(p=lambda d: d["p"].map(bytes))


def _share_boundary(a, b) -> bool:
    """True when two grids share a stretch of boundary (about a metre or more), not just a corner."""
    return shapely.intersection(a.boundary, shapely.buffer(b, TOUCH_DEG)).length >= MIN_SHARED_DEG


def _polygon_input(geojson: dict, crs: str, name: str):
    """A client's GeoJSON Polygon/MultiPolygon in `crs` as a valid WGS84 shapely geometry, or InvalidInput
    saying what is wrong and where."""
    try:
        geom = shape(geojson)
    except Exception as exc:  # shapely raises several types for malformed coordinates
        raise InvalidInput(f"{name} is not a readable GeoJSON geometry ({exc}); send "
                           '{"type": "Polygon", "coordinates": [[[lon, lat], ...]]}.', field=name) from None
    if geom.geom_type not in ("Polygon", "MultiPolygon") or geom.is_empty:
        raise InvalidInput(f"{name} must be a non-empty Polygon or MultiPolygon, not {geom.geom_type}.", field=name)
    _check_lonlat(geom, name)
    if not geom.is_valid:
        reason = shapely.is_valid_reason(geom)
        raise InvalidInput(f"{name} is not a valid polygon: {reason.split('[')[0]} at {_where(reason)} (in {crs}). "
                           "Redraw it so that its edges do not cross or touch themselves and each ring is closed; "
                           "a bow-tie must be drawn as two polygons.", field=name)
    return _to_wgs84(geom, crs)


def _line_input(geojson: dict, crs: str):
    try:
        line = shape(geojson)
    except Exception as exc:
        raise InvalidInput(f"line is not a readable GeoJSON geometry ({exc}); send "
                           '{"type": "LineString", "coordinates": [[lon, lat], [lon, lat], ...]}.',
                           field="line") from None
    if line.geom_type != "LineString" or line.is_empty or line.length == 0:
        raise InvalidInput(f"line must be a LineString of at least two different points, not {line.geom_type}.",
                           field="line")
    _check_lonlat(line, "line")
    return _to_wgs84(line, crs)


def _check_lonlat(geom, name: str) -> None:
    xy = shapely.get_coordinates(geom)
    if not np.isfinite(xy).all() or (np.abs(xy[:, 0]) > 180).any() or (np.abs(xy[:, 1]) > 90).any():
        raise InvalidInput(f"{name} has coordinates that are not longitude/latitude; send degrees (lon, lat) in "
                           "EPSG:4326, EPSG:4490, GCJ-02 or BD-09, not projected metres.", field=name)


def _to_wgs84(geom, crs: str):
    name = crs_.normalize_crs(crs)
    return shapely.transform(geom, lambda xy: np.column_stack(crs_.to_wgs84(xy[:, 0], xy[:, 1], name)))


def _where(reason: str) -> str:
    """'Self-intersection[116.3 39.9]' → '(116.300000, 39.900000)'."""
    if "[" not in reason:
        return "an unknown point"
    x, y = reason.split("[", 1)[1].rstrip("]").split()[:2]
    return f"({float(x):.6f}, {float(y):.6f})"


def _polygonal(geom):
    """The polygons of a geometry (overlay results may carry stray lines or points), as one MultiPolygon."""
    parts = [p for p in shapely.get_parts(geom) if p.geom_type in ("Polygon", "MultiPolygon") and not p.is_empty]
    return shapely.multipolygons(shapely.get_parts(parts)) if parts else shapely.MultiPolygon()


def _area_m2(geom) -> float:
    """Area in square metres, in a Lambert equal-area projection centred on the geometry."""
    if geom.is_empty:
        return 0.0
    c = geom.centroid
    project = Transformer.from_crs("EPSG:4326", f"+proj=laea +lat_0={c.y} +lon_0={c.x} +units=m", always_xy=True)
    return shapely.transform(geom, lambda xy: np.column_stack(project.transform(xy[:, 0], xy[:, 1]))).area


def _ids(frame) -> str:
    ids = [str(i) for i in frame["id"]]
    return ", ".join(ids[:10]) + (" …" if len(ids) > 10 else "")
