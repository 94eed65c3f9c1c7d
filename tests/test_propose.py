"""Automatic balanced drafts and background jobs: checked with shapely/geopandas on data read from PostGIS."""

import itertools
import random
import time

import geopandas as gpd
import numpy as np
import psycopg
import pytest
import shapely
from sqlalchemy import text
from sqlalchemy.engine import make_url

from tests.conftest import make_token

COMMUNITY = "110102003004"
DISTRICT = "110102"
TARGET, TOLERANCE = 300, 0.15
LO, HI = TARGET * (1 - TOLERANCE), TARGET * (1 + TOLERANCE)


@pytest.fixture(scope="module")
def plan(client, admin_headers):
    """One draft shared by the tests here (each reads the current revision first); discarded at the end."""
    plan = client.post("/plans", json={"name": "proposal tests"}, headers=admin_headers).json()
    yield plan["id"]
    client.delete(f"/plans/{plan['id']}", headers=admin_headers)


def revision(client, headers, plan_id) -> int:
    return client.get(f"/plans/{plan_id}", headers=headers).json()["revision"]


def wait(client, headers, job_id, timeout=240, until=lambda job: job["status"] not in ("queued", "running")):
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/jobs/{job_id}", headers=headers).json()
        if until(job):
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']} after {timeout} s: {job}"
        time.sleep(0.05)


def grids_of(engine, plan_id, prefix=""):
    with engine.connect() as conn:
        return gpd.read_postgis(text(
            "SELECT code, households, geom FROM areas WHERE version_id = :v AND level = 'grid' "
            "AND starts_with(code, :p) ORDER BY code"), conn, geom_col="geom", params={"v": plan_id, "p": prefix})


def community_geom(engine, code):
    with engine.connect() as conn:
        return gpd.read_postgis(text("SELECT geom FROM areas WHERE code = :c AND version_id IS NULL"), conn,
                                geom_col="geom", params={"c": code}).geometry.iloc[0]


def households_by_sjoin(engine, grids):
    """Each building counts once, in the lowest-coded grid covering its point-on-surface (geopandas)."""
    with engine.connect() as conn:
        buildings = gpd.read_postgis(text("SELECT id, households, geom FROM buildings"), conn, geom_col="geom")
    points = buildings.set_geometry(buildings.geometry.representative_point())
    hits = gpd.sjoin(points, grids[["code", "geom"]], predicate="intersects")
    owner = hits.sort_values("code").drop_duplicates("id")
    return owner.groupby("code")["households"].sum().reindex(grids["code"], fill_value=0)


def job_lock_held(engine, job_id) -> bool:
    from geo.jobs import LOCK_CLASS

    with engine.connect() as conn:
        return conn.execute(text("SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = :k "
                                 "AND objid = :id AND objsubid = 2)"), {"k": LOCK_CLASS, "id": job_id}).scalar()


