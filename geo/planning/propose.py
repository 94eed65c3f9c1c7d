"""Automatic balanced drafts: contiguous, compact grids of about `target` households, community by community.

Library: GerryChain's recursive spanning-tree partition (`gerrychain.partition.recursive_tree_part`, v1.0; the
old `gerrychain.tree.recursive_tree_part` name is a deprecated alias of it). It draws a random spanning tree of
the unit adjacency graph and cuts one tree edge whose side holds target ± epsilon households, peeling off one
grid at a time: every grid is balanced within epsilon *and* contiguous by construction, and random spanning
trees give compact parts. Its `region_surcharge` makes edges between "regions" expensive in the tree, so cuts
fall on region boundaries — GerryChain keeps counties whole that way; here the regions are road blocks, so grid
boundaries follow roads where balance allows. spopt's max-p was the alternative: it only enforces a minimum
size per region (DESIGN.md), so it cannot promise 300 ± 15 %.

Units: each building point (ST_PointOnSurface) gets its Voronoi cell; the cell edges, the community boundary
and any road lines are noded and polygonized into faces, and the faces inside the community tile it exactly
(shared edges have identical coordinates, so grids made of faces have no gaps or overlaps and never cross the
community boundary). A face holds the households of the buildings in it; a face without any (a piece of a
cell across a road from its building) joins a neighbour in the same road block. Edges join faces that share a
boundary line (rook). Voronoi cells are computed in a locally scaled lon/lat
frame (x·cos φ) so they are compact in metres, while every output vertex stays in EPSG:4326.

If no partition within the band is found after a bounded number of spanning trees, the tolerance is loosened
step by step (then fewer grids are tried) and the reason is recorded; nothing loops unboundedly.
"""

import math
import random
import warnings
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import geopandas as gpd
import networkx as nx
import numpy as np
import shapely
from sqlalchemy import Connection, text

from geo.auth import Caller
from geo.errors import Conflict, InvalidInput, NotFound

TARGET = 300
TOLERANCE = 0.15
ROAD_SURCHARGE = 2.0  # ≥ 1 dominates GerryChain's [0, 1) random edge weights: block boundaries join the tree last
ATTEMPTS = 400  # spanning trees per cut before a run gives up
RESTARTS = 5  # runs per tolerance before it is loosened
DRAWS = 8  # partitions drawn per community, the most compact kept (demo: median Polsby–Popper 0.42 → 0.50)
DRAW_NODES = 1000  # bigger graphs get DRAWS × DRAW_NODES / faces draws (Karhula's 2,200 faces: 3 of ~0.5 s)
LOOSEN = (2.0, 4.0)  # tolerance multiples tried after the band itself fails
LOOSEST = 0.95
AREA_CODE_LENGTHS = {6: "district", 9: "street", 12: "community"}


@dataclass
class Units:
    """The faces a community is partitioned from, with households, block ids and rook adjacency."""

    faces: np.ndarray  # shapely Polygons, EPSG:4326
    households: np.ndarray  # int per face
    buildings: list[list[int]]  # building indices (into the input arrays) per face
    edges: np.ndarray  # (m, 2) face index pairs sharing a boundary line
    block: np.ndarray | None = None  # block id per face (faces of the community split by roads), or None


@dataclass
class CommunityDraft:
    """Grids of one community: geometry, households and the building indices of each, plus reasons."""

    geoms: list
    households: list[int]
    buildings: list[list[int]]
    k: int
    epsilon: float  # the balance tolerance the kept partition was found with (relative to the mean)
    notes: list[str] = field(default_factory=list)  # community-level reasons for grids outside the band
    big: dict[int, int] = field(default_factory=dict)  # building index → households, for buildings over the band
    roughness: float = 0.0  # sum over grids of 1 / Polsby–Popper: the score the kept draw was chosen by


# ---------------------------------------------------------------------------------------------- geometry

def _scale(polygon) -> float:
    """cos φ at the polygon: multiply longitudes by it to make lon/lat distances roughly isotropic."""
    return math.cos(math.radians(shapely.get_y(shapely.centroid(polygon))))


