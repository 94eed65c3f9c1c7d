"""Headless Chromium for page tests: the DOM after scripts ran, and a screenshot to look at."""

import shutil
import subprocess
import tempfile

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--window-size=1200,900", "--virtual-time-budget=15000"]


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


def dom(url: str) -> str:
    return _run(["--dump-dom", url])


def screenshot(url: str, png: str) -> None:
    _run([f"--screenshot={png}", url])
