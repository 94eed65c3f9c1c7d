"""HTML helpers the map pages share: escaping, JSON for scripts, verbatim markup, and the page head."""

import html
import json

import folium
from branca.element import Element, Figure
from folium.template import Template

FONT = "'WenQuanYi Zen Hei', 'Noto Sans CJK SC', 'PingFang SC', 'Microsoft YaHei', sans-serif"
PAGE_SCRIPT = "/static/wangge.js"  # the shared browser helpers (wgEsc, wgPanel, ...)


def script_json(obj) -> str:
    """JSON safe to drop inside a <script>."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")


def esc(value) -> str:
    """Text escaped for HTML; None becomes empty."""
    return html.escape("" if value is None else str(value))


class Raw(Element):
    """Markup inserted verbatim: folium.Element would compile it as a Jinja template (slow, and `{{` in a
    name would be evaluated)."""

    _template = Template("{{ this.raw }}")

    def __init__(self, raw: str):
        """Wrap `raw` markup."""
        super().__init__()
        self.raw = raw


def header(fmap: folium.Map) -> Element:
    """The <head> of the page a map renders into."""
    root = fmap.get_root()
    assert isinstance(root, Figure)  # a folium.Map's root is its page
    return root.header


def add_head(fmap: folium.Map, title: str, css: str, config: dict, script: str = "",
             scripts: tuple[str, ...] = (PAGE_SCRIPT,)) -> None:
    """The page's title, its CSS (FONT filled in), the shared scripts and `var WG = config` with the page's
    own inline functions: how every map page starts."""
    head = header(fmap)
    head.add_child(Raw(f"<title>{esc(title)}</title>"))
    head.add_child(Raw(css.replace("FONT", FONT)))
    sources = "".join(f'<script src="{src}"></script>\n' for src in scripts)
    head.add_child(Raw(f"{sources}<script>\nvar WG = {script_json(config)};\n{script}</script>\n"))
