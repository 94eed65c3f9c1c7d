"""The supervisor's incident map: grids by open/overdue count, overdue red lights, heat, trends and SLA."""

import math
from datetime import date, datetime, timedelta
from urllib.parse import urlencode

import folium
import numpy as np
import orjson
import shapely
from branca.element import MacroElement
from folium.plugins import FastMarkerCluster, HeatMap
from folium.template import Template
from folium.utilities import JsCode

from geo.incidents.incident_map import MapData
from geo.incidents.timelimits import TZ
from maps import offline
from maps.html import add_head, esc

BASE = "/maps/incidents"
INCIDENT_JSON = "/incidents/"
LEVEL_NAMES = {"district": "区", "street": "街道", "community": "社区", "grid": "网格"}
STATUS_LABELS = {
    "unassigned": "未分配", "reported": "已上报", "filed": "已立案", "dispatched": "已派遣",
    "in_progress": "处置中", "handled": "已处置", "verified": "已核查", "closed": "已结案",
    "returned": "已回退", "suspended": "挂账", "rejected": "不予受理", "void": "作废",
}
GROUP_LABELS = {"open": "未结案 open", "pending": "待处置 pending", "final": "已结束 closed/void",
                "all": "全部 all"}
ACTION_LABELS = {"report": "上报", "transition": "流转", "escalate": "升级督办", "extend": "延期",
                 "reassign": "改派", "merge": "合并", "note": "备注"}
ESCALATION = ["网格员 grid worker", "社区 community", "街道 street", "区指挥中心 district"]
# Sequential fills: blues for counts (under the heat and the red lights), reds for overdue.
COUNT_COLOURS = ["#eff3ff", "#c6dbef", "#9ecae1", "#6baed6", "#3182bd", "#08519c"]
OVERDUE_COLOURS = ["#fee5d9", "#fcae91", "#fb6a4a", "#de2d26", "#a50f15"]
ZERO_COLOUR = "#f4f4f4"
HEAT_GRADIENT = {0.15: "#fee391", 0.4: "#fec44f", 0.65: "#fe9929", 0.85: "#d95f0e", 1.0: "#993404"}




def classes(values, colours: list[str]) -> list[int]:
    """Upper bounds (inclusive) of count classes: 0 on its own, one class per value while there are few,
    else quantiles of the non-zero counts, with the widest classes split geometrically until every
    colour is used (counts are skewed: a few grids hold many cases)."""
    values = np.asarray(values, dtype=float)
    positive = values[values > 0]
    top = int(positive.max()) if len(positive) else 0
    k = len(colours)
    if top <= k:
        return list(range(0, top + 1))
    qs = np.quantile(positive, np.arange(1, k) / k, method="inverted_cdf")  # actual counts, no interpolation
    bounds = sorted({0, top, *(b for b in map(_round2, qs) if b < top)})
    distinct = np.unique(positive)
    while len(bounds) - 1 < k:
        # split the class [lo, hi] holding two or more distinct counts with the largest hi/lo ratio
        splittable = [j for j in range(1, len(bounds))
                      if ((distinct > bounds[j - 1]) & (distinct <= bounds[j])).sum() >= 2]
        if not splittable:
            break
        j = max(splittable, key=lambda j: bounds[j] / (bounds[j - 1] + 1))
        inside = distinct[(distinct > bounds[j - 1]) & (distinct <= bounds[j])]
        mid = _round2(math.sqrt(inside[0] * inside[-1]))
        mid = min(max(mid, int(inside[0])), int(inside[-2]))  # keeps at least one count on each side
        if mid in bounds:
            break
        bounds.insert(j, mid)
    return bounds


def _nice(x: float) -> float:
    """Round up to a readable axis maximum (1, 1.5, 2, 3, 4, 5, 6, 8 × 10^n); small numbers stay exact."""
    if x <= 6:
        return math.ceil(x)
    exp = 10 ** math.floor(math.log10(x))
    for m in (1, 1.5, 2, 3, 4, 5, 6, 8, 10):
        if x <= m * exp:
            return m * exp
    return 10 * exp


def _round2(x: float) -> int:
    """Two significant digits, so legend bounds read 1, 7, 23, 87, 350, 1400."""
    x = float(x)
    if x < 100:
        return int(round(x))
    e = 10 ** (int(math.log10(x)) - 1)
    return int(round(x / e) * e)


def _legend_rows(bounds: list[int], colours: list[str]) -> list[tuple[str, str]]:
    rows, low = [(ZERO_COLOUR, "0")], 1
    for i, high in enumerate(bounds[1:]):
        rows.append((colours[min(i, len(colours) - 1)], f"{low}" if low == high else f"{low}–{high}"))
        low = high + 1
    return rows


