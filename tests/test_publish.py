"""Publishing a plan on a database of its own (the active version changes): refusal while validation fails, the
reassignment of open incidents against an independent shapely computation, intake racing a publish, history."""

import socket
import threading
import time
import uuid
from types import SimpleNamespace

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from sqlalchemy import text

from api.settings import Settings
from tests.conftest import make_token
from tests.test_plan_diff import OPEN, expected_impact, lowest_covering, reshape_draft, version_grids

FINAL = ["closed", "rejected", "void"]


@pytest.fixture(scope="module")
def db(scratch_url):
    from fastapi.testclient import TestClient

    from api.app import create_app
    from geo.db import sync_engine

    engine = sync_engine(scratch_url)
    settings = Settings(database_url=scratch_url, escalation_interval_s=0, intake_rate_per_token="1000000/minute",
                        intake_rate_per_address="1000000/minute")  # the publish race files many reports at once
    with TestClient(create_app(settings)) as client:
        yield SimpleNamespace(engine=engine, client=client, settings=settings, state={},
                              admin={"Authorization": f"Bearer {make_token(engine, 'admin', None)}"})
    engine.dispose()


def active(db) -> int:
    with db.engine.connect() as conn:
        return conn.execute(text("SELECT id FROM grid_versions WHERE status = 'active'")).scalar_one()


def new_draft(db, name: str) -> int:
    reply = db.client.post("/plans", json={"name": name}, headers=db.admin)
    assert reply.status_code == 201, reply.text
    return reply.json()["id"]


def revision(db, plan_id: int) -> int:
    return db.client.get(f"/plans/{plan_id}", headers=db.admin).json()["revision"]


def incident_rows(conn, statuses) -> pd.DataFrame:
    return pd.read_sql(text("SELECT id, status, grid_id, grid_code, grid_version_id, assignee_id FROM incidents "
                            "WHERE status = ANY(:s) ORDER BY id"), conn, params={"s": list(statuses)}).set_index("id")


def streets(db) -> list[str]:
    """The two streets of the small demo."""
    with db.engine.connect() as conn:
        return list(conn.execute(text("SELECT code FROM areas WHERE level = 'street' ORDER BY code")).scalars())


def _code(value):
    return None if value is None or pd.isna(value) else value


def _int(value):
    return None if value is None or pd.isna(value) else int(value)


def test_publish_is_refused_while_validation_fails(db):
    plan = new_draft(db, "with a gap")
    with db.engine.begin() as conn:  # cut a 40 m strip out of a grid along its neighbour: a gap
        a, b = conn.execute(text("""
            SELECT a.code, b.code FROM areas a JOIN areas b ON b.version_id = a.version_id AND b.code > a.code
              AND left(b.code, 12) = left(a.code, 12) AND a.geom && b.geom AND ST_Relate(a.geom, b.geom, 'F***1****')
            WHERE a.version_id = :v ORDER BY a.code, b.code LIMIT 1"""), {"v": plan}).one()
        conn.execute(text("""
            UPDATE areas b SET geom = ST_Multi(ST_Difference(b.geom, ST_Buffer(a.geom, 0.0004)))
            FROM areas a WHERE a.version_id = :v AND a.code = :a AND b.version_id = :v AND b.code = :b"""),
            {"v": plan, "a": a, "b": b})
    before = active(db)
    current = revision(db, plan)
    reply = db.client.post(f"/plans/{plan}/publish", json={"revision": current}, headers=db.admin)
    message = reply.json()["error"]["message"]
    assert reply.status_code == 409 and "does not pass validation" in message
    assert " gap" in message and "fix-slivers" in message and f"/plans/{plan}/validation" in message
    assert active(db) == before and revision(db, plan) == current  # nothing happened, not even the bump
    stale = db.client.post(f"/plans/{plan}/publish", json={"revision": current + 5}, headers=db.admin)
    assert stale.status_code == 409 and f"based on revision {current + 5}" in stale.json()["error"]["message"]
    assert db.client.delete(f"/plans/{plan}", headers=db.admin).status_code == 204