def _faces_inside(polygon, lines) -> np.ndarray:
    """Faces of the noded `lines` (which include polygon's boundary) that lie inside polygon."""
    noded = shapely.union_all(lines)
    faces = shapely.get_parts(shapely.polygonize(shapely.get_parts(noded)))
    if not len(faces):
        return faces
    inside = shapely.contains_xy(polygon, *shapely.get_coordinates(shapely.point_on_surface(faces)).T)
    return faces[inside]


def build_units(polygon, xy: np.ndarray, households: np.ndarray, roads=()) -> Units:
    """Faces tiling `polygon` (EPSG:4326): Voronoi cells of the building points `xy`, split by `roads`."""
    polygon = shapely.make_valid(polygon) if not polygon.is_valid else polygon
    shapely.prepare(polygon)
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    households = np.asarray(households, dtype=np.int64)
    s = _scale(polygon)
    lines = [polygon.boundary]
    unique = np.unique(xy, axis=0) if len(xy) else xy
    if len(unique) >= 2:
        scaled = shapely.multipoints(unique * [s, 1])
        frame = shapely.transform(polygon, lambda c: c * [s, 1])
        edges = shapely.voronoi_polygons(scaled, extend_to=frame, only_edges=True)
        lines.append(shapely.transform(edges, lambda c: c / [s, 1]))
    road_lines = [r for r in roads if r is not None and not r.is_empty]
    lines += road_lines
    faces = _faces_inside(polygon, lines)
    if not len(faces):  # a degenerate community: keep it whole
        faces = np.array([polygon], dtype=object)
    tree = shapely.STRtree(faces)
    # buildings → faces (a point on a shared edge goes to the first face found; the plan's recount decides anyway)
    per_face: list[list[int]] = [[] for _ in faces]
    hh = np.zeros(len(faces), dtype=np.int64)
    if len(xy):
        pi, fi = tree.query(shapely.points(xy), predicate="intersects")
        first = np.unique(pi, return_index=True)[1]
        pi, fi = pi[first], fi[first]
        if len(pi) < len(xy):  # a point a rounding error outside: the nearest face takes it
            lost = np.setdiff1d(np.arange(len(xy)), pi)
            near = tree.query_nearest(shapely.points(xy[lost]), all_matches=False)[1]
            pi, fi = np.concatenate([pi, lost]), np.concatenate([fi, near])
        np.add.at(hh, fi, households[pi])
        for p, f in zip(pi, fi, strict=False):
            per_face[f].append(int(p))
    # rook adjacency: faces whose boundaries share a line, not just a point
    a, b = tree.query(faces, predicate="touches")
    keep = a < b
    a, b = a[keep], b[keep]
    keep = shapely.relate_pattern(faces[a], faces[b], "F***1****")
    units = Units(faces, hh, per_face, np.column_stack([a[keep], b[keep]]))
    if road_lines:
        blocks = _faces_inside(polygon, [polygon.boundary, *road_lines])
        if len(blocks) > 1:
            units.block = shapely.STRtree(blocks).query_nearest(shapely.point_on_surface(faces),
                                                                all_matches=False)[1]
            units = _merge_empty(units)
    return units


def _merge_empty(units: Units) -> Units:
    """Join each face without households (a piece of a Voronoi cell across a road from its building) to a
    neighbour in the same block: fewer nodes (Karhula 3,600 → ~2,300 faces), same road-following cuts."""
    assert units.block is not None  # only called once the faces have their blocks
    a, b = units.edges[:, 0], units.edges[:, 1]
    same = units.block[a] == units.block[b]
    parent = np.arange(len(units.faces))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    # empty faces first join a neighbour with households, then whatever empty neighbour is left
    for want_people in (True, False):
        for x, y in zip(a[same], b[same], strict=False):
            for empty, other in ((x, y), (y, x)):
                if units.households[empty] == 0 and parent[empty] == empty and root(other) != empty \
                        and (units.households[other] > 0) == want_people:
                    parent[empty] = root(other)
    roots = np.array([root(i) for i in range(len(parent))])
    keep, group = np.unique(roots, return_inverse=True)
    members: list[list[int]] = [[] for _ in keep]
    for face, g in enumerate(group):
        members[g].append(face)
    edges = np.unique(np.sort(group[units.edges], axis=1), axis=0)
    buildings = [[b for f in m for b in units.buildings[f]] for m in members]
    return Units(np.array([_union(units.faces[m]) for m in members], dtype=object),
                 np.bincount(group, weights=units.households, minlength=len(keep)).astype(np.int64),
                 buildings, edges[edges[:, 0] != edges[:, 1]], units.block[keep])


