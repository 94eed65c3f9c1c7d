"""Request body limits: an oversized payload gets a clear 413 before the app reads it."""

import re

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
        limit = self.limit_for(scope["path"])
        length = dict(scope["headers"]).get(b"content-length")
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