def test_propose_one_community_tiles_it_with_balanced_grids(client, admin_headers, engine, plan):
    before = grids_of(engine, plan)
    rev = revision(client, admin_headers, plan)
    reply = client.post(f"/plans/{plan}/propose", headers=admin_headers,
                        json={"revision": rev, "area": COMMUNITY, "seed": 7})
    assert reply.status_code == 202, reply.text
    job = reply.json()
    assert reply.headers["location"] == f"/jobs/{job['id']}" and job["kind"] == "propose"
    assert {"rel": "self", "href": f"/jobs/{job['id']}"} in job["links"]
    assert job["params"] == {"plan_id": plan, "revision": rev, "area": COMMUNITY, "target": TARGET,
                             "tolerance": TOLERANCE, "seed": 7}
    job = wait(client, admin_headers, job["id"])
    assert job["status"] == "done", job
    assert job["progress"] == 1 and job["started_at"] and job["finished_at"] and job["error"] is None
    result = job["result"]
    assert result["revision"] == rev + 1 == revision(client, admin_headers, plan)

    community = community_geom(engine, COMMUNITY)
    after = grids_of(engine, plan)
    mine = after[after["code"].str.startswith(COMMUNITY)].reset_index(drop=True)
    geoms = list(mine.geometry)
    # tiles the community: union = community, no overlaps, nothing outside it
    union = shapely.union_all(geoms)
    assert shapely.symmetric_difference(union, community).area <= 1e-6 * community.area
    assert abs(sum(g.area for g in geoms) - community.area) <= 1e-6 * community.area
    for a, b in itertools.combinations(geoms, 2):
        assert shapely.intersection(a, b).area <= 1e-9 * community.area
    for g in geoms:
        assert shapely.difference(g, community).area <= 1e-9 * g.area
        assert shapely.get_num_geometries(g) == 1 and g.geoms[0].is_valid  # one connected polygon
    # households: an independent geopandas recount equals what is stored and what the job reports
    counted = households_by_sjoin(engine, after)
    assert counted[mine["code"]].tolist() == mine["households"].tolist()
    reported = {g["code"]: g["households"] for g in result["per_grid"]}
    assert reported == dict(zip(mine["code"], mine["households"], strict=False))
    total = int(counted[mine["code"]].sum())
    assert len(mine) == max(1, round(total / TARGET)) == result["grids"] and result["communities"] == 1
    explained = {e["code"] for e in result["explanations"]}
    for code, n in zip(mine["code"], mine["households"], strict=False):
        assert LO <= n <= HI or code in explained
    assert result["within_band"] == len(mine) - len(explained)
    # other communities are untouched

    def others(g):
        return g[~g["code"].str.startswith(COMMUNITY)].reset_index(drop=True)

    assert others(after)["code"].tolist() == others(before)["code"].tolist()
    assert others(after).geom_equals(others(before)).all()
    try:
        from geo.planning import validation as plan_validation
    except ImportError:
        return
    from geo.auth import Caller

    with engine.connect() as conn:
        findings = plan_validation.validate(conn, plan, Caller(0, "t", "admin", COMMUNITY))["features"]
    bad = [f["properties"] for f in findings if f["properties"]["severity"] in ("error", "fixable")]
    assert bad == []


def test_same_seed_same_draft(engine, demo):
    from geo.planning import propose

    with engine.connect() as conn:
        polygon, ids, xy, hh, roads = propose.community_inputs(conn, COMMUNITY)
    a = propose.draft_community(polygon, xy, hh, roads, rng=random.Random("7:x"))
    b = propose.draft_community(polygon, xy, hh, roads, rng=random.Random("7:x"))
    assert [g.wkb for g in a.geoms] == [g.wkb for g in b.geoms] and a.households == b.households


def test_cancel_a_district_proposal_leaves_the_plan_unchanged(client, admin_headers, engine, plan):
    rev = revision(client, admin_headers, plan)
    before = grids_of(engine, plan)
    job = client.post(f"/plans/{plan}/propose", headers=admin_headers,
                      json={"revision": rev, "area": DISTRICT}).json()
    assert isinstance(job["params"]["seed"], int)  # a random seed, recorded so the draft can be reproduced
    busy = client.post(f"/plans/{plan}/propose", headers=admin_headers, json={"revision": rev, "area": DISTRICT})
    assert busy.status_code == 409 and f"job {job['id']}" in busy.json()["error"]["message"]
    # progress: a fraction of the communities done, and a message naming the community being drafted
    running = wait(client, admin_headers, job["id"],
                   until=lambda j: j["progress"] > 0 or j["status"] not in ("queued", "running"))
    assert running["status"] == "running" and 0 < running["progress"] < 1
    assert running["message"].startswith("community 110102") and " of 261)" in running["message"]
    reply = client.post(f"/jobs/{job['id']}/cancel", headers=admin_headers)
    assert reply.status_code == 200 and reply.json()["status"] == "cancelled"
    deadline = time.monotonic() + 60
    while job_lock_held(engine, job["id"]):  # the worker lets go of the job once it has stopped
        assert time.monotonic() < deadline, "the cancelled job did not stop"
        time.sleep(0.1)
    assert client.get(f"/jobs/{job['id']}", headers=admin_headers).json()["status"] == "cancelled"
    assert revision(client, admin_headers, plan) == rev
    after = grids_of(engine, plan)
    assert after["code"].tolist() == before["code"].tolist() and after.geom_equals(before).all()
    again = client.post(f"/jobs/{job['id']}/cancel", headers=admin_headers)
    assert again.status_code == 409 and "already cancelled" in again.json()["error"]["message"]


