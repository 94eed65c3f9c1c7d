"""Plan validation: machine-readable findings on a grid version's geometry, balance and staffing; sliver snapping.

One set-based statement finds everything; the findings follow the plan validation contract (kind, severity,
codes, community, area_m2, message) and the DESIGN rules (grids cover their community, no gaps, no overlaps, each
inside one community; ~300 households; one worker). Areas are geodesic m² (geography). Invalid grids are
reported with PostGIS's reason and location, and every other check uses their ST_MakeValid repair ('structure':
shells unioned, holes cut), so one broken grid never hides the rest.

* gaps: community − ∪ grids of the community, per part; a part inside a hole of a grid is reported as `hole`;
* outside_community: ∪ grids − community, split back per grid (a grid whose community does not exist is outside
  as a whole);
* overlap: pairwise interior intersections (bounding boxes, then ST_Relate '2********'), per part; `community` is
  the lower code's. Only pairs that can overlap are intersected: inside a community whose grids' areas sum to
  more than their union, or with a grid that sticks out of its community (two grids of different communities
  can only overlap outside one of them). This keeps the check fast without trusting the planner's statistics,
  which know nothing of a draft created a moment ago;
* parts under NOISE_M2 are floating-point residue of the overlay (the demo's shared edges leave pieces up to
  ~1e-4 m²) and are ignored; parts under `sliver_m2` are drawing slivers, severity "fixable", and
  fix_slivers() snaps them away.
"""

import orjson
from sqlalchemy import Connection, text

from geo.auth import Caller
from geo.errors import InvalidInput, NotFound
from geo.planning import plans

TARGET = 300
TOLERANCE = 0.15
# A drawing sliver: gaps/overlaps/outside parts below 1 m² (a one-metre square) are numerical noise from
# drawing or snapping, not a planning decision — nobody lives in them.
SLIVER_M2 = 1.0
MAX_SLIVER_M2 = 100.0  # fix-slivers reassigns area silently: anything bigger is for a planner to decide
# Polsby–Popper 4πA/P²: a square scores 0.785, a 1:4 rectangle 0.50, 1:10 0.26. Below 0.25 a grid is a strip
# longer than ~1:10 (or very ragged) that a grid worker cannot walk efficiently. The demo's recursive bisection
# grids have a median of 0.73; 3 of 1,566 (0.2%) fall below 0.25.
MIN_COMPACTNESS = 0.25
NOISE_M2 = 0.01
DEG2_M2 = 1.24e10  # m² per square degree at the equator: an upper bound anywhere, so the overlap pre-filter is safe
SNAP_DEG = 1e-8  # ~1 mm: a grid "touches" a gap within this distance
GEOJSON_DECIMALS = 8  # ~1 mm, so that a sliver keeps its shape
SEVERITY_ORDER = {"error": 0, "fixable": 1, "warning": 2}
KINDS = ("invalid_geometry", "overlap", "gap", "outside_community", "multipart", "hole",
         "households_out_of_band", "low_compactness", "no_worker")

