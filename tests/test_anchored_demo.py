"""The demo anchored 400 days in the past and 400 days in the future: metrics, overdue, escalation and
responder freshness still agree with independent pandas computations, so the suite cannot go stale again."""

from datetime import timedelta

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from api.app import create_app
from api.settings import Settings
from geo.incidents import escalation
from geo.incidents.workflow import PENDING
from tests.conftest import DEMO_END, _throwaway_database, make_token
from tests.test_metrics import check, expected

STEPS_H = escalation.DEFAULT_STEPS_H


@pytest.fixture(scope="module", params=[-400, 400], ids=["400-days-ago", "400-days-ahead"])
def anchored(request):
    """(engine, client, anchor) for a fresh database holding the small demo whose year ends `param` days from now."""
    from fixtures import synth
    from fixtures.load import load
    from geo.db import sync_engine

    anchor = DEMO_END + timedelta(days=request.param)
    for url in _throwaway_database():
        engine = sync_engine(url)
        load(engine, lambda: synth.build(streets=2, end=anchor))
        with TestClient(create_app(Settings(database_url=url, escalation_interval_s=0))) as client:
            yield engine, client, anchor
        engine.dispose()


@pytest.fixture(scope="module")
def admin(anchored):
    return {"Authorization": f"Bearer {make_token(anchored[0], 'admin', None)}"}


def frame(engine) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql(text("SELECT * FROM incidents"), conn)


def target_level(overdue_h: pd.Series) -> pd.Series:
    """Escalation level for hours overdue, restated from geo/incidents/escalation.py's rule."""
    level = pd.Series(0, index=overdue_h.index)
    for n, hours in enumerate(STEPS_H, start=1):
        level[overdue_h > hours] = n
    return level


def test_health_reports_the_anchor(anchored):
    _, client, anchor = anchored
    assert pd.Timestamp(client.get("/health").json()["demo_as_of"]) == pd.Timestamp(anchor)


def test_the_year_ends_at_the_anchor_with_a_few_cases_late(anchored):
    engine, _, anchor = anchored
    f = frame(engine)
    assert f.reported_at.max() <= anchor and f.reported_at.min() >= anchor - timedelta(days=365)
    pending = f.status.isin(PENDING)
    late = pending & (f.due_at < anchor)
    assert pending.sum() > 0 and 0 < late.sum() < 0.15 * pending.sum()


def test_metrics_over_the_anchored_year_match_pandas(anchored, admin):
    engine, client, anchor = anchored
    year = {"from": (anchor.date() - timedelta(days=364)).isoformat(),
            "to": (anchor.date() + timedelta(days=1)).isoformat()}
    reply = client.get("/analysis/performance", params={"area": "110102001", **year}, headers=admin)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    bounds = [pd.Timestamp(body[k]) for k in ("from", "to", "as_of")]
    check(body, expected(frame(engine), "110102001", *bounds, child_len=12))
    assert body["totals"]["handled"] > 1000


def test_overdue_list_matches_the_database_clock(anchored, admin):
    engine, client, _ = anchored
    with engine.connect() as conn:
        want = conn.execute(text("SELECT count(*) FROM incidents WHERE grid_code LIKE '110102003%' "
                                 "AND status = ANY(:p) AND due_at < now()"), {"p": list(PENDING)}).scalar()
    reply = client.get("/incidents", params={"area": "110102003", "overdue": "true", "limit": 1000}, headers=admin)
    assert reply.status_code == 200, reply.text
    assert reply.json()["numberReturned"] == min(want, 1000)


def test_escalation_levels_stand_as_at_the_anchor_then_follow_the_clock(anchored):
    engine, _, anchor = anchored
    f = frame(engine)
    escalable = f.status.isin(PENDING) & f.grid_code.notna()
    at_anchor = target_level((anchor - f.due_at).dt.total_seconds() / 3600).where(escalable, 0)
    assert (f.escalation_level == at_anchor).all()
    with engine.begin() as conn:
        now = conn.execute(text("SELECT now()")).scalar()
        escalation.run(conn, now=now)
    after = frame(engine).set_index("id").escalation_level
    want = pd.concat([f.escalation_level, target_level((now - f.due_at).dt.total_seconds() / 3600)
                      .where(escalable, 0)], axis=1).max(axis=1)  # never lowered
    assert (after.reindex(f.id).to_numpy() == want.to_numpy()).all()


def test_responder_freshness_follows_the_database_clock(anchored, admin):
    engine, client, _ = anchored
    reply = client.get("/dispatch/nearest", params={"lon": 116.375, "lat": 39.935, "k": 20, "include_stale": "true"},
                       headers=admin)
    assert reply.status_code == 200, reply.text
    features = reply.json()["features"]
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, now() - position_at > interval '30 minutes' FROM responders "
                                 "WHERE id = ANY(:ids)"), {"ids": [f["id"] for f in features]}).all()
    assert len(features) == 20 and {f["id"]: f["properties"]["stale"] for f in features} == dict(rows)
    fresh = client.get("/dispatch/nearest", params={"lon": 116.375, "lat": 39.935, "k": 20}, headers=admin).json()
    assert [f["id"] for f in fresh["features"]] == [f["id"] for f in features if not f["properties"]["stale"]][:20]
    # The dispatch map says why its list is empty when every nearby position is stale.
    page = client.get("/maps/dispatch", params={"lon": 116.375, "lat": 39.935}, headers=admin)
    assert page.status_code == 200
    assert ("wg-all-stale" in page.text) == (not fresh["features"])
