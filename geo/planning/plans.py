"""Plans: grid versions in the draft state — create, read, discard, and the revision every edit must carry."""

import geopandas as gpd
import pandas as pd
import shapely
from sqlalchemy import Connection, text

from geo import audit as audit_log
from geo.auth import Caller
from geo.errors import Conflict, NotFound

WRITE_ROLES = ("planner",)  # admins may do anything
READ_ROLES = ("planner", "supervisor")

# Who sees a version: published ones (and admins' drafts) are everyone's; a draft belongs to its creator's area
# and is seen by callers whose area holds it or lies inside it. Elsewhere it does not exist (404).
VISIBLE = ("(v.area_code IS NULL OR starts_with(v.area_code, CAST(:scope AS text)) "
           "OR starts_with(CAST(:scope AS text), v.area_code))")

_SUMMARY = """
    SELECT v.id, v.name, v.status, v.revision, v.based_on_id, v.note, v.created_by, v.area_code,
           v.created_at, v.activated_at, v.retired_at,
           count(a.id) AS grids, coalesce(sum(a.households), 0) AS households,
           count(a.id) FILTER (WHERE a.worker_id IS NULL) AS grids_without_worker
    FROM grid_versions v LEFT JOIN areas a ON a.version_id = v.id AND a.level = 'grid'
    {where}
    GROUP BY v.id ORDER BY v.id DESC
"""


def _summary(row) -> dict:
    out = dict(row._mapping)
    for key in ("created_at", "activated_at", "retired_at"):
        out[key] = out[key].isoformat() if out[key] else None
    out["households"] = int(out["households"])
    return out


def create(conn: Connection, caller: Caller, name: str, note: str | None = None,
           based_on: int | None = None) -> dict:
    """A new draft: a copy of `based_on` (default: the active version), grids, kinds, workers and all."""
    caller.require_role(*WRITE_ROLES)
    source = based_on or conn.execute(text("SELECT id FROM grid_versions WHERE status = 'active'")).scalar()
    if source is None:
        raise NotFound("There is no active grid version to copy; load one first (wangge fixtures load).")
    if based_on and conn.execute(text("SELECT 1 FROM grid_versions WHERE id = :id"), {"id": based_on}).first() is None:
        raise NotFound(f"No grid version {based_on} to base the plan on.", field="based_on")
    if based_on:
        require_visible(conn, caller, based_on, field="based_on")
    plan_id = conn.execute(text(
        "INSERT INTO grid_versions (name, status, based_on_id, created_by, note, area_code) "
        "VALUES (:name, 'draft', :source, :user, :note, :area) RETURNING id"),
        {"name": name, "source": source, "user": caller.id, "note": note, "area": caller.area_code}).scalar_one()
    conn.execute(text("""
        INSERT INTO areas (code, level, name, parent_id, version_id, kind, households, worker_id, is_synthetic, geom)
        SELECT code, level, name, parent_id, :plan, kind, households, worker_id, is_synthetic, geom
        FROM areas WHERE version_id = :source"""), {"plan": plan_id, "source": source})
    conn.execute(text("ANALYZE areas"))  # 1,500+ fresh rows: without statistics the planner scans per point
    audit(conn, caller, "plan.create", plan_id, {"based_on": source, "name": name})
    return get(conn, caller, plan_id)


def list_(conn: Connection, caller: Caller) -> list[dict]:
    """Every grid version, newest first, with its grid and household counts."""
    caller.require_role(*READ_ROLES)
    rows = conn.execute(text(_SUMMARY.format(where=f"WHERE {VISIBLE}")), {"scope": caller.scope})
    return [_summary(row) for row in rows]


def get(conn: Connection, caller: Caller, plan_id: int) -> dict:
    """A plan's summary (404 when there is none)."""
    caller.require_role(*READ_ROLES)
    row = conn.execute(text(_SUMMARY.format(where=f"WHERE v.id = :id AND {VISIBLE}")),
                       {"id": plan_id, "scope": caller.scope}).first()
    if row is None:
        raise NotFound(f"No plan {plan_id} in your area; list plans with GET /plans.", field="plan_id")
    return _summary(row)


def require_visible(conn: Connection, caller: Caller, plan_id: int, field: str = "plan_id") -> None:
    """NotFound unless the caller may see this version (VISIBLE): a plan outside their area does not exist."""
    seen = conn.execute(text(f"SELECT 1 FROM grid_versions v WHERE v.id = :id AND {VISIBLE}"),
                        {"id": plan_id, "scope": caller.scope}).first()
    if seen is None:
        raise NotFound(f"No plan {plan_id} in your area; list plans with GET /plans.", field=field)


