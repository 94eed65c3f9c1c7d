"""Road network import and travel times by road, checked against networkx on the same graph.

Runs in its own throwaway database (the Karhula demo adds grids and responders to the active version, which
the shared session database's other tests count)."""

import asyncio
import math
import uuid

import asyncpg
import networkx as nx
import numpy as np
import psycopg
import pytest
from pyproj import Geod
from sqlalchemy import text
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from api.settings import Settings
from tests.conftest import _server_url
from wangge.cli import app

GEOD = Geod(ellps="WGS84")
KARHULA = (26.94, 60.52)


@pytest.fixture(scope="module")
def net_url():
    try:
        base = make_url(_server_url(Settings()))
        admin = base.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
        psycopg.connect(admin, connect_timeout=5).close()
    except Exception as exc:
        pytest.skip(f"PostGIS is not reachable ({exc})")
    name = f"wangge_test_net_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = base.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
    try:
        from geo.db import migrate

        migrate(url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def net_engine(net_url):
    from geo.db import sync_engine

    engine = sync_engine(net_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def pyrosm_graph():
    from pyrosm import OSM, get_data

    return OSM(get_data("test_pbf")).get_network(network_type="driving", nodes=True)


@pytest.fixture(scope="module")
def imported(net_engine):
    from pyrosm import get_data

    from geo.dispatch.network import import_pbf

    phases = []
    report = import_pbf(net_engine, get_data("test_pbf"), "karhula",
                        progress=lambda phase, done, total: phases.append(phase))
    assert phases[0] == "reading" and phases[-1] == "done"
    return report


@pytest.fixture(scope="module")
def graph(net_engine, imported):
    """networkx DiGraph from the DB rows: travel along source→target always, against it unless one-way."""
    g = nx.DiGraph()
    with net_engine.connect() as conn:
        rows = conn.execute(text("SELECT source, target, cost_s, reverse_cost_s, length_m FROM road_edges "
                                 "WHERE network_id = :n"), {"n": imported.network_id}).all()
        coords = dict(conn.execute(text("SELECT id, ARRAY[ST_X(geom), ST_Y(geom)] FROM road_vertices "
                                        "WHERE network_id = :n"), {"n": imported.network_id}).all())

    def add(a, b, cost, length):
        if not g.has_edge(a, b) or g[a][b]["cost"] > cost:
            g.add_edge(a, b, cost=cost, length=length)

    for s, t, cost, reverse, length in rows:
        add(s, t, cost, length)
        if reverse >= 0:
            add(t, s, reverse, length)
    g.graph["coords"] = coords
    return g


def _run(net_url, coroutine_fn):
    async def main():
        conn = await asyncpg.connect(net_url.replace("+psycopg", ""))
        try:
            return await coroutine_fn(conn)
        finally:
            await conn.close()

    return asyncio.run(main())


def _nx_path(g, a, b):
    try:
        path = nx.dijkstra_path(g, a, b, weight="cost")
    except nx.NetworkXNoPath:
        return None, None
    cost = sum(g[u][v]["cost"] for u, v in zip(path, path[1:], strict=False))
    length = sum(g[u][v]["length"] for u, v in zip(path, path[1:], strict=False))
    return cost, length


def test_import_matches_pyrosm(net_engine, imported, pyrosm_graph):
    nodes, edges = pyrosm_graph
    assert imported.edges == len(edges) and imported.vertices == len(nodes)
    with net_engine.connect() as conn:
        n, total, one_way = conn.execute(text(
            "SELECT count(*), sum(length_m), count(*) FILTER (WHERE reverse_cost_s = -1) FROM road_edges "
            "WHERE network_id = :n"), {"n": imported.network_id}).one()
        assert n == len(edges)
        assert total == pytest.approx(edges["length"].sum(), rel=1e-9)
        assert one_way == (edges["oneway"] == "yes").sum()
        # every edge's ends are vertices of the network, and its geometry runs source → target
        assert conn.execute(text("""
            SELECT count(*) FROM road_edges e
            LEFT JOIN road_vertices s ON s.network_id = e.network_id AND s.id = e.source
            LEFT JOIN road_vertices t ON t.network_id = e.network_id AND t.id = e.target
            WHERE e.network_id = :n AND (s.id IS NULL OR t.id IS NULL
                  OR NOT ST_Equals(ST_StartPoint(e.geom), s.geom) OR NOT ST_Equals(ST_EndPoint(e.geom), t.geom))"""),
            {"n": imported.network_id}).scalar() == 0


def test_reimport_replaces(net_engine, imported):
    from pyrosm import get_data

    from geo.dispatch.network import import_pbf

    again = import_pbf(net_engine, get_data("test_pbf"), "karhula-twice")
    again = import_pbf(net_engine, get_data("test_pbf"), "karhula-twice")
    with net_engine.begin() as conn:
        assert conn.execute(text("SELECT count(*) FROM road_edges WHERE network_id = :n"),
                            {"n": again.network_id}).scalar() == again.edges
        conn.execute(text("DELETE FROM road_networks WHERE name = 'karhula-twice'"))
        assert conn.execute(text("SELECT count(*) FROM road_networks")).scalar() == 1


def test_etas_equal_networkx(net_url, graph):
    from geo.dispatch.routing import WALK_MPS, network_etas

    rng = np.random.default_rng(5)
    vids = np.array(sorted(graph.nodes))
    coords = graph.graph["coords"]
    checked = unreachable = 0
    for _ in range(20):
        target = int(rng.choice(vids))
        cands = [int(v) for v in rng.choice(vids, 5, replace=False)]
        candidates = [(v, *coords[v]) for v in cands]
        results = _run(net_url, lambda c, target=target, candidates=candidates:
                       network_etas(c, *coords[target], candidates, routes="all"))
        assert len(results) == 5
        etas = [r["eta_s"] for r in results if r["eta_s"] is not None]
        assert etas == sorted(etas)
        for r in results:
            cost, length = _nx_path(graph, r["responder_id"], target)
            assert r["snap_m"] == pytest.approx(0, abs=1e-6) and r["target_snap_m"] == pytest.approx(0, abs=1e-6)
            if r["responder_id"] == target:
                cost, length = 0.0, 0.0
            if cost is None:
                unreachable += 1
                assert r["eta_s"] is None and r["reason"] == "no_path" and not r["reachable"]
            else:
                checked += 1
                assert r["network_time_s"] == pytest.approx(cost, rel=1e-9, abs=1e-6)
                assert r["eta_s"] == pytest.approx(cost + (r["snap_m"] + r["target_snap_m"]) / WALK_MPS)
                assert r["network_distance_m"] == pytest.approx(length, rel=1e-6, abs=1e-6)
                line = r["route"]
                assert line["coordinates"][0] == pytest.approx(list(coords[r["responder_id"]]))
                assert line["coordinates"][-1] == pytest.approx(list(coords[target]))
                xs, ys = zip(*line["coordinates"], strict=False)
                assert GEOD.line_length(xs, ys) == pytest.approx(length, rel=0.01, abs=1.0)
    assert checked >= 50 and unreachable >= 1  # the Karhula driving graph has one-way dead ends


def test_off_vertex_points_add_walked_snap_legs(net_url, graph):
    from geo.dispatch.routing import WALK_MPS, network_etas

    coords = graph.graph["coords"]
    ids = np.array(list(coords))
    xy = np.array([coords[i] for i in ids])
    target = (26.9405, 60.5235)
    cands = [(1, 26.935, 60.521), (2, 26.947, 60.526), (3, 26.93, 60.53)]
    results = _run(net_url, lambda c: network_etas(c, *target, cands))

    def nearest(lon, lat):
        _, _, d = GEOD.inv(np.full(len(xy), lon), np.full(len(xy), lat), xy[:, 0], xy[:, 1])
        return int(ids[np.argmin(d)]), float(d.min())

    tv, td = nearest(*target)
    for r in results:
        lon, lat = next(c[1:] for c in cands if c[0] == r["responder_id"])
        cv, cd = nearest(lon, lat)
        assert r["snap_m"] == pytest.approx(cd, abs=0.5) and r["target_snap_m"] == pytest.approx(td, abs=0.5)
        cost, length = _nx_path(graph, cv, tv)
        if cost is not None:
            assert r["eta_s"] == pytest.approx(cost + (cd + td) / WALK_MPS, abs=0.5)
            assert r["distance_m"] == pytest.approx(length + cd + td, abs=1.0)
    assert sum(r["route"] is not None for r in results) == 1 and results[0]["route"] is not None


def test_network_auto_selection_and_clear_errors(net_url, imported):
    from geo.dispatch.routing import NoRoadNetwork, network_etas, pick_network
    from geo.errors import NotFound

    assert _run(net_url, lambda c: pick_network(c, *KARHULA)) == (imported.network_id, "karhula")
    with pytest.raises(NoRoadNetwork) as err:
        _run(net_url, lambda c: network_etas(c, 116.36, 39.91, [(1, 116.37, 39.91)]))
    assert "no imported road vertex within 2000 m" in err.value.message
    assert "wangge network import" in err.value.message
    with pytest.raises(NotFound):
        _run(net_url, lambda c: network_etas(c, *KARHULA, [(1, *KARHULA)], network="atlantis"))
    # a candidate far from the chosen network is reported, not routed
    [r] = _run(net_url, lambda c: network_etas(c, *KARHULA, [(9, 116.37, 39.91)]))
    assert r["eta_s"] is None and r["reason"] == "off_network"
    assert _run(net_url, lambda c: network_etas(c, *KARHULA, [])) == []


def test_isochrone_equals_networkx_cutoff(net_url, graph):
    from geo.dispatch.routing import isochrone

    coords = graph.graph["coords"]
    rng = np.random.default_rng(11)
    for v in rng.choice(sorted(graph.nodes), 5, replace=False):
        v = int(v)
        for max_s in (60, 180):
            iso = _run(net_url, lambda c, v=v, max_s=max_s: isochrone(c, *coords[v], max_s))
            expected = nx.single_source_dijkstra_path_length(graph, v, cutoff=max_s, weight="cost")
            got = {p["id"]: p["time_s"] for p in iso["vertices"]}
            assert set(got) == set(expected)
            for k, t in expected.items():
                assert got[k] == pytest.approx(t, abs=1e-6)
            # direction="to": what reaches v, on the reversed graph
            iso_to = _run(net_url, lambda c, v=v, max_s=max_s: isochrone(c, *coords[v], max_s, direction="to"))
            expected_to = nx.single_source_dijkstra_path_length(graph.reverse(), v, cutoff=max_s, weight="cost")
            assert {p["id"] for p in iso_to["vertices"]} == set(expected_to)


def test_travel_times_from_many(net_engine, graph):
    from geo.dispatch.routing import travel_times_from_many

    coords = graph.graph["coords"]
    rng = np.random.default_rng(3)
    vids = [int(v) for v in rng.choice(sorted(graph.nodes), 12, replace=False)]
    sources, targets = vids[:4], vids[4:] + vids[:1]
    times = travel_times_from_many(net_engine, [coords[v] for v in sources],
                                   [coords[v] for v in targets] + [(116.36, 39.91)])
    assert times.shape == (4, len(targets) + 1)
    assert np.isinf(times[:, -1]).all()  # off the network
    for i, s in enumerate(sources):
        for j, t in enumerate(targets):
            cost, _ = _nx_path(graph, s, t) if s != t else (0.0, 0.0)
            assert (math.isinf(times[i, j]) if cost is None else times[i, j] == pytest.approx(cost, abs=1e-6))


def test_fixtures_load_network_and_grids_at(net_url, net_engine, monkeypatch):
    from fastapi.testclient import TestClient

    from api.app import create_app
    from fixtures.network_demo import DISTRICT, RESPONDERS
    from tests.conftest import make_token

    monkeypatch.setenv("WANGGE_DATABASE_URL", net_url)
    runner = CliRunner()
    result = runner.invoke(app, ["fixtures", "load", "--small", "--network"])
    assert result.exit_code == 0, result.output
    assert "network demo (Karhula, OSM/ODbL) loaded" in result.output
    again = runner.invoke(app, ["fixtures", "load", "--network"])
    assert again.exit_code == 0 and "network demo (Karhula, OSM/ODbL) already loaded" in again.output
    with net_engine.connect() as conn:
        counts = dict(conn.execute(text(
            "SELECT level, count(*) FROM areas WHERE code LIKE '990101%' GROUP BY level")).all())
        assert counts == {"district": 1, "street": 1, "community": 1, "grid": 8}
        # grids partition the community exactly
        assert conn.execute(text("""
            SELECT ST_Area(ST_SymDifference(ST_Union(g.geom), c.geom)::geography) < 1
                   AND sum(ST_Area(g.geom::geography)) - ST_Area(c.geom::geography) < 1
            FROM areas g JOIN areas c ON c.code = '990101001001' AND g.parent_id = c.id
            GROUP BY c.geom""")).scalar()
        assert conn.execute(text("SELECT count(*) FROM buildings WHERE source LIKE 'OpenStreetMap%'")).scalar() == 2208
        assert conn.execute(text("SELECT count(*) FROM responders WHERE role = 'patrol' AND position IS NOT NULL "
                                 "AND position_at > now() - interval '5 minutes'")).scalar() >= RESPONDERS
        point = conn.execute(text("SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) p FROM areas "
                                  "WHERE code = '990101001001003') s")).one()
    headers = {"Authorization": f"Bearer {make_token(net_engine, 'admin', None)}"}
    with TestClient(create_app(Settings(database_url=net_url, escalation_interval_s=0))) as client:
        reply = client.get("/grids/at", params={"lon": point[0], "lat": point[1]}, headers=headers)
    assert reply.status_code == 200, reply.text
    feature = reply.json()
    assert feature["id"] == "990101001001003"
    assert [a["code"] for a in feature["properties"]["chain"]] == ["990101001001", "990101001", DISTRICT["code"]]


def test_network_response_coverage_equals_networkx(net_url, net_engine, graph):
    """Runs after the --network fixture load above: households within T minutes by road of a responder."""
    from fastapi.testclient import TestClient
    from pyproj import Geod

    from api.app import create_app
    from api.settings import Settings
    from geo.dispatch.routing import WALK_MPS
    from tests.conftest import make_token

    with net_engine.connect() as conn:
        buildings = conn.execute(text("""
            SELECT b.households, ST_X(ST_PointOnSurface(b.geom)), ST_Y(ST_PointOnSurface(b.geom))
            FROM buildings b, areas a WHERE a.code = '990101' AND ST_Covers(a.geom, b.geom)""")).all()
        responders = conn.execute(text("""
            SELECT ST_X(position), ST_Y(position) FROM responders
            WHERE status = 'available' AND position_at > now() - interval '30 minutes'
              AND position && ST_Expand((SELECT geom FROM areas WHERE code = '990101'), 0.05)""")).all()
    coords = graph.graph["coords"]
    vids = np.array(sorted(coords))
    vx, vy = np.array([coords[v][0] for v in vids]), np.array([coords[v][1] for v in vids])
    geod = Geod(ellps="WGS84")

    def snap(lon, lat):
        d = geod.inv(np.full(len(vids), lon), np.full(len(vids), lat), vx, vy)[2]
        return int(vids[d.argmin()]), float(d.min())

    starts = [snap(x, y) for x, y in responders]
    best = {}
    for vertex, leg in starts:  # from each responder, forward along the roads
        for node, cost in nx.single_source_dijkstra_path_length(graph, vertex, weight="cost").items():
            best[node] = min(best.get(node, math.inf), cost + leg / WALK_MPS)
    minutes = 3
    households = np.array([b[0] for b in buildings], dtype=float)
    times = []
    for _, x, y in buildings:
        vertex, leg = snap(x, y)
        times.append(best.get(vertex, math.inf) + leg / WALK_MPS if leg <= 2000 else math.inf)
    expected = households[np.array(times) <= minutes * 60].sum() / households.sum()

    token = make_token(net_engine, "admin", None)
    with TestClient(create_app(Settings(database_url=net_url, escalation_interval_s=0))) as client:
        reply = client.get("/analysis/response-coverage", params={"area": "990101", "mode": "network",
                                                                  "minutes": minutes},
                           headers={"Authorization": f"Bearer {token}"})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["mode"] == "network" and body["buildings"] == len(buildings)
        assert body["share_covered"] == pytest.approx(expected, abs=1e-9)
        assert [p["minutes"] for p in body["curve"]][:3] == [1, 2, 3]
        chart = client.get("/analysis/response-coverage/chart.svg", params={
            "area": "990101", "mode": "network", "minutes": minutes}, headers={"Authorization": f"Bearer {token}"})
        assert "travel time by road (min)" in chart.text
        nowhere = client.get("/analysis/response-coverage", params={"area": "990101", "mode": "network"},
                             headers={"Authorization": f"Bearer {token}"})
        assert nowhere.status_code == 400 and "minutes" in nowhere.json()["error"]["message"]