def test_only_planners_publish_and_only_inside_their_area(db):
    first, second = streets(db)
    plan = new_draft(db, "worker swap in the second street")
    with db.engine.begin() as conn:
        code, other = conn.execute(text(
            "SELECT max(code), min(code) FROM areas WHERE version_id = :v AND left(code, 9) = :s"),
            {"v": plan, "s": second}).one()
        conn.execute(text("UPDATE areas SET worker_id = (SELECT worker_id FROM areas WHERE version_id = :v "
                          "AND code = :other) WHERE version_id = :v AND code = :c"),
                     {"v": plan, "c": code, "other": other})
    body = {"revision": revision(db, plan)}
    worker = {"Authorization": f"Bearer {make_token(db.engine, 'grid_worker', '110102')}"}
    denied = db.client.post(f"/plans/{plan}/publish", json=body, headers=worker)
    assert denied.status_code == 403 and "planner" in denied.json()["error"]["message"]
    street_planner = {"Authorization": f"Bearer {make_token(db.engine, 'planner', first)}"}
    outside = db.client.post(f"/plans/{plan}/publish", json=body, headers=street_planner)
    assert outside.status_code == 403 and "grids outside your area" in outside.json()["error"]["message"]
    assert code not in outside.json()["error"]["message"]  # names nothing outside the caller's area
    assert db.client.delete(f"/plans/{plan}", headers=db.admin).status_code == 204


def test_publish_gives_up_rather_than_wait_out_a_long_import(db):
    from geo.planning.publish import LOCK_TIMEOUT_S

    plan = new_draft(db, "unchanged copy")
    before = active(db)
    with db.engine.connect() as importer:  # an import in progress holds its lock on incidents
        importer.execute(text("LOCK TABLE incidents IN ROW EXCLUSIVE MODE"))
        t0 = time.monotonic()
        reply = db.client.post(f"/plans/{plan}/publish", json={"revision": revision(db, plan)}, headers=db.admin)
        waited = time.monotonic() - t0
        importer.rollback()
    assert reply.status_code == 409 and "most likely a bulk import" in reply.json()["error"]["message"]
    # it waited for the lock, not failed at once, and gave up near the timeout (a fresh CI clone once measured
    # 4.65 s for the server's 5 s: the bound allows for the timer's slack)
    assert 0.8 * LOCK_TIMEOUT_S <= waited < LOCK_TIMEOUT_S + 5 and active(db) == before
    assert db.client.delete(f"/plans/{plan}", headers=db.admin).status_code == 204


