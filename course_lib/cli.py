"""The `course` command: `course grade` for instructors, `course validate` for students.

    course grade ASSIGNMENT SUBMISSIONS_DIR [--out DIR] [--jobs N] [--require-sandbox] [--force]
    course validate NOTEBOOK

See the instructor guide and the student guide in the book's appendix.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]


def _find_course_root(start: Path | None = None) -> Path:
    """The folder with nbgrader_config.py and grading/: from the working directory up, else this checkout."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "nbgrader_config.py").is_file() and (folder / "grading").is_dir():
            return folder
    repo = Path(__file__).resolve().parents[1]
    if (repo / "grading").is_dir():
        return repo
    raise SystemExit("course: cannot find the course folder (one with nbgrader_config.py and grading/); "
                     "run from inside it or pass --course-root")


def _grade(args) -> int:
    from course_lib.grading.grader import GradingError, grade_assignment
    from course_lib.grading.sandbox import Limits

    root = Path(args.course_root) if args.course_root else _find_course_root()
    subs = Path(args.submissions)
    if not subs.is_dir():
        print(f"course grade: the submissions folder {subs} does not exist", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path("graded") / args.assignment
    limits = Limits(cell_seconds=args.cell_timeout, notebook_seconds=args.notebook_timeout,
                    memory_bytes=int(args.memory_gb * 2**30))
    try:
        results = grade_assignment(args.assignment, subs, out, root, jobs=args.jobs, limits=limits,
                                   require_sandbox=args.require_sandbox, force=args.force,
                                   progress=not args.quiet, log=lambda m: print(m, file=sys.stderr))
    except GradingError as e:
        print(f"course grade: {e}", file=sys.stderr)
        return 2
    with_problems = sum(1 for r in results if r.problems)
    print(f"{len(results)} submission(s) graded for {args.assignment}; {with_problems} with problems "
          f"(see {out / 'report.md'}).")
    print(f"gradebook: {out / 'gradebook.db'}\ngrades:    {out / 'grades.csv'}\nfeedback:  {out / 'feedback'}/\n"
          f"histogram: {out / 'histogram.png'}")
    return 0


def _validate(args) -> int:
    from course_lib.grading import notebooks as nbk
    from course_lib.grading.sandbox import Limits, run_untrusted
    from course_lib.grading.submissions import (ALWAYS_FORBIDDEN, _read_notebook, belongs, defined_names,
                                               forbidden_uses, graded_ids)

    path = Path(args.notebook)
    if not path.is_file():
        print(f"course validate: no such notebook: {path}", file=sys.stderr)
        return 2
    problems: list[str] = []
    nb = _read_notebook(path, problems)
    if nb is None:
        print(f"course validate: {problems[0]}", file=sys.stderr)
        return 2
    root = Path(args.course_root) if args.course_root else _find_course_root(path.parent)
    ids = {nbk.grade_id(c) for c in nb.cells if nbk.grade_id(c)}
    mine = graded_ids(nb)
    assignment, best = None, (0, False)
    for release in sorted((root / "exercises").glob("ex*/ex*.ipynb")):
        score = (len(mine & graded_ids(nbk.read(release))), release.stem == path.stem)
        if score[0] and score > best and belongs(nb, nbk.read(release)):
            assignment, best = release.stem, score
    if assignment is None:
        print(f"course validate: {path.name} is not one of the course's exercises (no known cells in it)",
              file=sys.stderr)
        return 2
    release = nbk.read(root / "exercises" / assignment / f"{assignment}.ipynb")
    forbidden = list(ALWAYS_FORBIDDEN)
    spec_path = root / "grading" / f"{assignment}.py"
    if spec_path.is_file():
        from course_lib.grading.probes import load_spec

        forbidden += list(load_spec(spec_path).FORBIDDEN)
    print(f"Validating {path} (assignment {assignment})")
    missing = [nbk.grade_id(c) for c in release.cells if nbk.grade_id(c) and nbk.grade_id(c) not in ids]
    for gid in missing:
        problems.append(f"cell {gid} is missing from your notebook (it will be restored before grading)")
    cells = []
    own = defined_names(c.source for c in nb.cells if c.cell_type == "code")
    for i, c in enumerate(c for c in nb.cells if c.cell_type == "code"):
        cells.append({"index": i, "grade_id": nbk.grade_id(c), "source": c.source})
        if nbk.is_solution_cell(c):
            uses = forbidden_uses(c.source, forbidden, own)
            if uses:
                problems.append(f"answer cell {nbk.grade_id(c)} uses {', '.join(uses)}, which this exercise "
                                f"does not allow: it would not be run when graded")
    limits = Limits(cell_seconds=args.cell_timeout, notebook_seconds=max(args.cell_timeout * 10, 120))
    outcome = run_untrusted(cells, None, limits, sandbox=False)
    status = {e["index"]: e for e in outcome.events if e.get("event") == "cell"}
    passed = total = 0
    for cell, c in zip(cells, (c for c in nb.cells if c.cell_type == "code")):
        ev = status.get(cell["index"])
        gid = cell["grade_id"]
        if nbk.is_solution_cell(c):
            state = "not answered yet" if "raise NotImplementedError" in c.source else "answered"
            print(f"  answer {gid}: {state}")
        elif nbk.is_test_cell(c):
            total += 1
            if ev and ev["status"] == "ok":
                passed += 1
                print(f"  test   {gid}: passed")
            else:
                why = (ev or {}).get("error") or "did not run (an earlier cell stopped the notebook?)"
                if "NotImplementedError" in why:
                    why = "NotImplementedError: an answer it needs is not written yet"
                last = why.strip().splitlines()[-12:]
                print(f"  test   {gid}: FAILED\n" + "\n".join("      " + line for line in last))
    if outcome.killed:
        problems.append(outcome.killed)
    for p in problems:
        print(f"  problem: {p}")
    ok = passed == total and not problems
    print(f"Result: {passed} of {total} visible tests pass." +
          (" Ready to submit (hidden tests run when it is graded)." if ok else " Fix the above before submitting."))
    return 0 if ok else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="course", description="Course tools: grade a class, validate a notebook.")
    parser.add_argument("--course-root", help="the course folder (default: found from the working directory)")
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("grade", help="grade a folder of submissions (instructors)")
    g.add_argument("assignment", help="assignment name, e.g. ex02_self_attention")
    g.add_argument("submissions", help="folder with one folder or zip per student")
    g.add_argument("--out", help="output folder (default: graded/ASSIGNMENT)")
    g.add_argument("--jobs", type=int, default=1, help="submissions graded in parallel (default 1)")
    g.add_argument("--require-sandbox", action="store_true", help="refuse to grade without bubblewrap")
    g.add_argument("--force", action="store_true", help="grade again even unchanged submissions")
    g.add_argument("--cell-timeout", type=int, default=60, help="seconds per cell (default 60)")
    g.add_argument("--notebook-timeout", type=int, default=300, help="seconds per notebook (default 300)")
    g.add_argument("--memory-gb", type=float, default=6.0, help="address-space cap per submission (default 6)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.set_defaults(func=_grade)
    v = sub.add_parser("validate", help="run a notebook's visible tests before submitting (students)")
    v.add_argument("notebook")
    v.add_argument("--cell-timeout", type=int, default=120)
    v.set_defaults(func=_validate)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
