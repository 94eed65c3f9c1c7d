"""Publishing a plan: once it validates, it becomes the active grid version and open incidents follow its grids.

One transaction, in this order:

1. ``plans.bump`` checks the revision and locks the plan row, so no edit lands between validation and publishing;
   the plan is validated (``geo.planning.validation``) and its impact computed against the active version while
   intake still runs.
   The new grid of every open incident is looked up now too (``_COVER``, the slow spatial part), so that
   intake is locked out only while the rows are written.
2. ``LOCK TABLE incidents IN EXCLUSIVE MODE``: concurrent writers of incidents (intake, bulk import, workflow
   actions, escalation) wait until the commit. EXCLUSIVE rather than SHARE ROW EXCLUSIVE because it also makes
   ``SELECT … FOR UPDATE`` wait at the table: workflow actions and dispatch lock an incident row before updating
   it, and a publish updating that row would otherwise deadlock with them. Plain reads go on. A queued intake
   INSERT takes its snapshot after it gets its table lock (READ COMMITTED), so it sees the new active version.
   Then the active row is locked (bulk imports hold it FOR SHARE, after their own incidents lock). The wait
   for the table lock is capped (LOCK_TIMEOUT_S, then 409): reports queue behind a waiting publish, so it must
   not wait out a long bulk import.
3. The active version is retired first, then the plan activated (the partial unique index allows one active).
4. Every open incident (geo.incidents.workflow.OPEN, whatever version it was filed under) moves to the new
   version's grid covering its point, by ``plan_diff.REASSIGNMENT`` — the same statement the diff previews. A
   change of grid code or assignee is logged as a 'reassign' event; incidents outside every new grid get the
   nearest grid as a suggestion. Closed incidents keep their grid and version: history is never rewritten.
5. Grid workers whose home_grid_code is no longer one of their grids get their lowest-coded grid of the new
   version as home (it scopes what they see and marks same-grid dispatches); others keep theirs.
6. The audit log gets 'plan.publish' with the counts and the diff summary.
"""

from psycopg.errors import LockNotAvailable
from sqlalchemy import Connection, text
from sqlalchemy.exc import OperationalError

from geo.auth import Caller
from geo.errors import Conflict, Forbidden
from geo.planning import diff as plan_diff
from geo.planning import plans

LOCK_TIMEOUT_S = 5.0

_REASSIGN_SQL = """
WITH {reassignment},
moved AS (
    UPDATE incidents i
    SET grid_id = p.new_grid_id, grid_code = p.new_code,
        grid_version_id = CASE WHEN p.new_grid_id IS NOT NULL THEN CAST(:new AS int) END,
        assignee_id = p.new_assignee, status = p.new_status,
        suggested_grid_code = CASE WHEN p.new_grid_id IS NULL THEN s.code ELSE i.suggested_grid_code END,
        suggested_distance_m = CASE WHEN p.new_grid_id IS NULL THEN s.distance_m ELSE i.suggested_distance_m END,
        updated_at = now()
    FROM plan p
    LEFT JOIN LATERAL (  -- outside every grid: the nearest by geodesic metres among the 8 nearest in degrees
        SELECT k.code, k.distance_m FROM (
            SELECT a.code, ST_Distance(geography(a.geom), geography(p.geom)) AS distance_m FROM areas a
            WHERE p.new_grid_id IS NULL AND a.version_id + 0 = CAST(:new AS int) AND a.level = 'grid'
            ORDER BY a.geom <-> p.geom LIMIT 8) k
        ORDER BY k.distance_m, k.code LIMIT 1) s ON true
    WHERE i.id = p.id
    RETURNING i.id),
events AS (
    INSERT INTO incident_events (incident_id, actor_id, action, from_status, to_status, note, data)
    SELECT p.id, CAST(:actor AS int), 'reassign', p.status, p.new_status, CAST(:note AS text),
           jsonb_build_object('from_grid', p.grid_code, 'to_grid', p.new_code, 'from_version', p.grid_version_id,
                              'to_version', CASE WHEN p.new_grid_id IS NOT NULL THEN CAST(:new AS int) END,
                              'from_assignee', p.assignee_id, 'to_assignee', p.new_assignee)
    FROM plan p
    WHERE p.new_code IS DISTINCT FROM p.grid_code OR p.new_assignee IS DISTINCT FROM p.assignee_id
    RETURNING incident_id)
SELECT (SELECT count(*) FROM moved) AS moved, (SELECT count(*) FROM events) AS events,
       (SELECT count(*) FROM plan WHERE new_grid_id IS NULL) AS unassigned,
       (SELECT count(*) FROM plan WHERE new_grid_id IS NOT NULL AND grid_id IS NULL) AS newly_assigned"""