def test_publish_moves_exactly_the_open_incidents_shapely_predicts(db):
    old = active(db)
    rng = np.random.default_rng(7)
    with db.engine.connect() as conn:
        minx, miny, maxx, maxy = conn.execute(text(
            "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT ST_Extent(geom)::geometry AS e "
            "FROM areas WHERE version_id = :v) t"), {"v": old}).one()
    for lon, lat in zip(rng.uniform(minx, maxx, 60), rng.uniform(miny, maxy, 60), strict=False):  # more open incidents
        reply = db.client.post("/incidents", json={"category": "0101", "lon": lon, "lat": lat}, headers=db.admin)
        assert reply.status_code == 201, reply.text
    plan = new_draft(db, "reshaped")
    with db.engine.begin() as conn:
        codes = reshape_draft(conn, plan, old)
        # an open incident of D dispatched to someone other than D's worker (a patrol, say): it stays with them
        patrol = conn.execute(text("INSERT INTO responders (name, role) VALUES ('patrol', 'patrol') RETURNING id"))\
            .scalar_one()
        kept = conn.execute(text("""
            UPDATE incidents SET assignee_id = :patrol
            WHERE id = (SELECT min(i.id) FROM incidents i WHERE i.grid_code = :d AND i.status = ANY(:open)
                        AND i.grid_version_id = :old) RETURNING id"""),
            {"d": codes["d"], "open": OPEN, "old": old, "patrol": patrol}).scalar_one()
        # an open incident filed while its point lay in a gap: unassigned, no grid; the new grids cover it
        gap = conn.execute(text("""
            UPDATE incidents SET status = 'unassigned', grid_id = NULL, grid_code = NULL, grid_version_id = NULL,
                                 assignee_id = NULL
            WHERE id = (SELECT min(id) FROM incidents WHERE status = 'reported' AND grid_version_id = :old
                        AND NOT grid_code = ANY(:codes)) RETURNING id"""),
            {"old": old, "codes": list(codes.values())}).scalar_one()
    with db.engine.connect() as conn:
        expected = expected_impact(conn, old, plan)
        closed_before = incident_rows(conn, FINAL)
        open_points = gpd.read_postgis(text("SELECT id, status, geom FROM incidents WHERE status = ANY(:open)"),
                                       conn, geom_col="geom", params={"open": OPEN}).set_index("id")
    predicted = {i["id"]: i for i in expected["incidents"]}
    assert kept not in predicted and gap in predicted and predicted[gap]["to_grid"] is not None
    assert any(i["from_grid"] == codes["b"] and i["to_grid"] == codes["a"] for i in predicted.values())

    preview = db.client.get(f"/plans/{plan}/diff", params={"limit": 5000}, headers=db.admin).json()
    assert preview["incidents"] == expected["incidents"]
    reply = db.client.post(f"/plans/{plan}/publish", json={"revision": revision(db, plan)}, headers=db.admin)
    assert reply.status_code == 200, reply.text
    result = reply.json()
    assert result["status"] == "active" and result["retired"] == old and result["plan_id"] == plan
    assert result["reassigned"] == result["events"] == len(predicted)
    assert result["newly_assigned"] == 1 and result["summary"] == preview["summary"]

    with db.engine.connect() as conn:
        after = version_grids(conn, plan)
        now_open = incident_rows(conn, OPEN)
        events = pd.read_sql(text("SELECT incident_id, from_status, to_status, data FROM incident_events "
                                  "WHERE action = 'reassign' AND note = :note ORDER BY incident_id"),
                             conn, params={"note": f"grid plan {plan} published"})
        versions = {r.id: r for r in conn.execute(text(
            "SELECT id, status, activated_at, retired_at FROM grid_versions WHERE status = 'active' OR id = :o"),
            {"o": old})}
        audit = conn.execute(text("SELECT detail FROM audit_log WHERE action = 'plan.publish' AND target = :t"),
                             {"t": f"grid_version:{plan}"}).scalars().all()
        closed_after = incident_rows(conn, FINAL)
        homes = pd.read_sql(text("SELECT id, home_grid_code FROM responders WHERE role = 'grid_worker'"), conn)

    # every open incident: the lowest-coded new grid covering it, that version, that grid row, the right assignee
    covering = lowest_covering(open_points, after)
    assert result["unassigned"] == int(covering.isna().sum())
    grid_rows = after.set_index("id")
    for incident_id, row in now_open.iterrows():
        assert _code(row.grid_code) == _code(covering[incident_id])
        if _code(row.grid_code) is not None:
            assert _int(row.grid_version_id) == plan and grid_rows.loc[int(row.grid_id), "code"] == row.grid_code
        if incident_id in predicted:
            assert _int(row.assignee_id) == predicted[incident_id]["to_worker"]
    assert _int(now_open.loc[kept, "assignee_id"]) == patrol and now_open.loc[kept, "grid_code"] == codes["d"]
    assert now_open.loc[gap, "status"] == "reported"
    # one event per reassigned incident, carrying both sides
    assert list(events["incident_id"]) == sorted(predicted)
    for e in events.itertuples():
        p = predicted[e.incident_id]
        assert e.data["from_grid"] == p["from_grid"] and e.data["to_grid"] == p["to_grid"]
        assert e.data["from_assignee"] == p["from_worker"] and e.data["to_assignee"] == p["to_worker"]
        assert e.data["to_version"] == plan and e.from_status == p["status"]
    pd.testing.assert_frame_equal(closed_after, closed_before)  # closed incidents keep their grid and version
    assert (closed_after["grid_version_id"] != plan).all()
    assert set(versions) == {old, plan} and versions[old].status == "retired" and versions[plan].status == "active"
    assert versions[old].retired_at == versions[plan].activated_at and versions[plan].retired_at is None
    assert len(audit) == 1 and audit[0]["previous"] == old and audit[0]["reassigned"] == len(predicted)
    # grid workers' home grid is one of their grids in the new version
    theirs = after.dropna(subset=["worker_id"]).groupby("worker_id")["code"].apply(set)
    for h in homes.itertuples():
        if h.id in theirs.index:
            assert h.home_grid_code in theirs[h.id]
    again = db.client.post(f"/plans/{plan}/publish", json={"revision": revision(db, plan)}, headers=db.admin)
    assert again.status_code == 409 and "not a draft" in again.json()["error"]["message"]
    db.state.update(old=old, plan=plan, codes=codes)


