"""The supervisor's coverage map: covered and uncovered households, responder reach (dissolved buffers, and road
isochrones where a road network is loaded), proposed posts (MCLP) against today's positions, hotspot cells and
the coverage curve.

geo.analysis.coverage_map gathers the data (the analyses, the outlines and the dissolved reach, computed in
PostGIS); `build` here is a pure function of it. Buildings
are drawn on one canvas from compact rows: uncovered ones individually, covered ones aggregated to small cells
when there are many, so a whole district stays light.
"""

import math

import folium
import orjson
import shapely
from branca.element import MacroElement
from folium.template import Template

from geo.analysis import coverage
from geo.analysis.coverage_map import HOTSPOT_DAYS, MAX_DISTANCE_M, CoverageData
from maps import offline
from maps.html import add_head, esc

BASE = "/maps/coverage"
COVERED, UNCOVERED = "#1a9850", "#d7191c"
LEVEL_NAMES = {"district": "区", "street": "街道", "community": "社区", "grid": "网格"}


# Discs of D metres (geodesic buffers) around every available responder with a fresh position that is within D
# of the area, dissolved into one (multi)polygon; the && pre-filter is generous (1° ≥ 50 km up to 63° N).

# ----------------------------------------------------------------- page

CSS = """
<style>
.leaflet-container, .leaflet-control-layers, .wg-panel { font-family: FONT; }
.wg-panel { background: rgba(255,255,255,0.96); border-radius: 6px; box-shadow: 0 1px 5px rgba(0,0,0,0.35);
  padding: 8px 10px; font-size: 12px; color: #222; line-height: 1.4; }
.wg-panel h1 { font-size: 16px; margin: 0 0 2px 0; }
.wg-panel .muted { color: #777; font-size: 11px; }
.wg-head { width: 330px; }
.wg-kpis { display: grid; grid-template-columns: 1fr 1fr 1fr; gap: 5px; margin: 6px 0; }
.wg-kpi { background: #f3f6fb; border-radius: 4px; padding: 3px 5px; }
.wg-kpi b { display: block; font-size: 16px; }
.wg-kpi.red b { color: #c0161d; }
.wg-kpi.green b { color: #1a7a3a; }
.wg-kpi span { font-size: 10.5px; color: #555; }
.wg-sec { border-top: 1px solid #e3e3e3; margin-top: 5px; padding-top: 4px; }
.wg-sec h4 { margin: 0 0 2px 0; font-size: 12px; }
.wg-cmp { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
.wg-cmp td { padding: 1px 3px; }
.wg-cmp td.n { text-align: right; }
.wg-form { display: flex; gap: 4px; align-items: center; margin-top: 5px; }
.wg-form input { width: 56px; font-size: 12px; }
.wg-form button { background: #1f4e9e; color: #fff; border: 0; border-radius: 3px; padding: 2px 8px; cursor: pointer; }
.wg-chart-panel { padding: 4px 6px 2px 6px; }
.wg-chart-panel svg { display: block; }
.wg-legend { width: 215px; }
.wg-legend h4 { margin: 0 0 4px 0; font-size: 12px; }
.wg-legend .row { display: flex; align-items: center; gap: 6px; margin: 2px 0; }
.wg-legend .dot { width: 10px; height: 10px; border-radius: 50%; display: inline-block; box-sizing: border-box; }
.wg-legend .sw { width: 18px; height: 12px; display: inline-block; box-sizing: border-box; }
.wg-post-icon.kept { background: rgba(255,127,0,0.25); border-color: #ff7f00; }
.wg-post-icon { width: 12px; height: 12px; background: #ff7f00; border: 2px solid #fff; transform: rotate(45deg);
  box-shadow: 0 0 0 1px #a34f00, 0 1px 3px rgba(0,0,0,0.5); box-sizing: border-box; }
.wg-note { color: #8a4b00; font-size: 11px; margin-top: 3px; }
</style>
"""



