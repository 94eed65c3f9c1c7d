"""Headers for pages: a map page shows what its viewer may see, so browsers must neither cache it nor send its
address (which names areas and incidents) to other sites."""

PAGE_HEADERS = [(b"cache-control", b"no-store"), (b"referrer-policy", b"same-origin")]


class PageHeaders:
    """Pure ASGI middleware: adds PAGE_HEADERS to every reply under the page prefixes."""

    def __init__(self, app, prefixes: tuple[str, ...] = ("/maps", "/login")):
        """Wrap `app`."""
        self.app, self.prefixes = app, prefixes

    async def __call__(self, scope, receive, send):
        """Pass the request on, adding the headers to a page's reply."""
        if scope["type"] != "http" or not scope["path"].startswith(self.prefixes):
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *PAGE_HEADERS]}
            await send(message)

        await self.app(scope, receive, with_headers)
