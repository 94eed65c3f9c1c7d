"""The dispatcher's map: a point, the grid covering it, the k nearest responders with lines, distances and ETAs
(stale positions greyed out), and the road route when mode=network.

geo.dispatch.dispatch_map gathers the data (fresh candidates as /dispatch/nearest ranks them, stale positions
for display, the grid under the point); `build` here is a pure function of it. Everything is drawn in the browser from
compact rows, on SVG paths with CSS classes (wg-responder, wg-stale, wg-line, wg-route, wg-grid) so the page is
testable from its DOM.
"""


import folium
import orjson
from branca.element import MacroElement
from folium.template import Template

from geo.dispatch.dispatch_map import DispatchData
from maps import offline
from maps.html import add_head, esc

BASE = "/maps/dispatch"
ROLE_LABELS = {"grid_worker": "网格员", "patrol": "巡逻", "department_crew": "部门"}
STATUS_LABELS = {"available": "空闲", "busy": "忙碌", "off_duty": "下班"}
RANK_COLOURS = ["#1a9850", "#66bd63", "#a6d96a", "#fdae61", "#f46d43", "#d73027"]

# ----------------------------------------------------------------- page

def fmt_eta(seconds) -> str:
    """An ETA in 秒, 分 and 小时 (不可达 when unreachable)."""
    if seconds is None:
        return "不可达"
    s = int(round(float(seconds)))
    if s < 60:
        return f"{s}秒"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}分{s:02d}秒"
    h, m = divmod(m, 60)
    return f"{h}小时{m:02d}分"


def fmt_m(metres) -> str:
    """A distance in metres or kilometres."""
    if metres is None:
        return "—"
    metres = float(metres)
    return f"{metres:,.0f} m" if metres < 1000 else f"{metres / 1000:.2f} km"


def fmt_age(seconds) -> str:
    """A position's age in words."""
    if seconds is None:
        return "无定位"
    s = int(seconds)
    if s < 60:
        return f"{s}秒前"
    if s < 3600:
        return f"{s // 60}分钟前"
    if s < 86400:
        return f"{s // 3600}小时前"
    return f"{s // 86400}天前"


CSS = """
<style>
.leaflet-container, .leaflet-control-layers, .wg-panel { font-family: FONT; }
.wg-panel { background: rgba(255,255,255,0.96); border-radius: 6px; box-shadow: 0 1px 5px rgba(0,0,0,0.35);
  padding: 8px 10px; font-size: 12px; color: #222; line-height: 1.4; }
.wg-panel h1 { font-size: 16px; margin: 0 0 2px 0; }
.wg-panel .muted { color: #777; font-size: 11px; }
.wg-head { width: 380px; }
.wg-grid-note { margin: 5px 0; padding: 4px 6px; border-radius: 4px; background: #eef4fb; }
.wg-grid-note.out { background: #fff1e0; color: #8a4b00; }
.wg-cands { width: 100%; border-collapse: collapse; margin-top: 6px; font-variant-numeric: tabular-nums; }
.wg-cands th { text-align: left; font-weight: normal; color: #777; font-size: 10.5px; border-bottom: 1px solid #ddd; }
.wg-cands td { padding: 2px 3px; border-bottom: 1px solid #f0f0f0; white-space: nowrap; }
.wg-cands td.n { text-align: right; }
.wg-cands tr.wg-stale td { color: #9a9a9a; }
.wg-cands tr.best td { font-weight: bold; }
.wg-rank { display: inline-block; width: 16px; height: 16px; border-radius: 50%; color: #fff; text-align: center;
  font: bold 10px/16px sans-serif; }
.wg-stale .wg-rank { background: #9e9e9e !important; }
.wg-legend { width: 205px; }
.wg-legend h4 { margin: 0 0 4px 0; font-size: 12px; }
.wg-legend .row { display: flex; align-items: center; gap: 6px; margin: 2px 0; }
.wg-legend .ln { width: 22px; height: 0; border-top: 2px dashed #3a5fa0; display: inline-block; }
.wg-legend .route { width: 22px; height: 0; border-top: 4px solid #7b3294; display: inline-block; }
.wg-legend .box { width: 16px; height: 11px; border: 2px solid #0b2e6b; background: rgba(11,46,107,0.08);
  display: inline-block; }
.wg-legend .dot { width: 12px; height: 12px; border-radius: 50%; border: 2px solid #fff; box-shadow: 0 0 0 1px #555;
  display: inline-block; box-sizing: border-box; }
.wg-target { width: 22px; height: 22px; border-radius: 50%; background: #d7191c; border: 3px solid #fff;
  box-shadow: 0 0 0 2px #d7191c, 0 0 8px 2px rgba(0,0,0,0.4); box-sizing: border-box; }
.wg-eta { background: rgba(255,255,255,0.92); border: 1px solid #8aa0c8; border-radius: 3px; padding: 0 4px;
  font: 11px FONT; color: #0b2e6b; box-shadow: none; white-space: nowrap; }
.wg-eta.wg-stale { color: #8a8a8a; border-color: #c4c4c4; }
.wg-eta:before { display: none; }
path.wg-stale { stroke-dasharray: 2 3; }
</style>
"""

