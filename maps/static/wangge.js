/* Helpers shared by Wangge's map pages (served from /static, so pages stay small and work offline). */
function wgEsc(s) {
  return s == null ? '' : String(s).replace(/[&<>"']/g, function (c) {
    return {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'}[c]; });
}

/* A fixed panel (header, legend, chart) on the map; clicks and scrolls inside it don't move the map. */
function wgPanel(map, position, html) {
  var C = L.Control.extend({onAdd: function () {
    var div = L.DomUtil.create('div', '');
    div.innerHTML = html;
    L.DomEvent.disableClickPropagation(div);
    L.DomEvent.disableScrollPropagation(div);
    return div.firstElementChild;
  }});
  return new C({position: position}).addTo(map);
}
