"""Load generators: pgbench for raw SQL, wrk for HTTP; both return throughput and latency percentiles."""

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.context import BENCH_DIR, REPORTS, Bench, libpq_env

CLIENTS, THREADS = 4, 2
PGBENCH_SAMPLING = 0.1  # share of transactions logged for the latency percentiles


def pgbench_bin() -> str:
    try:
        from wangge.localdb import find_bindir

        path = find_bindir() / "pgbench"
        if path.exists():
            return str(path)
    except Exception:
        pass
    found = shutil.which("pgbench")
    if not found:
        raise RuntimeError("pgbench not found: `make bench` installs it (postgresql-contrib).")
    return found


def _percentile(sorted_values: list[float], p: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(round(p / 100 * (len(sorted_values) - 1))))]


def pgbench(ctx: Bench, name: str, query: str) -> dict:
    """Run `query` (may use :i, a random bench_points id) with 4 clients, 2 threads, prepared protocol."""
    REPORTS.mkdir(parents=True, exist_ok=True)
    script = REPORTS / f"{name}.pgbench.sql"
    script.write_text(f"\\set i random(1, {len(ctx.points)})\n{' '.join(query.split())};\n")
    with tempfile.TemporaryDirectory() as logdir:
        cmd = [pgbench_bin(), "-n", "-M", "prepared", "-c", str(CLIENTS), "-j", str(THREADS),
               "-T", str(int(ctx.seconds)), "-f", str(script), "-l", f"--sampling-rate={PGBENCH_SAMPLING}",
               f"--log-prefix={logdir}/log"]
        out = subprocess.run(cmd, env=libpq_env(ctx.url), capture_output=True, text=True,
                             timeout=ctx.seconds + 120)
        if out.returncode != 0:
            raise RuntimeError(f"pgbench failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        fields = (line.split() for f in Path(logdir).iterdir() for line in f.read_text().splitlines())
        latencies_ms = sorted(int(x[2]) / 1000 for x in fields if x[2].isdigit())  # skips "failed"
    tps = float(re.search(r"tps = ([\d.]+) \(without initial connection time\)", out.stdout).group(1))
    processed = int(re.search(r"actually processed: (\d+)", out.stdout).group(1))
    failed = re.search(r"number of failed transactions: (\d+)", out.stdout)
    return {"rps": tps, "requests": processed, "failed": int(failed.group(1)) if failed else 0,
            **{f"p{p}": _percentile(latencies_ms, p) for p in (50, 95, 99)}}


def wrk(ctx: Bench, lua: str, data: Path, path_and_query: str = "/") -> dict:
    """Run wrk -t2 -c4 with bench/<lua> (which reads `data`) and parse its `BENCH key=value` lines."""
    cmd = ["wrk", f"-t{THREADS}", f"-c{CLIENTS}", f"-d{int(ctx.seconds)}s", "--latency", "-s",
           str(BENCH_DIR / lua), ctx.server() + path_and_query, "--", str(data)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=ctx.seconds + 120)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    values = dict(m.groups() for m in re.finditer(r"^BENCH (\w+)=(\S+)$", out.stdout, re.M))
    if not values:
        raise RuntimeError(f"wrk printed no BENCH lines:\n{out.stdout}\n{out.stderr}")
    return {k: float(v) for k, v in values.items()}


def write_requests(name: str, token: str, requests: list[tuple[str, str, str | None]]) -> Path:
    """The data file bench/requests.lua replays: the token and (method, path, body) triples."""
    def lua(value: str | None) -> str:
        return "nil" if value is None else json.dumps(value)

    REPORTS.mkdir(parents=True, exist_ok=True)
    items = ",\n".join(f"    {{ method = {lua(m)}, path = {lua(p)}, body = {lua(b)} }}" for m, p, b in requests)
    path = REPORTS / f"{name}.data.lua"
    path.write_text(f"return {{\n  token = {json.dumps(token)},\n  requests = {{\n{items}\n  }},\n}}\n")
    path.chmod(0o600)
    return path


def interleaved(runs: dict, seconds: float, rounds: int = 4) -> dict[str, dict]:
    """Run each of `runs` (name → run(seconds) → pgbench/wrk result) `rounds` times, in turn, seconds/rounds each,
    so that every side sees the same stretches of this noisy machine; merged: requests and errors summed, rps over
    the summed time, latency percentiles the worst round's."""
    parts: dict[str, list[dict]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            parts[name].append(run(max(1, round(seconds / rounds))))
    merged = {}
    for name, results in parts.items():
        requests = sum(r["requests"] for r in results)
        merged[name] = {**{k: max(r[k] for r in results) for k in results[0] if k.startswith("p")},
                        **{k: sum(r[k] for r in results)
                           for k in ("failed", "non2xx", "socket_errors") if k in results[0]},
                        "requests": requests, "rps": requests / sum(r["requests"] / r["rps"] for r in results),
                        "rounds": [round(r["rps"]) for r in results]}
    return merged