# Shared by validate() and fix_slivers(): g (the plan's grids in scope, repaired), cu (communities in scope with
# the union of their grids), gaps, outside, overlap_parts (each part ≥ NOISE_M2, with geodesic m2).
_CTE = """
WITH g AS MATERIALIZED (  -- raw: the stored geometry of an invalid grid (NULL when valid)
  SELECT id, code, left(code, 12) AS community, households, worker_id, valid,
         CASE WHEN valid THEN NULL ELSE raw END AS raw,
         CASE WHEN valid THEN raw
              ELSE ST_Multi(ST_CollectionExtract(ST_MakeValid(raw, 'method=structure'), 3)) END AS geom
  FROM (SELECT id, code, households, worker_id, geom AS raw, ST_IsValid(geom) AS valid
        FROM areas WHERE version_id = :v AND level = 'grid' AND starts_with(code, :scope)) s),
cu AS MATERIALIZED (
  SELECT c.code AS community, c.geom AS cgeom, u.geom AS ugeom,
         coalesce((u.deg2 - ST_Area(u.geom)) * :deg2_m2 >= :noise, false) AS overlapping
  FROM areas c
  LEFT JOIN (SELECT community, ST_Union(geom) AS geom, sum(ST_Area(geom)) AS deg2 FROM g GROUP BY community) u
         ON u.community = c.code
  WHERE c.level = 'community' AND c.version_id IS NULL AND starts_with(c.code, :scope)),
holes AS (
  SELECT g.code, g.community, r.geom
  FROM g, ST_Dump(g.geom) p, ST_DumpRings(p.geom) r
  WHERE ST_NRings(g.geom) > ST_NumGeometries(g.geom) AND r.path[1] > 0),
diff AS MATERIALIZED (  -- community △ ∪ grids: the gaps (inside the community) and the parts outside it
  SELECT community, geom, m2, ST_Covers(cgeom, ST_PointOnSurface(geom)) AS inside FROM (
    SELECT cu.community, cu.cgeom, d.geom, ST_Area(d.geom::geography) AS m2
    FROM cu, ST_Dump(ST_SymDifference(cu.cgeom, coalesce(cu.ugeom, 'SRID=4326;POLYGON EMPTY'::geometry))) d
    WHERE ST_Area(d.geom) * :deg2_m2 >= :noise) x
  WHERE m2 >= :noise),
gaps AS MATERIALIZED (
  SELECT p.community, p.geom, p.m2,
         (SELECT h.code FROM holes h WHERE h.community = p.community
          AND ST_Covers(h.geom, ST_PointOnSurface(p.geom)) ORDER BY h.code LIMIT 1) AS hole_of,
         ARRAY(SELECT g.code FROM g WHERE g.community = p.community AND ST_DWithin(g.geom, p.geom, :snap)
               ORDER BY g.code) AS codes
  FROM diff p WHERE p.inside),
outside AS MATERIALIZED (
  SELECT * FROM (
    SELECT g.code, g.community, d.geom, ST_Area(d.geom::geography) AS m2, false AS orphan
    FROM diff o
    JOIN g ON g.community = o.community AND ST_Intersects(g.geom, o.geom),
    ST_Dump(ST_CollectionExtract(ST_Intersection(g.geom, o.geom), 3)) d
    WHERE NOT o.inside) x
  WHERE m2 >= :noise
  UNION ALL
  SELECT g.code, g.community, g.geom, ST_Area(g.geom::geography), true FROM g
  WHERE NOT EXISTS (SELECT FROM areas c WHERE c.code = g.community AND c.level = 'community'
                    AND c.version_id IS NULL)),
-- Candidate pairs without a spatial index on the CTE (and without trusting the statistics of a fresh draft):
-- grids of one community whose areas sum to more than their union, and grids that stick out (× every grid).
pairs AS (
  SELECT x.code AS xc, y.code AS yc FROM cu
  JOIN g x ON x.community = cu.community
  JOIN g y ON y.community = x.community AND x.code < y.code AND x.geom && y.geom
  WHERE cu.overlapping
  UNION
  SELECT least(x.code, y.code), greatest(x.code, y.code)
  FROM (SELECT DISTINCT code FROM outside) o
  JOIN g x ON x.code = o.code
  JOIN g y ON y.code <> x.code AND x.geom && y.geom),
overlap_parts AS MATERIALIZED (
  SELECT * FROM (
    SELECT p.xc, p.yc, p.community, d.geom, ST_Area(d.geom::geography) AS m2
    FROM (SELECT x.code AS xc, y.code AS yc, x.community,
                 ST_CollectionExtract(ST_Intersection(x.geom, y.geom), 3) AS geom
          FROM pairs JOIN g x ON x.code = pairs.xc JOIN g y ON y.code = pairs.yc
          WHERE ST_Relate(x.geom, y.geom, '2********')) p,
    ST_Dump(p.geom) d) x
  WHERE m2 >= :noise)
"""

