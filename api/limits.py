"""Request limits: an oversized payload gets a clear 413 before the app reads it, a NUL character in the path
or query string a 400 before anything parses it, and intake beyond its rate a 429 with Retry-After; and the
last resort, a bug's 500 in the one error shape with a request id."""

import hashlib
import logging
import math
import re
import time
import uuid
from urllib.parse import parse_qsl, unquote

import orjson
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from api.errors import error_body

log = logging.getLogger("wangge.api")


class BodyLimit:
    """Pure ASGI middleware: `limits` maps path patterns (regular expressions matched from the start of the path)
    to byte limits; the first match wins."""

    def __init__(self, app, default: int, limits: dict[str, int] | None = None):
        """Wrap `app`; `limits` maps path patterns to byte limits, `default` applies elsewhere."""
        self.app, self.default = app, default
        self.limits = [(re.compile(pattern), limit) for pattern, limit in (limits or {}).items()]

    def limit_for(self, path: str) -> int:
        """The body limit of a path."""
        return next((limit for pattern, limit in self.limits if pattern.match(path)), self.default)

    async def __call__(self, scope, receive, send):
        """Refuse a body over the path's limit with 413, by Content-Length or while it streams."""
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is None and b"transfer-encoding" not in headers:
            return await self.app(scope, receive, send)  # no body (RFC 9112 §6.3): nothing to count
        limit = self.limit_for(scope["path"])
        if length is not None and length.isdigit() and int(length) > limit:
            return await _too_large(send, limit, scope["path"])
        received = 0
        rejected = False

        async def counting_receive():
            nonlocal received, rejected
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:  # chunked uploads without Content-Length
                    rejected = True
                    await _too_large(send, limit, scope["path"])
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if not rejected:
                await send(message)

        await self.app(scope, counting_receive, guarded_send)


async def _too_large(send, limit: int, path: str) -> None:
    if path.startswith("/incidents/bulk"):
        hint = "split the file into smaller imports"
    elif path.startswith("/plans"):
        hint = "import the plan file community by community (WANGGE_BULK_MAX_BYTES sets the limit)"
    else:
        hint = "send less per request; bulk files go to POST /incidents/bulk, which takes larger uploads"
    await send_error(send, path, 413, "payload_too_large", f"The request body is larger than {limit:,} bytes: {hint}.")


async def send_error(send, path: str, status: int, code: str, message: str, field: str | None = None,
                     headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """An error reply from a middleware, in the one error shape (Open311 paths: the GeoReport v2 error array)."""
    if path.startswith("/open311/"):
        body = orjson.dumps([{"code": status, "description": message}])
    else:
        body = orjson.dumps(error_body(code, message, field))
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class RejectNul:
    """Pure ASGI middleware: a NUL character in the path or query string is a 400 naming the parameter
    (PostgreSQL text cannot hold one, so it could only end in a database error)."""

    def __init__(self, app):
        """Wrap `app`."""
        self.app = app

    async def __call__(self, scope, receive, send):
        """Refuse a request whose path or query string holds a NUL."""
        query = scope.get("query_string", b"")
        if scope["type"] != "http" or not (b"%00" in query or b"\x00" in query or "\x00" in scope["path"]):
            return await self.app(scope, receive, send)
        pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
        field = next((name for name, value in pairs if "\x00" in name + value), None)
        where = f"parameter {field!r}" if field else "path" if "\x00" in unquote(scope["path"]) else "query string"
        await send_error(send, scope["path"], 400, "invalid_input",
                         f"The {where} holds a NUL character (%00); remove it.", field)


class RateLimit:
    """Pure ASGI middleware: POSTs to the intake paths (regular expressions) are counted per bearer token and per
    client address in moving windows held in this process (with N workers a client may reach N times the
    rate); beyond either, 429 with Retry-After. `per_token` and `per_address` are `limits` strings such as
    "60/minute"."""

    def __init__(self, app, paths: list[str], per_token: str, per_address: str):
        """Wrap `app`, limiting POSTs to `paths`."""
        self.app, self.paths = app, [re.compile(p) for p in paths]
        self.per_token: RateLimitItem = parse(per_token)
        self.per_address: RateLimitItem = parse(per_address)
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    async def __call__(self, scope, receive, send):
        """Count an intake POST, or refuse it with 429."""
        if scope["type"] != "http" or scope["method"] != "POST" or not any(p.match(scope["path"]) for p in self.paths):
            return await self.app(scope, receive, send)
        keys = [(self.per_address, "address:" + (scope.get("client") or ("?",))[0])]
        authorization = dict(scope["headers"]).get(b"authorization")
        if authorization:  # counted by a digest: the token itself is never kept
            keys.append((self.per_token, "token:" + hashlib.sha256(authorization).hexdigest()[:32]))
        route = "intake"  # one budget across the intake paths
        for item, key in keys:  # only requests let through are counted
            if not self.limiter.test(item, route, key):
                reset = self.limiter.get_window_stats(item, route, key).reset_time
                wait = max(1, math.ceil(reset - time.time()))
                who = "this token" if key.startswith("token:") else "this address"
                message = (f"Too many reports from {who}: at most {item} ({key.split(':')[0]}); "
                           f"retry in {wait} s.")
                await send_error(send, scope["path"], 429, "rate_limited", message,
                                 headers=[(b"retry-after", str(wait).encode())])
                return
        for item, key in keys:
            self.limiter.hit(item, route, key)
        await self.app(scope, receive, send)


class InternalErrors:
    """Pure ASGI middleware, outermost: an unexpected exception (a bug) becomes a 500 in the one error shape
    carrying a request id, logged once with its traceback under that id. The reply completes normally, so the
    client's keep-alive connection stays usable; a reply that had already started is cut off (nothing else can be
    done) and logged the same way."""

    def __init__(self, app):
        """Wrap `app`."""
        self.app = app

    async def __call__(self, scope, receive, send):
        """Pass the request on; answer a 500 if it raised."""
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except Exception:
            request_id = uuid.uuid4().hex[:16]
            log.exception("internal error %s: %s %s", request_id, scope["method"], scope["path"])
            if started:
                return
            await send_error(send, scope["path"], 500, "internal_error",
                             f"Something went wrong on our side (request id {request_id}); it is logged. Quote the "
                             "request id when you report it.", headers=[(b"x-request-id", request_id.encode())])
