"""exercises/ must be exactly what `nbgrader generate_assignment` makes from solutions/ today."""
import filecmp

import pytest

from _grading import ASSIGNMENTS, ROOT, copy_course, run_nbgrader


def test_every_solution_has_a_release_and_nothing_else():
    releases = sorted(p.name for p in (ROOT / "exercises").iterdir() if p.is_dir())
    assert releases == ASSIGNMENTS, "run `make exercises` and commit exercises/"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_release_is_up_to_date(tmp_path, assignment):
    course = copy_course(tmp_path / "course", [assignment])
    fresh = course / "exercises" / assignment
    committed = ROOT / "exercises" / assignment
    import shutil
    shutil.rmtree(fresh)
    run_nbgrader(course, "generate_assignment", assignment, "--force", "--log-level=WARN")
    cmp = filecmp.dircmp(fresh, committed, ignore=["__pycache__", ".ipynb_checkpoints"])
    problems = cmp.left_only + cmp.right_only + cmp.diff_files
    for name in cmp.common_files:
        if (fresh / name).read_bytes() != (committed / name).read_bytes():
            problems.append(name)
    assert not problems, f"exercises/{assignment} differs from the generated release in {sorted(set(problems))}: run `make exercises`"
