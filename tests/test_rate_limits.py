"""Rate limits on intake: beyond the per-token or per-address rate, 429 with Retry-After in the route's own
error format, while other tokens, other routes and reads go on."""

from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.conftest import make_token


def test_intake_beyond_its_rate_is_429_with_retry_after(settings, engine, demo):
    from api.app import create_app

    limited = settings.model_copy(update={"intake_rate_per_token": "3/minute", "intake_rate_per_address": "5/minute"})
    first, second = make_token(engine, "reporter", "110102"), make_token(engine, "reporter", "110102")
    with engine.connect() as conn:
        before = conn.execute(text("SELECT count(*) FROM incidents")).scalar()
    with TestClient(create_app(limited)) as client:
        def report(token):
            return client.post("/incidents", json={"category": "0101", "lon": 116.36, "lat": 39.91},
                               headers={"Authorization": f"Bearer {token}"})

        statuses = [report(first).status_code for _ in range(4)]
        assert statuses[:3] == [201] * 3 and statuses[3] == 429
        refused = report(first)
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        assert refused.json()["error"]["code"] == "rate_limited" and "this token" in refused.json()["error"]["message"]
        assert [report(second).status_code for _ in range(2)] == [201, 201]  # another token, same address
        by_address = report(second)  # the address has now filed 5
        assert by_address.status_code == 429 and "this address" in by_address.json()["error"]["message"]
        assert client.get("/incidents", headers={"Authorization": f"Bearer {first}"}).status_code == 200  # reads go on
        open311 = client.post("/open311/v2/requests.json", data={"api_key": first, "service_code": "0101",
                                                                 "lat": "39.91", "long": "116.36"})
        assert open311.status_code == 429 and open311.json()[0]["code"] == 429 and open311.headers["Retry-After"]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM incidents")).scalar() == before + 5  # nothing refused was filed