def discard(conn: Connection, caller: Caller, plan_id: int) -> None:
    """Delete a draft and its grids; active and retired versions are history and stay."""
    caller.require_role(*WRITE_ROLES)
    require_visible(conn, caller, plan_id)
    draft(conn, plan_id)
    conn.execute(text("UPDATE jobs SET status = 'cancelled' WHERE status IN ('queued', 'running') "
                      "AND (params->>'plan_id')::int = :id"), {"id": plan_id})
    conn.execute(text("DELETE FROM grid_versions WHERE id = :id"), {"id": plan_id})
    audit(conn, caller, "plan.discard", plan_id, {})


def draft(conn: Connection, plan_id: int, lock: bool = False):
    """The plan's row, which must be a draft; `lock` holds it for this transaction."""
    row = conn.execute(text("SELECT id, status, revision, based_on_id FROM grid_versions WHERE id = :id"
                            + (" FOR UPDATE" if lock else "")), {"id": plan_id}).first()
    if row is None:
        raise NotFound(f"No plan {plan_id}; list plans with GET /plans.", field="plan_id")
    if row.status != "draft":
        raise Conflict(f"Plan {plan_id} is {row.status}, not a draft: only drafts can change. "
                       "Start a new plan with POST /plans.", field="plan_id")
    return row


def bump(conn: Connection, plan_id: int, revision: int) -> int:
    """Check that an edit was based on the plan's current revision, then advance it (locks the plan row).

    Call this first in the edit's transaction: concurrent edits queue on the row lock, and the loser
    of a race sees the new revision and gets 409 — no edit is lost."""
    row = draft(conn, plan_id, lock=True)
    if row.revision != revision:
        raise Conflict(f"Plan {plan_id} is at revision {row.revision}, but this edit was based on revision "
                       f"{revision}. Reload the plan and apply the edit again.", field="revision")
    return conn.execute(text("UPDATE grid_versions SET revision = revision + 1 WHERE id = :id RETURNING revision"),
                        {"id": plan_id}).scalar_one()


def recount(conn: Connection, plan_id: int, codes: list[str] | None = None) -> None:
    """Households per grid from the buildings (all grids, or just `codes`): each building counts once, in the
    lowest-coded grid covering its point-on-surface (the loader's rule)."""
    conn.execute(text("""
        WITH target AS (SELECT id, geom FROM areas
                        WHERE version_id = :v AND level = 'grid' AND (CAST(:codes AS text[]) IS NULL
                                                                       OR code = ANY(CAST(:codes AS text[])))),
        candidate AS (SELECT DISTINCT b.id, b.households, ST_PointOnSurface(b.geom) AS p
                      FROM buildings b JOIN target t ON ST_Intersects(t.geom, b.geom)),
        owner AS (SELECT grid.id, sum(c.households) AS households
                  FROM candidate c
                  CROSS JOIN LATERAL (SELECT a.id FROM areas a
                                      WHERE a.version_id = :v AND a.level = 'grid' AND ST_Covers(a.geom, c.p)
                                      ORDER BY a.code LIMIT 1) grid
                  GROUP BY grid.id)
        UPDATE areas g SET households = coalesce(o.households, 0), updated_at = now()
        FROM target t LEFT JOIN owner o ON o.id = t.id
        WHERE g.id = t.id AND g.households IS DISTINCT FROM coalesce(o.households, 0)"""),
        {"v": plan_id, "codes": codes})


def grids(conn: Connection, plan_id: int) -> gpd.GeoDataFrame:
    """The plan's grids with their community code, households, kind and worker, as a GeoDataFrame."""
    return gpd.read_postgis(text("""
        SELECT a.id, a.code, a.name, left(a.code, 12) AS community_code, a.kind, a.households, a.worker_id, a.geom
        FROM areas a WHERE a.version_id = :v AND a.level = 'grid' ORDER BY a.code"""),
        conn, geom_col="geom", params={"v": plan_id})


def audit(conn: Connection, caller: Caller, action: str, plan_id: int, detail: dict, before: dict | None = None,
          after: dict | None = None) -> None:
    """Write a plan action to the audit log, with the values before and after where it changed some."""
    audit_log.record(conn, action, f"grid_version:{plan_id}", caller.id, before=before, after=after, detail=detail)


