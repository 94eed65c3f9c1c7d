"""Request limits: an oversized payload gets a clear 413 before the app reads it, and a NUL character in the
path or query string a 400 before anything parses it."""

import re
from urllib.parse import parse_qsl, unquote

import orjson

from api.errors import error_body


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
    body = orjson.dumps(error_body("payload_too_large",
                                   f"The request body is larger than {limit:,} bytes: {hint}."))
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
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
        message = f"The {where} holds a NUL character (%00); remove it."
        if scope["path"].startswith("/open311/"):  # the GeoReport v2 error format
            body = orjson.dumps([{"code": 400, "description": message}])
        else:
            body = orjson.dumps(error_body("invalid_input", message, field))
        await send({"type": "http.response.start", "status": 400,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
