"""Grading: seconds per submission with the `course grade` command line, for several ways of running it.

A class of N submissions of one assignment (half the model solution, half the solution with a classic bug from
``tests/grader/exercise_bugs/``) is graded with ``course grade ASSIGNMENT SUBMISSIONS --out ... --force --quiet`` plus
each variant's arguments (default ``--jobs 1`` and ``--jobs 2``), round-robin. Reported per variant: the wall
time of the whole command (what a teacher waits for, start-up included), seconds per submission, the grader's
own count (its "graded N submission(s) in X s" line, start-up excluded), and the speed-up over the first
variant. Every run's grades are checked: the solutions get full marks, the bugged ones less, so a fast wrong
grader cannot win. Only the command line is used (not the grader's Python API), so this benchmark does not
depend on where the grader's code lives.

Options (``-o key=value``): ``assignment`` (default ex02_self_attention); ``students`` (default 8, full size
24); ``rounds`` (default 1, full size 3); ``variants``, the extra arguments of each variant separated by ``;``
(default ``--jobs 1;--jobs 2``; a Dask or other scheduler option of ``course grade`` plugs in here).
"""
from __future__ import annotations

import copy
import csv
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat

from bench.harness import Context, Result, python_env, time_once

NAME = "grading"
TITLE = "Grading: seconds per submission with `course grade`"
DEFAULT = True
DEVICES = ("cpu",)  # grading runs on the CPU whatever the machine has


def _meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def _strip_markers(src: str) -> str:
    """The code a student who solved the cell would hand in: nbgrader's markers removed, the code kept."""
    markers = {"### BEGIN SOLUTION", "### END SOLUTION", "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"}
    return "\n".join(line for line in src.splitlines() if line.strip() not in markers)


def model_submission(root: Path, assignment: str):
    """The released notebook with every answer cell filled from the source solution."""
    release = nbformat.read(root / "exercises" / assignment / f"{assignment}.ipynb", as_version=4)
    source = nbformat.read(root / "solutions" / assignment / f"{assignment}.ipynb", as_version=4)
    answers = {_meta(c).get("grade_id"): c.source for c in source.cells if _meta(c).get("solution")}
    nb = copy.deepcopy(release)
    for cell in nb.cells:
        gid = _meta(cell).get("grade_id")
        if _meta(cell).get("solution") and gid in answers:
            cell.source = _strip_markers(answers[gid])
    return nb


def with_bug(nb, bug: dict):
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if _meta(cell).get("grade_id") == bug["cell"]:
            if bug["find"] not in cell.source:
                raise ValueError(f"bug {bug.get('name')!r}: {bug['find']!r} not in cell {bug['cell']!r}")
            cell.source = cell.source.replace(bug["find"], bug["replace"])
            return nb
    raise ValueError(f"bug {bug.get('name')!r}: no cell {bug['cell']!r}")


def _course_command() -> list[str]:
    script = Path(sys.executable).parent / "course"
    return [str(script)] if script.exists() else ["course"]


def _grade(root: Path, assignment: str, subs: Path, out: Path, extra: list[str]) -> tuple[float, str]:
    if out.exists():
        shutil.rmtree(out)
    cmd = _course_command() + ["grade", assignment, str(subs), "--out", str(out), "--force", "--quiet", *extra]
    proc = {}

    def call():
        proc["p"] = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=python_env(), timeout=3600)

    seconds = time_once(call)
    p = proc["p"]
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return seconds, p.stdout + p.stderr


