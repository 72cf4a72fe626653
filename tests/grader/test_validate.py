"""`course validate NOTEBOOK`: what a student sees before submitting."""
import subprocess
import sys

from _grading import ROOT, nbgrader_env
from course_lib.grading.notebooks import cells_by_grade_id, fill_release, read, write

A = "ex02_self_attention"


def _validate(path):
    return subprocess.run([sys.executable, "-m", "course_lib.cli", "--course-root", str(ROOT), "validate", str(path)],
                          capture_output=True, text=True, env=nbgrader_env(), timeout=600)


def test_validate_release_solution_and_forbidden(tmp_path):
    release = read(ROOT / "exercises" / A / f"{A}.ipynb")
    solution = fill_release(release, read(ROOT / "solutions" / A / f"{A}.ipynb"))
    write(release, tmp_path / "release.ipynb")
    write(solution, tmp_path / f"{A}.ipynb")
    cheat = fill_release(release, read(ROOT / "solutions" / A / f"{A}.ipynb"))
    cells_by_grade_id(cheat)["answer_attention"].source = (
        "def scaled_dot_product_attention(q, k, v, mask=None):\n"
        "    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)\n")
    write(cheat, tmp_path / "cheat.ipynb")

    untouched = _validate(tmp_path / "release.ipynb")
    assert untouched.returncode == 1
    assert "answer answer_attention: not answered yet" in untouched.stdout
    assert "test   test_attention_values: FAILED" in untouched.stdout and "NotImplementedError" in untouched.stdout
    assert "Result: 0 of 4 visible tests pass." in untouched.stdout

    done = _validate(tmp_path / f"{A}.ipynb")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Result: 4 of 4 visible tests pass. Ready to submit" in done.stdout

    cheated = _validate(tmp_path / "cheat.ipynb")
    assert cheated.returncode == 1
    assert "uses scaled_dot_product_attention" in cheated.stdout


def test_validate_bad_input(tmp_path):
    bad = tmp_path / "broken.ipynb"
    bad.write_text("{not json", encoding="utf-8")
    proc = _validate(bad)
    assert proc.returncode == 2 and "not a valid notebook" in proc.stderr
    proc = _validate(tmp_path / "missing.ipynb")
    assert proc.returncode == 2 and "no such notebook" in proc.stderr
