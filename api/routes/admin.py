"""Users and tokens for administrators: list them, disable a user, revoke a token (effective at once)."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel

from api.deps import CurrentCaller, SyncEngine
from api.params import MAX_ID
from geo import auth

router = APIRouter(prefix="/admin", tags=["admin"])
UserId = Annotated[int, Path(ge=1, le=MAX_ID, description="User id")]
TokenId = Annotated[int, Path(ge=1, le=MAX_ID, description="Token id (from GET /admin/tokens)")]


class UserOut(BaseModel):
    """A user, and how many live tokens they hold."""

    id: int
    name: str
    role: str
    area_code: str | None
    created_at: datetime
    disabled_at: datetime | None
    live_tokens: int


class TokenOut(BaseModel):
    """A token, identified by its prefix (its value is never stored)."""

    id: int
    user_id: int
    user_name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    live: bool


@router.get("/users", responses={200: {"model": list[UserOut]}})
def list_users(caller: CurrentCaller, engine: SyncEngine) -> list[dict]:
    """Every user, with role, area, whether disabled and their live token count."""
    with engine.connect() as conn:
        return auth.list_users(conn)


@router.post("/users/{user_id}/disable", responses={200: {"model": list[TokenOut]}})
def disable_user(user_id: UserId, caller: CurrentCaller, engine: SyncEngine) -> list[dict]:
    """Disable a user: every token of theirs stops working at once, in every worker. Returns their tokens."""
    with engine.begin() as conn:
        auth.disable_user(conn, user_id, caller.id)
        return auth.list_tokens(conn, user_id)


@router.get("/tokens", responses={200: {"model": list[TokenOut]}})
def list_tokens(caller: CurrentCaller, engine: SyncEngine,
                user_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None) -> list[dict]:
    """Tokens, newest first (of one user with user_id): prefix, created, expires, revoked, last used."""
    with engine.connect() as conn:
        return auth.list_tokens(conn, user_id)


@router.post("/tokens/{token_id}/revoke", responses={200: {"model": TokenOut}})
def revoke_token(token_id: TokenId, caller: CurrentCaller, engine: SyncEngine) -> dict:
    """Revoke one token: it stops working at once, in every worker."""
    with engine.begin() as conn:
        auth.revoke_token(conn, token_id, caller.id)
        return next(t for t in auth.list_tokens(conn) if t["id"] == token_id)