def test_history_gives_a_changed_grid_in_both_versions_newest_first(db):
    old, plan, code = db.state["old"], db.state["plan"], db.state["codes"]["a"]
    body = db.client.get(f"/areas/{code}/history", headers=db.admin).json()
    with db.engine.connect() as conn:
        stored = {v: version_grids(conn, v).set_index("code").loc[code] for v in (plan, old)}
    assert [f["properties"]["version_id"] for f in body["features"]][:2] == [plan, old]
    assert [f["properties"]["status"] for f in body["features"]][:2] == ["active", "retired"]
    for feature in body["features"][:2]:
        grid = stored[feature["properties"]["version_id"]]
        assert shapely.geometry.shape(feature["geometry"]).hausdorff_distance(grid.geom) < 1e-6
        assert feature["properties"]["households"] == grid.households and feature["properties"]["code"] == code
    assert body["features"][0]["properties"]["retired_at"] is None
    assert body["features"][1]["properties"]["retired_at"] is not None
    assert body["features"][0]["properties"]["area_m2"] != body["features"][1]["properties"]["area_m2"]
    new_code = db.state["codes"]["new"]
    only_new = db.client.get(f"/areas/{new_code}/history", headers=db.admin).json()
    assert [f["properties"]["version_id"] for f in only_new["features"]] == [plan]


def test_history_errors(db):
    never = db.client.get("/areas/110102001001999/history", headers=db.admin)
    assert never.status_code == 404 and "never been published" in never.json()["error"]["message"]
    first, second = streets(db)
    with db.engine.connect() as conn:
        elsewhere = conn.execute(text("SELECT min(code) FROM areas WHERE level = 'grid' AND left(code, 9) = :s"),
                                 {"s": second}).scalar_one()
    scoped = {"Authorization": f"Bearer {make_token(db.engine, 'supervisor', first)}"}
    denied = db.client.get(f"/areas/{elsewhere}/history", headers=scoped)
    assert denied.status_code == 404 and "in your area" in denied.json()["error"]["message"]
    short = db.client.get("/areas/110102001001/history", headers=db.admin)
    assert short.status_code == 422 and "code" in short.json()["error"]["message"]


# -- intake racing a publish --------------------------------------------------------------------------------------

class _Server:
    """The app on a real local port (uvicorn in a thread), so that threads can post concurrently."""

    def __init__(self, settings):
        import uvicorn

        from api.app import create_app

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


