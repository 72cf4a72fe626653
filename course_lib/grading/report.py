"""What `course grade` writes: the nbgrader gradebook, grades.csv, feedback pages, a histogram and a report."""
from __future__ import annotations

import csv
import html
import sys
import warnings
from pathlib import Path

from course_lib.grading import notebooks as nbk

__all__ = ["GradebookWriter", "progress_bar", "write_feedback", "write_grades_csv", "write_histogram",
           "write_report"]


class GradebookWriter:
    """Writes scores into an nbgrader gradebook (sqlite), so nbgrader's own tools (export, formgrader) read them."""

    def __init__(self, path: Path, course):
        from nbgrader.api import Gradebook

        self.gb = Gradebook(f"sqlite:///{path}")
        self.assignment = course.assignment
        self.notebook = course.assignment
        source = nbk.read(course.source)
        self.gb.update_or_create_assignment(self.assignment)
        self.gb.update_or_create_notebook(self.notebook, self.assignment)
        for cell in source.cells:
            gid = nbk.grade_id(cell)
            if gid and nbk.is_test_cell(cell):
                self.gb.update_or_create_grade_cell(gid, self.notebook, self.assignment,
                                                    max_score=float(nbk.nbgrader_meta(cell).get("points", 0)),
                                                    cell_type="code")
            elif gid and nbk.is_solution_cell(cell):
                self.gb.update_or_create_solution_cell(gid, self.notebook, self.assignment)

    def record(self, res) -> None:
        from nbgrader.api import MissingEntry

        self.gb.update_or_create_student(res.student)
        try:
            self.gb.find_submission(self.assignment, res.student)
        except MissingEntry:
            with warnings.catch_warnings():  # nbgrader's add_submission trips a harmless SQLAlchemy warning
                warnings.simplefilter("ignore")
                self.gb.add_submission(self.assignment, res.student)
        for cell in res.cells:
            grade = self.gb.find_grade(cell["grade_id"], self.notebook, self.assignment, res.student)
            grade.auto_score = cell["points"]
            grade.needs_manual_grade = False
        self.gb.db.commit()

    def close(self):
        self.gb.close()


def progress_bar(total: int, initial: int = 0, enabled: bool = True):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="student", desc="grading", disable=not enabled,
                file=sys.stderr, dynamic_ncols=True)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
h1{font-size:1.5rem} .score{font-size:1.25rem;font-weight:600}
table{border-collapse:collapse;width:100%;margin:1rem 0} td,th{border-bottom:1px solid #ddd;padding:.4rem;text-align:left;vertical-align:top}
.ok{color:#176b2c;font-weight:600} .fail{color:#a11;font-weight:600}
pre{background:#f6f6f6;padding:.6rem;overflow-x:auto;font-size:.85rem;white-space:pre-wrap;max-height:24rem}
.problems{background:#fff6e0;border-left:4px solid #e0a800;padding:.5rem 1rem}
details{margin:.5rem 0}
"""


def write_feedback(path: Path, res) -> None:
    """One self-contained HTML page per student. Everything from the submission is escaped."""
    e = html.escape
    rows, details = [], []
    for c in res.cells:
        cls = "ok" if c["points"] == c["max_points"] and c["max_points"] > 0 else "fail"
        rows.append(f"<tr><td><code>{e(c['grade_id'])}</code></td><td class='{cls}'>{c['points']:g} / "
                    f"{c['max_points']:g}</td><td>{e(c['message'])}</td></tr>")
        out = c.get("test_output") or "(no output)"
        details.append(f"<details><summary><code>{e(c['grade_id'])}</code>: the test cell and what it printed "
                       f"({e(c.get('test_status', ''))})</summary><pre>{e(c.get('test_source', ''))}</pre>"
                       f"<pre>{e(out)}</pre></details>")
    problems = ""
    if res.problems:
        items = "".join(f"<li>{e(p)}</li>" for p in res.problems)
        problems = f"<div class='problems'><p><b>Found while grading</b></p><ul>{items}</ul></div>"
    sandbox = "in a sandbox" if res.sandboxed else "WITHOUT a sandbox"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(res.assignment)}: feedback for {e(res.student)}</title>
<style>{_CSS}</style></head><body>
<h1>{e(res.assignment)}: feedback for {e(res.student)}</h1>
<p class="score">Score: {res.score:g} / {res.max_score:g}</p>
{problems}
<table><tr><th>test</th><th>points</th><th>result</th></tr>{''.join(rows)}</table>
<p>Each test was checked by running your answers on the grader's own inputs and comparing the results with the
reference solution's. The test cells below (including the hidden tests) were run on your notebook to help you find
what went wrong.</p>
{''.join(details)}
<p><small>Notebook: {e(res.notebook or '-')}; graded {sandbox} in {res.seconds:g} s.</small></p>
</body></html>
"""
    path.write_text(page, encoding="utf-8")


def write_grades_csv(path: Path, results) -> None:
    gids = [c["grade_id"] for c in results[0].cells] if results else []
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["student", "assignment", "score", "max_score", *gids, "problems"])
        for r in results:
            pts = {c["grade_id"]: c["points"] for c in r.cells}
            w.writerow([r.student, r.assignment, f"{r.score:g}", f"{r.max_score:g}",
                        *[f"{pts.get(g, 0):g}" for g in gids], len(r.problems)])


def write_histogram(path: Path, results, assignment: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    scores = [r.score for r in results]
    top = max([r.max_score for r in results] + [1])
    ax1.hist(scores, bins=[x - 0.5 for x in range(int(top) + 2)], color="#4c72b0", edgecolor="white")
    ax1.set_xlabel("score")
    ax1.set_ylabel("students")
    ax1.set_title(f"{assignment}: total scores (n={len(results)})")
    if results and results[0].cells:
        gids = [c["grade_id"] for c in results[0].cells]
        frac = [sum(1 for r in results for c in r.cells if c["grade_id"] == g and c["points"] == c["max_points"])
                / len(results) for g in gids]
        ax2.barh(gids, frac, color="#55a868")
        ax2.set_xlim(0, 1)
        ax2.set_xlabel("fraction of students with full marks")
        ax2.invert_yaxis()
    ax2.set_title("per test")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(path: Path, results, assignment: str, sandboxed: bool, sandbox_why: str = "") -> None:
    lines = [f"# Grading report: {assignment}", ""]
    if sandboxed:
        lines.append("Every submission ran in a bubblewrap sandbox (no network, no access to the gradebook, the "
                     "solutions or other students' files).")
    else:
        lines.append(f"**Submissions ran WITHOUT a sandbox** ({sandbox_why}): their code could read and write the "
                     f"grader's files. Scores were still decided by the grader.")
    n = len(results)
    mean = sum(r.score for r in results) / n if n else 0
    lines += ["", f"{n} submission(s); mean score {mean:.2f}.", "", "| student | score | problems |", "|---|---|---|"]
    for r in results:
        probs = "<br>".join(p.replace("|", "\\|") for p in r.problems) or "-"
        lines.append(f"| {r.student} | {r.score:g} / {r.max_score:g} | {probs} |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
