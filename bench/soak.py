"""`make soak`: the live feed at 20 times its rate against a served demo, with sign-ins and reads mixed in.

`python -m bench.soak --minutes 30` serves wangge_bench (loading the demo first if it is empty) with
`wangge serve --workers 2`, and runs for that long:
- the feed (fixtures.simulate) at 20 times every default: 300 new incidents a minute, every responder pinging
  every 3 s, and 60 % of the new cases dispatched, worked and closed, twenty times faster;
- a reader: incident lists, grid lookups, nearest responders and the supervisor page, about 10 a second;
- a sign-in every 20 s: the form, POST /login with the token as password, a map page with the cookie, sign out.

It samples every worker's resident memory every 15 s, keeps the latency of every request, and at the end checks
that every incident the service acknowledged (201) is in the database. It writes bench/reports/soak.md and
exits 1 on any 5xx, a lost write, or memory that grew by more than a quarter after the first five minutes.
"""

import argparse
import os
import re
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import numpy as np
from sqlalchemy import text

from api.settings import Settings
from bench.context import REPORTS, Bench, bench_url
from bench.report import machine
from fixtures.simulate import Feed, run
from geo.db import sync_engine

RATE = 20  # times the feed's defaults
WINDOW_S = 300  # latency percentiles per five minutes