class _Layers(MacroElement):
    _template = Template("""
        {% macro script(this, kwargs) %}
        (function () {
            var map = {{ this._parent.get_name() }}, tiles = {{ this.tiles }}, overlays = {}, L_ = WG.labels;
            map.createPane('wgBuildings'); map.getPane('wgBuildings').style.zIndex = 450;
            var canvas = L.canvas({padding: 0.3, pane: 'wgBuildings'});
            var outline = L.featureGroup();
            WG.children.forEach(function (c) {
                L.geoJSON(c.geometry, {interactive: false, style: {color: '#0b2e6b', weight: 1.2, fill: false,
                    opacity: 0.6, dashArray: '4 3', className: 'wg-child'}}).addTo(outline); });
            if (WG.outline) L.geoJSON(WG.outline, {interactive: false, style: {color: '#111', weight: 3,
                fill: false, className: 'wg-outline'}}).addTo(outline);
            outline.addTo(map); overlays[L_.outline] = outline;
            if (WG.reach) {
                var reach = L.geoJSON(WG.reach, {style: {color: '#2c7fb8', weight: 1, fillColor: '#41b6c4',
                    fillOpacity: 0.18, className: 'wg-reach'}}).bindTooltip(L_.reachTip, {sticky: true});
                reach.addTo(map); overlays[L_.reach] = reach;
            }
            if (WG.iso && WG.iso.area) {
                var iso = L.geoJSON(WG.iso.area, {style: {color: '#6a51a3', weight: 1, fillColor: '#9e9ac8',
                    fillOpacity: 0.25, className: 'wg-iso'}}).bindTooltip(L_.isoTip, {sticky: true});
                iso.addTo(map); overlays[L_.iso] = iso;
            }
            map.createPane('wgHot'); map.getPane('wgHot').style.zIndex = 440;
            if (WG.hot && WG.hot.features.length) {
                var hot = L.geoJSON(WG.hot, {pane: 'wgHot', style: function (f) {
                    var h = f.properties.hotspot === 'hot';
                    return {color: h ? '#b2182b' : '#2166ac', weight: f.properties.persistent ? 2.5 : 1,
                            fillColor: h ? '#ef8a62' : '#67a9cf', fillOpacity: 0.45,
                            className: 'wg-hot wg-hot-' + f.properties.hotspot}; },
                    onEachFeature: function (f, l) { var p = f.properties;
                        l.bindTooltip((p.hotspot === 'hot' ? '热点 hot' : '冷点 cold') + ' · ' + p.count + ' 件 · z=' +
                                      p.z.toFixed(2) + (p.persistent ? ' · 持续' : ''), {sticky: true}); }});
                hot.addTo(map); overlays[L_.hot] = hot;
            }
            var cov = L.featureGroup(), unc = L.featureGroup();
            WG.covered.forEach(function (r) {
                L.circleMarker([r[0], r[1]], {renderer: canvas,
                    radius: r[3] > 1 ? Math.min(2.5 + Math.sqrt(r[3]), 8) : 2.5, stroke: false,
                    fillColor: WG.colours.covered, fillOpacity: 0.55,
                    interactive: r[3] > 1 || WG.covered.length < 4000})
                  .bindTooltip(r[3] > 1 ? r[3] + ' 栋 · ' + r[2] + ' 户 (已覆盖 covered)'
                                        : r[2] + ' 户 (已覆盖 covered)')
                  .addTo(cov); });
            WG.uncovered.forEach(function (r) {
                L.circleMarker([r[0], r[1]], {renderer: canvas, radius: 3.5, color: '#7f0000', weight: 0.8,
                    fillColor: WG.colours.uncovered, fillOpacity: 0.9})
                  .bindTooltip(r[2] + ' 户 · ' + (r[3] == null ? '无可用处置力量' : '最近处置力量 ' + r[3] + ' m') +
                               ' (未覆盖 uncovered)').addTo(unc); });
            cov.addTo(map); unc.addTo(map);
            overlays[L_.covered] = cov; overlays[L_.uncovered] = unc;
            var today = L.featureGroup();
            WG.today.forEach(function (r) {
                L.circleMarker([r[0], r[1]], {radius: 5, color: '#fff', weight: 1.5, fillColor: '#08519c',
                    fillOpacity: 1, className: 'wg-today'}).bindTooltip('今日位置 ' + wgEsc(r[3]) + ' #' + r[2])
                  .addTo(today); });
            today.addTo(map); overlays[L_.today] = today;
            if (WG.posts) {
                var posts = L.featureGroup();
                WG.posts.features.forEach(function (f) { var c = f.geometry.coordinates, p = f.properties;
                    var kept = p.candidate_kind === 'current_position';
                    L.marker([c[1], c[0]], {icon: L.divIcon({className: 'wg-post', iconSize: [12, 12],
                        html: '<div class="wg-post-icon' + (kept ? ' kept' : '') + '"></div>'}), zIndexOffset: 500})
                      .bindTooltip('建议站点 proposed post · 覆盖 ' + p.households_covered + ' 户' +
                                   (kept ? ' (保留今日位置 keeps a current position)' : '')).addTo(posts); });
                posts.addTo(map); overlays[L_.posts] = posts;
            }
            var b = WG.bounds, wide = map.getSize().x >= 900;
            map.fitBounds([[b[1], b[0]], [b[3], b[2]]], {animate: false,
                paddingTopLeft: wide ? [350, 10] : [10, 10], paddingBottomRight: wide ? [235, 10] : [10, 10]});
            wgPanel(map, 'topleft', WG.head);
            wgPanel(map, 'bottomleft', WG.chart);
            L.control.layers({'OpenStreetMap': tiles}, overlays, {collapsed: false, position: 'topright'}).addTo(map);
            wgPanel(map, 'bottomright', WG.legend);
            document.documentElement.setAttribute('data-wg-ready-ms', Math.round(performance.now()));
        })();
        {% endmacro %}
    """)

    def __init__(self, tiles: str):
        super().__init__()
        self._name = "WgCoverageLayers"
        self.tiles = tiles