SCRIPT = """
function wgPopup(c) {
  return '<div style="font-size:12px;min-width:200px"><b>' + wgEsc(c.name) + '</b> · ' + wgEsc(c.roleLabel) +
    (c.stale ? ' · <b style="color:#777">定位过期 stale</b>' : '') +
    '<br>状态 ' + wgEsc(c.statusLabel) + ' · 定位 ' + wgEsc(c.age) +
    '<br>距离 ' + wgEsc(c.dist) + (c.straight ? ' (直线 ' + wgEsc(c.straight) + ')' : '') + ' · 预计 ' + wgEsc(c.eta) +
    '<br>本网格 same grid: ' + (c.same ? '是 ✓' : '否') + (c.home ? ' · 所属 ' + wgEsc(c.home) : '') +
    (c.phone ? '<br>电话 ' + wgEsc(c.phone) : '') + '<br><span style="color:#777">#' + c.id + '</span></div>';
}
"""


class _Layers(MacroElement):
    """All layers, panels and the layer control, built in the browser from WG."""

    _template = Template("""
        {% macro script(this, kwargs) %}
        (function () {
            var map = {{ this._parent.get_name() }}, tiles = {{ this.tiles }};
            var P = [WG.lat, WG.lon], bounds = L.latLngBounds([P, P]), overlays = {};
            var grid = L.featureGroup();
            if (WG.grid) {
                L.geoJSON(WG.grid.geometry, {style: {color: '#0b2e6b', weight: 3, fillColor: '#0b2e6b',
                    fillOpacity: WG.grid.covers ? 0.08 : 0.03, dashArray: WG.grid.covers ? null : '6 4',
                    className: 'wg-grid'}})
                  .bindTooltip(wgEsc(WG.grid.name) + ' ' + WG.grid.code, {sticky: true}).addTo(grid);
                if (WG.grid.covers) bounds.extend(grid.getBounds());
            }
            grid.addTo(map); overlays[WG.labels.grid] = grid;
            var lines = L.featureGroup(), people = L.featureGroup(), stale = L.featureGroup();
            WG.cands.forEach(function (c) {
                var target = c.stale ? stale : people, ll = [c.lat, c.lon];
                var line = L.polyline([ll, P], {color: c.stale ? '#9e9e9e' : '#3a5fa0', weight: c.rank === 1 ? 3 : 2,
                    opacity: c.stale ? 0.7 : 0.9, dashArray: '6 5',
                    className: 'wg-line' + (c.stale ? ' wg-stale' : '')});
                line.addTo(c.stale ? stale : lines);
                var right = c.lon >= WG.lon;
                L.circleMarker(ll, {radius: c.stale ? 7 : 9, color: '#fff', weight: 2, fillOpacity: 1,
                    fillColor: c.stale ? '#b0b0b0' : c.colour,
                    className: 'wg-responder' + (c.stale ? ' wg-stale' : ' wg-fresh')})
                  .bindPopup(wgPopup(c))
                  .bindTooltip(c.stale ? '定位过期 ' + wgEsc(c.dist) + ' · ' + wgEsc(c.age)
                                       : c.rank + ' · ' + wgEsc(c.dist) + ' · ' + wgEsc(c.eta),
                    {permanent: true, direction: right ? 'right' : 'left', offset: [right ? 8 : -8, 0],
                     className: 'wg-eta' + (c.stale ? ' wg-stale' : '')}).addTo(target);
                bounds.extend(ll);
            });
            lines.addTo(map); people.addTo(map); stale.addTo(map);
            overlays[WG.labels.people] = people; overlays[WG.labels.lines] = lines; overlays[WG.labels.stale] = stale;
            if (WG.route) {
                var route = L.geoJSON(WG.route, {style: {color: '#7b3294', weight: 5, opacity: 0.85,
                    className: 'wg-route'}}).bindTooltip(WG.labels.routeTip, {sticky: true});
                route.addTo(map); overlays[WG.labels.route] = route; bounds.extend(route.getBounds());
            }
            var point = L.marker(P, {icon: L.divIcon({className: '', iconSize: [22, 22],
                html: '<div class="wg-target"></div>'}), zIndexOffset: 1000, title: WG.labels.point})
              .bindTooltip(WG.labels.point, {direction: 'top', offset: [0, -12]}).addTo(map);
            overlays[WG.labels.point] = point;
            var wide = map.getSize().x >= 900;
            map.fitBounds(bounds.pad(0.15), {animate: false, maxZoom: 17,
                paddingTopLeft: wide ? [400, 20] : [10, 10], paddingBottomRight: wide ? [230, 20] : [10, 10]});
            if (map.getZoom() > 17) map.setZoom(17);
            wgPanel(map, 'topleft', WG.head);
            L.control.layers({'OpenStreetMap': tiles}, overlays, {collapsed: false, position: 'topright'}).addTo(map);
            wgPanel(map, 'bottomright', WG.legend);
            document.documentElement.setAttribute('data-wg-ready-ms', Math.round(performance.now()));
        })();
        {% endmacro %}
    """)

    def __init__(self, tiles: str):
        super().__init__()
        self._name = "WgDispatchLayers"
        self.tiles = tiles


