"""The benchmark harness: timing, the machine a run happened on, and what every benchmark writes.

A benchmark is one file in ``bench/suite/`` (see ``bench/README.md``). ``bench/run.py`` finds it, calls its
``run(ctx)`` with a :class:`Context`, and writes what it returns (a :class:`Result`) to
``bench/results/<name>/<device>.{csv,json,md,png}``.

Timing (:func:`compare`): every variant is first called ``ctx.warmup`` times; a calibration call then sets how
many calls one measurement makes (``number``, so that one measurement lasts at least ``ctx.min_time``
seconds); then ``ctx.rounds`` rounds follow, each measuring every variant once, in an order that rotates from
round to round, with ``torch.utils.benchmark.Timer`` (``num_threads`` pinned to ``ctx.threads``; it
synchronises CUDA around each measurement). Reported: the median time per call over the rounds, the
interquartile range, and, against a baseline variant, the median over rounds of the per-round ratio
``time(variant) / time(baseline)``. A burst of load on a shared machine slows every variant of the same round,
so per-round ratios stay meaningful where absolute times do not.
"""
from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils import benchmark as tbench

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

__all__ = ["Context", "Timing", "Result", "compare", "time_once", "machine_info", "machine_line", "write_result",
           "command_line", "python_env",
           "ROOT", "RESULTS"]


@dataclass(frozen=True)
class Context:
    """What a benchmark's ``run`` receives: where and how to measure."""

    device: torch.device  # cpu, or cuda when ``--device cuda`` (the same code, absolute times recorded)
    threads: int  # torch intra-op threads, pinned for the whole run (default 1)
    size: str  # "small" (``make bench``: minutes on a laptop CPU) or "full"
    rounds: int  # measured rounds per variant (each round measures every variant once)
    warmup: int  # untimed calls per variant before calibration
    min_time: float  # seconds one measurement lasts at least (sets how many calls it makes)
    options: dict[str, str] = field(default_factory=dict)  # ``-o key=value`` from the command line
    root: Path = ROOT  # the repository
    results: Path = RESULTS  # where results are written (bench/results unless --out)

    @property
    def device_kind(self) -> str:
        return self.device.type

    def option(self, key: str, default: str) -> str:
        return self.options.get(key, default)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


@dataclass(frozen=True)
class Timing:
    """One variant's measurements (seconds per call)."""

    times: list[float]  # one per round
    number: int  # calls per measurement
    ratio: float | None = None  # median over rounds of time(variant) / time(baseline); None without a baseline

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def iqr(self) -> float:
        if len(self.times) < 2:
            return 0.0
        q = statistics.quantiles(self.times, n=4, method="inclusive")
        return q[2] - q[0]


def _measure(fn: Callable[[], Any], number: int, threads: int) -> float:
    timer = tbench.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)
    return timer.timeit(number).mean  # seconds per call


def compare(variants: dict[str, Callable[[], Any]], ctx: Context, baseline: str | None = None,
            rounds: int | None = None) -> dict[str, Timing]:
    """Time every variant, interleaved round by round; ratios against ``baseline`` (a key of ``variants``).

    Args:
        variants: name -> a function of no arguments doing one call of the work.
        ctx: the run's context (threads, rounds, warm-up, minimum measurement time).
        baseline: the variant ratios are taken against (its own ratio is 1.0), or None.
        rounds: override ``ctx.rounds`` (long-running work, such as a whole book build, uses fewer).

    Returns:
        name -> :class:`Timing`, in the order of ``variants``.
    """
    if baseline is not None and baseline not in variants:
        raise ValueError(f"compare: baseline {baseline!r} is not one of the variants {sorted(variants)}")
    rounds = ctx.rounds if rounds is None else rounds
    names = list(variants)
    numbers = {}
    for name in names:
        for _ in range(ctx.warmup):
            variants[name]()
        ctx.sync()
        once = _measure(variants[name], 1, ctx.threads)
        numbers[name] = max(1, math.ceil(ctx.min_time / max(once, 1e-9))) if once < ctx.min_time else 1
    times = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]  # rotate: no variant always goes first
        for name in order:
            times[name].append(_measure(variants[name], numbers[name], ctx.threads))
    out = {}
    for name in names:
        ratio = None
        if baseline is not None:
            ratio = statistics.median(t / b for t, b in zip(times[name], times[baseline]))
        out[name] = Timing(times[name], numbers[name], ratio)
    return out