_REASSIGN = text(_REASSIGN_SQL.replace("{reassignment}", plan_diff.REASSIGNMENT))
_REASSIGN_COVERED = text(_REASSIGN_SQL.replace("{reassignment}", plan_diff.REASSIGNMENT_COVERED))

# Before intake is locked out: the new grid of every open incident (the slow, spatial part of the reassignment).
# Incident points never move and the plan row is locked, so these stay right; incidents filed meanwhile are
# looked up under the lock.
_COVER = text(f"""
CREATE TEMP TABLE publish_cover ON COMMIT DROP AS
SELECT o.id, t.id AS grid_id, t.code, t.worker_id
FROM incidents o LEFT JOIN LATERAL {plan_diff.COVERING_GRID} t ON true
WHERE o.status = ANY(CAST(:open AS text[]))""")

_HOME_GRIDS = text("""
UPDATE responders r SET home_grid_code = w.code
FROM (SELECT worker_id, min(code) AS code, array_agg(code) AS codes FROM areas
      WHERE version_id = CAST(:new AS int) AND level = 'grid' AND worker_id IS NOT NULL GROUP BY worker_id) w
WHERE r.id = w.worker_id AND r.role = 'grid_worker'
  AND (r.home_grid_code IS NULL OR NOT r.home_grid_code = ANY(w.codes))""")


def publish(conn: Connection, caller: Caller, plan_id: int, revision: int, force: bool = False) -> dict:
    """Make draft `plan_id` (at `revision`) the active version and move open incidents onto its grids.

    Conflict (409) when the revision is stale, the plan is not a draft, it does not pass validation, or (unless
    `force`) it was copied from a version that is no longer active — publishing it would silently undo what was
    published in between;
    Forbidden when a scoped planner's plan changes grids outside their area."""
    from geo.planning import validation as plan_validation  # imported here: it imports this module

    caller.require_role(*plans.WRITE_ROLES)
    revision = plans.bump(conn, plan_id, revision)
    report = plan_validation.validate(conn, plan_id)
    if not report["summary"]["passes"]:
        raise Conflict(_refusal(plan_id, report), field="plan_id")
    previous = plan_diff.active_version(conn)
    _check_base(conn, plan_id, previous, force)
    impact = _within_scope(caller, plan_id, plan_diff.compare(conn, previous, plan_id, limit=0))

    conn.execute(_COVER, {"new": plan_id, "open": plan_diff.OPEN})
    conn.execute(text("CREATE UNIQUE INDEX ON publish_cover (id)"))
    conn.execute(text("ANALYZE publish_cover"))
    _lock_incidents(conn)
    locked = conn.execute(text("SELECT id FROM grid_versions WHERE status = 'active' FOR UPDATE")).scalar()
    if locked != previous:  # another plan was published while this one was being checked
        _check_base(conn, plan_id, locked, force)
        previous = locked
        impact = _within_scope(caller, plan_id, plan_diff.compare(conn, locked, plan_id, limit=0))

    conn.execute(text("UPDATE grid_versions SET status = 'retired', retired_at = now() WHERE id = :id"),
                 {"id": previous})
    activated_at = conn.execute(text("UPDATE grid_versions SET status = 'active', activated_at = now() "
                                     "WHERE id = :id RETURNING activated_at"), {"id": plan_id}).scalar_one()
    counts = conn.execute(_REASSIGN_COVERED, {"old": None, "new": plan_id, "open": plan_diff.OPEN, "actor": caller.id,
                                      "note": f"grid plan {plan_id} published"}).mappings().one()
    home_grids = conn.execute(_HOME_GRIDS, {"new": plan_id}).rowcount
    result = {"plan_id": plan_id, "status": "active", "revision": revision, "activated_at": activated_at.isoformat(),
              "retired": previous, "reassigned": int(counts["events"]), "events": int(counts["events"]),
              "moved": int(counts["moved"]), "unassigned": int(counts["unassigned"]),
              "newly_assigned": int(counts["newly_assigned"]),
              "workers_affected": impact["summary"]["workers_affected"], "home_grids_updated": home_grids,
              "summary": impact["summary"]}
    plans.audit(conn, caller, "plan.publish", plan_id,
                {"previous": previous, **{k: v for k, v in result.items() if k not in ("plan_id", "status")}})
    return result


