"""Road networks from OSM extracts (pyrosm) into road_vertices / road_edges, for pgRouting travel times.

Costs are travel times in seconds: length / speed, the speed taken from the highway class (SPEEDS_KMH, a
deliberately small table; OSM maxspeed tags are ignored so every network is costed the same way). A one-way
road keeps reverse_cost_s = -1 (pgRouting's "no travel against the geometry"); the walking profile ignores
one-way tags and walks everything at WALK_KMH.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from sqlalchemy import Connection, Engine, text

from geo.errors import InvalidInput
from geo.incidents.bulk_copy import copy_frame

NETWORK_TYPES = ("driving", "walking")
OSM_LICENCE = "ODbL 1.0, © OpenStreetMap contributors"
WALK_KMH = 5.0
DEFAULT_KMH = 25.0
SPEEDS_KMH = {
    "motorway": 100, "motorway_link": 50, "trunk": 80, "trunk_link": 40,
    "primary": 50, "primary_link": 40, "secondary": 50, "secondary_link": 40,
    "tertiary": 40, "tertiary_link": 30, "unclassified": 30, "residential": 30, "road": 30,
    "living_street": 10, "service": 15, "track": 15,
    "pedestrian": 5, "footway": 5, "path": 5, "steps": 3, "cycleway": 15,
}
_ONEWAY_YES = {"yes", "true", "1"}

Progress = Callable[[str, int, int], None]


@dataclass
class ImportReport:
    """What an OSM import wrote: the network, its vertices and edges."""
    network_id: int
    name: str
    network_type: str
    vertices: int
    edges: int
    one_way_edges: int
    length_km: float
    seconds: float


def speeds_kmh(highway: pd.Series, network_type: str = "driving") -> np.ndarray:
    """Speed of every edge by its highway class (km/h)."""
    if network_type == "walking":
        return np.full(len(highway), WALK_KMH)
    first = highway.fillna("").astype(str).str.split(";").str[0]  # "residential;service" → residential
    return first.map(SPEEDS_KMH).fillna(DEFAULT_KMH).to_numpy(float)


def read_pbf(path: str | Path, network_type: str = "driving") -> tuple[pd.DataFrame, gpd.GeoDataFrame]:
    """(vertices [id, geometry], edges [source, target, length_m, cost_s, reverse_cost_s, highway, name,
    osm_way_id, geometry]) from an OSM extract; edges are the segments pyrosm splits ways into."""
    from pyrosm import OSM

    if network_type not in NETWORK_TYPES:
        raise InvalidInput(f"network type must be one of {', '.join(NETWORK_TYPES)}, not {network_type!r}",
                           field="network_type")
    nodes, edges = OSM(str(path)).get_network(network_type=network_type, nodes=True)
    if edges is None or nodes is None or not len(edges):
        raise InvalidInput(f"{path}: no {network_type} roads in this extract", field="file")
    edges = edges.reset_index(drop=True)
    oneway = (edges["oneway"].fillna("").astype(str).str.lower() if "oneway" in edges
              else pd.Series("", index=edges.index))
    if "junction" in edges:
        oneway = oneway.where(~edges["junction"].isin(["roundabout", "circular"]) | (oneway != ""), "yes")
    source, target = edges["u"].to_numpy(np.int64), edges["v"].to_numpy(np.int64)
    geoms = edges.geometry.to_numpy()
    if network_type == "driving":
        against = (oneway == "-1").to_numpy()  # one-way against the drawing direction: flip it
        source, target = np.where(against, target, source), np.where(against, source, target)
        geoms = np.where(against, shapely.reverse(geoms), geoms)
        one_way = against | oneway.isin(_ONEWAY_YES).to_numpy()
    else:
        one_way = np.zeros(len(edges), bool)
    length = edges["length"].to_numpy(float)  # metres (pyrosm: haversine along the way)
    cost = length / (speeds_kmh(edges["highway"], network_type) / 3.6)
    frame = gpd.GeoDataFrame({
        "id": np.arange(1, len(edges) + 1, dtype=np.int64),
        "source": source, "target": target, "length_m": length,
        "cost_s": cost, "reverse_cost_s": np.where(one_way, -1.0, cost),
        "highway": edges["highway"], "name": edges["name"] if "name" in edges else None,
        "osm_way_id": edges["id"].astype("int64"),
    }, geometry=gpd.GeoSeries(geoms, crs="EPSG:4326"), crs="EPSG:4326")
    used = np.unique(np.r_[source, target])
    nodes = nodes[nodes["id"].isin(used)].drop_duplicates("id")
    vertices = gpd.GeoDataFrame({"id": nodes["id"].astype("int64").to_numpy()},
                                geometry=shapely.points(nodes["lon"].to_numpy(), nodes["lat"].to_numpy()),
                                crs="EPSG:4326")
    return vertices, frame


def import_pbf(engine: Engine, path: str | Path, name: str, network_type: str = "driving",
               source: str | None = None, licence: str = OSM_LICENCE,
               progress: Progress = lambda phase, done, total: None) -> ImportReport:
    """Import the roads of an OSM extract as network `name`, replacing a network of that name; all or nothing."""
    started = time.perf_counter()
    progress("reading", 0, 3)
    vertices, edges = read_pbf(path, network_type)
    with engine.begin() as conn:
        progress("writing vertices", 1, 3)
        network_id = write_network(conn, name, vertices, edges, network_type,
                                   source or f"OpenStreetMap extract {Path(path).name}", licence)
        progress("writing edges", 2, 3)
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE road_vertices, road_edges"))
    progress("done", 3, 3)
    return ImportReport(network_id, name, network_type, len(vertices), len(edges),
                        int((edges["reverse_cost_s"] < 0).sum()), float(edges["length_m"].sum() / 1000),
                        time.perf_counter() - started)


def write_network(conn: Connection, name: str, vertices: gpd.GeoDataFrame, edges: gpd.GeoDataFrame,
                  network_type: str, source: str, licence: str) -> int:
    """Replace network `name` with these rows (COPY) inside the caller's transaction; returns its id."""
    conn.execute(text("DELETE FROM road_networks WHERE name = :n"), {"n": name})  # cascades to its rows
    network_id = conn.execute(text(
        "INSERT INTO road_networks (name, network_type, source, licence) VALUES (:n, :t, :s, :l) RETURNING id"),
        {"n": name, "t": network_type, "s": source, "l": licence}).scalar_one()
    copy_frame(conn, "road_vertices", vertices.assign(network_id=network_id)
               [["network_id", "id", "geometry"]].rename_geometry("geom"))
    columns = ["network_id", "id", "source", "target", "length_m", "cost_s", "reverse_cost_s", "highway", "name",
               "osm_way_id", "geometry"]
    copy_frame(conn, "road_edges", edges.assign(network_id=network_id)[columns].rename_geometry("geom"))
    return network_id


def network_id(conn: Connection, name: str) -> int | None:
    """The id of the road network with this name, or None."""
    return conn.execute(text("SELECT id FROM road_networks WHERE name = :n"), {"n": name}).scalar()
