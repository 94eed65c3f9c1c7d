"""Impact of a plan against another grid version: changed grids, building flows, open incidents and workers."""

import orjson
from sqlalchemy import Connection, text

from geo.auth import Caller
from geo.errors import InvalidInput, NotFound
from geo.incidents import workflow
from geo.planning import plans

# Symmetric differences below this (geodesic m²) are re-noding noise, not land that changed hands.
TOLERANCE_M2 = 0.01
MAX_INCIDENTS = 5000
OPEN = list(workflow.OPEN)

# Both versions' grids matched by code (codes are stable). `=` is exact coordinate equality and cheap, so the
# symmetric difference is computed only for grids whose coordinates differ; invalid draft geometry is repaired
# for that computation only.
_GRIDS = text("""
WITH o AS (SELECT code, geom, households, kind, worker_id FROM areas
           WHERE version_id = CAST(:old AS int) AND level = 'grid' AND starts_with(code, CAST(:scope AS text))),
n AS (SELECT code, geom, households, kind, worker_id FROM areas
      WHERE version_id = CAST(:new AS int) AND level = 'grid' AND starts_with(code, CAST(:scope AS text))),
j AS (
    SELECT coalesce(o.code, n.code) AS code, o.geom AS old_geom, n.geom AS new_geom,
           o.households AS households_before, n.households AS households_after, o.kind AS kind_before,
           n.kind AS kind_after, o.worker_id AS worker_before, n.worker_id AS worker_after,
           CASE WHEN o.code IS NOT NULL AND n.code IS NOT NULL AND NOT (o.geom = n.geom) THEN
                ST_CollectionExtract(ST_SymDifference(
                    CASE WHEN ST_IsValid(o.geom) THEN o.geom ELSE ST_MakeValid(o.geom) END,
                    CASE WHEN ST_IsValid(n.geom) THEN n.geom ELSE ST_MakeValid(n.geom) END), 3) END AS moved
    FROM o FULL JOIN n ON n.code = o.code),
k AS (
    SELECT j.*, CASE WHEN old_geom IS NULL THEN ST_Area(geography(new_geom))
                     WHEN new_geom IS NULL THEN ST_Area(geography(old_geom))
                     ELSE coalesce(ST_Area(geography(moved)), 0) END AS area_changed_m2
    FROM j),
c AS (
    SELECT k.*, CASE WHEN old_geom IS NULL THEN 'added' WHEN new_geom IS NULL THEN 'removed'
                     WHEN area_changed_m2 > CAST(:tolerance AS float8) OR kind_before IS DISTINCT FROM kind_after
                          OR worker_before IS DISTINCT FROM worker_after THEN 'changed'
                     ELSE 'unchanged' END AS change,
           old_geom IS NULL OR new_geom IS NULL OR area_changed_m2 > CAST(:tolerance AS float8) AS reshaped
    FROM k)
SELECT code, change, reshaped, households_before, households_after, kind_before, kind_after, worker_before,
       worker_after, CASE WHEN reshaped THEN area_changed_m2 ELSE 0 END AS area_changed_m2,
       CASE WHEN change = 'unchanged' THEN NULL
            ELSE ST_AsGeoJSON(CASE WHEN change = 'added' THEN new_geom WHEN change = 'removed' THEN old_geom
                                   WHEN reshaped THEN moved ELSE new_geom END, 7) END AS geojson
FROM c ORDER BY code""")

# Building flows: only buildings that meet a reshaped grid (old or new outline) can change owner; each building
# belongs to the lowest-coded grid covering its point-on-surface, on both sides (plans.recount's rule).
# `version_id + 0` in the point lookups keeps the planner on the GiST index: a draft not analysed yet looks
# like one row in the (version_id, code) index, and scanning all its grids in code order per point is slow.
_MOVES = text("""
WITH zone AS (SELECT geom FROM areas WHERE level = 'grid' AND version_id IN (CAST(:old AS int), CAST(:new AS int))
                                        AND code = ANY(CAST(:codes AS text[]))),
cand AS (SELECT b.id, b.households, ST_PointOnSurface(b.geom) AS p FROM buildings b
         WHERE b.id IN (SELECT b2.id FROM zone z JOIN buildings b2 ON ST_Intersects(z.geom, b2.geom))),
own AS (
    SELECT c.households,
           (SELECT a.code FROM areas a WHERE a.version_id + 0 = CAST(:old AS int) AND a.level = 'grid'
                                         AND ST_Covers(a.geom, c.p) ORDER BY a.code LIMIT 1) AS from_code,
           (SELECT a.code FROM areas a WHERE a.version_id + 0 = CAST(:new AS int) AND a.level = 'grid'
                                         AND ST_Covers(a.geom, c.p) ORDER BY a.code LIMIT 1) AS to_code
    FROM cand c)
SELECT from_code, to_code, count(*) AS buildings, sum(households) AS households FROM own
WHERE from_code IS DISTINCT FROM to_code
  AND (starts_with(coalesce(from_code, ''), CAST(:scope AS text))
       OR starts_with(coalesce(to_code, ''), CAST(:scope AS text)))
GROUP BY from_code, to_code ORDER BY from_code NULLS FIRST, to_code NULLS FIRST""")