def _check_base(conn: Connection, plan_id: int, active: int | None, force: bool) -> None:
    based_on = conn.execute(text("SELECT based_on_id FROM grid_versions WHERE id = :id"), {"id": plan_id}).scalar()
    if not force and active is not None and based_on != active:
        raise Conflict(f"Plan {plan_id} was copied from grid version {based_on}, but version {active} has been "
                       "published since: publishing this plan would undo those changes. Start a new plan from the "
                       "active version (POST /plans) and redo the edits, or send \"force\": true to publish anyway.",
                       field="plan_id")


def _lock_incidents(conn: Connection) -> None:
    """LOCK TABLE incidents, waiting at most LOCK_TIMEOUT_S: while a publish waits for the lock, every intake
    queues behind it, so a publish must not wait out a long bulk import."""
    conn.execute(text("SELECT set_config('lock_timeout', :ms, true)"), {"ms": f"{int(LOCK_TIMEOUT_S * 1000)}ms"})
    try:
        conn.execute(text("LOCK TABLE incidents IN EXCLUSIVE MODE"))
    except OperationalError as exc:
        if isinstance(exc.orig, LockNotAvailable):
            raise Conflict(f"Another transaction has been writing incidents for over {LOCK_TIMEOUT_S:g} s (most "
                           "likely a bulk import), so the plan was not published: waiting longer would hold up "
                           "every incident report. Publish again when the import has finished.",
                           field="plan_id") from exc
        raise
    conn.execute(text("SELECT set_config('lock_timeout', '0', true)"))


def _within_scope(caller: Caller, plan_id: int, impact: dict) -> dict:
    outside = [f["id"] for f in impact["grids"]["features"] if not caller.can_see(f["id"])]
    if outside:
        raise Forbidden(f"Plan {plan_id} changes {len(outside)} grids outside your area; ask a planner "
                        "responsible for them to publish it.", field="plan_id")
    return impact


def _refusal(plan_id: int, report: dict) -> str:
    """The 409 message: blocking findings counted by kind, and how to clear them."""
    blocking: dict[str, int] = {}
    for finding in report.get("features", []):
        if finding["properties"]["severity"] != "warning":
            kind = finding["properties"]["kind"]
            blocking[kind] = blocking.get(kind, 0) + 1
    summary = report["summary"]
    listed = ", ".join(f"{n} {kind}" for kind, n in sorted(blocking.items())) or \
        ", ".join(f"{n} {kind}" for kind, n in sorted(summary.get("by_kind", {}).items()))
    return (f"Plan {plan_id} does not pass validation ({summary['errors']} errors, {summary['fixable']} fixable: "
            f"{listed}), so it cannot be published. See each finding on GET /plans/{plan_id}/validation; "
            f"POST /plans/{plan_id}/fix-slivers snaps the fixable slivers away; fix the errors with edits, "
            "then publish again with the new revision.")