def time_once(fn: Callable[[], Any]) -> float:
    """Wall time of one call, in seconds (for work that takes seconds or minutes, such as a subprocess)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info(ctx: Context) -> dict:
    """The machine and software a run measured, written next to every result."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    info = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_name(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": ctx.threads,
        "device": ctx.device_kind,
        "gpu": None,
        "cuda": None,
        "size": ctx.size,
        "rounds": ctx.rounds,
        "commit": _git_commit(),
    }
    if ctx.device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(ctx.device)
        info["cuda"] = torch.version.cuda
    return info


def machine_line(info: dict) -> str:
    """One line naming the machine: CPU, cores, threads, torch (and the GPU when there is one)."""
    where = f"{info['cpu']}, {info['usable_cpus']} of {info['logical_cpus']} logical CPUs usable"
    if info.get("gpu"):
        where = f"{info['gpu']} (CUDA {info['cuda']}); host {where}"
    return (f"{where}; torch {info['torch']}, {info['torch_threads']} thread(s); Python {info['python']}; "
            f"load {info['load_average_1min']}; {info['date']}")


@dataclass
class Result:
    """What a benchmark returns; :func:`write_result` turns it into files.

    ``rows`` become ``<device>.csv`` (one row per measurement, the full data); ``tables`` become
    ``<device>_<key>.csv`` (small tables for the book page, e.g. ratios); ``summary`` lines are printed and
    written, with the machine line, to ``<device>.md`` (the book includes that file); ``plot(fig)`` draws the
    figure saved as ``<device>.png``.
    """

    rows: list[dict]
    summary: list[str]
    plot: Callable[[Any], None] | None = None
    tables: dict[str, list[dict]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # caveats, printed and written after the summary


def _write_csv(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for row in rows:
            w.writerow({k: _fmt(row.get(k)) for k in columns})


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    return "" if value is None else value


def write_result(name: str, title: str, result: Result, info: dict, command: str,
                 out_dir: Path = RESULTS) -> list[Path]:
    """Write ``out_dir/<name>/<device>.*`` and return the paths written."""
    folder = out_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    stem = info["device"]
    written = []
    path = folder / f"{stem}.csv"
    _write_csv(path, result.rows)
    written.append(path)
    for key, rows in result.tables.items():
        path = folder / f"{stem}_{key}.csv"
        _write_csv(path, rows)
        written.append(path)
    meta = {"name": name, "title": title, "command": command, "machine": info, "summary": result.summary,
            "notes": result.notes, "files": [p.name for p in written]}
    path = folder / f"{stem}.json"
    path.write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    written.append(path)
    md = [f"Measured on {machine_line(info)} (commit {info['commit'] or 'unknown'}), with `{command}`.", ""]
    md += [f"- {line}" for line in result.summary]
    if result.notes:
        md += [""] + [f"Note: {n}" for n in result.notes]
    path = folder / f"{stem}.md"
    path.write_text("\n".join(md) + "\n", encoding="utf-8")
    written.append(path)
    if result.plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=(9, 5.2))
        result.plot(fig)
        fig.text(0.01, 0.005, machine_line(info), fontsize=6.5, color="0.35", ha="left", va="bottom")
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        path = folder / f"{stem}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def command_line(argv: list[str]) -> str:
    """How this run was started, for the record (paths relative to the repository)."""
    parts = ["python", "bench/run.py"] + argv
    return " ".join(shlex.quote(p) for p in parts)


def python_env() -> dict:
    """The environment for subprocesses: this interpreter's ``bin/`` first on PATH, offline."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    return env
