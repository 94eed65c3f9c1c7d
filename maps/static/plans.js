/* The planner map (/maps/plans/{id}): fetches the plan's grids, validation findings and diff against the active
   version, draws them over the area's buildings, and posts split / replace_geometry edits drawn with Leaflet.draw,
   then fetches and redraws everything at the new revision. Needs wangge.js (wgEsc, wgPanel). */
function wgPlanMap(map, tiles, sketch, WG) {
  var planId = WG.plan.id, area = WG.area.code, root = document.documentElement;
  var st = {revision: WG.plan.revision, plan: WG.plan, grids: [], byCode: {}, selected: null, pending: null,
            busy: false, last: null, validation: null, diff: null, errors: [], refreshes: 0};
  var pct = function (x) { return x == null ? '—' : (x > 0 ? '+' : '') + Math.round(x * 100) + '%'; };
  var num = function (x) { return x == null ? '—' : Number(x).toLocaleString('en-US'); };
  var kindLabel = function (k) { return (WG.kinds[k] ? WG.kinds[k] + ' ' : '') + k; };
  var scopeLabel = WG.scope ? '辖区 your area ' + WG.scope : '整个方案 whole plan';
  var inArea = function (code) { return !!code && String(code).indexOf(area) === 0; };

  // -- the API, with the session cookie and its CSRF value; errors carry the API's message
  function call(method, path, body) {
    var headers = {'Accept': 'application/json'};
    if (WG.csrf) headers['X-CSRF-Token'] = WG.csrf;
    if (body) headers['Content-Type'] = 'application/json';
    return fetch(path, {method: method, headers: headers, body: body ? JSON.stringify(body) : undefined})
      .then(function (r) { return r.text().then(function (t) {
        var data = null;
        try { data = t ? JSON.parse(t) : null; } catch (e) { data = null; }
        if (!r.ok) {
          var err = new Error((data && data.error && data.error.message) || ('HTTP ' + r.status + ' from ' + path));
          err.status = r.status;
          throw err;
        }
        return data; }); });
  }

  // -- geometry helpers (lon/lat GeoJSON)
  function ringHas(ring, x, y) {
    var inside = false;
    for (var i = 0, j = ring.length - 1; i < ring.length; j = i++) {
      var xi = ring[i][0], yi = ring[i][1], xj = ring[j][0], yj = ring[j][1];
      if ((yi > y) !== (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi) inside = !inside;
    }
    return inside;
  }
  function polyHas(p, x, y) {
    if (!p.length || !ringHas(p[0], x, y)) return false;
    for (var k = 1; k < p.length; k++) if (ringHas(p[k], x, y)) return false;
    return true;
  }
  function geomHas(g, x, y) {
    if (!g) return false;
    if (g.type === 'Polygon') return polyHas(g.coordinates, x, y);
    if (g.type === 'MultiPolygon') return g.coordinates.some(function (p) { return polyHas(p, x, y); });
    return false;
  }
  function gridAt(latlng) {
    var hit = st.grids.filter(function (f) { return geomHas(f.geometry, latlng.lng, latlng.lat); });
    return hit.length ? hit[0].properties.code : null;
  }
  function midpoint(latlngs) {  // half-way along the line (lengths in degrees, longitude scaled by cos(lat))
    var k = Math.cos(latlngs[0].lat * Math.PI / 180), seg = [], total = 0, i;
    for (i = 1; i < latlngs.length; i++) {
      var d = Math.hypot((latlngs[i].lng - latlngs[i - 1].lng) * k, latlngs[i].lat - latlngs[i - 1].lat);
      seg.push(d); total += d;
    }
    var half = total / 2;
    for (i = 0; i < seg.length; i++) {
      if (half <= seg[i] && seg[i] > 0) {
        var t = half / seg[i], a = latlngs[i], b = latlngs[i + 1];
        return L.latLng(a.lat + (b.lat - a.lat) * t, a.lng + (b.lng - a.lng) * t);
      }
      half -= seg[i];
    }
    return latlngs[latlngs.length - 1];
  }

  // -- layers: outlines and buildings are fixed; grids, diff and findings are redrawn after every fetch
  map.createPane('wgBuildings');
  var bpane = map.getPane('wgBuildings');
  bpane.style.zIndex = 450;
  bpane.style.pointerEvents = 'none';  // dots sit above the grids but must not swallow clicks on them
  var canvas = L.canvas({padding: 0.3, pane: 'wgBuildings'});
  var gridLayer = L.featureGroup(), diffLayer = L.featureGroup(), findLayer = L.featureGroup();
  var outline = L.featureGroup(), buildings = L.featureGroup();
  WG.children.forEach(function (c) {
    L.geoJSON(c.geometry, {interactive: false, style: {color: '#0b2e6b', weight: 1.5, fill: false, opacity: 0.7,
      dashArray: '5 4', className: 'wg-child'}}).addTo(outline); });
  if (WG.outline) L.geoJSON(WG.outline, {interactive: false, style: {color: '#111', weight: 3, fill: false,
    className: 'wg-outline'}}).addTo(outline);
  var maxHh = Math.max.apply(null, [1].concat(WG.buildings.map(function (b) { return b[2]; })));
  var maxR = WG.buildings.length > 300 ? 3 : 6;  // a street's many buildings get smaller dots than a community's
  WG.buildings.forEach(function (b) {
    L.circleMarker([b[0], b[1]], {renderer: canvas, interactive: false, radius: 1.2 + maxR * Math.sqrt(b[2] / maxHh),
      color: '#222', weight: 0.6, fillColor: '#333', fillOpacity: 0.55}).addTo(buildings); });
  gridLayer.addTo(map); diffLayer.addTo(map); findLayer.addTo(map); outline.addTo(map); buildings.addTo(map);
  var overlays = {};
  overlays['网格 grids (户数偏差 deviation)'] = gridLayer;
  overlays['与现行版本差异 diff vs active'] = diffLayer;
  overlays['校验问题 validation findings'] = findLayer;
  overlays['边界 ' + (WG.levels[WG.area.level] || '') + ' outline'] = outline;
  overlays['建筑 buildings (' + WG.buildings.length + ')'] = buildings;
  L.control.layers({'OpenStreetMap': tiles}, overlays, {collapsed: false, position: 'topright'}).addTo(map);

  function deviation(p) {
    if (p.deviation != null) return p.deviation;
    return p.households == null ? null : p.households / WG.target - 1;
  }
  function colour(dev) {
    if (dev == null) return '#cccccc';
    for (var i = 0; i < WG.classes.length; i++) {
      var c = WG.classes[i];
      if ((c.lo == null || dev >= c.lo) && (c.hi == null || dev < c.hi)) return c.colour;
    }
    return WG.classes[WG.classes.length - 1].colour;
  }
  function gridStyle(f) {
    var p = f.properties, sel = p.code === st.selected;
    return {fillColor: colour(deviation(p)), fillOpacity: 0.6, color: sel ? '#000' : '#555',
            weight: sel ? 3.5 : 0.9, dashArray: p.kind === 'commercial' ? '4 3' : null,
            className: 'wg-grid' + (sel ? ' wg-selected' : '')};
  }
  function drawGrids() {
    gridLayer.clearLayers();
    var labels = st.grids.length <= 30;  // code and households on each grid, where they fit
    L.geoJSON({type: 'FeatureCollection', features: st.grids}, {style: gridStyle,
      onEachFeature: function (f, l) {
        var p = f.properties;
        l.bindTooltip('<b>' + wgEsc(p.code) + '</b> ' + wgEsc(p.name || '') + '<br>' + num(p.households) + ' 户 households (' +
          pct(deviation(p)) + ' vs ' + WG.target + ') · ' + wgEsc(p.kind || '') + '<br>网格员 worker: ' +
          wgEsc(p.worker_name || (p.worker_id == null ? '(none)' : '#' + p.worker_id)), {sticky: true});
        l.on('click', function () { select(p.code); });
        if (labels) {
          var c = l.getBounds().getCenter(), at = geomHas(f.geometry, c.lng, c.lat) ? c : null;
          if (at) L.tooltip({permanent: true, direction: 'center', className: 'wg-label', interactive: false})
            .setLatLng(at).setContent(wgEsc(String(p.code).slice(-3)) + '<br>' + num(p.households)).addTo(gridLayer);
        }
      }}).addTo(gridLayer);
  }
  function drawDiff() {
    diffLayer.clearLayers();
    if (!st.diff || !st.diff.grids) return;
    var feats = st.diff.grids.features.filter(function (f) { return inArea(f.properties.code); });
    L.geoJSON({type: 'FeatureCollection', features: feats}, {
      style: function (f) { var c = f.properties.change;
        // a wide translucent halo: findings drawn on the same boundary stay visible on top of it
        return {color: WG.diff[c] || '#e66101', weight: 7, opacity: 0.55, fill: false, lineJoin: 'round',
                dashArray: c === 'removed' ? '10 8' : null, className: 'wg-diff wg-diff-' + c}; },
      onEachFeature: function (f, l) { var p = f.properties;
        l.bindTooltip('差异 ' + wgEsc(p.change) + ' · <b>' + wgEsc(p.code) + '</b><br>户数 households ' +
          num(p.households_before) + ' → ' + num(p.households_after) +
          (p.area_changed_m2 != null ? '<br>变化面积 changed land ' + num(Math.round(p.area_changed_m2)) + ' m²' : ''),
          {sticky: true}); }}).addTo(diffLayer);
  }
  function findingsHere() {
    if (!st.validation) return [];
    return st.validation.features.filter(function (f) { var p = f.properties;
      return inArea(p.community) || (p.codes || []).some(inArea); });
  }
  function drawFindings() {
    findLayer.clearLayers();
    findingsHere().forEach(function (f, i) {
      var p = f.properties, sev = WG.severity[p.severity] || '#d7191c', red = p.kind === 'gap' || p.kind === 'overlap';
      var cls = 'wg-finding wg-finding-' + p.kind + ' wg-sev-' + p.severity;
      var style = red ? {color: '#a50f15', weight: 1.5, fillColor: WG.severity.error, fillOpacity: 0.7,
                         dashArray: p.severity === 'fixable' ? '3 3' : null, className: cls}
                      : {color: sev, weight: 2.5, fill: p.severity === 'error', fillColor: sev, fillOpacity: 0.15,
                         dashArray: p.severity === 'error' ? null : '6 4', className: cls};
      var layer = L.geoJSON(f, {style: function () { return style; },
        pointToLayer: function (feat, ll) { return L.circleMarker(ll, Object.assign({radius: 7}, style, {fill: true,
          fillOpacity: 0.6})); }});
      var html = '<b>' + wgEsc(kindLabel(p.kind)) + '</b> · ' + wgEsc(p.severity) + '<br>' + wgEsc(p.message) +
        ((p.codes || []).length ? '<br><span style="color:#666">' + p.codes.map(wgEsc).join(', ') + '</span>' : '') +
        (p.area_m2 != null ? '<br>' + num(Math.round(p.area_m2)) + ' m²' : '');
      layer.bindPopup(html).bindTooltip(wgEsc(p.message), {sticky: true});
      layer.wgIndex = i;
      layer.addTo(findLayer);
    });
  }

  // -- panels
  var status = wgPanel(map, 'topleft', '<div class="wg-panel wg-status"></div>').getContainer();
  var findings = wgPanel(map, 'bottomleft', '<div class="wg-panel wg-findings"></div>').getContainer();
  wgPanel(map, 'bottomright', WG.legend);

  function picker() {
    var opts = WG.choices.map(function (c) {
      return '<option value="' + wgEsc(c.code) + '"' + (c.code === area ? ' selected' : '') + '>' +
        (c.level === 'community' ? '' : '▸ ') + wgEsc(c.name) + ' ' + wgEsc(c.code) + '</option>'; }).join('');
    return '<form class="wg-form" method="get" action="' + wgEsc(WG.mapPath) + '"><select name="area">' + opts +
      '</select>' +
      '<input type="hidden" name="target" value="' + WG.target + '"><input type="hidden" name="tolerance" value="' +
      WG.tolerance + '"><button type="submit">查看 Go</button></form>';
  }
  function renderStatus() {
    var p = st.plan, hh = 0;
    st.grids.forEach(function (f) { hh += f.properties.households || 0; });
    var v = st.validation && st.validation.summary, d = st.diff && st.diff.summary, sel = st.byCode[st.selected];
    var h = '<h1>' + wgEsc(p.name) + '</h1><div class="muted">方案 plan #' + planId + ' · ' + wgEsc(p.status) +
      ' · 修订 revision <b class="wg-revision">' + st.revision + '</b></div>' +
      '<div class="muted">' + wgEsc(WG.area.name) + ' ' + wgEsc(area) + ' · ' + (WG.levels[WG.area.level] || '') +
      ' · <span class="wg-grid-count">' + st.grids.length + '</span> 个网格 grids · ' + num(hh) + ' 户 · 目标 target ' +
      WG.target + ' ±' + Math.round(WG.tolerance * 100) + '%</div>';
    if (v) {
      var here = findingsHere().length;
      h += '<div class="wg-sec wg-validation"><b>校验 validation</b> (' + scopeLabel + '): ' +
        '<span class="' + (v.passes ? 'wg-pass">✓ 通过 passes' : 'wg-fail">✗ 未通过 does not pass') + '</span><br>' +
        v.errors + ' 错误 errors · ' + v.warnings + ' 警告 warnings · ' + v.fixable + ' 可修复 fixable' +
        ' <span class="muted">(本区域 here: ' + here + ')</span>' + (v.fixable && !st.busy && !WG.readOnly
          ? '<br><button class="wg-fix">修复碎片 Fix ' + v.fixable + ' slivers</button>' : '') + '</div>';
    }
    if (d) {
      h += '<div class="wg-sec"><b>与现行版本 vs active</b> (' + scopeLabel + '): +' + d.added + ' / −' + d.removed + ' / ~' + d.changed +
        ' 网格 grids · 迁移 moved ' + num(d.households_moved) + ' 户, ' + num(d.buildings_moved) + ' 栋' +
        '<br><span class="muted">改派事件 incidents reassigned ' + num(d.incidents_reassigned) +
        ' · 涉及网格员 workers affected ' + num(d.workers_affected) + '</span></div>';
    }
    if (WG.readOnly) h += '<div class="wg-sec wg-note wg-readonly">' + wgEsc(WG.readOnly) + '</div>';
    h += '<div class="wg-sec">' + (sel ? '选中 selected <b>' + wgEsc(sel.properties.code) + '</b> ' +
      num(sel.properties.households) + ' 户 (' + pct(deviation(sel.properties)) + ')'
      : WG.readOnly ? '<span class="muted">点击网格选中 click a grid to select it</span>'
      : '<span class="muted">点击网格选中 · 画线拆分 draw a line to split · 画多边形重绘选中网格 draw a polygon to redraw the selected grid</span>') + '</div>';
    if (st.pending) {
      var q = st.pending, verb = q.op === 'split' ? '拆分 Split' : '重绘 Redraw';
      h += '<div class="wg-pending">' + (q.code ? verb + ' 网格 <b>' + wgEsc(q.code) + '</b> ' +
          (q.op === 'split' ? '沿所画线 along the drawn line?' : '为所画边界 to the drawn boundary?')
          : '所画' + (q.op === 'split' ? '线' : '多边形') + '不在任何网格内 — 点击要' + (q.op === 'split' ? '拆分' : '重绘') +
            '的网格 click the grid to ' + (q.op === 'split' ? 'split' : 'redraw')) +
        (q.code ? '<div class="muted">或点击另一网格 or click another grid</div>' : '') +
        '<div><button class="wg-confirm"' + (q.code && !st.busy ? '' : ' disabled') + '>' + verb + '</button>' +
        '<button class="wg-cancel secondary">取消 Cancel</button></div></div>';
    }
    if (st.busy) h += '<div class="wg-result">处理中… working</div>';
    else if (st.last) h += '<div class="wg-result wg-last ' + st.last.kind + '">' + st.last.html + '</div>';
    st.errors.forEach(function (e) { h += '<div class="wg-note">' + wgEsc(e) + '</div>'; });
    if (WG.buildingsNote) h += '<div class="wg-note">' + wgEsc(WG.buildingsNote) + '</div>';
    status.innerHTML = h + picker();
    var ok = status.querySelector('.wg-confirm'), no = status.querySelector('.wg-cancel');
    if (ok) ok.onclick = submit;
    var fix = status.querySelector('.wg-fix');
    if (fix) fix.onclick = fixSlivers;
    if (no) no.onclick = function () {
      st.pending = null; sketch.clearLayers(); root.removeAttribute('data-wg-pending'); renderStatus(); };
    var reload = status.querySelector('.wg-reload');
    if (reload) reload.onclick = function () { location.reload(); };
  }
  function renderFindings() {
    var v = st.validation;
    if (!v) { findings.innerHTML = '<h4>校验问题 findings</h4><div class="muted">…</div>'; return; }
    var here = findingsHere(), kinds = {}, sevOf = {};
    here.forEach(function (f) { var k = f.properties.kind; kinds[k] = (kinds[k] || 0) + 1; sevOf[k] = f.properties.severity; });
    var rows = Object.keys(kinds).sort().map(function (k) {
      return '<tr><td><span class="wg-sev" style="background:' + (WG.severity[sevOf[k]] || '#999') + '"></span>' +
        wgEsc(kindLabel(k)) + '</td><td class="n">' + kinds[k] + '</td><td class="n muted">' +
        ((v.summary.by_kind || {})[k] || 0) + '</td></tr>'; }).join('');
    var list = here.slice(0, 60).map(function (f, i) { var p = f.properties;
      return '<li data-i="' + i + '"><span class="wg-sev" style="background:' + (WG.severity[p.severity] || '#999') +
        '"></span>' + wgEsc(p.message) + '</li>'; }).join('');
    findings.innerHTML = '<h4>校验问题 findings · 本区域 <span class="wg-findings-count">' + here.length + '</span></h4>' +
      (here.length ? '<table><tr class="muted"><td>kind</td><td class="n">本区域 here</td><td class="n">全部 all</td></tr>' + rows +
        '</table><ol>' + list + '</ol>' + (here.length > 60 ? '<div class="muted">… ' + (here.length - 60) + ' more</div>' : '')
        : '<div class="wg-pass">本区域无问题 no findings here</div>');
    findings.querySelectorAll('li').forEach(function (li) {
      li.onclick = function () {
        var i = +li.getAttribute('data-i');
        findLayer.eachLayer(function (l) { if (l.wgIndex === i) { map.fitBounds(l.getBounds(), {maxZoom: 18}); l.openPopup(); } });
      }; });
  }

  function select(code) {
    st.selected = code;
    gridLayer.eachLayer(function (g) { if (g.setStyle) g.setStyle(gridStyle); });
    if (st.pending) st.pending.code = code;
    renderStatus();
  }

  // -- fetch everything of the plan and redraw; each part fails on its own and says why
  function refresh() {
    root.setAttribute('data-wg-state', 'loading');
    var vq = '?target=' + encodeURIComponent(WG.target) + '&tolerance=' + encodeURIComponent(WG.tolerance);
    var gq = '?target=' + encodeURIComponent(WG.target) + (WG.area.level === 'community' ? '&community=' + area : '');
    var parts = [call('GET', '/plans/' + planId), call('GET', '/plans/' + planId + '/grids' + gq),
                 call('GET', '/plans/' + planId + '/validation' + vq),
                 call('GET', '/plans/' + planId + '/diff?against=active&limit=0')];
    return Promise.allSettled(parts).then(function (r) {
      var names = ['plan', 'grids', 'validation', 'diff'];
      st.errors = [];
      r.forEach(function (x, i) { if (x.status === 'rejected') st.errors.push(names[i] + ': ' + x.reason.message); });
      if (r[0].status === 'fulfilled') { st.plan = r[0].value; st.revision = st.plan.revision; }
      if (r[1].status === 'fulfilled') {
        st.grids = r[1].value.features.filter(function (f) { return inArea(f.properties.code); });
        st.byCode = {};
        st.grids.forEach(function (f) { st.byCode[f.properties.code] = f; });
        if (st.selected && !st.byCode[st.selected]) st.selected = null;
      }
      st.validation = r[2].status === 'fulfilled' ? r[2].value : null;
      st.diff = r[3].status === 'fulfilled' ? r[3].value : null;
      drawGrids(); drawDiff(); drawFindings();
      diffLayer.bringToFront(); findLayer.bringToFront();
      renderStatus(); renderFindings();
      st.refreshes += 1;
      root.setAttribute('data-wg-grids', st.grids.length);
      root.setAttribute('data-wg-findings', findingsHere().length);
      root.setAttribute('data-wg-revision', st.revision);
      root.setAttribute('data-wg-refreshes', st.refreshes);
      root.setAttribute('data-wg-state', st.errors.length ? 'partial' : 'ready');
    });
  }

  // -- drawing: a line asks which grid to split (the one under its midpoint, or a clicked one); a polygon
  //    redraws the selected grid (or the one under its centre)
  map.on('draw:created', function (e) {
    var layer = e.layer, gj = layer.toGeoJSON().geometry;
    if (e.layerType === 'polyline') {
      var lls = layer.getLatLngs();
      st.pending = {op: 'split', line: gj, code: gridAt(midpoint(lls)) || st.selected};
    } else if (e.layerType === 'polygon') {
      st.pending = {op: 'replace_geometry', geometry: gj, code: st.selected || gridAt(layer.getBounds().getCenter())};
    } else {
      return;
    }
    if (!sketch.hasLayer(layer)) sketch.addLayer(layer);
    root.setAttribute('data-wg-pending', st.pending.op + ':' + (st.pending.code || ''));
    renderStatus();
  });

  // POST an edit at the current revision; on success show `done(reply)`, clear the sketch and redraw everything
  function post(path, body, done) {
    if (st.busy) return;
    body.revision = st.revision;
    st.busy = true; renderStatus();
    root.setAttribute('data-wg-action', 'busy');
    call('POST', path, body).then(function (reply) {
      st.revision = reply.revision;
      st.last = {kind: 'ok', html: done(reply)};
      st.pending = null; sketch.clearLayers(); root.removeAttribute('data-wg-pending');
      st.busy = false;
      return refresh().then(function () { root.setAttribute('data-wg-action', 'ok'); });
    }).catch(function (err) {
      st.busy = false;
      var stale = err.status === 409 && /revision/i.test(err.message);
      st.last = {kind: 'error', html: '✗ ' + wgEsc(err.message) + (stale
        ? '<br><b>方案已被他人修改，请重新载入 The plan changed since this page loaded: reload it.</b> ' +
          '<button class="wg-reload">重新载入 Reload</button>' : '')};
      renderStatus();
      root.setAttribute('data-wg-action', 'error');
    });
  }
  function submit() {
    var q = st.pending;
    if (!q || !q.code) return;
    var body = {op: q.op, code: q.code};
    if (q.op === 'split') body.line = q.line; else body.geometry = q.geometry;
    post('/plans/' + planId + '/edits?target=' + encodeURIComponent(WG.target), body, function (reply) {
      return '✓ ' + (q.op === 'split' ? '已拆分 split ' : '已重绘 redrew ') + wgEsc(q.code) + ' → 修订 revision ' +
        reply.revision + '<br><span class="muted">变化 changed: ' + (reply.changed || []).map(wgEsc).join(', ') + '</span>';
    });
  }
  function fixSlivers() {
    post('/plans/' + planId + '/fix-slivers', {}, function (reply) {
      return '✓ 已修复碎片 slivers fixed → 修订 revision ' + reply.revision + '<br><span class="muted">变化 changed: ' +
        (reply.changed || []).map(wgEsc).join(', ') + '</span>';
    });
  }

  var b = WG.bounds, wide = map.getSize().x >= 900;
  map.fitBounds([[b[1], b[0]], [b[3], b[2]]], {animate: false,
    paddingTopLeft: wide ? [350, 10] : [10, 10], paddingBottomRight: wide ? [225, 10] : [10, 10]});
  renderStatus(); renderFindings();
  window.wgPlan = {map: map, state: st, refresh: refresh, submit: submit, select: select};  // for the console
  refresh();
}
