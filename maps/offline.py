"""Folium pages that work offline: Leaflet and d3 are served from /static, not from CDNs."""

import folium

STATIC = "/static/vendor"
LOCAL_JS = [("leaflet", f"{STATIC}/leaflet/leaflet.js")]
LOCAL_CSS = [("leaflet_css", f"{STATIC}/leaflet/leaflet.css")]
# branca's colormap legend adds d3 from a CDN while rendering; swap it for the vendored copy.
CDN_SWAPS = {"https://cdnjs.cloudflare.com/ajax/libs/d3/3.5.5/d3.min.js": f"{STATIC}/d3/d3.min.js"}


def new_map(**kwargs) -> folium.Map:
    """A folium Map whose own scripts are local; only basemap tiles need the network."""
    fmap = folium.Map(tiles="OpenStreetMap", control_scale=True, prefer_canvas=False, **kwargs)
    fmap.default_js = LOCAL_JS
    fmap.default_css = LOCAL_CSS
    return fmap


def render(fmap: folium.Map) -> str:
    html = fmap.get_root().render()
    for cdn, local in CDN_SWAPS.items():
        html = html.replace(cdn, local)
    return html