def _check_grades(out: Path, expected_full: set[str], n: int) -> None:
    with open(out / "grades.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if len(rows) != n:
        raise RuntimeError(f"grades.csv has {len(rows)} rows, expected {n}")
    for row in rows:
        full = float(row["score"]) == float(row["max_score"])
        if full != (row["student"] in expected_full):
            raise RuntimeError(f"unexpected grade for {row['student']}: {row['score']}/{row['max_score']}")


def run(ctx: Context) -> Result:
    root = ctx.root
    assignment = ctx.option("assignment", "ex02_self_attention")
    n = int(ctx.option("students", "8" if ctx.size == "small" else "24"))
    rounds = int(ctx.option("rounds", "1" if ctx.size == "small" else "3"))
    variants = [v.strip() for v in ctx.option("variants", "--jobs 1;--jobs 2").split(";") if v.strip()]
    bugs = json.loads((root / "tests" / "grader" / "exercise_bugs" / f"{assignment}.json").read_text())["bugs"]
    solution = model_submission(root, assignment)
    sandbox = shutil.which("bwrap")

    with tempfile.TemporaryDirectory(prefix="bench_grading_") as tmp:
        tmp = Path(tmp)
        subs, full = tmp / "subs", set()
        for i in range(n):
            student = f"student{i:02d}"
            (subs / student).mkdir(parents=True)
            nb = solution if i % 2 == 0 else with_bug(solution, bugs[(i // 2) % len(bugs)])
            if i % 2 == 0:
                full.add(student)
            nbformat.write(nb, subs / student / f"{assignment}.ipynb")
        one = tmp / "one"
        (one / "student00").mkdir(parents=True)
        nbformat.write(solution, one / "student00" / f"{assignment}.ipynb")
        _grade(root, assignment, one, tmp / "out_warm", [])  # warm-up: imports and file caches
        walls = {v: [] for v in variants}
        own = {v: [] for v in variants}
        for r in range(rounds):
            order = variants[r % len(variants):] + variants[:r % len(variants)]
            for v in order:
                out = tmp / "out"
                seconds, text = _grade(root, assignment, subs, out, v.split())
                _check_grades(out, full, n)
                walls[v].append(seconds)
                m = re.search(r"graded (\d+) submission\(s\) in ([\d.]+) s", text)
                own[v].append(float(m.group(2)) if m else None)
                print(f"   {v}: {seconds:.1f} s for {n} submissions ({seconds / n:.2f} s each)", flush=True)

    first = variants[0]
    rows, summary = [], []
    for v in variants:
        wall = statistics.median(walls[v])
        counted = [x for x in own[v] if x is not None]
        speedup = statistics.median(a / b for a, b in zip(walls[first], walls[v]))
        rows.append({"variant": f"course grade {v}", "students": n, "rounds": rounds,
                     "wall_s": wall, "s_per_submission": wall / n,
                     "grader_s_per_submission": statistics.median(counted) / n if counted else None,
                     "speedup_over_first": speedup, "assignment": assignment,
                     "sandbox": "bubblewrap" if sandbox else "none"})
        summary.append(f"`course grade {v}`: {wall / n:.2f} s per submission ({wall:.1f} s for {n}, start-up "
                       f"included; the grader's own count {rows[-1]['grader_s_per_submission'] or float('nan'):.2f}"
                       f" s each); {speedup:.2f}x the speed of `{first}`")
    notes = [f"sandbox: {'bubblewrap' if sandbox else 'none (bubblewrap not installed: submissions ran unsandboxed)'}; "
             f"assignment {assignment}; half the class hands in the solution, half a classic bug."]
    return Result(rows=rows, summary=summary, notes=notes, plot=lambda fig: _plot(fig, rows))


def _plot(fig, rows) -> None:
    ax = fig.subplots()
    names = [r["variant"] for r in rows]
    ax.barh(names, [r["s_per_submission"] for r in rows], color="C0", label="whole command (start-up included)")
    own = [r["grader_s_per_submission"] or 0 for r in rows]
    ax.barh(names, own, color="C1", height=0.4, label="the grader's own count")
    for y, r in enumerate(rows):
        ax.text(r["s_per_submission"], y, f" {r['s_per_submission']:.2f} s", va="center", fontsize=9)
    ax.set_xlabel("seconds per submission")
    ax.invert_yaxis()
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"Grading {rows[0]['students']} submissions of {rows[0]['assignment']}", fontsize=11)