# ---------------------------------------------------------------------------------------------- partition

def _graph(units: Units, nodes: np.ndarray, weight: np.ndarray):
    """GerryChain graph of the faces `nodes` (node i is face nodes[i], weighing weight[i] households), backed
    by rustworkx (~2× faster spanning trees than networkx)."""
    import rustworkx as rx
    from gerrychain import Graph

    g = rx.PyGraph(multigraph=False)
    g.add_nodes_from([{"__networkx_node__": i, "households": float(weight[i]),
                       **({"block": int(units.block[n])} if units.block is not None else {})}
                      for i, n in enumerate(nodes)])
    index = np.full(len(units.faces), -1)
    index[nodes] = np.arange(len(nodes))
    pairs = index[units.edges] if len(units.edges) else np.empty((0, 2), int)
    pairs = pairs[(pairs >= 0).all(axis=1)]
    g.add_edges_from([(int(a), int(b), {}) for a, b in pairs])
    return Graph.from_rustworkx(g)


def _try_partition(graph, k: int, mean: float, epsilon: float, surcharge: dict | None, rng: random.Random,
                   check: Callable[[], None]) -> dict | None:
    """One recursive_tree_part run: node → part, or None if no balanced cut was found within ATTEMPTS."""
    from gerrychain.partition import recursive_tree_part
    from gerrychain.tree import PopulationBalanceError, bipartition_tree

    def bipartition(subgraph, **kwargs):
        check()  # cancellation between cuts: each is bounded by ATTEMPTS spanning trees
        return bipartition_tree(subgraph, max_attempts=ATTEMPTS, warn_attempts=ATTEMPTS + 1,
                                region_surcharge=surcharge, **kwargs)

    if k == 1:
        flips: dict[Hashable, Hashable] = {n: 0 for n in graph.node_indices}
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                flips = recursive_tree_part(graph, list(range(k)), mean, "households", epsilon,
                                            bipartition_tree_fn=bipartition, rng=rng)
        except (RuntimeError, PopulationBalanceError):
            return None
    return {graph.original_nx_node_id_for_internal_node_id(n): part for n, part in flips.items()}


def _parts(units: Units, nodes: np.ndarray, assignment: dict, k: int):
    groups: list[list[int]] = [[] for _ in range(k)]
    for node, part in assignment.items():
        groups[part].append(int(nodes[node]))
    geoms = [_union(units.faces[g]) for g in groups]
    return groups, geoms


def _roughness(geoms, scale: float) -> float:
    """Sum over grids of 1 / Polsby–Popper (P² / 4πA, 1 for a disc): lower is more compact, and one ragged
    grid costs more than a little raggedness spread over all."""
    g = shapely.transform(np.asarray(geoms, dtype=object), lambda c: c * [scale, 1])
    return float(np.sum(shapely.length(g) ** 2 / (4 * math.pi * shapely.area(g))))


def _union(faces):
    """Union of faces that share exact edges (a coverage): much faster than a general union."""
    return shapely.coverage_union_all(faces) if len(faces) > 1 else faces[0]


