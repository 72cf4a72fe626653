"""`course grade`: grade a folder of submissions without trusting any of them.

For each submission (in parallel with ``jobs`` > 1; only this process writes results):

1. find its notebook (folder or zip; renamed, nested or wrong notebooks are reported);
2. rebuild the notebook to run: the source's read-only and test cells (deleted or edited ones restored), the
   student's answer cells; an answer that uses a forbidden name is replaced by its stub;
3. run it in the sandbox (:mod:`course_lib.grading.sandbox`) with the spec's probes;
4. compare each probe's outputs with the reference outputs computed here from the solution: a graded cell earns
   its points only on a match. Nothing the student's process says about pass or fail is believed.

Each student's result is saved as JSON in ``OUT/results/`` as soon as it is known; a re-run skips students whose
submission, source and spec are unchanged, so a stopped run resumes and a finished one is idempotent.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from course_lib.grading import notebooks as nbk
from course_lib.grading.probes import compare, exec_cells, load_spec, run_probes
from course_lib.grading.sandbox import Limits, run_untrusted, sandbox_available
from course_lib.grading.submissions import (
    ALWAYS_FORBIDDEN, Submission, defined_names, discover, forbidden_uses, locate_notebook, restore_notebook,
)

__all__ = ["GradingError", "Course", "StudentResult", "grade_assignment", "decode_outputs"]

RESULT_VERSION = 1
_NP_DTYPES = {"float64": np.float64, "float32": np.float32, "int64": np.int64, "int32": np.int32, "bool": np.bool_}


class GradingError(Exception):
    """A problem with the grading run itself (unknown assignment, missing sandbox): reported, nothing graded."""


@dataclass
class Course:
    """Where an assignment's trusted files are: source notebook, release notebook, grading spec."""

    root: Path
    assignment: str

    @property
    def source(self) -> Path:
        return self.root / "solutions" / self.assignment / f"{self.assignment}.ipynb"

    @property
    def release(self) -> Path:
        return self.root / "exercises" / self.assignment / f"{self.assignment}.ipynb"

    @property
    def spec(self) -> Path:
        return self.root / "grading" / f"{self.assignment}.py"

    def check(self) -> None:
        known = sorted(p.stem for p in (self.root / "grading").glob("ex*.py")) if (self.root / "grading").is_dir() else []
        for what, path in (("source notebook", self.source), ("released notebook", self.release),
                           ("grading spec", self.spec)):
            if not path.is_file():
                raise GradingError(f"unknown assignment {self.assignment!r}: no {what} at {path}. "
                                   f"Known assignments: {', '.join(known) or 'none'}")

    def fingerprint(self, limits: Limits) -> str:
        h = hashlib.sha256()
        for p in (self.source, self.release, self.spec):
            h.update(p.read_bytes())
        h.update(json.dumps(asdict(limits), sort_keys=True).encode())
        h.update(str(RESULT_VERSION).encode())
        return h.hexdigest()


@dataclass
class CellResult:
    grade_id: str
    points: float
    max_points: float
    message: str  # why points were or were not given
    test_source: str = ""
    test_output: str = ""  # what the test cell printed in the sandbox (untrusted text, for the feedback)
    test_status: str = ""


@dataclass
class StudentResult:
    student: str
    assignment: str
    digest: str
    fingerprint: str
    score: float = 0.0
    max_score: float = 0.0
    cells: list = field(default_factory=list)  # CellResult dicts, in notebook order
    problems: list = field(default_factory=list)  # for the report and the feedback
    sandboxed: bool = False
    seconds: float = 0.0
    notebook: str = ""
    version: int = RESULT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "StudentResult":
        data = json.loads(text)
        data["cells"] = [asdict(CellResult(**c)) for c in data.get("cells", [])]  # validates the fields
        return cls(**data)


def decode_outputs(x):
    """Decode probe outputs sent by the runner. Never unpickles; malformed data raises ValueError."""
    if isinstance(x, dict):
        if set(x) == {"__tensor__"}:
            t = x["__tensor__"]
            dtype = _NP_DTYPES.get(t.get("dtype"))
            shape = t.get("shape")
            if dtype is None or not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
                raise ValueError("malformed tensor in probe outputs")
            raw = base64.b64decode(t.get("data", ""), validate=True)
            count = int(np.prod(shape)) if shape else 1
            if count * np.dtype(dtype).itemsize != len(raw):
                raise ValueError("tensor data does not match its shape")
            return torch.from_numpy(np.frombuffer(raw, dtype=dtype).copy()).reshape(shape)
        return {str(k): decode_outputs(v) for k, v in x.items()}
    if isinstance(x, list):
        return [decode_outputs(v) for v in x]
    return x


def _cells_of(nb) -> list[dict]:
    return [{"index": i, "grade_id": nbk.grade_id(c), "source": c.source}
            for i, c in enumerate(c for c in nb.cells if c.cell_type == "code")]