# kind, codes, community, m2, geometry, value (households, compactness, parts), note (reason, hole owner, orphan)
VALIDATE_SQL = _CTE + """,
f AS (
  SELECT 'invalid_geometry' AS kind, ARRAY[g.code] AS codes, g.community, NULL::float8 AS m2,
         coalesce(d.location, ST_PointOnSurface(g.raw)) AS geom, NULL::float8 AS value, d.reason AS note
  FROM g, ST_IsValidDetail(g.raw) d WHERE NOT g.valid
  UNION ALL
  SELECT 'overlap', ARRAY[xc, yc], community, m2, geom, NULL, NULL FROM overlap_parts
  UNION ALL
  SELECT CASE WHEN hole_of IS NULL THEN 'gap' ELSE 'hole' END,
         CASE WHEN hole_of IS NULL THEN codes ELSE ARRAY[hole_of] END, community, m2, geom, NULL, NULL FROM gaps
  UNION ALL
  SELECT 'outside_community', ARRAY[code], community, m2, geom, NULL, CASE WHEN orphan THEN 'orphan' END
  FROM outside
  UNION ALL
  SELECT 'multipart', ARRAY[code], community, sum(m2), ST_Collect(geom), max(parts), NULL
  FROM (SELECT g.code, g.community, d.geom, ST_Area(d.geom::geography) AS m2, ST_NumGeometries(g.geom) AS parts,
               row_number() OVER (PARTITION BY g.code ORDER BY ST_Area(d.geom) DESC) AS rank
        FROM g, ST_Dump(g.geom) d WHERE ST_NumGeometries(g.geom) > 1) p
  WHERE rank > 1 AND m2 >= :noise GROUP BY code, community
  UNION ALL
  SELECT 'households_out_of_band', ARRAY[code], community, NULL, geom, households, NULL FROM g
  WHERE households < :low OR households > :high
  UNION ALL
  SELECT 'low_compactness', ARRAY[code], community, NULL, geom, pp, NULL
  FROM (SELECT code, community, geom, 4 * pi() * ST_Area(s) / nullif(ST_Perimeter(s) ^ 2, 0) AS pp
        FROM g, ST_Scale(geom, cos(radians(ST_Y(ST_Centroid(geom)))), 1) s  -- local equal-scale x·cos φ, y
        WHERE NOT ST_IsEmpty(geom)) c
  WHERE pp < :min_compactness
  UNION ALL
  SELECT 'no_worker', ARRAY[code], community, NULL, geom, NULL, NULL FROM g WHERE worker_id IS NULL)
SELECT kind, codes, community, m2, ST_AsGeoJSON(geom, :decimals) AS geometry, value, note FROM f
"""

# Sliver overlaps are cut from the higher code; sliver parts outside the community are clipped; sliver gaps
# (and holes) go to the grid of the community sharing the longest boundary with them. One UPDATE per grid; a
# grid the fix would leave empty is left alone. A changed invalid grid is stored as its repaired shape.
FIX_SQL = _CTE + """,
lose AS (  -- an overlap across communities stays with the grid whose community it is in
  SELECT 'overlap' AS kind,
         CASE WHEN o.community <> left(o.yc, 12) AND NOT ST_Covers(cu.cgeom, ST_PointOnSurface(o.geom))
              THEN o.xc ELSE o.yc END AS code, o.geom
  FROM overlap_parts o LEFT JOIN cu ON cu.community = o.community WHERE o.m2 < :sliver
  UNION ALL
  SELECT 'outside_community', code, geom FROM outside WHERE m2 < :sliver AND NOT orphan),
gain AS (
  SELECT DISTINCT ON (p.n) p.n, g.code, p.kind, p.geom
  FROM (SELECT row_number() OVER () AS n, CASE WHEN hole_of IS NULL THEN 'gap' ELSE 'hole' END AS kind, *
        FROM gaps WHERE m2 < :sliver) p
  JOIN g ON g.code = ANY(p.codes)
  -- measured on the gap opened by :snap too, so that a hair-thin spike of the difference along one grid's edge
  -- (floating-point noise) does not outweigh the sides the gap really shares
  ORDER BY p.n,
           ST_Length(ST_Intersection(ST_Boundary(ST_Buffer(ST_Buffer(p.geom, -:snap), :snap)),
                                     ST_Buffer(g.geom, 2 * :snap))::geography) DESC,
           ST_Length(ST_Intersection(ST_Boundary(p.geom), ST_Buffer(g.geom, :snap))::geography) DESC, g.code),
new AS (
  SELECT g.id, g.code,
         ST_Multi(ST_CollectionExtract(ST_Union(
           CASE WHEN l.geom IS NULL THEN g.geom ELSE ST_Difference(g.geom, l.geom) END,
           coalesce(w.geom, 'SRID=4326;POLYGON EMPTY'::geometry)), 3)) AS geom
  FROM g
  LEFT JOIN (SELECT code, ST_Union(geom) AS geom FROM lose GROUP BY code) l ON l.code = g.code
  LEFT JOIN (SELECT code, ST_Union(geom) AS geom FROM gain GROUP BY code) w ON w.code = g.code
  WHERE l.code IS NOT NULL OR w.code IS NOT NULL),
upd AS (
  UPDATE areas a SET geom = n.geom, updated_at = now() FROM new n
  WHERE a.id = n.id AND NOT ST_IsEmpty(n.geom) RETURNING a.code)
SELECT (SELECT count(*) FROM lose WHERE kind = 'overlap' AND code IN (SELECT code FROM upd)) AS overlap,
       (SELECT count(*) FROM gain WHERE kind = 'gap' AND code IN (SELECT code FROM upd)) AS gap,
       (SELECT count(*) FROM gain WHERE kind = 'hole' AND code IN (SELECT code FROM upd)) AS hole,
       (SELECT count(*) FROM lose WHERE kind = 'outside_community' AND code IN (SELECT code FROM upd))
         AS outside_community,
       ARRAY(SELECT code FROM upd ORDER BY code) AS changed,
       ARRAY(SELECT DISTINCT xc FROM overlap_parts WHERE m2 < :sliver) AS partners
"""