def _rows(data: DispatchData) -> list[dict]:
    out = []
    for feature, stale in [(c, False) for c in data.candidates] + [(s, True) for s in data.stale]:
        p = feature["properties"]
        lon, lat = feature["geometry"]["coordinates"][:2]
        straight = p.get("straight_distance_m")
        dist = p.get("network_distance_m") if data.mode == "network" and not stale else p.get("distance_m")
        out.append({
            "id": feature["id"], "lon": lon, "lat": lat, "stale": stale, "name": p.get("name"),
            "role": p.get("role"), "roleLabel": ROLE_LABELS.get(p.get("role"), p.get("role")),
            "statusLabel": STATUS_LABELS.get(p.get("status"), p.get("status")),
            "dist": fmt_m(dist if dist is not None else p.get("distance_m")),
            "straight": fmt_m(straight) if straight is not None and data.mode == "network" and not stale else None,
            "eta": fmt_eta(p.get("eta_s")), "age": fmt_age(p.get("position_age_s")),
            "same": bool(p.get("same_grid")), "home": p.get("home_grid_code"), "phone": p.get("phone"),
        })
    rank = 0
    for row in out:
        if not row["stale"]:
            rank += 1
            row["rank"] = rank
            row["colour"] = RANK_COLOURS[min(rank - 1, len(RANK_COLOURS) - 1)]
        else:
            row["rank"] = None
            row["colour"] = "#9e9e9e"
    return out