def reference_outputs(course: Course, spec) -> dict:
    """Probe outputs of the solution (trusted code, run here): the references students are compared with."""
    source, release = nbk.read(course.source), nbk.read(course.release)
    solution = nbk.fill_release(release, source)
    sources = [c.source for c in solution.cells if c.cell_type == "code" and not nbk.is_test_cell(c)]
    ns, errors = exec_cells(sources)
    if errors:
        raise GradingError(f"the solution of {course.assignment} does not run: {errors[0][1]}")
    refs = run_probes(spec, ns)
    bad = [f"{gid}: {r.error}" for gid, r in refs.items() if not r.ok]
    if bad:
        raise GradingError(f"the grading spec fails on the solution of {course.assignment}: {bad[0]}")
    return {gid: r.outputs for gid, r in refs.items()}


def grade_one(sub: Submission, course: Course, spec, refs: dict, limits: Limits, sandbox: bool,
              fingerprint: str) -> StudentResult:
    """Grade one submission. Runs the student's code only through :func:`run_untrusted`."""
    source, release = nbk.read(course.source), nbk.read(course.release)
    graded = [c for c in source.cells if nbk.is_test_cell(c)]
    max_points = {nbk.grade_id(c): float(nbk.nbgrader_meta(c).get("points", 0)) for c in graded}
    result = StudentResult(sub.student, course.assignment, sub.digest, fingerprint,
                           max_score=sum(max_points.values()), sandboxed=sandbox)

    def zero_all(reason: str) -> StudentResult:
        result.cells = [asdict(CellResult(gid, 0.0, mp, reason, nbk.remove_hidden_tests(
            nbk.cells_by_grade_id(release)[gid].source))) for gid, mp in max_points.items()]
        result.problems = list(sub.problems)
        return result

    with tempfile.TemporaryDirectory(prefix="course-sub-") as work:
        nb = locate_notebook(sub, course.assignment, source, Path(work))
        if nb is None:
            return zero_all("not graded: " + (sub.problems[-1] if sub.problems else "no notebook"))
        result.notebook = sub.notebook_path.name if sub.notebook_path else ""
        cells, notes = restore_notebook(nb, source, release)
    problems = list(sub.problems) + notes
    release_by_id = nbk.cells_by_grade_id(release)
    forbidden = list(spec.FORBIDDEN) + ALWAYS_FORBIDDEN
    own = defined_names(c["source"] for c in cells if c["kind"] in ("answer", "extra", "readonly"))
    for cell in cells:
        if cell["kind"] in ("answer", "extra"):
            uses = forbidden_uses(cell["source"], forbidden, own)
            if uses:
                where = f"answer cell {cell['grade_id']}" if cell["kind"] == "answer" else "an added cell"
                problems.append(f"{where} uses {', '.join(uses)}, which this exercise does not allow; "
                                f"the cell was not run")
                cell["source"] = release_by_id[cell["grade_id"]].source if cell["kind"] == "answer" else "pass"

    outcome = run_untrusted(cells, course.spec, limits, sandbox)
    result.seconds = round(outcome.seconds, 2)
    cell_events = {e.get("index"): e for e in outcome.events if e.get("event") == "cell"}
    probe_events = {}
    for e in outcome.events:
        if e.get("event") == "probe" and isinstance(e.get("grade_id"), str):
            probe_events[e["grade_id"]] = e  # the runner's own report comes last
    finished = any(e.get("event") == "done" for e in outcome.events)
    if outcome.killed:
        problems.append(outcome.killed)
    elif not finished:
        problems.append(f"the notebook's process ended before grading finished (exit code {outcome.returncode}: "
                        f"os._exit, a crash, or the memory limit); tests that had not run score zero")
    if outcome.results_truncated:
        problems.append("the notebook sent more results than the grader reads; the rest was ignored")
    timeouts = [c for c in cell_events.values() if c.get("status") == "timeout"]
    if timeouts:
        problems.append(f"{len(timeouts)} cell(s) ran longer than {limits.cell_seconds} s and were stopped")
    if any("output truncated" in str(c.get("output", "")) for c in cell_events.values()) or "truncated" in outcome.stream[-200:]:
        problems.append("the notebook printed more than the grader keeps; its output was truncated")

    tol = getattr(spec, "TOLERANCE", None)
    test_cells = {c["grade_id"]: c for c in cells if c["kind"] == "test"}
    for gid, mp in max_points.items():
        ev = probe_events.get(gid)
        cell_ev = cell_events.get(test_cells[gid]["index"], {}) if gid in test_cells else {}
        if ev is None:
            why = outcome.killed or ("the notebook's process ended before this test ran" if not finished
                                     else "no result for this test")
            ok, msg = False, why
        elif not ev.get("ok"):
            ok, msg = False, f"the answer raised an error on the grader's inputs: {str(ev.get('error', ''))[:1000]}"
        else:
            try:
                got = decode_outputs(ev.get("outputs", {}))
                ok, msg = compare(refs[gid], got, tol)
                msg = "correct on the grader's inputs" if ok else f"wrong result on the grader's inputs: {msg}"
            except (ValueError, TypeError, KeyError) as e:
                ok, msg = False, f"unreadable result ({e})"
        output = str(cell_ev.get("output", ""))
        if cell_ev.get("error"):
            output += ("\n" if output else "") + str(cell_ev["error"])
        result.cells.append(asdict(CellResult(gid, mp if ok else 0.0, mp, msg, test_cells.get(gid, {}).get("source", ""),
                                              output[-6000:], str(cell_ev.get("status", "not run")))))
    result.score = sum(c["points"] for c in result.cells)
    result.problems = problems
    return result


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def grade_assignment(assignment: str, submissions: Path, out: Path, course_root: Path, jobs: int = 1,
                     limits: Limits = Limits(), require_sandbox: bool = False, force: bool = False,
                     progress: bool = True, log=print) -> list[StudentResult]:
    """Grade every submission in ``submissions``; write results, gradebook, CSV, feedback, histogram, report."""
    from course_lib.grading import report

    course = Course(course_root.resolve(), assignment)
    course.check()
    ok, why = sandbox_available()
    if not ok and require_sandbox:
        raise GradingError(f"--require-sandbox: no sandbox here ({why}). Install bubblewrap "
                           f"(Debian/Ubuntu: apt-get install bubblewrap) or grade without --require-sandbox.")
    if not ok:
        log(f"WARNING: grading WITHOUT a sandbox ({why}). Student code runs as this user: it can read and "
            f"write your files. Scores are still decided here, with time, memory and output limits.")
    spec = load_spec(course.spec)
    refs = reference_outputs(course, spec)
    subs = discover(Path(submissions))
    out = Path(out)
    (out / "results").mkdir(parents=True, exist_ok=True)
    (out / "feedback").mkdir(parents=True, exist_ok=True)
    fingerprint = course.fingerprint(limits)

    results: dict[str, StudentResult] = {}
    todo = []
    for sub in subs:
        path = out / "results" / f"{sub.student}.json"
        if path.exists() and not force:
            try:
                old = StudentResult.from_json(path.read_text(encoding="utf-8"))
                if old.digest == sub.digest and old.fingerprint == fingerprint and old.version == RESULT_VERSION:
                    results[sub.student] = old
                    continue
            except (ValueError, TypeError, KeyError):
                pass  # unreadable: grade again
        todo.append(sub)
    if results:
        log(f"{len(results)} submission(s) unchanged since the last run: kept; {len(todo)} to grade")

    gradebook = report.GradebookWriter(out / "gradebook.db", course)
    bar = report.progress_bar(total=len(subs), initial=len(results), enabled=progress)
    start = time.monotonic()
    try:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures = {pool.submit(grade_one, sub, course, spec, refs, limits, ok, fingerprint): sub for sub in todo}
            for fut in as_completed(futures):
                sub = futures[fut]
                try:
                    res = fut.result()
                except Exception as e:  # noqa: BLE001 - a grader bug must not lose the other students
                    res = StudentResult(sub.student, assignment, sub.digest, "", 0.0, 0.0, [],
                                        sub.problems + [f"internal grader error ({type(e).__name__}: {e}); "
                                                        f"re-run to grade this submission again"], ok)
                    log(f"ERROR grading {sub.student}: {type(e).__name__}: {e}")
                if res.fingerprint:  # only real results are kept for resuming
                    _atomic_write(out / "results" / f"{sub.student}.json", res.to_json())
                results[sub.student] = res
                report.write_feedback(out / "feedback" / f"{sub.student}.html", res)
                gradebook.record(res)
                bar.update(1)
                bar.set_postfix_str(sub.student)
    finally:
        bar.close()
    for res in results.values():
        gradebook.record(res)
        page = out / "feedback" / f"{res.student}.html"
        if not page.exists():
            report.write_feedback(page, res)
    ordered = [results[s.student] for s in subs if s.student in results]
    report.write_grades_csv(out / "grades.csv", ordered)
    report.write_histogram(out / "histogram.png", ordered, assignment)
    report.write_report(out / "report.md", ordered, assignment, sandboxed=ok, sandbox_why=why)
    elapsed = time.monotonic() - start
    if todo:
        log(f"graded {len(todo)} submission(s) in {elapsed:.1f} s ({elapsed / len(todo):.1f} s each, jobs={jobs})")
    return ordered


def _env_path() -> None:
    """nbgrader's gradebook calls `alembic` through PATH: put this environment's bin/ first."""
    bindir = str(Path(sys.executable).parent)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")


_env_path()
