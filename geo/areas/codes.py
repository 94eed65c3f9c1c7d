"""Grid codes: community code + 3-digit sequence, numbered west to east and north to south."""

import numpy as np
import shapely

MAX_SEQUENCE = 999


def reading_order(geoms) -> np.ndarray:
    """Indices of `geoms` north to south in rows of similar northing, then west to east."""
    geoms = list(geoms)
    if not geoms:
        return np.array([], int)
    pts = shapely.centroid(geoms)
    x, y = shapely.get_x(pts), shapely.get_y(pts)
    tol = 0.5 * np.sqrt(np.median([g.area for g in geoms]))
    row, rows, top = np.empty(len(geoms), int), 0, None
    for i in np.argsort(-y, kind="stable"):
        if top is not None and top - y[i] > tol:
            rows += 1
            top = None
        top = y[i] if top is None else top
        row[i] = rows
    return np.lexsort((x, row))


def new_codes(community_code: str, used: set[str], geoms) -> list[str]:
    """Codes for new grids of a community, in reading order, taking the lowest sequences not in `used`.

    Surviving grids keep their codes, so new ones fill the free numbers (a retired code is never reused
    inside the same version because `used` holds every code the plan still has)."""
    free = (f"{community_code}{n:03d}" for n in range(1, MAX_SEQUENCE + 1) if f"{community_code}{n:03d}" not in used)
    codes = [""] * len(geoms)
    for i in reading_order(geoms):
        code = next(free, None)
        if code is None:
            from geo.errors import InvalidInput

            raise InvalidInput(f"Community {community_code} has no free grid numbers left (at most {MAX_SEQUENCE}).")
        codes[i] = code
    return codes


def match_codes(community_code: str, old, new_geoms, taken: set[str], same_place: float = 0.5) -> list[str]:
    """Codes for a community's redrawn grids: a new grid on the same place as an old one keeps its code.

    `old` is a GeoDataFrame (code, geometry) of the grids being replaced; "same place" means an
    intersection-over-union of at least `same_place`, matched greedily from the best pair. The rest get
    fresh numbers by the reading-order rule, skipping `taken` (every code the community has ever had)."""
    new_geoms = list(new_geoms)
    codes: list[str | None] = [None] * len(new_geoms)
    pairs = []
    if len(old) and new_geoms:
        old_geoms = list(old.geometry)
        for i, geom in enumerate(new_geoms):
            for j in range(len(old_geoms)):
                if not geom.intersects(old_geoms[j]):
                    continue
                inter = geom.intersection(old_geoms[j]).area
                union = geom.area + old_geoms[j].area - inter
                if union > 0 and inter / union >= same_place:
                    pairs.append((inter / union, i, j))
    used_old = set()
    for _, i, j in sorted(pairs, reverse=True):
        if codes[i] is None and j not in used_old:
            codes[i] = old["code"].iloc[j]
            used_old.add(j)
    rest = [i for i, c in enumerate(codes) if c is None]
    # one fresh code per unmatched grid, in the order of `rest` (ascending index)
    fresh = iter(new_codes(community_code, set(taken) | {c for c in codes if c}, [new_geoms[i] for i in rest]))
    return [c if c is not None else next(fresh) for c in codes]
