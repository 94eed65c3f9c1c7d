"""Users, API tokens and area scope: who may call, and which subtree they may see."""

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache

from pwdlib import PasswordHash
from sqlalchemy import Connection, func, insert, select, text, update

from geo import audit
from geo.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from geo.models import ROLES, ApiToken, Area, User
from geo.sql import Query

TOKEN_PREFIX = "wg_"


@dataclass(frozen=True)
class Caller:
    """The authenticated user, as every service function sees it."""

    id: int | None  # None: the command line's operator, who is no user of the service
    name: str
    role: str
    area_code: str | None  # None: the whole system
    token_id: int | None = field(default=None, compare=False)  # the token this request came with

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


def create_user(conn: Connection, name: str, role: str, area_code: str | None, actor_id: int | None = None) -> int:
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
    audit.record(conn, "user.create", f"user:{user_id}", actor_id,
                 after={"name": name, "role": role, "area_code": area_code})
    return user_id


def issue_token(conn: Connection, user_id: int, lifetime: timedelta | None = None, kind: str = "api",
                actor_id: int | None = None) -> str:
    """Create a new bearer token for the user, valid for `lifetime` (None: until revoked); only its hash is
    stored, so show it once. `kind` 'session' marks a sign-in's cookie."""
    return _issue(conn, user_id, lifetime, kind, actor_id)[0]


def _issue(conn: Connection, user_id: int, lifetime: timedelta | None, kind: str,
           actor_id: int | None) -> tuple[str, int]:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires = None if lifetime is None else func.now() + lifetime
    token_id = conn.execute(insert(ApiToken).values(
        user_id=user_id, token_hash=hash_token(token), prefix=token[:10], expires_at=expires, kind=kind,
    ).returning(ApiToken.id)).scalar_one()
    audit.record(conn, "token.issue", f"token:{token_id}", actor_id, after={
        "user_id": user_id, "kind": kind, "lifetime_s": None if lifetime is None else lifetime.total_seconds()})
    return token, token_id


@cache
def _passwords() -> PasswordHash:
    return PasswordHash.recommended()  # argon2id with pwdlib's recommended parameters


@cache
def _no_user_hash() -> str:
    return _passwords().hash(secrets.token_urlsafe(16))


def set_password(conn: Connection, user_id: int, password: str, actor_id: int | None = None) -> None:
    """Set a user's sign-in password (stored as an argon2 hash); at least 8 characters."""
    if len(password) < 8:
        raise InvalidInput("A password needs at least 8 characters.", field="password")
    done = conn.execute(update(User).where(User.id == user_id).values(password_hash=_passwords().hash(password))
                        .returning(User.id)).scalar_one_or_none()
    if done is None:
        raise NotFound(f"No user {user_id}; list them with `wangge users list`.", field="user_id")
    audit.record(conn, "user.password", f"user:{user_id}", actor_id, after={"password": "set"})


def sign_in(conn: Connection, name: str, secret: str, address: str, lifetime: timedelta) -> str | None:
    """A new session token for an enabled user whose password (or one of whose live tokens) is `secret`, else
    None. Both outcomes are audited; a wrong user name costs as long as a wrong password."""
    user = conn.execute(select(User.id, User.password_hash).where(User.name == name, User.disabled_at.is_(None))
                        ).first()
    method = None
    if user is not None and user.password_hash and _passwords().verify(secret, user.password_hash):
        method = "password"
    elif user is None or not user.password_hash:
        _passwords().verify(secret, _no_user_hash())
    if method is None and user is not None and secret.startswith(TOKEN_PREFIX):
        live = conn.execute(select(ApiToken.id).where(
            ApiToken.token_hash == hash_token(secret), ApiToken.user_id == user.id, ApiToken.kind == "api",
            ApiToken.revoked_at.is_(None), (ApiToken.expires_at.is_(None)) | (ApiToken.expires_at > func.now()),
        )).first()
        method = "token" if live else None
    if method is None or user is None:
        audit.record(conn, "auth.sign_in_failed", f"user:{user.id}" if user else None,
                     detail={"name": name, "address": address})
        return None
    token, token_id = _issue(conn, user.id, lifetime, "session", user.id)
    audit.record(conn, "auth.sign_in", f"user:{user.id}", user.id,
                 detail={"method": method, "address": address, "token_id": token_id})
    return token


def sign_out(conn: Connection, token: str) -> None:
    """Revoke a session token (at once, in every worker); nothing happens for an unknown one."""
    row = conn.execute(update(ApiToken).where(ApiToken.token_hash == hash_token(token), ApiToken.kind == "session",
                                              ApiToken.revoked_at.is_(None))
                       .values(revoked_at=func.now()).returning(ApiToken.id, ApiToken.user_id)).first()
    if row is not None:
        audit.record(conn, "auth.sign_out", f"token:{row.id}", row.user_id)
        _announce(conn)


