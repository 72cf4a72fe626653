"""Every exercise's trusted grading spec (grading/<assignment>.py) agrees with its notebook:

one probe per graded cell; the solution passes every probe deterministically; the untouched release fails them
all; each classic bug fails some probes and passes others (the same partial-credit pattern as nbgrader).
"""
import pytest

from _grading import ASSIGNMENTS, ROOT, load_bugs
from course_lib.grading.notebooks import apply_bug, fill_release, is_test_cell, grade_id, read
from course_lib.grading.probes import compare, exec_cells, load_spec, run_probes, to_jsonable


def _namespace(nb):
    sources = [c.source for c in nb.cells if c.cell_type == "code" and not is_test_cell(c)]
    ns, _ = exec_cells(sources)
    return ns


def _passing(spec, reference, nb):
    got = run_probes(spec, _namespace(nb))
    tol = getattr(spec, "TOLERANCE", None)
    return {gid: got[gid].ok and compare(reference[gid].outputs, got[gid].outputs, tol)[0] for gid in spec.PROBES}


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_spec_matches_notebook(assignment):
    spec = load_spec(ROOT / "grading" / f"{assignment}.py")
    source = read(ROOT / "solutions" / assignment / f"{assignment}.ipynb")
    release = read(ROOT / "exercises" / assignment / f"{assignment}.ipynb")
    graded = {grade_id(c) for c in source.cells if is_test_cell(c)}
    assert set(spec.PROBES) == graded, "one probe per graded test cell"

    solution = fill_release(release, source)
    reference = run_probes(spec, _namespace(solution))
    for gid, res in reference.items():
        assert res.ok, f"probe {gid} fails on the solution: {res.error}"
        to_jsonable(res.outputs)
    again = run_probes(spec, _namespace(solution))
    for gid in spec.PROBES:
        ok, msg = compare(reference[gid].outputs, again[gid].outputs, getattr(spec, "TOLERANCE", None))
        assert ok, f"probe {gid} is not deterministic: {msg}"
    ns = _namespace(solution)
    for name in spec.ANSWERS:
        assert name in ns, f"ANSWERS names {name!r}, which the solution does not define"

    assert not any(_passing(spec, reference, release).values()), "the untouched release must fail every probe"
    for bug in load_bugs(assignment):
        passing = _passing(spec, reference, apply_bug(solution, bug))
        assert any(passing.values()) and not all(passing.values()), f"bug {bug['name']!r}: {passing}"
