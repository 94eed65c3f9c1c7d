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