def test_a_plan_edited_meanwhile_fails_the_job_and_keeps_the_edit(client, admin_headers, engine, plan):
    from geo.planning import plans

    rev = revision(client, admin_headers, plan)
    stale = client.post(f"/plans/{plan}/propose", headers=admin_headers,
                        json={"revision": rev + 5, "area": COMMUNITY})
    assert stale.status_code == 409
    assert f"at revision {rev}, but the proposal was based on revision {rev + 5}" in stale.json()["error"]["message"]
    before = grids_of(engine, plan, COMMUNITY)
    with engine.begin() as conn:  # an edit in progress: holds the plan row until it commits
        plans.bump(conn, plan, rev)
        job = client.post(f"/plans/{plan}/propose", headers=admin_headers,
                          json={"revision": rev, "area": COMMUNITY}).json()
    job = wait(client, admin_headers, job["id"])
    assert job["status"] == "failed" and job["result"] is None
    assert "changed while the proposal was running" in job["error"] and "nothing was written" in job["error"]
    assert revision(client, admin_headers, plan) == rev + 1
    after = grids_of(engine, plan, COMMUNITY)
    assert after["code"].tolist() == before["code"].tolist() and after.geom_equals(before).all()


def test_jobs_are_scoped_and_only_writers_cancel(client, engine, plan):
    from geo.auth import create_user, issue_token

    with engine.begin() as conn:
        creator = create_user(conn, "job-creator", "planner", "110102001")
        planner = issue_token(conn, creator)
        job_id = conn.execute(text(
            "INSERT INTO jobs (kind, status, params, created_by) VALUES ('propose', 'queued', "
            "CAST(:p AS jsonb), :u) RETURNING id"), {"p": '{"area": "110102001001"}', "u": creator}).scalar_one()
    try:
        def headers(token):
            return {"Authorization": f"Bearer {token}"}

        assert client.get(f"/jobs/{job_id}", headers=headers(planner)).status_code == 200
        inside = make_token(engine, "supervisor", "110102001")
        outside = make_token(engine, "supervisor", "110102003")
        dispatcher = make_token(engine, "dispatcher", "110102")
        assert client.get(f"/jobs/{job_id}", headers=headers(inside)).json()["id"] == job_id
        reply = client.get(f"/jobs/{job_id}", headers=headers(outside))
        assert reply.status_code == 404 and f"No job {job_id} that you can see" in reply.json()["error"]["message"]
        assert client.get(f"/jobs/{job_id}", headers=headers(dispatcher)).status_code == 403  # not a plan reader
        denied = client.post(f"/jobs/{job_id}/cancel", headers=headers(inside))
        assert denied.status_code == 403 and "planner" in denied.json()["error"]["message"]
        other_planner = make_token(engine, "planner", "110102")
        done = client.post(f"/jobs/{job_id}/cancel", headers=headers(other_planner)).json()
        assert done["status"] == "cancelled" and done["message"].startswith("cancelled by ")
        # a planner cannot propose outside their area, a dispatcher not at all; an area must be a code
        rev = revision(client, headers(planner), plan)
        far = client.post(f"/plans/{plan}/propose", headers=headers(planner),
                          json={"revision": rev, "area": "110102003001"})
        assert far.status_code == 404
        assert far.json()["error"]["message"] == "No area 110102003001 in your scope (110102001)."
        nope = client.post(f"/plans/{plan}/propose", headers=headers(dispatcher),
                           json={"revision": rev, "area": "110102001001"})
        assert nope.status_code == 403 and "planner" in nope.json()["error"]["message"]
        bad = client.post(f"/plans/{plan}/propose", headers=headers(planner),
                          json={"revision": rev, "area": "1101020010"})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "area"
    finally:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM jobs WHERE id = :id"), {"id": job_id})


def test_restart_fails_jobs_no_live_service_owns(settings, engine, database_url):
    from fastapi.testclient import TestClient

    from api.app import create_app
    from geo.jobs import LOCK_CLASS

    with engine.begin() as conn:
        ids = [conn.execute(text("INSERT INTO jobs (kind, status, params) VALUES ('propose', :s, '{}') RETURNING id"),
                            {"s": s}).scalar_one() for s in ("running", "queued", "running")]
    owner = psycopg.connect(make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False),
                            autocommit=True)
    try:
        owner.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_CLASS, ids[2]))  # a live service still runs this one
        with TestClient(create_app(settings)):
            pass
        with engine.connect() as conn:
            rows = {r.id: r for r in conn.execute(text("SELECT id, status, error, finished_at FROM jobs "
                                                       "WHERE id = ANY(:ids)"), {"ids": ids})}
        for job_id, was in zip(ids[:2], ("running", "queued"), strict=False):
            assert rows[job_id].status == "failed" and rows[job_id].finished_at is not None
            assert rows[job_id].error.startswith(f"The service restarted while this job was {was}")
        assert rows[ids[2]].status == "running" and rows[ids[2]].error is None
    finally:
        owner.close()
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM jobs WHERE id = ANY(:ids)"), {"ids": ids})


