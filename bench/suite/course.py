"""The course itself: building the book, re-executing every notebook, and `make test` (opt-in: minutes).

Parts (``-o parts=book,notebooks,test``, default all three):

* ``book``: ``jupyter-book build --warningiserror --keep-going`` (what ``make book`` runs) on a fresh copy of
  the repository's files (tracked and untracked-but-not-ignored, as a clean clone has them), timed;
* ``notebooks``: every chapter and appendix notebook of ``_toc.yml`` executed from top to bottom with
  ``jupyter nbconvert --execute`` in that copy, one at a time, timed each (the course's rule: under ~60 s each
  on 2 CPU cores);
* ``test``: ``make test`` in the repository itself (the whole suite, as CI runs it), timed.

Each part is timed once (these take minutes; ``-o rounds=N`` repeats them). Rows of parts not run this time
are kept from the previous results file, with their own date, so the parts can be measured separately.
Not part of ``make bench``: ``make bench-course`` runs it.
"""
from __future__ import annotations

import csv
import datetime as _dt
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from bench.harness import Context, Result, python_env, time_once

NAME = "course"
TITLE = "The course itself: book build, notebooks re-executed, make test"
DEFAULT = False  # opt-in: `make bench-course`
DEVICES = ("cpu",)
NOTEBOOK_BUDGET_S = 60  # CONTRIBUTING.md: a chapter executes in under ~60 s on 2 CPU cores


def _files(root: Path) -> list[str]:
    """The files a clean clone would have (plus untracked files not ignored): git's own list."""
    out = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         capture_output=True, text=True, check=True)
    return [f for f in out.stdout.split("\0") if f and (root / f).is_file()]


def fresh_copy(root: Path, dest: Path) -> Path:
    for rel in _files(root):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, target)
    return dest


def toc_notebooks(root: Path) -> list[str]:
    toc = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8"))
    files = [toc["root"]]

    def walk(entries):
        for e in entries or []:
            if "file" in e:
                files.append(e["file"])
            walk(e.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return [f + ".ipynb" for f in files if (root / (f + ".ipynb")).is_file()]


def _run(cmd: list[str], cwd: Path, timeout: int) -> tuple[float, int, str]:
    box = {}

    def call():
        box["p"] = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=python_env(), timeout=timeout)

    seconds = time_once(call)
    p = box["p"]
    return seconds, p.returncode, (p.stdout[-3000:] + p.stderr[-3000:])


def _previous_rows(results: Path, device: str) -> list[dict]:
    path = results / NAME / f"{device}.csv"
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def run(ctx: Context) -> Result:
    parts = [p.strip() for p in ctx.option("parts", "book,notebooks,test").split(",") if p.strip()]
    unknown = set(parts) - {"book", "notebooks", "test"}
    if unknown:
        raise ValueError(f"course: unknown parts {sorted(unknown)}; expected book, notebooks, test")
    rounds = int(ctx.option("rounds", "1"))
    bin_dir = Path(sys.executable).parent
    today = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
    rows, problems = [], []

    def record(part, item, times, rc, log):
        rows.append({"part": part, "item": item, "seconds": statistics.median(times), "rounds": len(times),
                     "ok": rc == 0, "date": today})
        if rc != 0:
            problems.append(f"{part} {item}: exit {rc}\n{log[-1500:]}")
        print(f"   {part} {item}: {statistics.median(times):.1f} s{'' if rc == 0 else f' (exit {rc})'}", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench_course_") as tmp:
        copy = fresh_copy(ctx.root, Path(tmp) / "course")
        if "book" in parts:
            times = []
            for _ in range(rounds):
                shutil.rmtree(copy / "_build", ignore_errors=True)
                seconds, rc, log = _run([str(bin_dir / "jupyter-book"), "build", str(copy), "--warningiserror",
                                         "--keep-going"], copy, 1800)
                times.append(seconds)
            record("book", "jupyter-book build (make book)", times, rc, log)
        if "notebooks" in parts:
            out_dir = Path(tmp) / "executed"
            for nb in toc_notebooks(copy):
                times = []
                for _ in range(rounds):
                    seconds, rc, log = _run([str(bin_dir / "jupyter"), "nbconvert", "--to", "notebook", "--execute",
                                             "--ExecutePreprocessor.timeout=900", "--output-dir", str(out_dir),
                                             str(copy / nb)], (copy / nb).parent, 1800)
                    times.append(seconds)
                record("notebooks", nb, times, rc, log)
    if "test" in parts:
        times = []
        for _ in range(rounds):
            seconds, rc, log = _run(["make", "test"], ctx.root, 7200)
            times.append(seconds)
        record("test", "make test", times, rc, log)

    kept = [r for r in _previous_rows(ctx.results, ctx.device_kind) if r.get("part") not in parts]
    all_rows = kept + rows
    summary = []
    for part in ("book", "notebooks", "test"):
        sel = [r for r in all_rows if r["part"] == part]
        if not sel:
            continue
        total = sum(float(r["seconds"]) for r in sel)
        when = sel[0]["date"]
        if part == "notebooks":
            slowest = max(sel, key=lambda r: float(r["seconds"]))
            over = [r["item"] for r in sel if float(r["seconds"]) > NOTEBOOK_BUDGET_S]
            summary.append(f"re-executing the {len(sel)} notebooks: {total:.0f} s in all; slowest "
                           f"{slowest['item']} {float(slowest['seconds']):.0f} s; over the {NOTEBOOK_BUDGET_S} s budget: "
                           f"{', '.join(over) if over else 'none'} ({when})")
        else:
            summary.append(f"{sel[0]['item']}: {total:.0f} s ({total / 60:.1f} min) ({when})")
    for part in ("book", "notebooks", "test"):
        if part not in {r["part"] for r in all_rows}:
            summary.append(f"{part}: not measured yet (`python bench/run.py course -o parts={part}`)")
    notes = [p.splitlines()[0] for p in problems]
    return Result(rows=all_rows, summary=summary, notes=notes, plot=lambda fig: _plot(fig, all_rows))


def _plot(fig, rows) -> None:
    ax = fig.subplots()
    labels = [r["item"] if r["part"] != "notebooks" else Path(r["item"]).stem for r in rows]
    seconds = [float(r["seconds"]) for r in rows]
    colors = {"book": "C0", "notebooks": "C1", "test": "C3"}
    ax.barh(labels, seconds, color=[colors[r["part"]] for r in rows])
    for y, s in enumerate(seconds):
        ax.text(s, y, f" {s:.0f} s" if s < 120 else f" {s / 60:.1f} min", va="center", fontsize=8)
    if any(r["part"] == "notebooks" for r in rows):
        ax.axvline(NOTEBOOK_BUDGET_S, color="0.5", ls="--", lw=1)
        ax.text(NOTEBOOK_BUDGET_S, len(rows) - 0.5, f" {NOTEBOOK_BUDGET_S} s budget per notebook", fontsize=7,
                color="0.4")
    ax.invert_yaxis()
    ax.set_xlabel("seconds (one run each)")
    ax.set_title("How long the course takes to build, execute and test", fontsize=11)