def parameters(target: float = TARGET, tolerance: float = TOLERANCE, sliver_m2: float = SLIVER_M2,
               min_compactness: float = MIN_COMPACTNESS) -> dict:
    """The checked, echoed parameters of a validation run."""
    if not target > 0:
        raise InvalidInput(f"target must be a positive number of households per grid (got {target}); "
                           f"the default is {TARGET}.", field="target")
    if not 0 <= tolerance < 1:
        raise InvalidInput(f"tolerance must be in [0, 1), e.g. 0.15 for ±15% (got {tolerance}).", field="tolerance")
    if not 0 <= sliver_m2 <= MAX_SLIVER_M2:
        raise InvalidInput(f"sliver_m2 must be between 0 and {MAX_SLIVER_M2:g} m² (got {sliver_m2}): larger "
                           "gaps and overlaps are for a planner to redraw, not to snap away.", field="sliver_m2")
    if not 0 <= min_compactness <= 1:
        raise InvalidInput(f"min_compactness is a Polsby–Popper score in [0, 1] (got {min_compactness}); "
                           f"the default is {MIN_COMPACTNESS}.", field="min_compactness")
    return {"target": target, "tolerance": tolerance,
            "band": [target * (1 - tolerance), target * (1 + tolerance)],
            "sliver_m2": sliver_m2, "min_compactness": min_compactness, "noise_m2": NOISE_M2}


def _version(conn: Connection, plan_id: int):
    row = conn.execute(text("SELECT id, status, revision FROM grid_versions WHERE id = :id"), {"id": plan_id}).first()
    if row is None:
        raise NotFound(f"No plan {plan_id}; list plans with GET /plans.", field="plan_id")
    return row


def validate(conn: Connection, plan_id: int, caller: Caller | None = None, **params) -> dict:
    """Findings of any grid version (draft, active or retired) as a GeoJSON FeatureCollection with a summary.

    With a caller: readers only, and only the communities in the caller's area; without one (internal use,
    e.g. publishing) the whole plan."""
    if caller is not None:
        caller.require_role(*plans.READ_ROLES)
    p = parameters(**params)
    version = _version(conn, plan_id)
    rows = conn.execute(text(VALIDATE_SQL), bind(plan_id, caller.scope if caller else "", p)).all()
    features = sorted((_feature(r, p, plan_id) for r in rows),
                      key=lambda f: (SEVERITY_ORDER[f["properties"]["severity"]], f["properties"]["kind"],
                                     f["properties"]["codes"], -(f["properties"]["area_m2"] or 0)))
    for i, f in enumerate(features, 1):
        f["id"] = i
    return {"type": "FeatureCollection", "plan_id": plan_id, "status": version.status,
            "revision": version.revision, "parameters": p, "summary": summarize(features), "features": features}


def summarize(features: list[dict]) -> dict:
    """Counts of findings by severity and kind, and whether the plan passes (no errors, nothing fixable)."""
    count = {s: 0 for s in SEVERITY_ORDER}
    by_kind: dict[str, int] = {}
    for f in features:
        count[f["properties"]["severity"]] += 1
        by_kind[f["properties"]["kind"]] = by_kind.get(f["properties"]["kind"], 0) + 1
    return {"errors": count["error"], "warnings": count["warning"], "fixable": count["fixable"],
            "passes": count["error"] == 0 and count["fixable"] == 0, "by_kind": by_kind}


def fix_slivers(conn: Connection, caller: Caller, plan_id: int, revision: int, sliver_m2: float = SLIVER_M2) -> dict:
    """Snap away every fixable sliver of a draft in the caller's area, in the caller's transaction: sliver
    overlaps are cut from all but the lowest code, sliver parts outside the community are clipped, sliver gaps
    and holes join the grid sharing the longest boundary with them; households are recounted."""
    caller.require_role(*plans.WRITE_ROLES)
    parameters(sliver_m2=sliver_m2)
    new_revision = plans.bump(conn, plan_id, revision)
    row = conn.execute(text(FIX_SQL), {**bind(plan_id, caller.scope, parameters()), "sliver": sliver_m2}).one()
    fixed = {k: getattr(row, k) for k in ("gap", "hole", "overlap", "outside_community")}
    touched = sorted(set(row.changed) | set(row.partners))
    if touched:
        plans.recount(conn, plan_id, touched)
    plans.audit(conn, caller, "plan.fix_slivers", plan_id,
                {"revision": new_revision, "sliver_m2": sliver_m2, "fixed": fixed, "changed": list(row.changed)})
    after = validate(conn, plan_id, caller, sliver_m2=sliver_m2)
    return {"plan_id": plan_id, "revision": new_revision, "sliver_m2": sliver_m2, "fixed": fixed,
            "changed": list(row.changed), "summary": after["summary"]}


