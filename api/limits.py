"""Request body limits: an oversized payload gets a clear 413 before the app reads it."""

import orjson

from api.errors import error_body


class BodyLimit:
    """Pure ASGI middleware: `limits` maps path prefixes to byte limits; the longest match wins."""

    def __init__(self, app, default: int, limits: dict[str, int] | None = None):
        self.app, self.default, self.limits = app, default, limits or {}

    def limit_for(self, path: str) -> int:
        matches = [prefix for prefix in self.limits if path.startswith(prefix)]
        return self.limits[max(matches, key=len)] if matches else self.default

    async def __call__(self, scope, receive, send):
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
    hint = ("split the file into smaller imports" if path.startswith("/incidents/bulk")
            else "send less per request; bulk files go to POST /incidents/bulk, which takes larger uploads")
    body = orjson.dumps(error_body("payload_too_large",
                                   f"The request body is larger than {limit:,} bytes: {hint}."))
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
