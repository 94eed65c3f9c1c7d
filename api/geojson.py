"""GeoJSON responses assembled from Feature texts that PostGIS already serialised."""

from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import JSONResponse

MEDIA_TYPE = "application/geo+json"


class GeoJSONResponse(JSONResponse):
    """A reply sent as application/geo+json. A JSONResponse, so OpenAPI documents the route's model as its body
    (a plain Response is documented as `type: string`); bytes already serialised go out as they are."""

    media_type = MEDIA_TYPE

    def render(self, content: Any) -> bytes:
        """Bytes (PostGIS's own GeoJSON text) unchanged; anything else as JSON."""
        return content if isinstance(content, bytes) else orjson.dumps(content)


def feature(text: str) -> GeoJSONResponse:
    """A Feature already serialised by PostGIS, as the reply."""
    return GeoJSONResponse(text.encode())


def feature_collection(request: Request, features: list[str], next_params: dict | None) -> GeoJSONResponse:
    """A FeatureCollection with self and (unless this is the last page) next links."""
    links = [{"rel": "self", "href": str(request.url), "type": MEDIA_TYPE}]
    if next_params is not None:
        links.append({"rel": "next", "href": str(request.url.include_query_params(**next_params)),
                      "type": MEDIA_TYPE})
    head = b'{"type":"FeatureCollection","numberReturned":%d,"links":%s,"features":[' % (
        len(features), orjson.dumps(links))
    return GeoJSONResponse(head + ",".join(features).encode() + b"]}")
