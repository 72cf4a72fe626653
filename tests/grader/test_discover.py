"""Submissions as learning platforms export them: student ids in any script, never two entries merged."""
import zipfile

from course_lib.grading.submissions import discover


def _folder(root, name):
    (root / name).mkdir()
    (root / name / "ex02_self_attention.ipynb").write_text("{}", encoding="utf-8")


def test_student_ids_in_any_script_are_kept(tmp_path):
    for name in ("李雷", "韩梅", "Zoë", "student3_12345", "ana.lima@uni.example"):
        _folder(tmp_path, name)
    subs = discover(tmp_path)
    assert sorted(s.student for s in subs) == sorted(["李雷", "韩梅", "Zoë", "student3_12345", "ana.lima@uni.example"])
    assert all(not s.problems for s in subs)


def test_two_entries_are_never_merged(tmp_path):
    # both names need cleaning and clean to the same id: two submissions, two ids, each told why
    for name in ("a b", "a?b", "a_b"):
        _folder(tmp_path, name)
    subs = discover(tmp_path)
    assert len(subs) == 3 and len({s.student for s in subs}) == 3, [(s.student, s.entry.name) for s in subs]
    cleaned = [s for s in subs if s.entry.name != "a_b"]
    assert all("unusual name" in " ".join(s.problems) for s in cleaned)
    assert not any("zip" in " ".join(s.problems) for s in subs)


def test_a_folder_and_a_zip_of_the_same_student_grade_the_folder(tmp_path):
    _folder(tmp_path, "李雷")
    with zipfile.ZipFile(tmp_path / "李雷.zip", "w") as zf:
        zf.writestr("ex02_self_attention.ipynb", "{}")
    subs = discover(tmp_path)
    assert [s.entry.name for s in subs] == ["李雷"]
    assert "the zip is ignored, the folder is graded" in " ".join(subs[0].problems)


def test_unicode_ids_are_graded_end_to_end(tmp_path):
    """李雷 hands in the solution, 韩梅 one classic bug: two rows, original names in the CSV and the feedback."""
    import csv
    import json
    import subprocess
    import sys

    from _grading import ROOT, nbgrader_env
    from course_lib.grading.notebooks import apply_bug, fill_release, read, write

    A = "ex02_self_attention"
    release = read(ROOT / "exercises" / A / f"{A}.ipynb")
    good = fill_release(release, read(ROOT / "solutions" / A / f"{A}.ipynb"))
    bug = json.loads((ROOT / "tests" / "grader" / "exercise_bugs" / f"{A}.json").read_text())["bugs"][0]
    subs = tmp_path / "subs"
    for name, nb in (("李雷", good), ("韩梅", apply_bug(good, bug))):
        (subs / name).mkdir(parents=True)
        write(nb, subs / name / f"{A}.ipynb")
    out = tmp_path / "graded"
    proc = subprocess.run([sys.executable, "-m", "course_lib.cli", "--course-root", str(ROOT), "grade", A, str(subs),
                           "--out", str(out), "--jobs", "2", "--quiet"],
                          capture_output=True, text=True, env=nbgrader_env(), timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(out / "grades.csv", encoding="utf-8") as f:
        rows = {r["student"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"李雷", "韩梅"}
    assert float(rows["李雷"]["score"]) == float(rows["李雷"]["max_score"]) > float(rows["韩梅"]["score"])
    assert {p.stem for p in (out / "feedback").glob("*.html")} == {"李雷", "韩梅"}