def bind(plan_id: int, scope: str, p: dict) -> dict:
    """The bound parameters of VALIDATE_SQL (and FIX_SQL, which adds :sliver) for `parameters()` p."""
    return {"v": plan_id, "scope": scope, "noise": NOISE_M2, "deg2_m2": DEG2_M2, "snap": SNAP_DEG,
            "low": p["band"][0], "high": p["band"][1], "min_compactness": p["min_compactness"],
            "decimals": GEOJSON_DECIMALS}


def _feature(row, p: dict, plan_id: int) -> dict:
    kind, codes, m2 = row.kind, list(row.codes), row.m2
    severity = "error"
    # a sliver is fixable when fix_slivers() has somewhere to put it (a gap needs a neighbouring grid)
    if kind in ("overlap", "gap", "hole", "outside_community") and row.note != "orphan" and m2 < p["sliver_m2"] \
            and codes:
        severity = "fixable"
    # Multipart is a warning: DESIGN's hard geometric rules are full cover, no overlap and one community per
    # grid; a grid in two pieces (across a road, say) breaks none of them, and the demo's bisection of concave
    # communities leaves three such grids.
    elif kind in ("multipart", "households_out_of_band", "low_compactness", "no_worker"):
        severity = "warning"
    message = _message(kind, severity, codes, row, p)
    if severity == "fixable":
        message += (f" It is a sliver below {p['sliver_m2']:g} m²: POST /plans/{plan_id}/fix-slivers snaps it "
                    "away.")
    return {"type": "Feature", "geometry": orjson.loads(row.geometry),
            "properties": {"kind": kind, "severity": severity, "codes": codes, "community": row.community,
                           "area_m2": None if m2 is None else round(m2, 3), "message": message}}


def _m2(m2: float) -> str:
    return f"{m2:,.2f} m²" if m2 < 100 else f"{m2:,.0f} m²"


def _message(kind: str, severity: str, codes: list[str], row, p: dict) -> str:
    code = codes[0] if codes else None
    if kind == "invalid_geometry":
        point = orjson.loads(row.geometry)["coordinates"]
        return (f"Grid {code} is not a valid polygon: {row.note} at ({point[0]:.6f}, {point[1]:.6f}). Redraw its "
                "boundary there; the other checks used a repaired copy (ST_MakeValid).")
    if kind == "overlap":
        return (f"Grids {codes[0]} and {codes[1]} overlap by {_m2(row.m2)}. Each place belongs to one grid: "
                "move their shared edge so that they only touch.")
    if kind == "gap":
        where = f"between grids {', '.join(codes)}" if codes else "and touches no grid"
        return (f"{_m2(row.m2)} of community {row.community} is in no grid ({where}). Extend a neighbouring grid "
                "over it or draw a grid there.")
    if kind == "hole":
        return (f"Grid {code} has a hole of {_m2(row.m2)} that no other grid fills, inside community "
                f"{row.community}. Fill the hole (redraw the grid without it) or draw a grid there.")
    if kind == "outside_community":
        if row.note == "orphan":
            return (f"Grid {code} belongs to community {row.community}, which does not exist. Give the grid a "
                    "code of the community it lies in.")
        return (f"{_m2(row.m2)} of grid {code} lies outside its community {row.community}. Clip the grid to "
                "the community boundary.")
    if kind == "multipart":
        return (f"Grid {code} is in {int(row.value)} separate parts; {_m2(row.m2)} is cut off from its largest "
                "part. A grid worker's beat should be one piece: give the detached parts to the grids around "
                "them, or keep them if that is intended.")
    if kind == "households_out_of_band":
        low, high = p["band"]
        side = "over" if row.value > high else "under"
        return (f"Grid {code} has {int(row.value)} households, {side} the band {low:g}–{high:g} "
                f"({p['target']:g} ± {p['tolerance']:.0%}). Move buildings or redraw to rebalance.")
    if kind == "low_compactness":
        return (f"Grid {code} is elongated or ragged: Polsby–Popper 4πA/P² = {row.value:.2f}, below "
                f"{p['min_compactness']:g}. A compact grid is quicker to walk; consider redrawing it.")
    return f"Grid {code} has no grid worker. Assign one (set_attributes with worker_id)."