def taken_codes(conn: Connection, community_code: str) -> set[str]:
    """Every grid code the community has had in any version: a retired code never names a new place."""
    return set(conn.execute(text("SELECT DISTINCT code FROM areas WHERE level = 'grid' AND left(code, 12) = :c"),
                            {"c": community_code}).scalars())


def replace_community_grids(conn: Connection, plan_id: int, community_code: str, new: gpd.GeoDataFrame) -> list[str]:
    """Replace the grids of one community in a draft with `new` (EPSG:4326 geometry; optional columns code,
    name, kind, worker_id). Missing codes come from grid_codes.match_codes, so the same place keeps its code;
    households are recounted. Returns the new codes in order."""
    from geo.areas import codes as grid_codes

    community = conn.execute(text("SELECT id, name FROM areas WHERE code = :c AND level = 'community' "
                                  "AND version_id IS NULL"), {"c": community_code}).first()
    if community is None:
        raise NotFound(f"No community {community_code}.", field="community")
    old = gpd.read_postgis(text("SELECT code, name, worker_id, kind, geom FROM areas WHERE version_id = :v "
                                "AND level = 'grid' AND left(code, 12) = :c ORDER BY code"),
                           conn, geom_col="geom", params={"v": plan_id, "c": community_code})
    new = new.reset_index(drop=True)
    codes: list[str | None] = list(new["code"]) if "code" in new else [None] * len(new)
    missing = [i for i, c in enumerate(codes) if not c]
    if missing:
        given = {c for c in codes if c}
        matched = grid_codes.match_codes(community_code, old[~old["code"].isin(given)],
                                         new.geometry.iloc[missing], taken_codes(conn, community_code) | given)
        for i, code in zip(missing, matched, strict=False):
            codes[i] = code
    kept = old.set_index("code")
    rows = []
    filled = [code for code in codes if code is not None]
    assert len(filled) == len(codes)  # every grid has a code now
    for i, code in enumerate(filled):
        def value(column, default=None, i=i, code=code):
            given = new[column].iloc[i] if column in new else None
            if given is not None and not pd.isna(given):
                return given
            return kept.at[code, column] if code in kept.index and column in kept else default

        worker = value("worker_id")
        rows.append({"code": code, "name": value("name", f"{community.name}第{int(code[-3:])}网格"),
                     "kind": value("kind", "residential"), "worker_id": None if pd.isna(worker) else int(worker),
                     "wkb": shapely.to_wkb(shapely.force_2d(new.geometry.iloc[i]), hex=True)})
    if "worker_id" not in new:
        _hand_over_workers(rows, new.geometry, old)
    conn.execute(text("DELETE FROM areas WHERE version_id = :v AND level = 'grid' AND left(code, 12) = :c"),
                 {"v": plan_id, "c": community_code})
    if rows:
        conn.execute(text("""
            INSERT INTO areas (code, level, name, parent_id, version_id, kind, worker_id, is_synthetic, geom)
            VALUES (:code, 'grid', :name, :parent, :v, :kind, :worker_id, false,
                    ST_Multi(ST_SetSRID(ST_GeomFromWKB(decode(:wkb, 'hex')), 4326)))"""),
            [{**row, "parent": community.id, "v": plan_id} for row in rows])
        recount(conn, plan_id, filled)
    return filled


def _hand_over_workers(rows: list[dict], geoms, old: gpd.GeoDataFrame) -> None:
    """Workers of replaced grids whose codes did not survive go to the new grids without a worker, largest shared
    area first, so a redraw does not leave people without a grid (and grids without a worker) needlessly."""
    used = {row["worker_id"] for row in rows if row["worker_id"] is not None}
    free = old[old["worker_id"].notna() & ~old["worker_id"].isin(list(used))]
    orphans = [k for k, row in enumerate(rows) if row["worker_id"] is None]
    pairs = []
    for geom, worker in zip(shapely.make_valid(free.geometry.values), free["worker_id"], strict=False):
        for k in orphans:
            if geoms.iloc[k].intersects(geom):
                pairs.append((geoms.iloc[k].intersection(geom).area, k, int(worker)))
    for _, k, worker in sorted(pairs, reverse=True):
        if rows[k]["worker_id"] is None and worker not in used:
            rows[k]["worker_id"] = worker
            used.add(worker)
