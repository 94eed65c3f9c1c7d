"""Users, API tokens and area scope: who may call, and which subtree they may see."""

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import Connection, String, bindparam, func, insert, select, update

from geo.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from geo.models import ROLES, ApiToken, Area, AuditLog, User
from geo.sql import Query

TOKEN_PREFIX = "wg_"


@dataclass(frozen=True)
class Caller:
    """The authenticated user, as every service function sees it."""

    id: int | None  # None: the command line's operator, who is no user of the service
    name: str
    role: str
    area_code: str | None  # None: the whole system

    @property
    def scope(self) -> str:
        """Code prefix of the subtree this caller may see ('' means everything)."""
        return self.area_code or ""

    def can_see(self, code: str) -> bool:
        """Whether an area code lies in the caller's scope."""
        return code.startswith(self.scope)

    def require_area(self, code: str | None, field: str, what: str = "area") -> None:
        """NotFound unless the code lies in the caller's scope: what is outside it does not exist for them."""
        if code is not None and not self.can_see(code):
            raise NotFound(f"No {what} {code} in your area.", field=field)

    @property
    def own_reports(self) -> int | None:
        """A reporter's user id (they see only the incidents they reported); None for everyone else."""
        return self.id if self.role == "reporter" else None

    @property
    def own_responder(self) -> int | None:
        """A grid worker's user id (they see only the responder linked to them); None for everyone else."""
        return self.id if self.role == "grid_worker" else None

    def require_role(self, *roles: str) -> None:
        """Forbidden unless the caller is admin or has one of `roles`."""
        if self.role != "admin" and self.role not in roles:
            raise Forbidden(f"Role {self.role!r} may not do this; it needs one of: {', '.join(roles)}.")


def hash_token(token: str) -> str:
    """The stored form of a token (SHA-256 hex)."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_user(conn: Connection, name: str, role: str, area_code: str | None) -> int:
    """Create a user bound to `area_code` (an existing district/street/community/grid code)."""
    if role not in ROLES:
        raise InvalidInput(f"Unknown role {role!r}; use one of: {', '.join(ROLES)}.", field="role")
    if area_code is None and role != "admin":
        raise InvalidInput("Only admins may be unbound; give --area CODE.", field="area")
    if area_code is not None:
        exists = conn.execute(select(Area.id).where(Area.code == area_code).limit(1)).first()
        if not exists:
            raise NotFound(f"No area with code {area_code!r}; list codes with GET /areas/{{code}}/children.",
                           field="area")
    user_id = conn.execute(
        insert(User).values(name=name, role=role, area_code=area_code).returning(User.id)
    ).scalar_one()
    conn.execute(insert(AuditLog).values(action="user.create", target=f"user:{user_id}",
                                         detail={"role": role, "area_code": area_code}))
    return user_id


def issue_token(conn: Connection, user_id: int) -> str:
    """Create a new bearer token for the user; only its hash is stored, so show it once."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    conn.execute(insert(ApiToken).values(user_id=user_id, token_hash=hash_token(token), prefix=token[:10]))
    conn.execute(insert(AuditLog).values(action="token.issue", target=f"user:{user_id}"))
    return token


def get_user_id(conn: Connection, name: str) -> int | None:
    """The id of the user with this name, or None."""
    return conn.execute(select(User.id).where(User.name == name)).scalar_one_or_none()


_RESOLVE = Query(
    select(User.id, User.name, User.role, User.area_code)
    .join(ApiToken, ApiToken.user_id == User.id)
    .where(
        ApiToken.token_hash == bindparam("token_hash", type_=String),
        ApiToken.revoked_at.is_(None),
        User.disabled_at.is_(None),
        (ApiToken.expires_at.is_(None)) | (ApiToken.expires_at > func.now()),
    )
)


async def resolve_token(conn, token: str | None) -> Caller:
    """The caller behind a bearer token (asyncpg connection), or Unauthorized with how to get one."""
    if not token:
        raise Unauthorized("Missing bearer token. Send 'Authorization: Bearer <token>'; "
                           "create one with `wangge users create --role ROLE --area CODE`.")
    row = await _RESOLVE.fetchrow(conn, token_hash=hash_token(token))
    if row is None:
        raise Unauthorized("Invalid, expired or revoked token. Create a new one with `wangge users create`.")
    return Caller(*row)


def revoke_tokens(conn: Connection, user_id: int) -> int:
    """Revoke every live token of a user; returns how many."""
    result = conn.execute(update(ApiToken).where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
                          .values(revoked_at=func.now()))
    return result.rowcount
