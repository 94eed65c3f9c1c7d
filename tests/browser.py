"""Headless Chromium for page tests: the DOM after scripts ran, a screenshot to look at, and a DevTools driver
(`Chrome`) for pages that need a signed-in session, clicks and JavaScript."""

import base64
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit

from websockets.sync.client import connect

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--window-size=1200,900", "--virtual-time-budget=15000"]
NO_TILES = "--host-resolver-rules=MAP tile.openstreetmap.org ~NOTFOUND"


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise RuntimeError("chromium is not installed: `make test` installs it (Debian package chromium).")
    return path


def _run(args: list[str]) -> str:
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        done = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=120)
    return done.stdout


def _site(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def dom(url: str, token: str | None = None) -> str:
    """The DOM of `url` after its scripts ran; with `token`, as a browser signed in with it."""
    if token is None:
        return _run([NO_TILES, "--dump-dom", url])
    with Chrome(1200, 900) as chrome:
        chrome.sign_in(_site(url), token)
        return chrome.settled(url)


def screenshot(url: str, png: str, token: str | None = None) -> None:
    """A screenshot of `url` (signed in with `token`, if given)."""
    if token is None:
        _run([NO_TILES, f"--screenshot={png}", url])
        return
    with Chrome(1200, 900) as chrome:
        chrome.sign_in(_site(url), token)
        chrome.settled(url)
        chrome.screenshot(Path(png))


class Chrome:
    """Headless Chromium driven over the DevTools protocol: evaluate JS, send real mouse events, screenshot."""

    def __init__(self, width: int = 1400, height: int = 950):
        self.stack = ExitStack()
        try:
            profile = self.stack.enter_context(tempfile.TemporaryDirectory(ignore_cleanup_errors=True))
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            flags = [f for f in FLAGS if not f.startswith(("--window-size", "--virtual-time"))]
            proc = subprocess.Popen([chromium(), *flags, f"--window-size={width},{height}",
                                     f"--remote-debugging-port={port}", f"--user-data-dir={profile}", NO_TILES,
                                     "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            # Chromium's helper processes may still write to the profile after it exits: cleanup ignores that
            self.stack.callback(lambda: (proc.terminate(), proc.wait(10)))
            deadline = time.monotonic() + 30
            while True:
                try:
                    pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5))
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            page = next(p for p in pages if p["type"] == "page")
            self.ws = self.stack.enter_context(connect(page["webSocketDebuggerUrl"], max_size=None, proxy=None))
        except BaseException:
            self.stack.close()
            raise
        self.ids = 0
        self.send("Page.enable")
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def send(self, method: str, **params):
        self.ids += 1
        self.ws.send(json.dumps({"id": self.ids, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv(timeout=60))
            if reply.get("id") == self.ids:
                assert "error" not in reply, reply["error"]
                return reply["result"]

    def js(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def wait(self, expression: str, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(f"(() => {{ try {{ return {expression}; }} catch (e) {{ return null; }} }})()")
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {expression}: state {self.js(_STATE)}")

    def click(self, x: float, y: float):
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def sign_in(self, site: str, token: str) -> None:
        """Carry `token` as the session cookie for `site`, as POST /login would set it."""
        self.send("Network.enable")
        self.send("Network.setCookie", name="wangge_session", value=token, url=site, httpOnly=True,
                  sameSite="Strict")

    def settled(self, url: str) -> str:
        """Open `url` and return its DOM once it has loaded and stopped changing."""
        self.send("Page.navigate", url=url)
        self.wait("document.readyState === 'complete'")
        last, deadline = "", time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.5)
            html = self.js("document.documentElement.outerHTML")
            if html == last:
                break
            last = html
        return last

    def screenshot(self, path: Path):
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"]))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stack.close()  # the DevTools connection, Chromium, then its profile directory


_STATE = "JSON.stringify(Object.assign({}, document.documentElement && document.documentElement.dataset))"
