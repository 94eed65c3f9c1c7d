"""The API contract as OpenAPI states it: the real error shape on every route, the real reply shape of every
route (checked against real replies), and docs that render offline."""

import importlib
import pkgutil
import re
import time
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter
from sqlalchemy import text

import api.routes
from tests import browser
from tests.conftest import FIRST_DAY, LAST_DAY

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
        if "/open311/" in name:  # GeoReport v2: the spec's error array, in JSON or XML
            for status in ("400", "403", "404"):
                content = operation["responses"][status]["content"]
                assert content["application/json"]["schema"]["items"] == {"$ref": "#/components/schemas/Open311Error"}
                assert "text/xml" in content, (name, status)
            continue
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


# -- every reply documented, and documented as it is sent --------------------------------------------------

def _refers(schema) -> bool:
    """A JSON reply's schema names a model (a $ref, or an array of them), or the reply is a file download."""
    return ("$ref" in schema or "$ref" in (schema.get("items") or {})
            or schema == {"type": "string", "format": "binary"})


def test_every_operation_documents_its_reply(client):
    spec = client.get("/openapi.json").json()
    undocumented = []
    for name, operation in _operations(spec):
        if name.split(" ", 1)[1].startswith("/maps/"):  # HTML pages
            continue
        replies = {status: reply for status, reply in operation["responses"].items()
                   if status.startswith("2") and status != "204"}
        if not replies and "204" in operation["responses"]:
            continue
        assert replies, name
        for status, reply in replies.items():
            content = reply.get("content") or {}
            for media_type, body in content.items():
                schema = body.get("schema") or {}
                # JSON must name its model (the bare dict/str FastAPI infers does not count); other media a type
                documented = _refers(schema) if media_type.endswith("json") else "type" in schema
                if not documented:
                    undocumented.append(f"{name} {status} {media_type}")
            if not content:
                undocumented.append(f"{name} {status}")
    assert not undocumented, undocumented


def _model(method: str, path: str, status: int = 200):
    """The model the route itself documents for `status` (responses={status: {"model": ...}})."""
    for module in pkgutil.iter_modules(api.routes.__path__):
        router = importlib.import_module(f"api.routes.{module.name}").router
        for route in router.routes:
            if isinstance(route, APIRoute) and route.path == path and method.upper() in route.methods:
                return route.responses[status]["model"]
    raise AssertionError(f"no route {method} {path}")


