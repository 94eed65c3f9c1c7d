"""The grid hierarchy map: outlines per level, grids coloured by households, popups and a legend."""

import folium
import geopandas as gpd
import pandas as pd
import shapely
from branca.colormap import LinearColormap

from maps import offline
from maps.html import Raw, esc, header

LEVEL_STYLE = {  # outline colour and weight per level, coarse to fine
    "district": ("#222222", 4),
    "street": ("#1f4e9e", 3),
    "community": ("#4a90d9", 1.5),
}
LEVEL_LABEL = {"district": "区 district", "street": "街道 streets", "community": "社区 communities"}
TARGET_HOUSEHOLDS = 300


def frame(rows: list) -> gpd.GeoDataFrame:
    """Rows of (code, level, name, kind, households, worker, geojson) as a GeoDataFrame."""
    data = pd.DataFrame(rows, columns=["code", "level", "name", "kind", "households", "worker", "geojson"])
    geometry = shapely.from_geojson(data.pop("geojson").to_numpy())
    data["kind"] = data["kind"].fillna("")
    data["worker"] = data["worker"].fillna("(none)")
    return gpd.GeoDataFrame(data, geometry=geometry, crs="EPSG:4326")


def build(areas: gpd.GeoDataFrame, title: str) -> folium.Map:
    """A folium map of `areas` (any mix of levels)."""
    minx, miny, maxx, maxy = areas.total_bounds
    fmap = offline.new_map(location=[(miny + maxy) / 2, (minx + maxx) / 2], zoom_start=13)
    header(fmap).add_child(Raw(f"<title>{esc(title)}</title>"))
    grids = areas[areas["level"] == "grid"]
    if len(grids):
        low, high = int(grids["households"].min()), int(grids["households"].max())
        colormap = LinearColormap(["#ffffcc", "#fd8d3c", "#bd0026"], vmin=low, vmax=max(high, low + 1),
                                  caption=f"Households per grid (target {TARGET_HOUSEHOLDS})")
        folium.GeoJson(
            grids[["code", "name", "kind", "households", "worker", "geometry"]],
            name=f"网格 grids ({len(grids)}) by households",
            style_function=lambda f: {
                "fillColor": colormap(f["properties"]["households"]), "fillOpacity": 0.65,
                "color": "#555555", "weight": 0.6,
                "dashArray": "4 3" if f["properties"]["kind"] == "commercial" else None,
            },
            highlight_function=lambda f: {"weight": 2.5, "color": "#000000"},
            popup=folium.GeoJsonPopup(fields=["code", "name", "kind", "households", "worker"],
                                      aliases=["code", "name", "kind", "households", "worker"]),
            tooltip=folium.GeoJsonTooltip(fields=["name", "households"]),
        ).add_to(fmap)
        colormap.add_to(fmap)
    for level, (color, weight) in LEVEL_STYLE.items():
        layer = areas[areas["level"] == level]
        if len(layer):
            folium.GeoJson(
                layer[["code", "name", "households", "geometry"]],
                name=LEVEL_LABEL[level],
                style_function=lambda f, color=color, weight=weight: {"color": color, "weight": weight,
                                                                      "fill": False},
                tooltip=folium.GeoJsonTooltip(fields=["code", "name", "households"]),
            ).add_to(fmap)
    folium.LayerControl(collapsed=False).add_to(fmap)
    fmap.fit_bounds([[miny, minx], [maxy, maxx]])
    return fmap
