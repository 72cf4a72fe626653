"""Real nbgrader, end to end, on a temporary copy of the course, for every assignment:

generate_assignment, then autograde of (a) the solution: full marks, (b) the untouched release: zero, no crash,
(c) each classic bug of tests/exercise_bugs/: partial marks; then generate_feedback writes HTML pages.
"""
import pytest
from nbgrader.api import Gradebook

from _grading import ASSIGNMENTS, copy_course, load_bugs, run_nbgrader
from course_lib.grading.notebooks import apply_bug, fill_release, read, write


@pytest.mark.slow
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_autograde_solution_release_and_bugs(tmp_path, assignment):
    course = copy_course(tmp_path / "course", [assignment])
    run_nbgrader(course, "generate_assignment", assignment, "--force", "--log-level=WARN")
    nb_name = f"{assignment}.ipynb"
    source = read(course / "solutions" / assignment / nb_name)
    release = read(course / "exercises" / assignment / nb_name)
    submissions = {"solution": fill_release(release, source), "untouched": release}
    bugs = load_bugs(assignment)
    assert bugs, f"tests/exercise_bugs/{assignment}.json must list at least one classic bug"
    for i, bug in enumerate(bugs):
        submissions[f"bug{i}"] = apply_bug(submissions["solution"], bug)
    for student, nb in submissions.items():
        folder = course / "submitted" / student / assignment
        folder.mkdir(parents=True)
        write(nb, folder / nb_name)

    run_nbgrader(course, "autograde", assignment, "--force", "--log-level=WARN")
    run_nbgrader(course, "generate_feedback", assignment, "--force", "--log-level=WARN")

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        scores = {s: gb.find_submission(assignment, s).score for s in submissions}
        max_score = gb.find_assignment(assignment).max_score
    assert max_score > 0
    assert scores["solution"] == max_score, scores
    assert scores["untouched"] == 0, scores
    for i, bug in enumerate(bugs):
        assert 0 < scores[f"bug{i}"] < max_score, f"bug {bug['name']!r} should earn partial marks: {scores}"
    for student in submissions:
        page = course / "feedback" / student / assignment / f"{assignment}.html"
        assert page.exists(), f"no feedback page for {student}"
        assert "Score" in page.read_text(encoding="utf-8")