def _fields(model: type[BaseModel]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


def _undocumented(value, data, where: str = "$"):
    """Keys of `data` (a reply) that the validated `value` has no field for, at any depth."""
    if isinstance(value, BaseModel) and isinstance(data, dict):
        names = {field.alias or name: name for name, field in type(value).model_fields.items()}
        for key, item in data.items():
            if key not in names:
                yield f"{where}.{key}"
            else:
                yield from _undocumented(getattr(value, names[key]), item, f"{where}.{key}")
    elif isinstance(value, list) and isinstance(data, list):
        for i, (v, d) in enumerate(zip(value, data, strict=True)):
            yield from _undocumented(v, d, f"{where}[{i}]")


def _check(client, reply, method: str, path: str, status: int = 200, absent: frozenset[str] = frozenset()):
    """The reply validates against the route's documented model, its top-level keys are exactly the model's
    fields (less the documented `absent` ones), and nothing deeper is undocumented either."""
    assert reply.status_code == status, (path, reply.text[:300])
    model = _model(method, path, status)
    body = reply.json()
    value = TypeAdapter(model).validate_python(body)
    pairs = list(zip(value, body, strict=True)) if isinstance(body, list) else [(value, body)]
    assert pairs, path  # the lists checked here are never empty
    for item, data in pairs:
        assert set(data) == _fields(type(item)) - absent, (path, set(data) ^ (_fields(type(item)) - absent))
    assert not list(_undocumented(value, body)), (path, list(_undocumented(value, body))[:10])
    return body


COMMUNITY = "110102003004"  # small: a proposal for it takes seconds (tests/test_propose.py)
STREET = "110102001"
OLD = 10**8  # max_age_s: every position counts
YEAR = {"from": FIRST_DAY.isoformat(), "to": (LAST_DAY + timedelta(days=1)).isoformat()}


def _job_done(client, headers, job_id, timeout=240):
    deadline = time.monotonic() + timeout
    while True:
        reply = client.get(f"/jobs/{job_id}", headers=headers)
        if reply.json()["status"] not in ("queued", "running"):
            return reply
        assert time.monotonic() < deadline, reply.json()
        time.sleep(0.1)


@pytest.fixture
def plan(client, admin_headers):
    """A fresh draft (a copy of the active version), discarded afterwards."""
    reply = client.post("/plans", json={"name": "openapi replies"}, headers=admin_headers)
    yield reply
    client.delete(f"/plans/{reply.json()['id']}", headers=admin_headers)


def test_plan_replies_are_the_documented_models(client, admin_headers, engine, plan):
    h = admin_headers
    created = _check(client, plan, "post", "/plans", 201)
    plan_id = created["id"]
    _check(client, client.get("/plans", headers=h), "get", "/plans")
    _check(client, client.get(f"/plans/{plan_id}", headers=h), "get", "/plans/{plan_id}")
    with engine.connect() as conn:
        code = conn.execute(text("SELECT code FROM areas WHERE version_id = :v AND level = 'grid' AND worker_id "
                                 "IS NOT NULL AND starts_with(code, :c) ORDER BY code LIMIT 1"),
                            {"v": plan_id, "c": STREET}).scalar_one()
    edit = {"revision": 0, "op": "set_attributes", "code": code, "kind": "commercial", "worker_id": None}
    edited = _check(client, client.post(f"/plans/{plan_id}/edits", json=edit, headers=h), "post",
                    "/plans/{plan_id}/edits")
    assert edited["grids"]["features"]
    grids = client.get(f"/plans/{plan_id}/grids", params={"community": code[:12]}, headers=h)
    assert grids.headers["content-type"] == "application/geo+json"
    _check(client, grids, "get", "/plans/{plan_id}/grids")
    _check(client, client.get(f"/plans/{plan_id}/validation", headers=h), "get", "/plans/{plan_id}/validation")
    fixed = client.post(f"/plans/{plan_id}/fix-slivers", json={"revision": edited["revision"]}, headers=h)
    revision = _check(client, fixed, "post", "/plans/{plan_id}/fix-slivers")["revision"]

    # a grid file: the community's grids as the plan has them, imported back, and as a new plan
    geojson = orjson.dumps({"type": "FeatureCollection", "features": grids.json()["features"]})
    upload = {**h, "Content-Type": "application/geo+json"}
    imported = client.post(f"/plans/{plan_id}/import", content=geojson, headers=upload,
                           params={"revision": revision})
    revision = _check(client, imported, "post", "/plans/{plan_id}/import")["revision"]
    from_file = client.post("/plans/from-file", content=geojson, headers=upload, params={"name": "openapi file"})
    try:
        _check(client, from_file, "post", "/plans/from-file", 201)
    finally:
        client.delete(f"/plans/{from_file.json()['id']}", headers=h)

    # jobs: a proposal runs to the end; another is cancelled at once
    proposal = client.post(f"/plans/{plan_id}/propose", json={"revision": revision, "area": COMMUNITY, "seed": 1},
                           headers=h)
    job = _check(client, proposal, "post", "/plans/{plan_id}/propose", 202)
    done = _check(client, _job_done(client, h, job["id"]), "get", "/jobs/{job_id}")
    assert done["status"] == "done" and done["result"], done
    # the community redrawn: grids added and removed, buildings and open incidents moved, workers changed
    diff = _check(client, client.get(f"/plans/{plan_id}/diff", headers=h), "get", "/plans/{plan_id}/diff")
    assert diff["grids"]["features"] and diff["moves"] and diff["workers"], diff["summary"]
    revision = client.get(f"/plans/{plan_id}", headers=h).json()["revision"]
    second = client.post(f"/plans/{plan_id}/propose", json={"revision": revision, "area": "110102"}, headers=h)
    cancelled = client.post(f"/jobs/{second.json()['id']}/cancel", headers=h)
    assert _check(client, cancelled, "post", "/jobs/{job_id}/cancel")["status"] == "cancelled"
    _job_done(client, h, second.json()["id"])


def test_analysis_replies_are_the_documented_models(client, admin_headers):
    h = admin_headers

    def get(path, **params):
        return client.get(path, params=params, headers=h)

    performance = _check(client, get("/analysis/performance", area="110102", **YEAR), "get", "/analysis/performance")
    assert performance["children"] and performance["by_department"] and performance["by_worker"]
    _check(client, get("/analysis/coverage", area=STREET), "get", "/analysis/coverage")
    staffing = _check(client, get("/analysis/staffing", area="110102", target=200), "get", "/analysis/staffing")
    assert staffing["grids_over"] and staffing["most_overloaded_workers"]
    covered = _check(client, get("/analysis/response-coverage", area=STREET, distance=100, max_age_s=OLD), "get",
                     "/analysis/response-coverage", absent=frozenset({"travel_time_s"}))  # a network-mode key
    assert covered["uncovered"]["features"]
    chart = get("/analysis/response-coverage/chart.svg", area=STREET, max_age_s=OLD)
    documented = client.get("/openapi.json").json()["paths"]["/analysis/response-coverage/chart.svg"]["get"]
    assert chart.headers["content-type"].split(";")[0] in documented["responses"]["200"]["content"]
    stationing = client.post("/analysis/stationing", headers=h,
                             json={"area": STREET, "k": 3, "distance": 120, "max_age_s": OLD})
    assert _check(client, stationing, "post", "/analysis/stationing")["lscp"]["posts"]
    hotspots = get("/analysis/hotspots", area="110102", by="grid", **YEAR)
    assert _check(client, hotspots, "get", "/analysis/hotspots")["features"]["features"]


def test_bulk_import_reply_is_the_documented_model(client, admin_headers):
    # nothing is filed (a point east of every grid, an unknown category), so no other test sees new incidents
    csv = b"lon,lat,category\n116.45,39.93,0101\n116.3655,39.9125,nope\n"
    reply = client.post("/incidents/bulk", content=csv, params={"filename": "openapi.csv"},
                        headers={**admin_headers, "Content-Type": "text/csv"})
    body = _check(client, reply, "post", "/incidents/bulk")
    assert body["imported"] == 0 and body["rejected_count"] == 2
    assert {"nearest_grid", "distance_m"} <= set(body["rejected"][0])


def test_open311_json_replies_are_the_documented_models(client, admin_headers):
    base = "/open311/v2"
    key = {"api_key": admin_headers["Authorization"].split()[1]}  # reads may need one; an admin's sees every area

    def get(path, **params):
        return client.get(base + path, params={**key, **params})

    _check(client, get("/discovery.json"), "get", base + "/discovery.{fmt}")
    assert _check(client, get("/services.json"), "get", base + "/services.{fmt}")
    _check(client, get("/services/0301.json"), "get", base + "/services/{code}.{fmt}")
    requests = _check(client, get("/requests.json"), "get", base + "/requests.{fmt}")
    assert requests
    one = get(f"/requests/{requests[0]['service_request_id']}.json")
    _check(client, one, "get", base + "/requests/{request_id}.{fmt}")
    documented = client.get("/openapi.json").json()["paths"][base + "/requests.{fmt}"]["get"]["responses"]["200"]
    for fmt in ("json", "xml"):
        media_type = get(f"/requests.{fmt}", service_request_id=requests[0]["service_request_id"])
        assert media_type.headers["content-type"].split(";")[0] in documented["content"], fmt