def _head(data: DispatchData, rows: list[dict]) -> str:
    g = data.grid
    if g and g["covers"]:
        grid = (f'<div class="wg-grid-note">所在网格 <b>{esc(g["name"])}</b> {esc(g["code"])}'
                f'<br>网格员 {esc(g["worker"] or "（空缺）")}</div>')
    elif g:
        grid = (f'<div class="wg-grid-note out">此点不在任何网格内 outside every grid — 最近网格 nearest grid '
                f'<b>{esc(g["name"])}</b> {esc(g["code"])}，相距 {fmt_m(g["distance_m"])}</div>')
    else:
        grid = '<div class="wg-grid-note out">此点不在任何网格内 outside every grid</div>'
    mode = "道路 network (按行程时间排序)" if data.mode == "network" else "直线 straight (按距离排序)"
    body = []
    for r in rows:
        cls = "wg-stale" if r["stale"] else ("best" if r["rank"] == 1 else "")
        badge = (f'<span class="wg-rank" style="background:{r["colour"]}">{r["rank"] or "–"}</span>')
        body.append(
            f'<tr class="{cls}"><td>{badge}</td><td>{esc(r["name"])}</td><td>{esc(r["roleLabel"])}</td>'
            f'<td class="n">{esc(r["dist"])}</td><td class="n">{"—" if r["stale"] else esc(r["eta"])}</td>'
            f'<td>{esc(r["age"])}{" ⚠" if r["stale"] else ""}</td><td>{"✓" if r["same"] else ""}</td></tr>')
    if not rows:
        body.append('<tr><td colspan="7" class="muted">附近没有符合条件的处置力量 no responder matches</td></tr>')
    note = f'<div class="muted" style="color:#8a4b00">{esc(data.network_note)}</div>' if data.network_note else ""
    if not data.candidates and data.stale:  # say why the list is empty: positions stopped arriving
        note += (f'<div class="wg-grid-note out wg-all-stale">附近 {len(data.stale)} 名处置力量的定位均已过期，'
                 '无法排名：请检查其定位上报（演示环境请运行 wangge simulate）。All nearby positions are stale: '
                 'check that responders are reporting.</div>')
    filt = f'状态 {esc(data.filters.get("status"))}' + (f' · 角色 {esc(data.filters["role"])}'
                                                         if data.filters.get("role") else "")
    return f"""<div class="wg-panel wg-head">
<h1>调度 · 最近处置力量</h1>
<div class="muted">Nearest responders · {data.lat:.6f}, {data.lon:.6f} (WGS84) · {mode} · k={data.k} · {filt}</div>
{grid}{note}
<table class="wg-cands"><tr><th>#</th><th>姓名 name</th><th>角色</th><th>距离</th><th>预计到达 ETA</th>
<th>定位</th><th>本网格</th></tr>{"".join(body)}</table>
<div class="muted" style="margin-top:4px">灰色 = 定位过期 stale position (不参与排名 not ranked)</div>
</div>"""


def _legend(data: DispatchData) -> str:
    route = ('<div class="row"><span class="route"></span> 最快道路路线 fastest road route</div>'
             if data.mode == "network" else "")
    return f"""<div class="wg-panel wg-legend">
<h4>图例 Legend</h4>
<div class="row"><span class="wg-target" style="width:14px;height:14px;border-width:2px"></span> 事发地点 point</div>
<div class="row"><span class="box"></span> 所在网格 grid (虚线 = 最近网格)</div>
<div class="row"><span class="dot" style="background:{RANK_COLOURS[0]}"></span> 最近 nearest
<span class="dot" style="background:{RANK_COLOURS[4]}"></span> 较远 farther</div>
<div class="row"><span class="dot" style="background:#b0b0b0"></span> 定位过期 stale</div>
<div class="row"><span class="ln"></span> 距离 · 预计到达 distance · ETA</div>{route}
</div>"""


def build(data: DispatchData) -> folium.Map:
    """The dispatcher's page for `data`."""
    rows = _rows(data)
    fmap = offline.new_map(location=[data.lat, data.lon], zoom_start=16)
    tiles = next(c for c in fmap._children.values() if isinstance(c, folium.TileLayer))
    config = {
        "lon": data.lon, "lat": data.lat, "cands": rows, "route": data.route,
        "grid": ({"code": data.grid["code"], "name": data.grid["name"], "covers": data.grid["covers"],
                  "geometry": orjson.loads(data.grid["geojson"])} if data.grid else None),
        "labels": {"grid": "网格 grid" if not data.grid or data.grid["covers"] else "最近网格 nearest grid",
                   "people": f"处置力量 responders ({len(data.candidates)})",
                   "lines": "连线 distance · ETA", "stale": f"定位过期 stale ({len(data.stale)})",
                   "route": "道路路线 road route", "point": "事发地点 point",
                   "routeTip": "最快道路路线 fastest road route"},
        "head": _head(data, rows), "legend": _legend(data),
    }
    add_head(fmap, f"调度 最近处置力量 {data.lat:.5f},{data.lon:.5f} — Wangge", CSS, config, SCRIPT)
    fmap.add_child(_Layers(tiles.get_name()))
    return fmap