# Where each open incident goes under version :new, shared by the diff (a preview) and publish (which applies
# it), so the preview is exactly what publishing does. :old limits it to incidents filed under that version
# (and unassigned ones); NULL takes every open incident.
# The new grid: the lowest-coded grid covering the point. The assignee follows the grid's worker only when it
# was the old grid's worker (or nobody): an incident dispatched to someone else stays with them. An incident
# no new grid covers keeps whoever is working on it; one not yet worked on ('reported') becomes 'unassigned'
# like intake files it, and an 'unassigned' one a new grid covers becomes 'reported'.
_OPEN_INCIDENTS = """
open_incidents AS (
    SELECT i.id, i.status, i.grid_id, i.grid_code, i.grid_version_id, i.assignee_id, i.suggested_grid_code,
           i.geom, g.worker_id AS old_worker
    FROM incidents i LEFT JOIN areas g ON g.id = i.grid_id
    WHERE i.status = ANY(CAST(:open AS text[]))
      AND (CAST(:old AS int) IS NULL OR i.grid_version_id = CAST(:old AS int) OR i.grid_id IS NULL)),"""
COVERING_GRID = """(SELECT a.id, a.code, a.worker_id FROM areas a
                   WHERE a.version_id + 0 = CAST(:new AS int) AND a.level = 'grid' AND ST_Covers(a.geom, o.geom)
                   ORDER BY a.code LIMIT 1)"""
_TARGET = f"""
target AS (
    SELECT o.*, t.id AS new_grid_id, t.code AS new_code, t.worker_id AS new_worker
    FROM open_incidents o LEFT JOIN LATERAL {COVERING_GRID} t ON true),"""
# Publish looks the new grids up into publish_cover before it locks intake out; under the lock only incidents
# filed meanwhile are looked up (a separate statement: a join to an empty table would slow the plain one down).
_TARGET_COVERED = f"""
target AS (
    SELECT o.*, c.grid_id AS new_grid_id, c.code AS new_code, c.worker_id AS new_worker
    FROM open_incidents o JOIN publish_cover c ON c.id = o.id
    UNION ALL
    SELECT o.*, t.id, t.code, t.worker_id
    FROM open_incidents o LEFT JOIN LATERAL {COVERING_GRID} t ON true
    WHERE NOT EXISTS (SELECT 1 FROM publish_cover c WHERE c.id = o.id)),"""
_PLAN = """
plan AS (
    SELECT t.*,
           CASE WHEN t.assignee_id IS NOT NULL AND t.assignee_id IS DISTINCT FROM t.old_worker THEN t.assignee_id
                WHEN t.new_grid_id IS NOT NULL THEN t.new_worker
                WHEN t.status IN ('unassigned', 'reported') THEN NULL
                ELSE t.assignee_id END AS new_assignee,
           CASE WHEN t.new_grid_id IS NULL AND t.status = 'reported' THEN 'unassigned'
                WHEN t.new_grid_id IS NOT NULL AND t.status = 'unassigned' THEN 'reported'
                ELSE t.status END AS new_status
    FROM target t)"""
REASSIGNMENT = _OPEN_INCIDENTS + _TARGET + _PLAN
REASSIGNMENT_COVERED = _OPEN_INCIDENTS + _TARGET_COVERED + _PLAN

# Open incidents whose grid code or assignee would change, and that the caller may see on either side.
_MOVING = """
FROM plan
WHERE (new_code IS DISTINCT FROM grid_code OR new_assignee IS DISTINCT FROM assignee_id)
  AND (starts_with(coalesce(grid_code, suggested_grid_code, ''), CAST(:scope AS text))
       OR starts_with(coalesce(new_code, ''), CAST(:scope AS text)))"""
_INCIDENTS = text(f"""
WITH {REASSIGNMENT}
SELECT id, status, grid_code AS from_grid, new_code AS to_grid, assignee_id AS from_worker,
       new_assignee AS to_worker, count(*) OVER () AS total
{_MOVING}
ORDER BY id LIMIT CAST(:limit AS int)""")
_INCIDENT_COUNT = text(f"WITH {REASSIGNMENT} SELECT count(*) {_MOVING}")

