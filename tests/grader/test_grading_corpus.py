"""`course grade` on a corpus of hostile and broken submissions plus honest ones (tests/grading_corpus/).

For every case: the run does not crash, the score is exactly the expected one (no undeserved point), the
feedback or report names the problem, and the honest students' grades are the same as when they are graded
alone. Then: a second run is idempotent, and a run with results missing resumes.
"""
import html
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from nbgrader.api import Gradebook

from _grading import ROOT, nbgrader_env
from course_lib.grading.sandbox import sandbox_available
from grading_corpus.cases import ASSIGNMENT, NB, build

HONEST = ["aaron", "beth", "zoe"]


def _grade(subs, out, *extra):
    cmd = [sys.executable, "-m", "course_lib.cli", "--course-root", str(ROOT), "grade", ASSIGNMENT, str(subs),
           "--out", str(out), "--jobs", "2", "--cell-timeout", "5", "--notebook-timeout", "60", "--quiet", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=nbgrader_env(), timeout=1200)
    assert proc.returncode == 0, f"course grade failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _results(out):
    """Each student's saved result, without the time it took (the only field that may change between runs)."""
    results = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in (out / "results").glob("*.json")}
    for r in results.values():
        r.pop("seconds")
    return results


def _paths(tmp_path):
    return {"gradebook": str(tmp_path / "out" / "gradebook.db"),
            "solution": str(ROOT / "solutions" / ASSIGNMENT / NB),
            "other": str(tmp_path / "subs" / "aaron" / NB)}


@pytest.mark.slow
def test_corpus_scores_messages_and_isolation(tmp_path):
    sandboxed, why = sandbox_available()
    subs, out = tmp_path / "subs", tmp_path / "out"
    subs.mkdir()
    cases = build(subs, ROOT, _paths(tmp_path))
    first = _grade(subs, out, *(["--require-sandbox"] if sandboxed else []))
    results = _results(out)
    assert sorted(results) == sorted(c.student for c in cases), "every submission has a result"

    failures = []
    for case in cases:
        if case.sandbox_only and not sandboxed:
            continue
        res = results[case.student]
        page = html.unescape((out / "feedback" / f"{case.student}.html").read_text(encoding="utf-8"))
        if res["score"] != case.score:
            failures.append(f"{case.student} ({case.note}): score {res['score']}, expected {case.score}; "
                            f"problems {res['problems']}; {[c['message'] for c in res['cells']]}")
        if case.message and case.message not in page:
            failures.append(f"{case.student} ({case.note}): feedback lacks {case.message!r}; "
                            f"problems {res['problems']}")
    assert not failures, "\n".join(failures)

    # nothing a submission started outlives its run
    left = []
    for proc_dir in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "course_lib.grading.runner" in cmdline:
            left.append(f"{proc_dir.name}: {cmdline}")
    assert not left, f"processes left behind by submissions: {left}"

    # the grader's own files were never reachable or writable from a submission
    if sandboxed:
        reader = html.unescape((out / "feedback" / "reader.html").read_text(encoding="utf-8"))
        assert "visible: True" not in reader
    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        for student, res in results.items():
            assert gb.find_submission(ASSIGNMENT, student).score == res["score"], student
    csv_rows = (out / "grades.csv").read_text(encoding="utf-8").strip().splitlines()
    assert len(csv_rows) == len(cases) + 1
    assert (out / "histogram.png").stat().st_size > 1000
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "| broken_json | 0 / 10 |" in report and "not a valid notebook" in report

    # honest students graded alone get exactly the same grades
    alone_subs, alone_out = tmp_path / "alone", tmp_path / "alone_out"
    alone_subs.mkdir()
    build(alone_subs, ROOT, _paths(tmp_path), only=HONEST)
    _grade(alone_subs, alone_out)
    alone = _results(alone_out)
    for s in HONEST:
        assert alone[s]["score"] == results[s]["score"]
        assert [c["points"] for c in alone[s]["cells"]] == [c["points"] for c in results[s]["cells"]]

    # a second run changes nothing and grades nothing again
    again = _grade(subs, out)
    assert re.search(rf"{len(cases)} submission\(s\) unchanged since the last run: kept; 0 to grade", again.stderr)
    assert _results(out) == results

    # a run stopped half-way resumes: only the missing results are graded
    for s in ("zoe", "renamer"):
        (out / "results" / f"{s}.json").unlink()
    resumed = _grade(subs, out)
    assert f"{len(cases) - 2} submission(s) unchanged since the last run: kept; 2 to grade" in resumed.stderr
    assert _results(out) == results
    assert "WITHOUT a sandbox" not in first.stderr or not sandboxed


def test_unknown_assignment_and_missing_folder_are_clear_errors(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "course_lib.cli", "--course-root", str(ROOT), "grade", "ex99_nope",
                           str(tmp_path), "--out", str(tmp_path / "o"), "--quiet"],
                          capture_output=True, text=True, env=nbgrader_env())
    assert proc.returncode == 2 and "unknown assignment 'ex99_nope'" in proc.stderr and "ex02_self_attention" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "course_lib.cli", "--course-root", str(ROOT), "grade", ASSIGNMENT,
                           str(tmp_path / "missing")], capture_output=True, text=True, env=nbgrader_env())
    assert proc.returncode == 2 and "does not exist" in proc.stderr