def link(code: str, query: list[tuple[str, str]]) -> str:
    """The supervisor map of another area, keeping the current filters."""
    return f"{BASE}?{urlencode([('area', code), *query])}"


def _zoom_for(span_lon: float, span_lat: float, px: int = 900) -> int:
    span = max(span_lon, span_lat * 1.3, 1e-4)
    return int(max(10, min(17, math.floor(math.log2(360 / span * px / 256)))))


# ----------------------------------------------------------------- charts (inline SVG, no JS)

def _svg_open(w: int, h: int, label: str) -> str:
    return (f'<svg class="wg-chart" width="{w}" height="{h}" '
            f'viewBox="0 0 {w} {h}" role="img" aria-label="{esc(label)}">')


def weekly_svg(weekly: list[tuple], start: date, end: date, status_label: str,
               weeks: int = 52, w: int = 340, h: int = 128) -> str:
    """Bars of incidents reported per week; the part still in the chosen status darker; period shaded."""
    last = end - timedelta(days=end.weekday())
    index = [last - timedelta(weeks=weeks - 1 - i) for i in range(weeks)]
    by_week = {row[0]: row for row in weekly}
    total = [by_week.get(d, (d, 0, 0))[1] for d in index]
    part = [by_week.get(d, (d, 0, 0))[2] for d in index]
    left, right, top, bottom = 34, 6, 22, 16
    pw, ph = w - left - right, h - top - bottom
    ymax = max(_nice(max(total) if total else 1), 1)
    bw = pw / weeks

    def y(v):
        return top + ph - ph * v / ymax

    out = [_svg_open(w, h, "每周上报事件数 weekly incidents")]
    out.append('<text x="0" y="11" class="t">每周上报 Reports per week</text>')
    if status_label != "全部":
        out.append(f'<rect x="{w - 150}" y="4" width="9" height="9" fill="#b9cde5"/>'
                   f'<text x="{w - 138}" y="12" class="s">全部</text>'
                   f'<rect x="{w - 108}" y="4" width="9" height="9" fill="#1f4e9e"/>'
                   f'<text x="{w - 96}" y="12" class="s">现为{esc(status_label)}</text>')
    i0 = max(0, (start - index[0]).days // 7)
    i1 = min(weeks - 1, (end - index[0]).days // 7)
    if i1 >= 0 and i0 <= weeks - 1:
        out.append(f'<rect x="{left + i0 * bw:.1f}" y="{top}" width="{(i1 - i0 + 1) * bw:.1f}" height="{ph}" '
                   f'fill="#fff3c4"><title>所选时段 {start} – {end}</title></rect>')
    for v in (ymax / 2, ymax):
        out.append(f'<line x1="{left}" x2="{w - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="g"/>'
                   f'<text x="{left - 3}" y="{y(v) + 3:.1f}" class="a" text-anchor="end">{int(v):,}</text>')
    for i, (t, p) in enumerate(zip(total, part, strict=False)):
        x = left + i * bw
        if t:
            out.append(f'<rect x="{x + 0.5:.1f}" y="{y(t):.1f}" width="{max(bw - 1, 0.8):.1f}" '
                       f'height="{top + ph - y(t):.1f}" fill="#b9cde5"><title>{index[i]}: {t}</title></rect>')
        if p:
            out.append(f'<rect x="{x + 0.5:.1f}" y="{y(p):.1f}" width="{max(bw - 1, 0.8):.1f}" '
                       f'height="{top + ph - y(p):.1f}" fill="#1f4e9e"><title>{index[i]}: {p}</title></rect>')
    out.append(f'<line x1="{left}" x2="{w - right}" y1="{top + ph}" y2="{top + ph}" class="x"/>')
    for i, d in enumerate(index):
        if d.day <= 7 and d.month % 2 == (index[-1].month % 2) and left + i * bw < w - 22:
            out.append(f'<text x="{left + i * bw:.1f}" y="{h - 3}" class="a">{d.month}月</text>')
    out.append("</svg>")
    return "".join(out)


def sla_svg(monthly: list[tuple], end: date, months: int = 12, w: int = 340, h: int = 128) -> str:
    """On-time handling rate (handled on time ÷ due) per month, dots coloured by how good it is."""
    m0 = end.year * 12 + end.month - 1 - (months - 1)
    index = [date((m0 + i) // 12, (m0 + i) % 12 + 1, 1) for i in range(months)]
    by_month = {row[0]: row for row in monthly}
    rates, handled = [], []
    for d in index:
        _, due, on_time, done = by_month.get(d, (d, 0, 0, 0))
        rates.append(on_time / due if due else None)
        handled.append(done / due if due else None)
    known = [r for r in rates + handled if r is not None]
    low = min(known) if known else 0.9
    lo = max(0.0, min(0.95, math.floor(low * 100 - 1) / 100))
    left, right, top, bottom = 34, 8, 22, 16
    pw, ph = w - left - right, h - top - bottom

    def x(i):
        return left + pw * (i + 0.5) / months

    def y(r):
        return top + ph - ph * (r - lo) / (1 - lo)

    out = [_svg_open(w, h, "按时处置率 on-time handling rate per month")]
    out.append('<text x="0" y="11" class="t">按时处置率 On-time rate</text>')
    out.append(f'<line x1="{w - 128}" x2="{w - 116}" y1="8" y2="8" stroke="#1f4e9e" stroke-width="2"/>'
               f'<text x="{w - 113}" y="12" class="s">按时</text>'
               f'<line x1="{w - 82}" x2="{w - 70}" y1="8" y2="8" stroke="#999" stroke-width="1.5" '
               f'stroke-dasharray="3 2"/><text x="{w - 67}" y="12" class="s">处置率</text>')
    for r in (lo, (lo + 1) / 2, 1.0):
        out.append(f'<line x1="{left}" x2="{w - right}" y1="{y(r):.1f}" y2="{y(r):.1f}" class="g"/>'
                   f'<text x="{left - 3}" y="{y(r) + 3:.1f}" class="a" text-anchor="end">{r * 100:.0f}%</text>')

    def path(series, attrs):
        pts = [(x(i), y(r)) for i, r in enumerate(series) if r is not None]
        if len(pts) > 1:
            d = " ".join(f"{'M' if j == 0 else 'L'}{px:.1f},{py:.1f}" for j, (px, py) in enumerate(pts))
            out.append(f'<path d="{d}" fill="none" {attrs}/>')

    path(handled, 'stroke="#999" stroke-width="1.5" stroke-dasharray="3 2"')
    path(rates, 'stroke="#1f4e9e" stroke-width="2"')
    for i, r in enumerate(rates):
        if r is None:
            continue
        colour = "#1a9641" if r >= 0.99 else "#fdae61" if r >= 0.95 else "#d7191c"
        due = by_month[index[i]][1]
        out.append(f'<circle cx="{x(i):.1f}" cy="{y(r):.1f}" r="3.5" fill="{colour}" stroke="#fff" '
                   f'stroke-width="1"><title>{index[i]:%Y-%m}: {r:.1%} of {due:,} due</title></circle>')
    last = next((i for i in range(months - 1, -1, -1) if rates[i] is not None), None)
    if last is not None:
        out.append(f'<text x="{x(last) - 4:.1f}" y="{y(rates[last]) + 14:.1f}" class="v" text-anchor="end">'
                   f'{rates[last]:.1%}</text>')
    for i, d in enumerate(index):
        out.append(f'<text x="{x(i):.1f}" y="{h - 3}" class="a" text-anchor="middle">{d.month}月</text>')
    out.append("</svg>")
    return "".join(out)


# ----------------------------------------------------------------- page pieces

CSS = """
<style>
.wg-panel, .wg-panel input, .wg-panel select, .wg-panel button, .leaflet-container,
.leaflet-control-layers { font-family: FONT; }
.wg-panel { background: rgba(255,255,255,0.96); border-radius: 6px; box-shadow: 0 1px 5px rgba(0,0,0,0.35);
  padding: 8px 10px; font-size: 12px; color: #222; line-height: 1.35; }
.wg-panel h1 { font-size: 16px; margin: 0 0 2px 0; }
.wg-panel a { color: #1f4e9e; text-decoration: none; }
.wg-panel a:hover { text-decoration: underline; }
.wg-crumbs { font-size: 11px; color: #666; }
.wg-head { width: 300px; }
.wg-kpis { display: flex; gap: 6px; margin: 6px 0; }
.wg-kpi { flex: 1; background: #f3f6fb; border-radius: 4px; padding: 3px 5px; }
.wg-kpi b { display: block; font-size: 17px; }
.wg-kpi.red b { color: #c0161d; }
.wg-kpi span { font-size: 10.5px; color: #555; }
.wg-filters { display: grid; grid-template-columns: 44px 1fr; gap: 3px 6px; align-items: center; margin-top: 4px; }
.wg-filters label { color: #555; }
.wg-filters select, .wg-filters input { font-size: 12px; padding: 1px 2px; width: 100%; box-sizing: border-box; }
.wg-filters .dates { display: flex; gap: 4px; align-items: center; }
.wg-filters button { grid-column: 2; background: #1f4e9e; color: #fff; border: 0; border-radius: 3px; padding: 3px;
  cursor: pointer; }
.wg-children { max-height: 190px; overflow-y: auto; margin-top: 6px; border-top: 1px solid #ddd; padding-top: 4px; }
.wg-children table { width: 100%; border-collapse: collapse; }
.wg-children td { padding: 1px 2px; white-space: nowrap; }
.wg-children td.n { text-align: right; font-variant-numeric: tabular-nums; }
.wg-children td.o { color: #c0161d; font-weight: bold; }
.wg-children th { text-align: left; font-weight: normal; color: #777; font-size: 10.5px; }
.wg-charts { width: 340px; padding: 6px 8px; }
.wg-chart { display: block; margin: 2px 0 4px 0; }
.wg-chart text { font-family: FONT; fill: #333; }
.wg-chart .t { font-size: 12px; font-weight: bold; }
.wg-chart .s { font-size: 10px; }
.wg-chart .a { font-size: 9.5px; fill: #666; }
.wg-chart .v { font-size: 11px; font-weight: bold; }
.wg-chart .g { stroke: #e3e3e3; stroke-width: 1; }
.wg-chart .x { stroke: #999; stroke-width: 1; }
.wg-legend { width: 190px; }
.wg-legend h4 { margin: 0 0 3px 0; font-size: 12px; }
.wg-legend .row { display: flex; align-items: center; gap: 6px; margin: 1px 0; }
.wg-legend .sw { width: 18px; height: 12px; border: 1px solid #999; display: inline-block; }
.wg-legend .mode { display: flex; gap: 8px; margin-bottom: 4px; }
.wg-legend .heat { height: 10px; border-radius: 2px; border: 1px solid #bbb;
  background: linear-gradient(to right, HEAT); }
.wg-legend .note { color: #a50f15; font-size: 11px; margin-top: 4px; }
.wg-legend .muted, .wg-panel .muted { color: #777; font-size: 10.5px; }
.wg-dot { display: inline-block; width: 12px; height: 12px; border-radius: 50%; background: #d7191c;
  border: 2px solid #fff; box-shadow: 0 0 0 1px #a50f15; box-sizing: border-box; }
.wg-pin { width: 16px; height: 16px; border-radius: 50%; background: #d7191c; border: 2px solid #fff;
  box-shadow: 0 0 2px 1px rgba(120,0,0,0.6); box-sizing: border-box; color: #fff; font: bold 9px/12px sans-serif;
  text-align: center; }
.wg-pin.esc { background: #7a0177; }
.marker-cluster-overdue { background: rgba(215,25,28,0.35); }
.marker-cluster-overdue div { background: rgba(215,25,28,0.9); color: #fff; font-weight: bold; }
.wg-label a { display: inline-block; white-space: nowrap; font: 11px FONT; color: #0b2e6b; text-decoration: none;
  text-shadow: 0 0 2px #fff, 0 0 2px #fff, 0 0 3px #fff, 0 0 3px #fff; transform: translate(-50%, -50%); }
.wg-label a:hover { text-decoration: underline; }
.leaflet-heatmap-layer { pointer-events: none; }
.wg-pop { font-size: 12px; min-width: 260px; }
.wg-pop h3 { margin: 0 0 4px 0; font-size: 14px; }
.wg-pop .late { color: #c0161d; font-weight: bold; }
.wg-pop table { border-collapse: collapse; width: 100%; margin-top: 4px; }
.wg-pop td { border-top: 1px solid #eee; padding: 1px 3px; vertical-align: top; font-size: 11px; }
.wg-pop .links { margin-top: 6px; }
.wg-pop .links a { margin-right: 10px; }
</style>
"""

# Popups and styles are built in the browser from compact rows, so the page carries data, not markup.
SCRIPT = """
function wgDrill(code) { return WG.base + '?area=' + encodeURIComponent(code) + WG.keep; }
function wgFill(v, cls) {
  if (!v) return WG.zero;
  for (var i = 1; i < cls.bounds.length; i++) if (v <= cls.bounds[i]) return cls.colours[i - 1];
  return cls.colours[cls.colours.length - 1];
}
function wgGridStyle(f) {
  var p = f.properties, v = WG.mode === 'o' ? p.o : p.m, cls = WG.classes[WG.mode];
  return {fillColor: wgFill(v, cls), fillOpacity: v ? 0.6 : 0.2, color: '#6b7b8c', weight: 0.5,
          dashArray: p.k === 'commercial' ? '3 2' : null};
}
function wgGridFeature(f, layer) {
  var p = f.properties;
  layer.bindTooltip(wgEsc(p.n) + ' · ' + p.m + ' 件' + (p.o ? ' · <b style="color:#c0161d">超期 ' + p.o + '</b>' : ''),
                    {sticky: true});
  layer.bindPopup(function () {
    var community = p.c.slice(0, 12);
    return '<div class="wg-pop"><h3>' + wgEsc(p.n) + '</h3>' +
      '<div>网格 ' + p.c + (p.k === 'commercial' ? ' · 商业 X' : ' · 住宅 N') + '</div>' +
      '<div>网格员 ' + wgEsc(p.w || '（空缺）') + '</div>' +
      '<div>' + WG.countLabel + '：<b>' + p.m + '</b> · 超期 overdue：<b class="' + (p.o ? 'late' : '') + '">' +
      p.o + '</b></div>' +
      '<div class="links"><a href="' + wgDrill(p.c) + '">▸ 网格地图 grid map</a>' +
      (WG.level !== 'community' && WG.level !== 'grid' ?
        '<a href="' + wgDrill(community) + '">▸ 社区 community</a>' : '') + '</div></div>';
  }, {maxWidth: 320});
}
function wgAge(ms) {
  var h = Math.floor(ms / 3600000), d = Math.floor(h / 24);
  return d ? d + ' 天 ' + (h % 24) + ' 小时' : h + ' 小时';
}
function wgIncidentPopup(r) {
  // r: lat, lon, id, category, status, reported, due(ms), due text, grid, level, description, assignee, dept, history
  var late = WG.now - r[6], hist = r[13] || [], rows = '';
  for (var i = 0; i < hist.length; i++) {
    var e = hist[i], what = (WG.actions[e[1]] || e[1]) + ' ' + (e[2] ? (WG.statuses[e[2]] || e[2]) + ' → ' : '') +
      (e[3] ? (WG.statuses[e[3]] || e[3]) : '');
    rows += '<tr><td>' + wgEsc(e[0]) + '</td><td>' + wgEsc(what) + (e[4] ? '<br><span class="muted">' +
      wgEsc(e[4]) + '</span>' : '') + '</td></tr>';
  }
  var json = WG.json + r[2];
  return '<div class="wg-pop"><h3>#' + r[2] + ' ' + wgEsc(WG.cats[r[3]] || r[3]) + '</h3>' +
    '<div>' + wgEsc(r[10]) + '</div>' +
    '<div>状态 <b>' + wgEsc(WG.statuses[r[4]] || r[4]) + '</b> (' + wgEsc(r[4]) + ') · 督办 ' +
    wgEsc(WG.escalation[r[9]]) + '</div>' +
    '<div>上报 ' + wgEsc(r[5]) + ' · 时限 ' + wgEsc(r[7]) + '</div>' +
    '<div class="late">已超期 overdue ' + wgAge(late) + '</div>' +
    '<div>网格 ' + wgEsc(r[8]) + ' · 处置人 ' + wgEsc(r[11] || '—') + ' · ' + wgEsc(r[12] || '') + '</div>' +
    '<table>' + rows + '</table>' +
    '<div class="links"><a href="' + json + '" target="_blank">JSON /incidents/' + r[2] + '</a>' +
    '<a href="' + wgDrill(r[8]) + '">▸ 网格地图</a></div></div>';
}
function wgMarker(r) {
  var esc = r[9] > 0;
  var m = L.marker([r[0], r[1]], {icon: L.divIcon({className: '', iconSize: [16, 16],
    html: '<div class="wg-pin wg-overdue' + (esc ? ' esc' : '') + '">' + (esc ? r[9] : '') + '</div>'}),
    title: '#' + r[2] + ' ' + (WG.cats[r[3]] || r[3])});
  m.bindPopup(function () { return wgIncidentPopup(r); }, {maxWidth: 380});
  return m;
}
function wgCluster(cluster) {
  var n = cluster.getChildCount(), size = n < 10 ? 30 : n < 100 ? 36 : 44;
  return L.divIcon({html: '<div><span>' + n + '</span></div>', className: 'marker-cluster marker-cluster-overdue',
                    iconSize: L.point(size, size)});
}
function wgHeatScale(heat, map) {
  // leaflet.heat sums weights per screen cell (radius/2 px), scales them by 2^(zoom - maxZoom) and
  // saturates at `max`: set max to the 95th percentile of those sums at the opening view.
  var cs = heat._heat ? heat._heat._r / 2 : 13, sums = {}, vals = [], pts = heat._latlngs;
  for (var i = 0; i < pts.length; i++) {
    var p = map.latLngToContainerPoint([pts[i][0], pts[i][1]]), key = Math.floor(p.x / cs) + ':' + Math.floor(p.y / cs);
    sums[key] = (sums[key] || 0) + (pts[i][2] || 1);
  }
  for (var k in sums) vals.push(sums[k]);
  vals.sort(function (a, b) { return a - b; });
  var ref = vals.length ? vals[Math.min(vals.length - 1, Math.floor(vals.length * 0.95))] : 1;
  heat.setOptions({max: Math.max(ref, 1) * Math.pow(2, map.getZoom() - (heat.options.maxZoom || 18))});
}
function wgSetMode(mode) {
  WG.mode = mode;
  var radios = document.querySelectorAll('input[name=wg-mode]');
  for (var j = 0; j < radios.length; j++) radios[j].checked = radios[j].value === mode;
  if (WG.grids) WG.grids.setStyle(wgGridStyle);
  var boxes = document.querySelectorAll('.wg-scale');
  for (var i = 0; i < boxes.length; i++)
    boxes[i].style.display = boxes[i].getAttribute('data-mode') === mode ? '' : 'none';
}
"""



class _FitFirst(MacroElement):
    """Fit the area beside the panels before any tile layer exists, so no tiles are fetched twice."""

    _template = Template("""
        {% macro script(this, kwargs) %}
        (function () {
            var map = {{ this._parent.get_name() }}, wide = map.getSize().x >= 900;
            map.fitBounds({{ this.bounds|tojson }}, {animate: false,
                paddingTopLeft: wide ? [345, 15] : [10, 10], paddingBottomRight: wide ? [215, 15] : [10, 10]});
        })();
        {% endmacro %}
    """)

    def __init__(self, bounds):
        super().__init__()
        self._name = "WgFitFirst"
        self.bounds = bounds


class _Panels(MacroElement):
    """Fixed panels as Leaflet controls (so they stack with zoom/layers), plus the colour-mode wiring."""

    _template = Template("""
        {% macro script(this, kwargs) %}
        (function () {
            var map = {{ this._parent.get_name() }};
            WG.grids = {{ this.grids }};
            wgHeatScale({{ this.heat }}, map);
            {% for position, html in this.panels %}
            wgPanel(map, {{ position|tojson }}, {{ html|tojson }});
            {% endfor %}
            var radios = document.querySelectorAll('input[name=wg-mode]');
            for (var i = 0; i < radios.length; i++) radios[i].addEventListener('change', function (e) {
                wgSetMode(e.target.value); });
            wgSetMode(WG.mode);
            // Time from navigation start until every layer and panel exists (read by the tests).
            document.documentElement.setAttribute('data-wg-ready-ms', Math.round(performance.now()));
        })();
        {% endmacro %}
    """)

    def __init__(self, grids: str, heat: str, panels: list[tuple[str, str]]):
        super().__init__()
        self._name = "WgPanels"
        self.grids = grids
        self.heat = heat
        self.panels = panels


def _status_label(filters) -> str:
    return "、".join(GROUP_LABELS.get(s, f"{STATUS_LABELS.get(s, s)} {s}").split(" ")[0] for s in filters.status)


def _head_panel(data: MapData, query: list[tuple[str, str]], child_rows: list) -> str:
    area, f, s = data.area, data.filters, data.summary
    chain = list(reversed(area.get("chain") or []))
    crumbs = " › ".join(f'<a href="{esc(link(a["code"], query))}">{esc(a["name"])}</a>' for a in chain)
    rate = f"{s['on_time'] / s['due']:.1%}" if s.get("due") else "—"
    cat_options = ['<option value="">全部类别 all categories</option>'] + [
        f'<option value="{esc(code)}"{" selected" if code in f.categories else ""}>{esc(code)} {esc(name)}</option>'
        for code, name, _ in data.categories]
    status_options = [f'<option value="{g}"{" selected" if f.status == (g,) else ""}>{esc(label)}</option>'
                      for g, label in GROUP_LABELS.items()]
    status_options += [f'<option value="{st}"{" selected" if f.status == (st,) else ""}>{esc(lbl)} {st}</option>'
                       for st, lbl in STATUS_LABELS.items()]
    hidden = f'<input type="hidden" name="area" value="{esc(area["code"])}">'
    children = ""
    if child_rows:
        level = LEVEL_NAMES.get(child_rows[0][2], "")
        rows = "".join(
            f'<tr><td><a href="{esc(link(code, query))}">{esc(name)}</a></td><td class="n">{m:,}</td>'
            f'<td class="n{" o" if o else ""}">{o:,}</td></tr>'
            for code, name, _, m, o in child_rows)
        children = (f'<div class="wg-children"><table><tr><th>下级{level} drill down ▾</th>'
                    f'<th>事件</th><th>超期</th></tr>'
                    f'{rows}</table></div>')
    return f"""<div class="wg-panel wg-head">
<div class="wg-crumbs">{crumbs or "&nbsp;"}</div>
<h1>{esc(area["name"])} · 事件监督</h1>
<div class="muted">{esc(area["code"])} · {LEVEL_NAMES.get(area["level"], "")} · {f.start} – {f.end}</div>
<div class="wg-kpis">
 <div class="wg-kpi"><b>{s.get("matching", 0):,}</b><span>期内事件 ({esc(_status_label(f))})</span></div>
 <div class="wg-kpi red"><b>{s.get("overdue", 0):,}</b><span>当前超期 overdue</span></div>
 <div class="wg-kpi"><b>{rate}</b><span>期内按时处置率</span></div>
</div>
<form class="wg-filters" method="get" action="{BASE}">{hidden}
 <label for="wg-cat">类别</label><select id="wg-cat" name="category">{"".join(cat_options)}</select>
 <label for="wg-status">状态</label><select id="wg-status" name="status">{"".join(status_options)}</select>
 <label for="wg-from">时段</label><span class="dates"><input id="wg-from" type="date" name="from"
   value="{f.start}">–<input
   type="date" name="to" value="{f.end}"></span>
 <button type="submit">应用筛选 Apply</button>
</form>{children}
</div>"""


def _legend_panel(data: MapData, count_cls: list[int], overdue_cls: list[int], shown: int) -> str:
    def scale(mode, bounds, colours, title):
        rows = "".join(f'<div class="row"><span class="sw" style="background:{c}"></span>{label}</div>'
                       for c, label in _legend_rows(bounds, colours))
        return f'<div class="wg-scale" data-mode="{mode}"><h4>{title}</h4>{rows}</div>'

    note = ""
    if data.overdue_total > shown:
        note = (f'<div class="note">仅显示最早超期的 {shown} 件，共 {data.overdue_total:,} 件超期 '
                f'(showing the {shown} longest overdue of {data.overdue_total:,})</div>')
    return f"""<div class="wg-panel wg-legend">
<h4>网格着色 Colour grids by</h4>
<div class="mode"><label><input type="radio" name="wg-mode" value="m" checked> 期内事件</label>
<label><input type="radio" name="wg-mode" value="o"> 超期</label></div>
{scale("m", count_cls, COUNT_COLOURS, "每网格事件数 incidents / grid")}
{scale("o", overdue_cls, OVERDUE_COLOURS, "每网格超期数 overdue / grid")}
<div class="row" style="margin-top:5px"><span class="wg-dot"></span> 超期事件 overdue</div>
<div class="row"><span class="wg-dot" style="background:#7a0177;box-shadow:0 0 0 1px #49006a"></span>
 已升级督办 escalated (数字=级别)</div>
<div class="row"><span class="wg-dot" style="width:18px;height:18px;opacity:.8"></span> 聚合 cluster (件数)</div>
<div style="margin-top:5px">热力 heat (期内事件密度)</div><div class="heat"></div>
<div class="muted">格网 {data.heat_cell_deg * 111_000:.0f} m 聚合 · 虚线 = 商业网格 X</div>{note}
</div>"""


def _children_rollup(data: MapData, grid_m: np.ndarray, grid_o: np.ndarray, codes: np.ndarray) -> list:
    """(code, name, level, count, overdue) per child area, worst first; a community's children are its grids."""
    rows = []
    for code, name, level, _ in data.children:
        mask = np.char.startswith(codes, code) if len(codes) else np.zeros(0, bool)
        rows.append((code, name, level, int(grid_m[mask].sum()), int(grid_o[mask].sum())))
    if data.area["level"] == "community":
        rows = [(g[0], g[1], "grid", int(g[4]), int(g[5])) for g in data.grids]
    rows.sort(key=lambda r: (-r[4], -r[3], r[0]))
    return rows


def build(data: MapData) -> folium.Map:
    """The supervisor map for one area from already aggregated rows (see geo.incident_map.gather)."""
    f = data.filters
    query = f.query()
    codes = np.array([g[0] for g in data.grids], dtype=str)
    grid_m = np.array([g[4] for g in data.grids], dtype=int)
    grid_o = np.array([g[5] for g in data.grids], dtype=int)
    geoms = shapely.from_geojson([g[6] for g in data.grids]) if data.grids else np.array([])
    outline = shapely.from_geojson(data.outline) if data.outline else None
    if len(geoms):
        minx, miny, maxx, maxy = shapely.total_bounds(geoms)
    elif outline is not None:
        minx, miny, maxx, maxy = outline.bounds
    else:
        minx, miny, maxx, maxy = 116.3, 39.85, 116.45, 39.95
    zoom = _zoom_for(maxx - minx, maxy - miny)

    fmap = offline.new_map(location=[(miny + maxy) / 2, (minx + maxx) / 2], zoom_start=zoom,
                           zoom_snap=0.25, zoom_delta=0.5)
    tiles = [(key, c) for key, c in fmap._children.items() if isinstance(c, folium.TileLayer)]
    for key, _ in tiles:
        del fmap._children[key]
    fmap.add_child(_FitFirst([[miny, minx], [maxy, maxx]]))
    for key, tile in tiles:
        fmap.add_child(tile, name=key)
    title = f"{data.area['name']} 事件监督 — Wangge"
    count_cls = classes(grid_m, COUNT_COLOURS)
    overdue_cls = classes(grid_o, OVERDUE_COLOURS)
    now_ms = int(data.now.timestamp() * 1000)
    config = {
        "mode": "m", "base": BASE, "json": INCIDENT_JSON, "level": data.area["level"],
        "keep": "&" + urlencode(query), "zero": ZERO_COLOUR, "now": now_ms,
        "classes": {"m": {"bounds": count_cls, "colours": COUNT_COLOURS},
                    "o": {"bounds": overdue_cls, "colours": OVERDUE_COLOURS}},
        "cats": {code: name for code, name, _ in data.categories},
        "statuses": STATUS_LABELS, "actions": ACTION_LABELS, "escalation": ESCALATION,
        "countLabel": f"期内事件 ({_status_label(f)})",
    }
    heat_css = ", ".join(f"{c} {int(k * 100)}%" for k, c in HEAT_GRADIENT.items())
    add_head(fmap, title, CSS.replace("HEAT", heat_css), config, SCRIPT)

    # Grids: one GeoJSON with short property names, styled and bound in the browser.
    features = [
        {"type": "Feature", "geometry": orjson.loads(g[6]),
         "properties": {"c": g[0], "n": g[1], "k": g[2] or "", "w": g[3], "m": int(g[4]), "o": int(g[5])}}
        for g in data.grids
    ]
    grids = folium.GeoJson(
        {"type": "FeatureCollection", "features": features},
        name=f"网格 grids ({len(features)})",
        style=JsCode("wgGridStyle"),
        on_each_feature=JsCode("wgGridFeature"),
    )
    grids.add_to(fmap)

    if outline is not None and data.outline:
        folium.GeoJson(orjson.loads(data.outline), control=False, interactive=False,
                       style=JsCode("function () { return {color: '#111', weight: 3.5, fill: false}; }")).add_to(fmap)

    child_rows = _children_rollup(data, grid_m, grid_o, codes)
    if data.children:
        layer = folium.FeatureGroup(name=f"下级区域 {LEVEL_NAMES.get(data.children[0][2], '')} (点名称下钻)")
        folium.GeoJson(
            {"type": "FeatureCollection", "features": [
                {"type": "Feature", "geometry": orjson.loads(c[3]), "properties": {}} for c in data.children]},
            interactive=False, style=JsCode("function () { return {color: '#0b2e6b', weight: 2, fill: false}; }"),
        ).add_to(layer)
        totals = {r[0]: r for r in child_rows}
        for code, name, _, geojson in data.children:
            point = shapely.point_on_surface(shapely.from_geojson(geojson))
            _, _, _, m, o = totals[code]
            label = (f'<a href="{esc(link(code, query))}" title="{esc(name)}: {m} 件, 超期 {o} — 下钻 drill down">'
                     f'{esc(name)}</a>')
            folium.Marker([point.y, point.x], icon=folium.DivIcon(html=label, class_name="wg-label",
                                                                  icon_size=(0, 0))).add_to(layer)
        layer.add_to(fmap)

    cells = [[lat, lon, n] for lat, lon, n in data.heat]
    heat = HeatMap(cells, name="热力 heat (期内事件)", radius=14, blur=12, min_opacity=0.05,
                   max_zoom=18, gradient=HEAT_GRADIENT)  # `max` is set in the browser: wgHeatScale
    heat.add_to(fmap)

    rows = []
    for r in data.overdue:
        (iid, lat, lon, cat, status, reported, due, grid, level, desc, assignee, dept, history) = r
        rows.append([round(lat, 6), round(lon, 6), iid, cat, status, _local(reported), int(due.timestamp() * 1000),
                     _local(due), grid, int(level or 0), desc, assignee, dept,
                     [[e[0], e[1], e[2], e[3], e[4]] for e in history]])
    FastMarkerCluster(rows, callback="wgMarker", name=f"超期事件 overdue ({len(rows)})",
                      icon_create_function="wgCluster", maxClusterRadius=50,
                      showCoverageOnHover=False).add_to(fmap)

    folium.LayerControl(collapsed=False, position="topright").add_to(fmap)

    weekly = weekly_svg(data.weekly, f.start, f.end, _status_label(f))
    sla = sla_svg(data.monthly, f.end)
    charts = f'<div class="wg-panel wg-charts">{weekly}{sla}</div>'
    fmap.add_child(_Panels(grids.get_name(), heat.get_name(), [
        ("topleft", _head_panel(data, query, child_rows)),
        ("bottomleft", charts),
        ("bottomright", _legend_panel(data, count_cls, overdue_cls, len(rows))),
    ]))
    return fmap


def _local(ts: datetime | None) -> str:
    return ts.astimezone(TZ).strftime("%Y-%m-%d %H:%M") if ts else ""
