"""Folium pages that work offline: Leaflet, d3 and the Leaflet plugins are served from /static, not from CDNs."""

import folium

STATIC = "/static/vendor"
LOCAL_JS = [("leaflet", f"{STATIC}/leaflet/leaflet.js")]
LOCAL_CSS = [("leaflet_css", f"{STATIC}/leaflet/leaflet.css")]
_CDNJS = "https://cdnjs.cloudflare.com/ajax/libs"
# branca's colormap legend and folium's plugins add their scripts from CDNs while rendering; swap them
# for the vendored copies. MarkerCluster 1.5.3 keeps the 1.1.0 API folium was written against. The
# heat layer is npm leaflet.heat 0.2.0, not folium's patched build: pass `max=` (weights saturate at
# it, default 1) and `max_zoom=` (weights are divided by 2 per zoom level below it) explicitly.
CDN_SWAPS = {
    f"{_CDNJS}/d3/3.5.5/d3.min.js": f"{STATIC}/d3/d3.min.js",
    f"{_CDNJS}/leaflet.markercluster/1.1.0/leaflet.markercluster.js":
        f"{STATIC}/leaflet.markercluster/leaflet.markercluster.js",
    f"{_CDNJS}/leaflet.markercluster/1.1.0/MarkerCluster.css": f"{STATIC}/leaflet.markercluster/MarkerCluster.css",
    f"{_CDNJS}/leaflet.markercluster/1.1.0/MarkerCluster.Default.css":
        f"{STATIC}/leaflet.markercluster/MarkerCluster.Default.css",
    "https://cdn.jsdelivr.net/gh/python-visualization/folium@main/folium/templates/leaflet_heat.min.js":
        f"{STATIC}/leaflet.heat/leaflet-heat.js",
    # folium's Draw asks for 1.0.2; the vendored 1.0.4 has the same API (bug fixes only)
    f"{_CDNJS}/leaflet.draw/1.0.2/leaflet.draw.js": f"{STATIC}/leaflet.draw/leaflet.draw.js",
    f"{_CDNJS}/leaflet.draw/1.0.2/leaflet.draw.css": f"{STATIC}/leaflet.draw/leaflet.draw.css",
}


def new_map(**kwargs) -> folium.Map:
    """A folium Map whose own scripts are local; only basemap tiles need the network."""
    fmap = folium.Map(tiles="OpenStreetMap", control_scale=True, prefer_canvas=False, **kwargs)
    fmap.default_js = LOCAL_JS
    fmap.default_css = LOCAL_CSS
    return fmap


def render(fmap: folium.Map) -> str:
    """The page's HTML, with CDN scripts swapped for the vendored copies."""
    html = fmap.get_root().render()
    for cdn, local in CDN_SWAPS.items():
        html = html.replace(cdn, local)
    return html
