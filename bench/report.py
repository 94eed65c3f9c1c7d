"""Benchmark rows and the Markdown report: one table, then the facts and notes that give it a scale."""

import os
import platform
from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass
class Row:
    """One line of the table; the ratio is always 'Wangge as a share of raw' (1.0 = as fast as raw)."""

    benchmark: str
    wangge: float | None
    raw: float | None
    unit: str  # "s", "ms" (lower is better) or "req/s" (higher is better)

    @property
    def higher_is_better(self) -> bool:
        return self.unit.endswith("/s")

    @property
    def ratio(self) -> float | None:
        if not self.wangge or not self.raw:
            return None
        return self.wangge / self.raw if self.higher_is_better else self.raw / self.wangge


@dataclass
class Result:
    """What a benchmark function returns: table rows, plus notes (how it was measured, checks)."""

    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # failed checks: the run exits non-zero


def _value(x: float | None, unit: str) -> str:
    if x is None:
        return "—"
    if unit == "req/s":
        return f"{x:,.0f} req/s"
    if unit == "ms":
        return f"{x:.2f} ms"
    return f"{x:.2f} {unit}"


def table(rows: list[Row]) -> str:
    lines = ["| benchmark | Wangge | raw PostGIS | ratio |", "|---|---:|---:|---:|"]
    for r in rows:
        ratio = "—" if r.ratio is None else f"{r.ratio:.3f}"
        lines.append(f"| {r.benchmark} | {_value(r.wangge, r.unit)} | {_value(r.raw, r.unit)} | {ratio} |")
    return "\n".join(lines)


def machine() -> dict:
    """CPU count and model, memory, OS and Python: what the figures depend on besides the code."""
    model, mem_gb = platform.processor() or "?", None
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem_gb = int(line.split()[1]) / 1024 / 1024
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "nproc": usable,
        "cpu": model,
        "memory": f"{mem_gb:.0f} GB" if mem_gb else "?",
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def render(rows: list[Row], facts: dict, notes: list[str], failures: list[str]) -> str:
    now = datetime.now(UTC).astimezone().isoformat(timespec="seconds")
    parts = [
        "# Wangge benchmarks",
        "",
        f"Run {now}. Ratio = Wangge as a share of raw PostGIS: throughput Wangge/raw, "
        "times and latencies raw/Wangge (1.0 = as fast as raw; the design goal for hot lookups is 0.25).",
        "",
        table(rows),
        "",
        "## Setup",
        "",
        *[f"- {k}: {v}" for k, v in facts.items()],
    ]
    if failures:
        parts += ["", "## FAILED", "", *[f"- {f}" for f in failures]]
    if notes:
        parts += ["", "## Notes", "", *[f"- {n}" for n in notes]]
    return "\n".join(parts) + "\n"