def _pct(x) -> str:
    return "—" if x is None else f"{x:.1%}"


def _head(d: CoverageData) -> str:
    s, r = d.summary, d.responders
    area = d.area
    posts = ""
    if d.posts:
        p, c = d.posts["proposed"], d.posts["current"]
        posts = f"""<div class="wg-sec"><h4>建议布点 proposed posts (MCLP, k={d.posts['k']}, {d.distance_m:g} m)</h4>
<table class="wg-cmp"><tr><td>今日位置 today ({c['responders']})</td><td class="n">{c['households_covered']:,} 户</td>
<td class="n">{_pct(c['share_covered'])}</td></tr>
<tr><td><b>建议 proposed ({p['posts']})</b></td><td class="n"><b>{p['households_covered']:,} 户</b></td>
<td class="n"><b>{_pct(p['share_covered'])}</b></td></tr></table>
<div class="muted">增加覆盖 gain {d.posts['gain_households']:+,} 户 · 全覆盖最少需 LSCP
{d.posts['lscp'].get('posts_needed') if d.posts['lscp'].get('posts_needed') is not None else '—'} 个站点</div></div>"""
    if d.posts_note:
        posts += f'<div class="wg-note">{esc(d.posts_note)}</div>'
    hot = ""
    if d.hotspots:
        h = d.hotspots
        hot = (f'<div class="wg-sec"><h4>热点 hotspots (近 {HOTSPOT_DAYS} 天 · H3 r{h["resolution"]})</h4>'
               f'{h["incidents"]:,} 件事件 · <b style="color:#b2182b">{h["hot_cells"]}</b> 个热点格 · '
               f'{h["cold_cells"]} 个冷点格 <span class="muted">(Gi*, FDR {h["alpha"]})</span></div>')
    if d.hotspots_note:
        hot += f'<div class="wg-note">{esc(d.hotspots_note)}</div>'
    notes = "".join(f'<div class="wg-note">{esc(n)}</div>' for n in d.notes)
    cell = (f' · 已覆盖建筑按 {s["cell_m"]:.0f} m 格聚合' if s.get("cell_m") else "")
    return f"""<div class="wg-panel wg-head">
<h1>{esc(area['name'])} · 响应覆盖</h1>
<div class="muted">{esc(area['code'])} · {LEVEL_NAMES.get(area['level'], '')} · Response coverage within
{d.distance_m:g} m (直线 straight){cell}</div>
<div class="wg-kpis">
 <div class="wg-kpi green"><b>{_pct(s['share'])}</b><span>户数覆盖率 households covered</span></div>
 <div class="wg-kpi red"><b>{s['households_uncovered']:,}</b><span>未覆盖户 ({s['buildings_uncovered']:,} 栋)</span>
 </div>
 <div class="wg-kpi"><b>{r.get('fresh', 0):,}</b><span>可用处置力量
 (过期 {r.get('stale', 0):,} · 忙/休 {r.get('unavailable', 0):,})</span></div>
</div>
<div class="muted">{s['buildings']:,} 栋建筑 · {s['households']:,} 户 ·
 覆盖范围来自 {d.reach_responders:,} 名可用处置力量</div>
{posts}{hot}{notes}
<form class="wg-form" method="get" action="{BASE}"><input type="hidden" name="area" value="{esc(area['code'])}">
<label>距离 <input type="number" name="distance" min="50" max="{MAX_DISTANCE_M}" step="50"
 value="{d.distance_m:g}"> m</label>
<button type="submit">更新 Update</button></form>
</div>"""


