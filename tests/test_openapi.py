"""The API contract as OpenAPI states it: the real error shape on every route, and docs that render offline."""

import re
from pathlib import Path

from tests import browser

SHOTS = Path(__file__).resolve().parent.parent / ".wangge" / "screenshots"


def _operations(spec):
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            yield f"{method.upper()} {path}", operation


def test_every_operation_documents_the_one_error_shape(client):
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas  # FastAPI's default shape is never what we send
    assert schemas["ErrorResponse"]["required"] == ["error"]
    assert {"code", "message", "field"} <= set(schemas["ErrorDetail"]["properties"])
    operations = dict(_operations(spec))
    assert len(operations) > 40
    for name, operation in operations.items():
        for status in ("400", "401", "404", "422"):
            content = operation["responses"][status]["content"]["application/json"]["schema"]
            assert content == {"$ref": "#/components/schemas/ErrorResponse"}, (name, status)


def test_an_error_reply_matches_the_documented_schema(client, admin_headers):
    reply = client.get("/grids/at", params={"lon": "x", "lat": 39.9}, headers=admin_headers)
    body = reply.json()
    assert reply.status_code in (400, 422)
    assert set(body) == {"error"} and {"code", "message", "field"} <= set(body["error"])
    assert body["error"]["field"] == "lon"


def test_docs_load_only_their_own_assets(client):
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        sources = re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r"url: '([^']+)'", html)
        assert sources, page
        assert all(s.startswith("/") for s in sources), (page, sources)  # nothing from a CDN
        for source in sources:
            assert client.get(source).status_code == 200, source


def test_swagger_ui_renders_offline_in_chromium(live_server):
    html = browser.dom(f"{live_server}/docs")
    # Swagger UI drew the operations from /openapi.json
    assert 'class="swagger-ui"' in html
    assert "/grids/at" in html and "/dispatch/nearest" in html
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.screenshot(f"{live_server}/docs", str(SHOTS / "docs.png"))
    assert (SHOTS / "docs.png").stat().st_size > 20_000


def _documented(spec, path, method="get", status="200"):
    """The schema of a route's reply, as OpenAPI states it, with $refs resolved one level at a time."""
    schemas = spec["components"]["schemas"]
    content = spec["paths"][path][method]["responses"][status]["content"]
    (media_type, body), = content.items()
    return media_type, schemas[body["schema"]["$ref"].rsplit("/", 1)[1]], schemas


def _resolve(schemas, schema):
    if "$ref" in schema:
        return schemas[schema["$ref"].rsplit("/", 1)[1]]
    for option in schema.get("anyOf", ()):
        if "$ref" in option:
            return schemas[option["$ref"].rsplit("/", 1)[1]]
    return schema


def _properties_schema(schemas, collection_or_feature):
    if "features" in collection_or_feature["properties"]:
        feature = _resolve(schemas, collection_or_feature["properties"]["features"]["items"])
    else:
        feature = collection_or_feature
    return _resolve(schemas, feature["properties"]["properties"])


def test_geojson_replies_carry_exactly_the_documented_properties(client, admin_headers):
    spec = client.get("/openapi.json").json()
    checks = [
        ("/areas/{code}", "/areas/110102001", {}),
        ("/areas/{code}/children", "/areas/110102001/children", {"limit": 3}),
        ("/areas/{code}/history", "/areas/110102001001001/history", {}),
        ("/grids/at", "/grids/at", {"lon": 116.3655, "lat": 39.9125}),
        ("/incidents", "/incidents", {"limit": 3}),
        ("/responders", "/responders", {"limit": 3}),
        ("/dispatch/nearest", "/dispatch/nearest", {"lon": 116.3655, "lat": 39.9125, "k": 3}),
    ]
    for template, url, params in checks:
        media_type, documented, schemas = _documented(spec, template)
        assert media_type == "application/geo+json", template
        reply = client.get(url, params=params, headers=admin_headers)
        assert reply.status_code == 200, (url, reply.text[:200])
        body = reply.json()
        assert set(body) <= set(documented["properties"]) and set(documented["required"]) <= set(body), template
        features = body.get("features", [body])
        assert features, url
        props = _properties_schema(schemas, documented)
        for feature in features:
            assert set(feature["properties"]) == set(props["properties"]), template


def test_health_documents_what_it_sends(client):
    spec = client.get("/openapi.json").json()
    _, documented, _ = _documented(spec, "/health")
    assert set(client.get("/health").json()) == set(documented["properties"])