def test_a_building_bigger_than_the_band_gets_its_own_grid_and_an_explanation():
    from geo.planning import propose

    rng = np.random.default_rng(5)
    community = shapely.Polygon([(116.30, 39.90), (116.31, 39.90), (116.31, 39.905), (116.305, 39.91),
                                 (116.30, 39.91)])
    xy = np.column_stack([116.30 + rng.random(400) * 0.01, 39.90 + rng.random(400) * 0.01])
    xy = xy[shapely.contains_xy(community, xy[:, 0], xy[:, 1])]
    hh = np.full(len(xy), 6)
    hh[0] = 500  # no grid of 300 ± 15 % can hold it
    draft = propose.draft_community(community, xy, hh, rng=random.Random(1), label="test community")
    assert shapely.symmetric_difference(shapely.union_all(draft.geoms), community).area <= 1e-9 * community.area
    assert abs(sum(g.area for g in draft.geoms) - community.area) <= 1e-9 * community.area
    points = shapely.points(xy)
    counted = [int(hh[shapely.covers(g, points)].sum()) for g in draft.geoms]
    assert counted == draft.households and sum(counted) == hh.sum()
    with_big = [i for i, g in enumerate(draft.geoms) if g.covers(points[0])]
    assert len(with_big) == 1
    assert draft.households[with_big[0]] > HI and draft.big == {0: 500}
    assert all(LO <= n <= HI for i, n in enumerate(draft.households) if i != with_big[0])
    assert draft.k == 1 + round((hh.sum() - 500) / TARGET)
    assert "more households than one grid allows" in draft.notes[0]
    for g in draft.geoms:
        assert shapely.get_num_geometries(g) == 1


def test_karhula_grids_follow_roads(scratch_url):
    """The network demo (real OSM roads and buildings): proposing its community through the API gives grids
    whose boundaries lie along roads far more than the same partition without the road blocks."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.settings import Settings
    from fixtures import network_demo
    from geo.db import sync_engine
    from geo.planning import propose

    engine = sync_engine(scratch_url)
    try:
        network_demo.load(engine)
        community = network_demo.COMMUNITY["code"]
        headers = {"Authorization": f"Bearer {make_token(engine, 'admin', None)}"}
        with TestClient(create_app(Settings(database_url=scratch_url, escalation_interval_s=0))) as client:
            plan = client.post("/plans", json={"name": "karhula"}, headers=headers).json()
            job = client.post(f"/plans/{plan['id']}/propose", headers=headers,
                              json={"revision": 0, "area": community, "seed": 3}).json()
            job = wait(client, headers, job["id"], timeout=120)
            assert job["status"] == "done", job
            grids = grids_of(engine, plan["id"], community)
            client.delete(f"/plans/{plan['id']}", headers=headers)
        with engine.connect() as conn:
            roads = gpd.read_postgis(text("SELECT e.geom FROM road_edges e JOIN road_networks n ON n.id = e.network_id "
                                          "WHERE n.name = 'karhula'"), conn, geom_col="geom")
            polygon, ids, xy, hh, road_lines = propose.community_inputs(conn, community)
        metric = network_demo.METRIC
        near_road = shapely.union_all(roads.to_crs(metric).geometry.to_numpy()).buffer(5)  # within 5 m of a road
        outline = gpd.GeoSeries([polygon], crs=4326).to_crs(metric).iloc[0].boundary.buffer(0.01)

        def share_on_roads(geoms) -> float:
            lines = gpd.GeoSeries(list(geoms), crs=4326).to_crs(metric).boundary
            inner = shapely.difference(shapely.union_all(lines.to_numpy()), outline)  # cuts, not the outline
            return shapely.intersection(inner, near_road).length / inner.length

        assert len(grids) == round(hh.sum() / TARGET)
        assert shapely.symmetric_difference(shapely.union_all(grids.geometry.to_numpy()), polygon).area \
            <= 1e-6 * polygon.area
        with_roads = share_on_roads(grids.geometry)
        plain = propose.draft_community(polygon, xy, hh, (), rng=random.Random(f"3:{community}"))  # no road blocks
        without = share_on_roads(plain.geoms)
        assert with_roads > 0.4 and with_roads > 2 * without, (with_roads, without)
    finally:
        engine.dispose()