class Log:
    """Every request's kind, status and latency, from every thread (an httpx event hook records them)."""

    def __init__(self, started: float):
        self.started, self.lock = started, threading.Lock()
        self.latency: dict[int, list[float]] = defaultdict(list)  # window → seconds
        self.status: Counter = Counter()  # (kind, status)
        self.acknowledged: list[int] = []  # ids of incidents answered 201

    def client(self, base_url: str, kind: str | None = None) -> httpx.Client:
        """An httpx client whose requests are logged (as `kind`, else by method and route)."""
        def on_request(request: httpx.Request) -> None:
            request.extensions["soak_started"] = time.perf_counter()

        def on_response(response: httpx.Response) -> None:
            response.read()
            seconds = time.perf_counter() - response.request.extensions["soak_started"]
            name = kind or f"{response.request.method} {re.sub(r'/[0-9]+', '/{id}', response.request.url.path)}"
            with self.lock:
                self.latency[int((time.monotonic() - self.started) // WINDOW_S)].append(seconds)
                self.status[(name, response.status_code)] += 1
                if response.request.method == "POST" and response.request.url.path == "/incidents" \
                        and response.status_code == 201:
                    self.acknowledged.append(response.json()["id"])

        return httpx.Client(base_url=base_url, timeout=30, event_hooks={"request": [on_request],
                                                                         "response": [on_response]})


def _workers(server_pid: int) -> list[int]:
    """The pids of the server's worker processes (its descendants)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [server_pid]
    while frontier:
        pid = frontier.pop()
        children = [child for child, parent in parents.items() if parent == pid]
        found += children
        frontier += children
    return found


def _rss_mb(pid: int) -> float | None:
    try:
        line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return None
    return int(line.split()[1]) / 1024


def _reader(log: Log, base: str, token: str, points: list, stop: threading.Event) -> None:
    client = log.client(base)
    client.headers["Authorization"] = f"Bearer {token}"
    rng = np.random.default_rng(7)
    n = 0
    while not stop.is_set():
        _, lon, lat = points[int(rng.integers(len(points)))]
        client.get("/grids/at", params={"lon": lon, "lat": lat})
        client.get("/dispatch/nearest", params={"lon": lon, "lat": lat, "k": 5})
        client.get("/incidents", params={"area": "110102001", "status": "filed,dispatched,in_progress", "limit": 50})
        if n % 30 == 0:
            client.get("/maps/incidents", params={"area": "110102001"})
        n += 1
        stop.wait(0.3)


def _signer(log: Log, base: str, token: str, stop: threading.Event) -> None:
    from bench.context import BENCH_USER

    while not stop.is_set():
        with log.client(base, "sign-in") as browser:
            form = browser.get("/login", params={"next": "/maps/grids?area=110102001"})
            key = re.search(r'name="form_key" value="([^"]+)"', form.text)
            signed = browser.post("/login", data={"name": BENCH_USER, "secret": token, "next": "/maps/grids",
                                                  "form_key": key.group(1) if key else ""})
            if signed.status_code == 303:
                browser.get("/maps/grids", params={"area": "110102001"})
                browser.post("/logout")
        stop.wait(20)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30)
    args = parser.parse_args(argv)
    url = bench_url(Settings())
    ctx = Bench(url=url, engine=sync_engine(Settings(database_url=url).sync_url()), seconds=10, n_points=500)
    with ctx.engine.connect() as conn:
        loaded = conn.execute(text("SELECT to_regclass('incidents') IS NOT NULL")).scalar() and \
            conn.execute(text("SELECT count(*) > 0 FROM incidents")).scalar()
    if not loaded:
        from bench.load_time import demo_load

        demo_load(ctx)
    token, points = ctx.bench_token(), ctx.sample_points()
    base = ctx.server()
    assert ctx._server is not None
    started = time.monotonic()
    log, stop = Log(started), threading.Event()
    memory: dict[int, list[tuple[float, float]]] = defaultdict(list)  # pid → (minute, MB)
    threads = [threading.Thread(target=_reader, args=(log, base, token, points, stop), daemon=True),
               threading.Thread(target=_signer, args=(log, base, token, stop), daemon=True)]
    for thread in threads:
        thread.start()
    sampler_stop = threading.Event()

    def sample() -> None:
        while not sampler_stop.is_set():
            for pid in _workers(ctx._server.pid):
                if (mb := _rss_mb(pid)) is not None:
                    memory[pid].append(((time.monotonic() - started) / 60, mb))
            sampler_stop.wait(15)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    feed = Feed(rate_per_min=15 * RATE, duration_s=args.minutes * 60, ping_interval_s=60 / RATE,
                step_scale=1 / RATE, seed=11)
    try:
        tally = run(base, token, feed, say=print, client=log.client(base))
    finally:
        stop.set()
        sampler_stop.set()
        for thread in threads:
            thread.join(30)
        sampler.join(30)
        ctx.close()
    with ctx.engine.connect() as conn:
        present = conn.execute(text("SELECT count(*) FROM incidents WHERE id = ANY(:ids)"),
                               {"ids": log.acknowledged}).scalar_one()
    ctx.engine.dispose()
    return _report(args.minutes, log, memory, tally.lines(), present)


def _report(minutes: float, log: Log, memory: dict, tally: list[str], present: int) -> int:
    total = sum(log.status.values())
    errors = {key: n for key, n in log.status.items() if key[1] >= 500}
    busy = ("POST /incidents/{id}/dispatch", 409)  # every nearby responder busy: the feed retries later
    refused = {key: n for key, n in log.status.items() if 400 <= key[1] < 500 and key != busy}
    facts = ", ".join(f"{key}: {value}" for key, value in machine().items())
    lines = [
        "# Soak", "", f"- machine: {facts}",
        f"- {minutes:g} minutes, `wangge serve --workers 2`, the feed at {RATE}× its defaults, a reader (~10 req/s) "
        "and a sign-in every 20 s",
        f"- requests: {total:,}, 5xx: {sum(errors.values())}, other refusals (4xx but the feed's 409s): "
        f"{sum(refused.values())}",
        f"- incidents acknowledged (201): {len(log.acknowledged):,}, present afterwards: {present:,}", "",
        "| window (min) | requests | p50 ms | p95 ms | p99 ms |", "|---|---|---|---|---|"]
    for window, values in sorted(log.latency.items()):
        q = np.percentile(values, [50, 95, 99]) * 1000
        lines.append(f"| {window * WINDOW_S // 60}–{(window + 1) * WINDOW_S // 60} | {len(values):,} | {q[0]:.1f} "
                     f"| {q[1]:.1f} | {q[2]:.1f} |")
    lines += ["", "| worker pid | RSS at 5 min (MB) | RSS at end (MB) | max (MB) |", "|---|---|---|---|"]
    grew = False
    for pid, samples in sorted(memory.items()):
        warm = next((mb for minute, mb in samples if minute >= min(5, minutes / 3)), samples[0][1])
        end = samples[-1][1]
        grew |= end > warm * 1.25
        lines.append(f"| {pid} | {warm:.0f} | {end:.0f} | {max(mb for _, mb in samples):.0f} |")
    lines += ["", "By kind and status:", ""]
    lines += [f"- {kind}: {status} × {n:,}" for (kind, status), n in sorted(log.status.items())]
    lines += ["", "The feed's own tally:", "", *(f"- {line}" for line in tally)]
    markdown = "\n".join(lines) + "\n"
    REPORTS.mkdir(parents=True, exist_ok=True)
    (REPORTS / "soak.md").write_text(markdown)
    print(markdown)
    print(f"written to {REPORTS / 'soak.md'}")
    return 1 if errors or refused or present != len(log.acknowledged) or grew else 0


if __name__ == "__main__":
    sys.exit(main())
