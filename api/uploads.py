"""File uploads sent as the raw request body, spooled to a temporary file under a size limit."""

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Request
from starlette.requests import ClientDisconnect

from geo.errors import InvalidInput, PayloadTooLarge


@asynccontextmanager
async def spooled(request: Request, limit: int, too_large: str, empty: str) -> AsyncIterator[Path | None]:
    """The body as a temporary file (None when the client went away); `too_large` and `empty` are the hints
    given with the 413 and the 400."""
    with tempfile.NamedTemporaryFile(prefix="wangge-upload-") as spool:
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:  # also enforced by the BodyLimit middleware; this covers apps without it
                    raise PayloadTooLarge(f"The upload is larger than the limit of {limit:,} bytes; {too_large}",
                                          field="body")
                spool.write(chunk)
        except ClientDisconnect:
            yield None  # the client went away (or the size limit cut it off)
            return
        if size == 0:
            raise InvalidInput(f"The request body is empty: {empty}", field="body")
        spool.flush()
        yield Path(spool.name)
