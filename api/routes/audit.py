"""GET /audit for administrators: the audit log (geo.audit), newest first, filtered and keyset-paged."""

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.deps import CurrentCaller, SyncEngine
from api.params import MAX_ID, MAX_PAGE, When, page_limit
from geo import audit
from geo.errors import InvalidInput

router = APIRouter(tags=["admin"])


class AuditEntry(BaseModel):
    """One entry: who did what to which target, when, with the values before and after."""

    at: datetime
    src: str = Field(description="where it is kept: 'a' the audit log, 'e' an incident's events, 'u' token use")
    id: int = Field(description="its id there (for token use: the token's id)")
    actor_id: int | None = Field(description="the user who acted (None: the command line, or a failed sign-in)")
    actor: str | None = Field(description="that user's name")
    action: str = Field(description="e.g. auth.sign_in, token.revoke, user.disable, plan.publish, incident.dispatch, "
                                    "token.use, incidents.import")
    target: str | None = Field(description="what it acted on, as kind:id (user:3, token:7, grid_version:2, incident:9)")
    before: Any = None
    after: Any = None
    detail: Any = None


class AuditPage(BaseModel):
    """A page of entries and the cursor of the next (None: this is the last)."""

    entries: list[AuditEntry]
    next: str | None = Field(description="pass as ?after= for the next page")


def _cursor(value: str | None) -> audit.Cursor | None:
    if value is None:
        return None
    try:
        at, entry_id, src = value.split("|")
        if src not in ("a", "e", "u"):
            raise ValueError(src)
        return datetime.fromisoformat(at), int(entry_id), src
    except ValueError:
        raise InvalidInput("after is the `next` value of the previous page.", field="after") from None


@router.get("/audit", response_model=AuditPage)
def audit_log(
    caller: CurrentCaller, engine: SyncEngine,
    action: Annotated[str | None, Query(
        max_length=64, pattern=r"^[a-z_]+(\.[a-z_]+)*$",
        description="an action, or a prefix of one: auth, token, plan, incident")] = None,
    actor_id: Annotated[int | None, Query(ge=1, le=MAX_ID, description="entries of this user")] = None,
    target: Annotated[str | None, Query(max_length=100, description="e.g. user:3, incident:9")] = None,
    since: Annotated[When | None, Query(description="from this time (inclusive)")] = None,
    until: Annotated[When | None, Query(description="to this time (exclusive)")] = None,
    after: Annotated[str | None, Query(max_length=100, pattern=r"^[^|]+\|[0-9]+\|[aeu]$",
                                       description="the previous page's `next`")] = None,
    limit: Annotated[int, Query(ge=1, description=f"entries per page (at most {MAX_PAGE})")] = 100,
) -> dict:
    """The audit log for admins: sign-ins, user, role and token changes, token use per day, plan edits and
    publishing, imports and every incident transition, newest first."""
    limit = page_limit(limit)
    with engine.connect() as conn:
        rows = audit.entries(conn, action=action, actor_id=actor_id, target=target, since=since, until=until,
                             after=_cursor(after), limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if more else None
    return {"entries": rows, "next": f"{last['at'].isoformat()}|{last['id']}|{last['src']}" if last else None}
