"""Incident hotspots: counts per H3 cell or grid, Getis-Ord Gi* (esda, seeded permutations), BH FDR, persistence.

Cells are every H3 cell whose centre lies in the area (plus any cell holding an incident), or every active
grid of the area, so empty cells count as zeros. Weights are binary contiguity (H3 ring 1; grids sharing a
boundary point) with the focal cell included (Gi*, star=True). z is esda's analytical Gi* z-score; p is its
two-sided normal p-value, corrected with Benjamini–Hochberg at `alpha`. A cell is `hot` (z > 0) or `cold`
(z < 0) when its BH flag is set. With windows=N the period is cut into N equal consecutive windows;
`persistent` marks cells hot in every window. Incidents are matched to the area by grid code prefix.
"""

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np

from geo.analysis.coverage import resolve_area
from geo.auth import Caller
from geo.errors import InvalidInput
from geo.incidents.metrics import window
from geo.incidents.timelimits import TZ

SEED = 12345

INCIDENTS_SQL = """
SELECT ST_X(geom) AS lon, ST_Y(geom) AS lat, grid_code, reported_at FROM incidents
WHERE starts_with(grid_code, $1) AND starts_with(grid_code, $2) AND reported_at >= $3 AND reported_at < $4
  AND ($5::text IS NULL OR category_code = $5) AND status NOT IN ('void', 'rejected')"""

AREA_GEOJSON_SQL = "SELECT ST_AsGeoJSON(geom) FROM areas WHERE id = $1"

GRIDS_SQL = """
SELECT code, name, ST_AsGeoJSON(ST_SimplifyPreserveTopology(geom, 5e-6), 6) AS geojson FROM areas
WHERE level = 'grid' AND version_id = (SELECT id FROM grid_versions WHERE status = 'active') AND starts_with(code, $1)
ORDER BY code"""

GRID_NEIGHBOURS_SQL = """
WITH g AS (SELECT code, geom FROM areas
           WHERE level = 'grid' AND version_id = (SELECT id FROM grid_versions WHERE status = 'active')
             AND starts_with(code, $1))
SELECT x.code, y.code FROM g x JOIN g y ON x.code < y.code AND ST_Intersects(x.geom, y.geom)"""


def benjamini_hochberg(p: np.ndarray, alpha: float = 0.05) -> np.ndarray:
    """Flags of the p-values rejected by the Benjamini–Hochberg step-up procedure at FDR `alpha`."""
    p = np.asarray(p, dtype=float)
    m = len(p)
    if m == 0:
        return np.zeros(0, dtype=bool)
    order = np.argsort(p, kind="stable")
    below = p[order] <= alpha * np.arange(1, m + 1) / m
    flags = np.zeros(m, dtype=bool)
    if below.any():
        flags[order[: np.flatnonzero(below).max() + 1]] = True
    return flags


def gi_star(counts: np.ndarray, neighbours: dict, ids: list, permutations: int = 99, seed: int = SEED):
    """esda G_Local (star=True, binary weights): analytical z-scores, two-sided p, pseudo p (permutations)."""
    from esda import G_Local
    from libpysal.weights import W
    from scipy import stats

    w = W({i: neighbours.get(i, []) for i in ids}, id_order=ids, silence_warnings=True)
    g = G_Local(counts.astype(float), w, transform="B", star=True, permutations=permutations, seed=seed,
                n_jobs=1, keep_simulations=False)
    z = np.asarray(g.Zs, dtype=float)
    p = 2 * stats.norm.sf(np.abs(z))
    p_sim = np.asarray(g.p_sim, dtype=float) if permutations else np.full(len(ids), np.nan)
    return z, p, p_sim


def h3_cells(area_geojson: str, lon: np.ndarray, lat: np.ndarray, resolution: int):
    """H3 cells covering the area (centres inside) plus those holding incidents; cell of each incident."""
    import h3
    import orjson

    geo = orjson.loads(area_geojson)
    cells = set(h3.geo_to_cells(geo, resolution))
    of_incident = [h3.latlng_to_cell(y, x, resolution) for x, y in zip(lon, lat, strict=False)]
    cells.update(of_incident)
    ids = sorted(cells)
    index = {c: i for i, c in enumerate(ids)}
    neighbours = {c: [n for n in h3.grid_ring(c, 1) if n in index] for c in ids}
    polygons = {c: {"type": "Polygon", "coordinates": [[[round(x, 6), round(y, 6)] for y, x in
                                                         (list(h3.cell_to_boundary(c)) + [h3.cell_to_boundary(c)[0]])]]}
                for c in ids}
    return ids, [index[c] for c in of_incident], neighbours, polygons


def analyse(ids: list, neighbours: dict, cell_of: np.ndarray, times: Sequence[datetime], t0: datetime, t1: datetime,
            windows: int, alpha: float, permutations: int) -> dict:
    """Counts, Gi* and BH flags over the period and each window; pure numpy/esda."""
    n = len(ids)
    counts = np.bincount(cell_of, minlength=n) if len(cell_of) else np.zeros(n, dtype=int)
    if n < 3:
        raise InvalidInput("Too few cells for Gi*: choose a larger area or a finer resolution.", field="area")
    if counts.min() == counts.max():  # no variance: Gi* is undefined, nothing is significant
        z, p, p_sim = np.zeros(n), np.ones(n), np.ones(n)
    else:
        z, p, p_sim = gi_star(counts, neighbours, ids, permutations)
    sig = benjamini_hochberg(p, alpha)
    result: dict[str, Any] = {"counts": counts, "z": z, "p": p, "p_sim": p_sim, "significant": sig, "windows": []}
    hot_every = np.ones(n, dtype=bool)
    edges = [t0 + (t1 - t0) * i / windows for i in range(windows + 1)]
    ts = np.array([t.timestamp() for t in times]) if len(times) else np.zeros(0)
    for a, b in zip(edges[:-1], edges[1:], strict=False):
        inside = (ts >= a.timestamp()) & (ts < b.timestamp())
        wc = np.bincount(cell_of[inside], minlength=n) if inside.any() else np.zeros(n, dtype=int)
        if wc.sum() == 0 or wc.min() == wc.max():
            wz, wsig = np.zeros(n), np.zeros(n, dtype=bool)
        else:
            wz, wp, _ = gi_star(wc, neighbours, ids, 0)
            wsig = benjamini_hochberg(wp, alpha)
        hot = wsig & (wz > 0)
        hot_every &= hot
        result["windows"].append({"from": a, "to": b, "incidents": int(wc.sum()), "hot_cells": int(hot.sum()),
                                  "cold_cells": int((wsig & (wz < 0)).sum()), "hot": hot})
    result["persistent"] = hot_every if windows > 1 else np.zeros(n, dtype=bool)
    return result