def draft_community(polygon, xy: np.ndarray, households: np.ndarray, roads=(), target: float = TARGET,
                    tolerance: float = TOLERANCE, rng: random.Random | None = None,
                    check: Callable[[], None] = lambda: None, label: str = "the community") -> CommunityDraft:
    """Partition one community into k = round(households / target) contiguous grids within target ± tolerance.

    A building site (face) holding more households than the band allows cannot share a grid within the band:
    it gets a grid of its own (it enters the partition with the mean grid size as a stand-in weight) and
    k = its count + round(rest / target), so the other grids stay balanced."""
    rng = rng or random.Random()
    households = np.asarray(households, dtype=np.int64)
    units = build_units(polygon, xy, households, roads)
    nodes = _main_nodes(units)
    lo, hi = target * (1 - tolerance), target * (1 + tolerance)
    band = f"{lo:.0f}–{hi:.0f} ({target:g} ± {tolerance:.0%})"
    notes: list[str] = []
    big = {int(i): int(households[i]) for i in np.flatnonzero(households > hi)}
    weight = units.households[nodes].astype(float)
    heavy = weight > hi
    rest = float(weight[~heavy].sum())
    k_rest = int(math.floor(rest / target + 0.5))
    k = max(1, k_rest + int(heavy.sum()))
    mean = rest / k_rest if k_rest else target
    weight[heavy] = mean
    if heavy.any():
        notes.append(f"{int(heavy.sum())} building site(s) of {label} hold more households than one grid allows "
                     f"({hi:.0f}): each is a grid of its own"
                     + (f", and {k_rest} more grids share the other {rest:,.0f}." if k_rest else "."))
    elif k == 1 and not lo <= rest <= hi:
        notes.append(f"{label} has {rest:,.0f} households: one grid, because {rest:,.0f} / {target:g} rounds to 1.")
    elif not lo <= mean <= hi:
        notes.append(f"{label} has {rest:,.0f} households: {k} grids of {mean:.0f} on average cannot all be within "
                     f"{band}; the grids are balanced around {mean:.0f} instead.")
    eps0 = max(1e-3, min(hi - mean, mean - lo) / mean) if lo <= mean <= hi else tolerance
    tries = [(k, eps0)] + [(k, min(LOOSEST, m * tolerance)) for m in LOOSEN if m * tolerance > eps0]
    tries += [(kk, LOOSEST) for kk in range(k - 1, 0, -1)]
    surcharge = {"block": ROAD_SURCHARGE} if units.block is not None else None
    graph = _graph(units, nodes, weight)
    scale = _scale(polygon)
    for n, (kk, eps) in enumerate(tries):
        wanted = max(1, min(DRAWS, DRAWS * DRAW_NODES // len(nodes))) if n == 0 else 1
        found: list[tuple[float, list[list[int]], list]] = []
        failed = 0
        while len(found) < wanted and failed < RESTARTS:  # a failed run usually just painted itself into a corner
            check()
            assignment = _try_partition(graph, kk, weight.sum() / kk, eps, surcharge, rng, check)
            if assignment is None:
                failed += 1
                continue
            groups, geoms = _parts(units, nodes, assignment, kk)
            found.append((_roughness(geoms, scale), groups, geoms))
        if found:
            break
    if not found:  # cannot happen: k = 1 always succeeds; kept as a guard against a silent empty draft
        raise RuntimeError(f"no partition of {label} was found")
    roughness, groups, geoms = min(found, key=lambda f: f[0])  # the most compact draw
    if n > 0:
        notes.append(f"No contiguous split of {label} into {k} grids within ±{eps0:.0%} of {mean:.0f} was found "
                     f"({RESTARTS} runs of up to {ATTEMPTS} spanning trees per cut); it was loosened to ±{eps:.0%}"
                     + (f" with {kk} grids instead of {k}" if kk != k else "") + ".")
    geoms = _attach_orphans(units, nodes, groups, geoms)
    buildings = [[b for f in g for b in units.buildings[f]] for g in groups]
    hh = [int(units.households[g].sum()) for g in groups]
    return CommunityDraft(geoms, hh, buildings, kk, eps, notes, big, roughness)


def _main_nodes(units: Units) -> np.ndarray:
    """Faces of the component holding most households (a multipart community's other parts are attached
    afterwards to the grid they are nearest to)."""
    g = nx.Graph()
    g.add_nodes_from(range(len(units.faces)))
    g.add_edges_from(units.edges.tolist())
    comps = list(nx.connected_components(g))
    main = max(comps, key=lambda c: (units.households[list(c)].sum(), len(c)))
    return np.array(sorted(main))


def _attach_orphans(units: Units, nodes: np.ndarray, groups: list[list[int]], geoms: list) -> list:
    """Faces outside the main component (other parts of a multipart community) join the nearest grid."""
    rest = np.setdiff1d(np.arange(len(units.faces)), nodes)
    if not len(rest):
        return geoms
    near = shapely.STRtree(geoms).query_nearest(units.faces[rest], all_matches=False)[1]
    for face, part in zip(rest, near, strict=False):
        groups[part].append(int(face))
    return [_union(units.faces[g]) for g in groups]


# ---------------------------------------------------------------------------------------------- database

COMMUNITIES_SQL = """
    SELECT c.code, c.name FROM areas c
    WHERE c.level = 'community' AND c.version_id IS NULL AND c.code LIKE :prefix ORDER BY c.code"""

COMMUNITY_SQL = """
    SELECT id, name, ST_AsBinary(geom) AS wkb FROM areas
    WHERE code = :code AND level = 'community' AND version_id IS NULL"""

# A building belongs to the community covering its point-on-surface; on a shared edge, to the lowest code
# (the plan's recount rule, since lower communities hold lower grid codes).
BUILDINGS_SQL = """
    SELECT b.id, b.households, ST_X(s.p) AS x, ST_Y(s.p) AS y
    FROM areas c
    JOIN buildings b ON ST_Intersects(c.geom, b.geom)
    CROSS JOIN LATERAL (SELECT ST_PointOnSurface(b.geom) AS p) s
    WHERE c.code = :code AND c.level = 'community' AND c.version_id IS NULL AND ST_Covers(c.geom, s.p)
      AND NOT EXISTS (SELECT 1 FROM areas o WHERE o.level = 'community' AND o.version_id IS NULL
                        AND o.code < c.code AND ST_Covers(o.geom, s.p))
    ORDER BY b.id"""

ROADS_SQL = """
    SELECT ST_AsBinary(e.geom) FROM areas c
    JOIN road_edges e ON ST_Intersects(e.geom, c.geom)
    WHERE c.code = :code AND c.level = 'community' AND c.version_id IS NULL"""


def communities(conn: Connection, area: str) -> list[tuple[str, str]]:
    """(code, name) of the communities in a district, street or community, in code order."""
    return [tuple(r) for r in conn.execute(text(COMMUNITIES_SQL), {"prefix": area + "%"})]


def community_inputs(conn: Connection, code: str):
    """(polygon, building ids, point xy, households, road lines) of one community, from PostGIS."""
    row = conn.execute(text(COMMUNITY_SQL), {"code": code}).first()
    if row is None:
        raise NotFound(f"No community {code}.", field="area")
    rows = conn.execute(text(BUILDINGS_SQL), {"code": code}).all()
    ids = np.array([r.id for r in rows], dtype=np.int64)
    xy = np.array([(r.x, r.y) for r in rows], dtype=float).reshape(-1, 2)
    hh = np.array([r.households or 0 for r in rows], dtype=np.int64)
    roads = [shapely.from_wkb(bytes(r[0])) for r in conn.execute(text(ROADS_SQL), {"code": code})]
    return shapely.from_wkb(bytes(row.wkb)), ids, xy, hh, roads


# ---------------------------------------------------------------------------------------------- the job

def check_request(conn: Connection, caller: Caller, plan_id: int, revision: int, area: str, target: float,
                  tolerance: float) -> None:
    """Validate a proposal request before it is queued (plan is a draft at `revision`, area in scope)."""
    from geo.planning import plans

    caller.require_role(*plans.WRITE_ROLES)
    if len(area) not in AREA_CODE_LENGTHS or not area.isdigit():
        raise InvalidInput(f"area {area!r} is not a district (6 digits), street (9) or community (12) code.",
                           field="area")
    if not caller.can_see(area):
        raise NotFound(f"No area {area} in your scope ({caller.scope or 'everything'}).", field="area")
    if conn.execute(text("SELECT 1 FROM areas WHERE code = :c AND level = :l AND version_id IS NULL"),
                    {"c": area, "l": AREA_CODE_LENGTHS[len(area)]}).first() is None:
        raise NotFound(f"No {AREA_CODE_LENGTHS[len(area)]} {area}; list areas with GET /areas/{{code}}/children.",
                       field="area")
    if not 0 < tolerance < 1 or target <= 0:
        raise InvalidInput("target must be positive and tolerance between 0 and 1 (0.15 = ±15 %).",
                           field="tolerance")
    row = plans.draft(conn, plan_id)
    if row.revision != revision:
        raise Conflict(f"Plan {plan_id} is at revision {row.revision}, but the proposal was based on revision "
                       f"{revision}. Reload the plan and propose again.", field="revision")
    busy = conn.execute(text("SELECT id FROM jobs WHERE kind = 'propose' AND status IN ('queued', 'running') "
                             "AND (params->>'plan_id')::int = :p ORDER BY id LIMIT 1"), {"p": plan_id}).scalar()
    if busy:
        raise Conflict(f"Plan {plan_id} already has a proposal in progress (job {busy}); wait for it or cancel it "
                       f"with POST /jobs/{busy}/cancel.", field="plan_id")


def run(ctx, params: dict) -> dict:
    """The 'propose' job: draft every community of params['area'], then write them into the plan at once."""
    from geo.planning import plans

    plan_id, revision, area = params["plan_id"], params["revision"], params["area"]
    target, tolerance, seed = float(params["target"]), float(params["tolerance"]), params["seed"]
    lo, hi = target * (1 - tolerance), target * (1 + tolerance)
    with ctx.engine.connect() as conn:
        todo = communities(conn, area)
    drafts: list[tuple[str, CommunityDraft, np.ndarray]] = []
    for i, (code, name) in enumerate(todo):
        ctx.check()
        ctx.report(i / len(todo), f"community {code} {name} ({i + 1} of {len(todo)})")
        with ctx.engine.connect() as conn:
            polygon, ids, xy, hh, roads = community_inputs(conn, code)
        draft = draft_community(polygon, xy, hh, roads, target, tolerance, random.Random(f"{seed}:{code}"),
                                ctx.check, label=f"community {code} {name}")
        drafts.append((code, draft, ids))
    ctx.report(1.0, f"writing {sum(len(d.geoms) for _, d, _ in drafts):,} grids into plan {plan_id}")
    with ctx.engine.connect() as conn:  # a fresh draft's grids have no statistics yet: recount's plan would be
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE areas"))  # ~10× slower
    grids, explanations = [], []
    with ctx.transaction() as conn:  # the job row is locked: a cancel now waits, and sees the outcome
        row = plans.draft(conn, plan_id, lock=True)
        if row.revision != revision:
            raise Conflict(f"Plan {plan_id} changed while the proposal was running (it is at revision "
                           f"{row.revision}, the proposal started from revision {revision}): nothing was written, "
                           "so no edit was lost. Propose again on the current revision.", field="revision")
        new_revision = plans.bump(conn, plan_id, revision)
        for code, draft, ids in drafts:
            codes = plans.replace_community_grids(conn, plan_id, code, gpd.GeoDataFrame(
                geometry=[_multi(g) for g in draft.geoms], crs="EPSG:4326"))
            stored = dict(conn.execute(text("SELECT code, households FROM areas WHERE version_id = :v "
                                            "AND level = 'grid' AND code = ANY(:codes)"),
                                       {"v": plan_id, "codes": codes}).all())
            for grid_code, members in zip(codes, draft.buildings, strict=False):
                n = int(stored.get(grid_code) or 0)
                grids.append({"code": grid_code, "community": code, "households": n,
                              "deviation": round(n / target - 1, 4)})
                if not lo <= n <= hi:
                    explanations.append({"code": grid_code, "community": code, "households": n,
                                         "reason": _reason(draft, members, ids, n, hi)})
        result = {"plan_id": plan_id, "revision": new_revision, "area": area, "target": target,
                  "tolerance": tolerance, "seed": seed, "communities": len(drafts), "grids": len(grids),
                  "within_band": len(grids) - len(explanations), "per_grid": grids, "explanations": explanations}
        plans.audit(conn, ctx.caller, "plan.propose", plan_id,
                    {k: result[k] for k in ("area", "target", "tolerance", "seed", "communities", "grids",
                                            "within_band", "revision")} | {"job_id": ctx.job_id})
        ctx.finish(conn, result)
    return result


def _reason(draft: CommunityDraft, members: list[int], ids: np.ndarray, households: int, hi: float) -> str:
    huge = [i for i in members if i in draft.big]
    if huge:
        return "; ".join(f"building {int(ids[i])} alone has {draft.big[i]:,} households, more than the band "
                         f"allows ({hi:.0f}); a building is never split" for i in huge) + "."
    if draft.notes:
        return " ".join(draft.notes)
    return (f"{households:,} households by the plan's count (a building on a grid edge counts in the lowest "
            "code), which differs from the partition's own count.")


def _multi(g):
    return g if g.geom_type == "MultiPolygon" else shapely.MultiPolygon([g]) if g.geom_type == "Polygon" else \
        shapely.MultiPolygon([p for p in shapely.get_parts(g) if p.geom_type == "Polygon"])
