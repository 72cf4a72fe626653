"""Benchmark: grading N honest submissions of one assignment with `course grade --jobs J`.

    .venv/bin/python bench/bench_grading.py [--students 20] [--jobs 2] [--assignment ex02_self_attention]

Half the class hands in the solution, half the solution with a classic bug (tests/grader/exercise_bugs/). Prints the wall
time, the time per submission, and the sandbox start-up cost measured in the same run (an empty notebook), and
writes them to bench/results/grading.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from course_lib.grading.notebooks import apply_bug, fill_release, read, write  # noqa: E402
from course_lib.grading.sandbox import Limits, run_untrusted, sandbox_available  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--students", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--assignment", default="ex02_self_attention")
    args = ap.parse_args()
    a = args.assignment
    source = read(ROOT / "solutions" / a / f"{a}.ipynb")
    release = read(ROOT / "exercises" / a / f"{a}.ipynb")
    bug = json.loads((ROOT / "tests" / "grader" / "exercise_bugs" / f"{a}.json").read_text())["bugs"][0]
    solution = fill_release(release, source)
    sandboxed, why = sandbox_available()

    with tempfile.TemporaryDirectory() as tmp:
        subs = Path(tmp) / "subs"
        for i in range(args.students):
            (subs / f"student{i:02d}").mkdir(parents=True)
            write(solution if i % 2 == 0 else apply_bug(solution, bug), subs / f"student{i:02d}" / f"{a}.ipynb")
        t0 = time.perf_counter()
        empty = run_untrusted([{"index": 0, "grade_id": None, "source": "import torch"}], None, Limits(), sandboxed)
        startup = time.perf_counter() - t0
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "course_lib.cli", "--course-root", str(ROOT), "grade", a,
                               str(subs), "--out", str(Path(tmp) / "out"), "--jobs", str(args.jobs), "--quiet"],
                              capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(proc.stderr)
    per = wall / args.students
    lines = [
        f"# Grading benchmark ({time.strftime('%Y-%m-%d')})",
        "",
        f"- machine: {platform.machine()}, {__import__('os').cpu_count()} cores, Python {platform.python_version()}",
        f"- sandbox: {'bubblewrap' if sandboxed else 'none (' + why + ')'}",
        f"- command: `course grade {a} <{args.students} submissions> --jobs {args.jobs}`",
        f"- wall time: {wall:.1f} s for {args.students} submissions: {per:.2f} s per submission",
        f"- one sandboxed process that only imports torch: {startup:.2f} s "
        f"({'ok' if empty.events else 'no events'}); per submission / start-up = {per / startup:.2f}",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench" / "results" / "grading.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