def get_user_id(conn: Connection, name: str) -> int | None:
    """The id of the user with this name, or None."""
    return conn.execute(select(User.id).where(User.name == name)).scalar_one_or_none()


# Resolving a token also stamps its last use (a cached token is resolved again after token_cache_s).
_RESOLVE = Query(text("""
UPDATE api_tokens t SET last_used_at = now() FROM users u
WHERE t.token_hash = CAST(:token_hash AS text) AND u.id = t.user_id AND t.revoked_at IS NULL
  AND u.disabled_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now())
RETURNING u.id, u.name, u.role, u.area_code, t.expires_at, t.id AS token_id"""))
# Revocations and disabled users are announced on this channel, so that every worker drops its token cache.
TOKENS_CHANNEL = "wangge_tokens"


async def resolve_token(conn, token: str | None) -> Caller:
    """The caller behind a bearer token (asyncpg connection), or Unauthorized with how to get one."""
    caller, _ = await resolve_token_until(conn, token)
    return caller


async def resolve_token_until(conn, token: str | None) -> tuple[Caller, datetime | None]:
    """resolve_token, and when the token expires (None: never)."""
    if not token:
        raise Unauthorized("Missing bearer token. Send 'Authorization: Bearer <token>'; "
                           "create one with `wangge users create --role ROLE --area CODE`.")
    row = await _RESOLVE.fetchrow(conn, token_hash=hash_token(token))
    if row is None:
        raise Unauthorized("Invalid, expired or revoked token. Create a new one with `wangge users create`.")
    return Caller(row["id"], row["name"], row["role"], row["area_code"], row["token_id"]), row["expires_at"]


def _announce(conn: Connection) -> None:
    """Tell every worker to drop its token cache when this transaction commits."""
    conn.execute(text(f"NOTIFY {TOKENS_CHANNEL}"))


def revoke_tokens(conn: Connection, user_id: int, actor_id: int | None = None) -> int:
    """Revoke every live token of a user, at once in every worker; returns how many."""
    ids = conn.execute(update(ApiToken).where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
                       .values(revoked_at=func.now()).returning(ApiToken.id)).scalars().all()
    audit.record(conn, "token.revoke", f"user:{user_id}", actor_id, before={"live": sorted(ids)}, after={"live": []})
    _announce(conn)
    return len(ids)


def revoke_token(conn: Connection, token_id: int, actor_id: int | None = None) -> None:
    """Revoke one token by its id (NotFound if there is no live token with it)."""
    user_id = conn.execute(update(ApiToken).where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
                           .values(revoked_at=func.now()).returning(ApiToken.user_id)).scalar_one_or_none()
    if user_id is None:
        raise NotFound(f"No live token {token_id}; list them with `wangge tokens list`.", field="token_id")
    audit.record(conn, "token.revoke", f"token:{token_id}", actor_id, before={"revoked": False},
                 after={"revoked": True}, detail={"user_id": user_id})
    _announce(conn)


def disable_user(conn: Connection, user_id: int, actor_id: int | None = None) -> None:
    """Disable a user (their tokens stop working at once, and new ones cannot be resolved)."""
    done = conn.execute(update(User).where(User.id == user_id, User.disabled_at.is_(None))
                        .values(disabled_at=func.now()).returning(User.id)).scalar_one_or_none()
    if done is None:
        raise NotFound(f"No enabled user {user_id}; list them with `wangge users list`.", field="user_id")
    audit.record(conn, "user.disable", f"user:{user_id}", actor_id, before={"disabled": False},
                 after={"disabled": True})
    revoke_tokens(conn, user_id, actor_id)


def list_users(conn: Connection) -> list[dict]:
    """Every user with their live token count."""
    rows = conn.execute(text("""
        SELECT u.id, u.name, u.role, u.area_code, u.created_at, u.disabled_at,
               count(t.id) FILTER (WHERE t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now()))
                   AS live_tokens
        FROM users u LEFT JOIN api_tokens t ON t.user_id = u.id GROUP BY u.id ORDER BY u.id"""))
    return [_plain(row) for row in rows]


def list_tokens(conn: Connection, user_id: int | None = None) -> list[dict]:
    """Tokens (never their value: the prefix identifies them), newest first, optionally of one user."""
    rows = conn.execute(text("""
        SELECT t.id, t.user_id, u.name AS user_name, t.prefix, t.created_at, t.expires_at, t.revoked_at,
               t.last_used_at,
               (t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now())) AS live
        FROM api_tokens t JOIN users u ON u.id = t.user_id
        WHERE CAST(:user AS int) IS NULL OR t.user_id = CAST(:user AS int)
        ORDER BY t.id DESC"""), {"user": user_id})
    return [_plain(row) for row in rows]


def _plain(row) -> dict:
    return {key: value.isoformat() if isinstance(value, datetime) else value for key, value in row._mapping.items()}
