"""The audit log: who did what, when, with the values before and after.

`record` appends an entry (audit_log is append-only: a trigger refuses UPDATE and DELETE). `entries` reads the
log for GET /audit, newest first, keyset-paged, together with the two other append-only records that complete it:
every incident transition (incident_events) and each token's use per day (token_use, counted by every worker).
"""

from datetime import datetime
from functools import cache
from typing import Any

import orjson
from sqlalchemy import Connection, text

# The three sources, each one table with the same column types, so that PostgreSQL reads each in (at, id)
# order from its own index and merges them: a page costs its own rows, whatever the size of incident_events.
# `src` orders the sources where time and id tie, and names the source in the cursor.
SOURCES = {
    "audit": "SELECT a.at, 'a' AS src, a.id, a.actor_id, a.action, a.target, a.before, a.after, a.detail "
             "FROM audit_log a",
    "incident": """SELECT e.at, 'e', e.id, e.actor_id, 'incident.' || e.action, 'incident:' || e.incident_id,
         CASE WHEN e.from_status IS NOT NULL THEN jsonb_build_object('status', e.from_status) END,
         CASE WHEN e.to_status IS NOT NULL THEN jsonb_build_object('status', e.to_status) END,
         CASE WHEN e.note IS NOT NULL OR e.data IS NOT NULL
              THEN jsonb_strip_nulls(jsonb_build_object('note', e.note, 'data', e.data)) END
  FROM incident_events e""",
    "token": """SELECT CAST(u.day AS timestamptz), 'u', CAST(u.token_id AS bigint),
         (SELECT t.user_id FROM api_tokens t WHERE t.id = u.token_id), 'token.use', 'token:' || u.token_id,
         CAST(NULL AS jsonb), jsonb_build_object('uses', u.uses), CAST(NULL AS jsonb)
  FROM token_use u""",
}
PAGE = """
SELECT entry.at, entry.src, entry.id, entry.actor_id, usr.name AS actor, entry.action, entry.target, entry.before,
       entry.after, entry.detail
FROM (SELECT * FROM ({sources}) log
WHERE (CAST(:action AS text) IS NULL OR log.action = CAST(:action AS text)
       OR starts_with(log.action, CAST(:action AS text) || '.'))
  AND (CAST(:actor AS int) IS NULL OR log.actor_id = CAST(:actor AS int))
  AND (CAST(:target AS text) IS NULL OR log.target = CAST(:target AS text))
  AND (CAST(:since AS timestamptz) IS NULL OR log.at >= CAST(:since AS timestamptz))
  AND (CAST(:until AS timestamptz) IS NULL OR log.at < CAST(:until AS timestamptz))
  AND (CAST(:after_at AS timestamptz) IS NULL OR (log.at, log.id) < (CAST(:after_at AS timestamptz), :after_id)
       OR (log.at = CAST(:after_at AS timestamptz) AND log.id = :after_id AND log.src < :after_src))
ORDER BY log.at DESC, log.id DESC, log.src DESC
LIMIT :limit) entry LEFT JOIN users usr ON usr.id = entry.actor_id
ORDER BY entry.at DESC, entry.id DESC, entry.src DESC"""


def page_sql(action: str | None):
    """The page query over the sources an action filter can match (a constant gate would cost the merge)."""
    kind = action.split(".")[0] if action else None
    return _page(kind if kind in SOURCES else "audit" if kind else None)


@cache
def _page(kind: str | None):
    chosen = [sql for name, sql in SOURCES.items() if name == "audit" or kind in (None, name)]
    return text(PAGE.replace("{sources}", " UNION ALL ".join(chosen)))


def record(conn: Connection, action: str, target: str | None, actor_id: int | None = None,
           before: Any = None, after: Any = None, detail: Any = None) -> None:
    """Append an entry in the caller's transaction (it is written only if the change it records commits)."""
    conn.execute(text("INSERT INTO audit_log (actor_id, action, target, before, after, detail) VALUES "
                      "(:actor, :action, :target, CAST(:before AS jsonb), CAST(:after AS jsonb), "
                      "CAST(:detail AS jsonb))"),
                 {"actor": actor_id, "action": action, "target": target, "before": _json(before),
                  "after": _json(after), "detail": _json(detail)})


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value, default=str).decode()


Cursor = tuple[datetime, int, str]  # (at, id, src) of the last entry of a page


def entries(conn: Connection, *, action: str | None = None, actor_id: int | None = None, target: str | None = None,
            since: datetime | None = None, until: datetime | None = None, after: Cursor | None = None,
            limit: int = 100) -> list[dict]:
    """Entries newest first, filtered by action (an action or a prefix such as 'plan' or 'incident'), actor,
    target and time, after the keyset cursor (at, id, src) of the previous page."""
    rows = conn.execute(page_sql(action), {
        "action": action, "actor": actor_id, "target": target, "since": since, "until": until,
        "after_at": after[0] if after else None, "after_id": after[1] if after else 0,
        "after_src": after[2] if after else "", "limit": limit})
    return [dict(row._mapping) for row in rows]