_WORKERS = text("""
WITH w AS (SELECT DISTINCT unnest(CAST(:workers AS int[])) AS id),
side AS (SELECT a.version_id, a.worker_id, array_agg(a.code ORDER BY a.code) AS codes, sum(a.households) AS households
         FROM areas a
         WHERE a.level = 'grid' AND a.version_id IN (CAST(:old AS int), CAST(:new AS int))
           AND a.worker_id = ANY(CAST(:workers AS int[])) AND starts_with(a.code, CAST(:scope AS text))
         GROUP BY a.version_id, a.worker_id)
SELECT w.id AS worker_id, r.name, coalesce(b.codes, '{}') AS grids_before, coalesce(n.codes, '{}') AS grids_after,
       coalesce(b.households, 0) AS households_before, coalesce(n.households, 0) AS households_after
FROM w LEFT JOIN responders r ON r.id = w.id
LEFT JOIN side b ON b.worker_id = w.id AND b.version_id = CAST(:old AS int)
LEFT JOIN side n ON n.worker_id = w.id AND n.version_id = CAST(:new AS int)
ORDER BY w.id""")


def active_version(conn: Connection) -> int | None:
    """The id of the active grid version, or None."""
    return conn.execute(text("SELECT id FROM grid_versions WHERE status = 'active'")).scalar()


def resolve(conn: Connection, against: str | int) -> int | None:
    """The version id `against` names: 'active' (None when nothing is active yet) or a version id."""
    if against == "active":
        return active_version(conn)
    try:
        version = int(against)
    except (TypeError, ValueError):
        raise InvalidInput(f"against must be 'active' or a grid version id, not {against!r}.",
                           field="against") from None
    if conn.execute(text("SELECT 1 FROM grid_versions WHERE id = :id"), {"id": version}).first() is None:
        raise NotFound(f"No grid version {version} to compare with; list versions with GET /plans.", field="against")
    return version


def diff(conn: Connection, caller: Caller, plan_id: int, against: str | int = "active", limit: int = 500) -> dict:
    """What publishing `plan_id` would change relative to `against`, within the caller's area."""
    caller.require_role(*plans.READ_ROLES)
    plans.get(conn, caller, plan_id)  # 404 for an unknown plan
    old = resolve(conn, against)
    out = compare(conn, old, plan_id, scope=caller.scope, limit=limit)
    return {"plan_id": plan_id, "against": old, **out}


def compare(conn: Connection, old: int | None, new: int, scope: str = "", limit: int = 500) -> dict:
    """The diff of version `new` against `old` (None: against nothing), restricted to codes under `scope`."""
    limit = max(0, min(int(limit), MAX_INCIDENTS))
    params = {"old": old, "new": new, "scope": scope, "open": OPEN}
    rows = conn.execute(_GRIDS, {**params, "tolerance": TOLERANCE_M2}).mappings().all()
    counts = {change: 0 for change in ("added", "removed", "changed", "unchanged")}
    features: list[dict] = []
    reshaped: list[str] = []
    workers: set[int] = set()
    for row in rows:
        counts[row["change"]] += 1
        if row["change"] == "unchanged":
            continue
        if row["reshaped"]:
            reshaped.append(row["code"])
        workers.update(w for w in (row["worker_before"], row["worker_after"]) if w is not None)
        properties = {key: row[key] for key in ("code", "change", "households_before", "households_after",
                                                "kind_before", "kind_after", "worker_before", "worker_after")}
        properties["area_changed_m2"] = round(float(row["area_changed_m2"]), 2)
        features.append({"type": "Feature", "id": row["code"], "geometry": orjson.loads(row["geojson"]),
                         "properties": properties})
    moves = [{"from": r.from_code, "to": r.to_code, "buildings": r.buildings, "households": int(r.households or 0)}
             for r in conn.execute(_MOVES, {**params, "codes": reshaped})] if reshaped else []
    if limit:
        listed = conn.execute(_INCIDENTS, {**params, "limit": limit}).mappings().all()
        total = int(listed[0]["total"]) if listed else 0
        incidents = [{k: v for k, v in r.items() if k != "total"} for r in listed]
    else:
        incidents, total = [], int(conn.execute(_INCIDENT_COUNT, params).scalar_one())
    worker_rows = [dict(r) for r in conn.execute(_WORKERS, {**params, "workers": sorted(workers)}).mappings()] \
        if workers else []
    for worker in worker_rows:
        worker["households_before"], worker["households_after"] = (int(worker["households_before"]),
                                                                   int(worker["households_after"]))
    summary = {**counts, "households_moved": sum(m["households"] for m in moves),
               "buildings_moved": sum(m["buildings"] for m in moves), "incidents_reassigned": total,
               "workers_affected": len(worker_rows)}
    return {"summary": summary, "grids": {"type": "FeatureCollection", "features": features}, "moves": moves,
            "incidents": incidents, "incidents_truncated": total > len(incidents), "workers": worker_rows}