async def hotspots(conn, caller: Caller, code: str | None, start: str | None = None, end: str | None = None,
                   category: str | None = None, by: str = "h3", resolution: int = 8, windows: int = 1,
                   alpha: float = 0.05, permutations: int = 99, now: datetime | None = None) -> dict:
    """Significant hot and cold cells (GeoJSON) with counts, z, p and BH flags, and per-window persistence."""
    area = await resolve_area(conn, caller, code)
    if by not in ("h3", "grid"):
        raise InvalidInput("`by` must be h3 or grid.", field="by")
    if not 5 <= resolution <= 10:
        raise InvalidInput("`resolution` must be an H3 resolution from 5 to 10.", field="resolution")
    if not 1 <= windows <= 24:
        raise InvalidInput("`windows` must be between 1 and 24.", field="windows")
    if not 0 < alpha < 1:
        raise InvalidInput("`alpha` must be in (0, 1).", field="alpha")
    t0, t1, _ = window(start, end, now or datetime.now(TZ))
    rows = await conn.fetch(INCIDENTS_SQL, area.code, caller.scope, t0, t1, category)
    lon = np.array([r["lon"] for r in rows], dtype=float)
    lat = np.array([r["lat"] for r in rows], dtype=float)
    times = [r["reported_at"] for r in rows]
    if by == "h3":
        geojson = await conn.fetchval(AREA_GEOJSON_SQL, area.id)
        ids, cell_of, neighbours, polygons = await asyncio.to_thread(h3_cells, geojson, lon, lat, resolution)
        names = {}
    else:
        grids = await conn.fetch(GRIDS_SQL, area.code)
        ids = [g["code"] for g in grids]
        index = {c: i for i, c in enumerate(ids)}
        polygons = {g["code"]: g["geojson"] for g in grids}
        names = {g["code"]: g["name"] for g in grids}
        neighbours = {c: [] for c in ids}
        for a, b in await conn.fetch(GRID_NEIGHBOURS_SQL, area.code):
            neighbours[a].append(b)
            neighbours[b].append(a)
        # incidents filed under grid codes of the active version; others (older versions) are left out
        cell_of = [index.get(r["grid_code"], -1) for r in rows]
        keep = np.array([c >= 0 for c in cell_of], dtype=bool)
        times = [t for t, k in zip(times, keep, strict=False) if k]
        cell_of = [c for c in cell_of if c >= 0]
    result = await asyncio.to_thread(analyse, ids, neighbours, np.asarray(cell_of, dtype=int), times, t0, t1,
                                     windows, alpha, permutations)
    import orjson

    features = []
    for i, cell in enumerate(ids):
        if not result["significant"][i] and not result["persistent"][i]:
            continue
        z = float(result["z"][i])
        geometry = polygons[cell]
        features.append({
            "type": "Feature", "id": cell,
            "geometry": orjson.loads(geometry) if isinstance(geometry, str) else geometry,
            "properties": {"cell": cell, "name": names.get(cell), "count": int(result["counts"][i]),
                           "z": round(z, 4), "p": float(result["p"][i]), "p_sim": float(result["p_sim"][i]),
                           "hotspot": "hot" if z > 0 else "cold", "significant": bool(result["significant"][i]),
                           "windows_hot": sum(bool(w["hot"][i]) for w in result["windows"]),
                           "persistent": bool(result["persistent"][i])}})
    features.sort(key=lambda f: -abs(f["properties"]["z"]))
    sig, z = result["significant"], result["z"]
    return {
        "area": area.as_json(), "by": by, "resolution": resolution if by == "h3" else None,
        "category": category, "from": t0.astimezone(TZ).isoformat(), "to": t1.astimezone(TZ).isoformat(),
        "alpha": alpha, "permutations": permutations, "seed": SEED,
        "cells": len(ids), "incidents": int(result["counts"].sum()),
        "hot_cells": int((sig & (z > 0)).sum()), "cold_cells": int((sig & (z < 0)).sum()),
        "persistent_cells": int(result["persistent"].sum()),
        "windows": [{"from": w["from"].astimezone(TZ).isoformat(), "to": w["to"].astimezone(TZ).isoformat(),
                     "incidents": w["incidents"], "hot_cells": w["hot_cells"], "cold_cells": w["cold_cells"]}
                    for w in result["windows"]],
        "features": {"type": "FeatureCollection", "features": features},
        "definitions": {
            "z": "Getis-Ord Gi* z-score (esda G_Local, star=True, binary contiguity weights incl. the cell itself)",
            "p": "two-sided normal p-value of z; significant = Benjamini–Hochberg at alpha over all cells",
            "p_sim": "permutation pseudo p-value (seeded), for reference",
            "persistent": "hot (significant, z > 0) in every one of the consecutive windows",
        },
    }