def test_incidents_reported_during_a_publish_all_land_in_the_new_version(db):
    import httpx

    from geo.incidents.bulk import import_incidents

    old = active(db)
    plan = new_draft(db, "published under load")
    with db.engine.begin() as conn:
        reshape_draft(conn, plan, old)
        minx, miny, maxx, maxy = conn.execute(text(
            "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT ST_Extent(geom)::geometry AS e "
            "FROM areas WHERE version_id = :v) t"), {"v": old}).one()
    with db.engine.connect() as conn:
        closed_before = incident_rows(conn, FINAL)
    pad = 0.002  # some points fall outside every grid: kept as unassigned
    threads, per_thread, rows_per_import = 4, 80, 40
    rng = np.random.default_rng(2024)
    points = rng.uniform([minx - pad, miny - pad], [maxx + pad, maxy + pad], (threads * per_thread, 2))
    versions, failures, posted, imported = [], [], [0], []
    lock = threading.Lock()
    token = db.admin["Authorization"]

    with _Server(db.settings) as base:
        def post(chunk):
            with httpx.Client(base_url=base, headers={"Authorization": token}, timeout=60) as http:
                for lon, lat in chunk:
                    reply = http.post("/incidents", json={"category": "0101", "lon": lon, "lat": lat},
                                      headers={"Idempotency-Key": uuid.uuid4().hex})
                    if reply.status_code == 201 and reply.json()["properties"]["status"] == "reported":
                        # a workflow action locks the incident row FOR UPDATE, then updates it
                        filed = http.post(f"/incidents/{reply.json()['id']}/actions", json={"action": "file"})
                        if filed.status_code != 200:
                            failures.append(filed.text)
                    with lock:
                        posted[0] += 1
                        if reply.status_code != 201:
                            failures.append(reply.text)
                        else:
                            versions.append(reply.json()["properties"]["grid_version"])

        def bulk():  # bulk imports read the active version first, then insert
            for _ in range(3):
                lon = rng.uniform(minx, maxx, rows_per_import)
                lat = rng.uniform(miny, maxy, rows_per_import)
                csv = "lon,lat,category\n" + "".join(f"{x},{y},0101\n" for x, y in zip(lon, lat, strict=False))
                try:
                    report = import_incidents(db.engine, csv.encode(), format="csv", keep_outside=True)
                except Exception as exc:
                    failures.append(f"bulk import: {exc!r}")
                else:
                    with lock:
                        imported.append(report.imported)

        workers = [threading.Thread(target=post, args=(points[i::threads],)) for i in range(threads)]
        workers.append(threading.Thread(target=bulk))
        for w in workers:
            w.start()
        while posted[0] < threads * per_thread // 4:
            time.sleep(0.01)
        with httpx.Client(base_url=base, headers={"Authorization": token}, timeout=120) as http:
            published = http.post(f"/plans/{plan}/publish", json={"revision": revision(db, plan)})
        for w in workers:
            w.join(120)
    assert published.status_code == 200, published.text
    assert not failures, failures[:3]
    assert posted[0] == threads * per_thread and imported == [rows_per_import] * 3
    # the race really happened: reports were filed under both versions
    assert old in versions and plan in versions

    with db.engine.connect() as conn:
        everything = pd.read_sql(text("""
            SELECT i.id, i.status, i.grid_id, i.grid_code, i.grid_version_id, a.code AS row_code,
                   a.version_id AS row_version
            FROM incidents i LEFT JOIN areas a ON a.id = i.grid_id"""), conn).set_index("id")
        after = version_grids(conn, plan)
        open_points = gpd.read_postgis(text("SELECT id, geom FROM incidents WHERE status = ANY(:open)"),
                                       conn, geom_col="geom", params={"open": OPEN}).set_index("id")
        closed_after = incident_rows(conn, FINAL)
    # every incident: one grid of one version, or none at all
    assigned = everything["grid_id"].notna()
    assert (everything["grid_code"].notna() == assigned).all()
    assert (everything["grid_version_id"].notna() == assigned).all()
    assert (everything.loc[assigned, "row_code"] == everything.loc[assigned, "grid_code"]).all()
    assert (everything.loc[assigned, "row_version"] == everything.loc[assigned, "grid_version_id"]).all()
    # every open one: the new version, the lowest-coded grid covering it (shapely); outside: unassigned
    now_open = everything[everything["status"].isin(OPEN)]
    covering = lowest_covering(open_points, after)
    inside = covering.notna()
    assert (now_open.loc[inside[inside].index, "grid_version_id"] == plan).all()
    assert list(now_open.loc[inside[inside].index, "grid_code"]) == list(covering[inside])
    assert now_open.loc[inside[~inside].index, "grid_id"].isna().all()
    assert (now_open.loc[inside[~inside].index, "status"] == "unassigned").all()
    assert len(now_open) >= threads * per_thread + 3 * rows_per_import
    pd.testing.assert_frame_equal(closed_after, closed_before)


def test_a_plan_copied_from_a_retired_version_needs_force(db):
    stale = new_draft(db, "stale base")
    fresh = new_draft(db, "fresh base")
    published = db.client.post(f"/plans/{fresh}/publish", json={"revision": revision(db, fresh)}, headers=db.admin)
    assert published.status_code == 200, published.text
    refused = db.client.post(f"/plans/{stale}/publish", json={"revision": revision(db, stale)}, headers=db.admin)
    assert refused.status_code == 409
    assert f"version {fresh} has been published since" in refused.json()["error"]["message"]
    assert active(db) == fresh
    forced = db.client.post(f"/plans/{stale}/publish", json={"revision": revision(db, stale), "force": True},
                            headers=db.admin)
    assert forced.status_code == 200 and active(db) == stale