def _legend(d: CoverageData) -> str:
    iso = ""
    if d.isochrones and d.isochrones.get("area"):
        iso = (f'<div class="row"><span class="sw" style="background:rgba(158,154,200,.5);border:1px solid #6a51a3">'
               f'</span> 道路 {d.isochrones["minutes"]:g} 分钟可达 road isochrone</div>')
    return f"""<div class="wg-panel wg-legend">
<h4>图例 Legend</h4>
<div class="row"><span class="dot" style="background:{COVERED};opacity:.7"></span> 已覆盖住户 covered households</div>
<div class="row"><span class="dot" style="background:{UNCOVERED};border:1px solid #7f0000"></span>
 未覆盖住户 uncovered</div>
<div class="row"><span class="sw" style="background:rgba(65,182,196,.3);border:1px solid #2c7fb8"></span>
 {d.distance_m:g} m 覆盖范围 responder reach</div>{iso}
<div class="row"><span class="dot"
 style="background:#08519c;border:1.5px solid #fff;box-shadow:0 0 0 1px #08519c"></span>
 今日位置 today's positions</div>
<div class="row"><span class="wg-post-icon" style="margin:0 2px"></span> 建议新站点 proposed post</div>
<div class="row"><span class="wg-post-icon kept" style="margin:0 2px"></span> 建议保留今日位置 kept position</div>
<div class="row"><span class="sw" style="background:rgba(239,138,98,.5);border:1px solid #b2182b"></span> 热点 hot
<span class="sw" style="background:rgba(103,169,207,.5);border:1px solid #2166ac"></span> 冷点 cold</div>
<div class="muted">粗边 = 持续热点 persistent · 虚线 = 下级区域</div>
</div>"""


def _bounds(d: CoverageData) -> list[float]:
    if d.outline:
        return list(shapely.bounds(shapely.from_geojson(orjson.dumps(d.outline).decode())))
    pts = d.buildings["uncovered"] + d.buildings["covered"]
    if pts:
        ys, xs = [p[0] for p in pts], [p[1] for p in pts]
        return [min(xs), min(ys), max(xs), max(ys)]
    return [116.3, 39.85, 116.45, 39.95]


def build(d: CoverageData) -> folium.Map:
    """The coverage page for `d`."""
    minx, miny, maxx, maxy = _bounds(d)
    fmap = offline.new_map(location=[(miny + maxy) / 2, (minx + maxx) / 2],
                           zoom_start=max(10, min(17, int(math.log2(360 / max(maxx - minx, 1e-4)) + 1))),
                           zoom_snap=0.25, zoom_delta=0.5)
    tiles = next(c for c in fmap._children.values() if isinstance(c, folium.TileLayer))
    title = "覆盖率曲线 coverage curve"
    chart = coverage.curve_svg(d.curve, title, marker_m=d.distance_m, width=330, height=200)
    chart = chart.replace("<svg ", '<svg class="wg-curve" ', 1)
    n_cov = d.summary["buildings_covered"]
    iso = d.isochrones or {}
    hot = d.hotspots["features"] if d.hotspots else None
    labels = {
        "outline": f"边界 outline{' + 下级' if d.children else ''}",
        "reach": f"覆盖范围 reach {d.distance_m:g} m", "reachTip": f"{d.distance_m:g} m 内有可用处置力量",
        "iso": f"道路等时圈 isochrones {iso.get('minutes', 0):g} min",
        "isoTip": f"道路 {iso.get('minutes', 0):g} 分钟可达 ({iso.get('network', '')})",
        "hot": f"热点 hotspots ({len(hot['features']) if hot else 0})",
        "covered": f"已覆盖 covered ({n_cov:,})",
        "uncovered": f"未覆盖 uncovered ({d.summary['buildings_uncovered']:,})",
        "today": f"今日位置 today ({len(d.today)})",
        "posts": f"建议站点 proposed posts ({d.posts['proposed']['posts'] if d.posts else 0})",
    }
    head_html = _head(d)
    config = {
        "bounds": [minx, miny, maxx, maxy], "outline": d.outline, "children": d.children, "reach": d.reach,
        "iso": iso or None, "hot": hot, "covered": d.buildings["covered"], "uncovered": d.buildings["uncovered"],
        "today": d.today, "posts": d.posts["mclp"]["posts"] if d.posts else None,
        "colours": {"covered": COVERED, "uncovered": UNCOVERED}, "labels": labels,
        "head": head_html, "legend": _legend(d),
        "chart": f'<div class="wg-panel wg-chart-panel">{chart}</div>',
    }
    add_head(fmap, f"{d.area['name']} 响应覆盖 — Wangge", CSS, config)
    fmap.add_child(_Layers(tiles.get_name()))
    return fmap
