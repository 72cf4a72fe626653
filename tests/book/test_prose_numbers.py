"""Numbers quoted in a chapter's prose come from its cells (glued or printed), so text cannot drift from outputs.

The rules (what counts as printed, which constants are allowed and why) live in ``tools/prose_numbers.py``.
"""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("prose_numbers", ROOT / "tools" / "prose_numbers.py")
prose_numbers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(prose_numbers)

# Chapters whose prose still quotes numbers by hand (being converted to glue). Strict: once a
# chapter is clean, this test fails until the chapter is removed from the list, so the list can only shrink.
NOT_YET_GLUED: set[str] = set()

CHAPTERS = [
    pytest.param(name, marks=pytest.mark.xfail(strict=True, reason="numbers in the prose not yet glued"))
    if name in NOT_YET_GLUED else name
    for name in sorted(p.name for p in (ROOT / "book").glob("[0-9][0-9]_*.ipynb"))
]


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_number_in_the_prose_is_printed_or_glued(chapter):
    problems = prose_numbers.check_notebook(ROOT / "book" / chapter)
    assert not problems, "numbers in the prose that no cell prints (glue them):\n" + "\n".join(problems)


def _notebook(cells):
    return {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def _md(text):
    return {"cell_type": "markdown", "metadata": {}, "source": text}


def _code(src, out=""):
    outputs = [{"output_type": "stream", "name": "stdout", "text": out}] if out else []
    return {"cell_type": "code", "metadata": {}, "source": src, "outputs": outputs, "execution_count": 1}


@pytest.mark.parametrize("prose, printed, ok", [
    ("The loss falls to 0.0285.", "loss 0.0285\n", True),
    ("The loss falls to 0.029.", "loss 0.0285\n", True),           # rounded to the prose's precision
    ("The loss falls to 0.031.", "loss 0.0285\n", False),          # drifted
    ("Pads are 36 % of the positions.", "fraction 0.3612\n", True),
    ("Equal up to about `1e-6`.", "difference 5.5e-06\n", False),  # the case chapter 07 once had
    ("Equal up to about `6e-6`.", "difference 5.5e-06\n", True),
    ("It has 21,184 tokens.", "21184\n", True),
    ("Section 3.2 of the paper, in 2017, with 3 seeds.", "", True),  # constants by rule
    ("A width of 96 is used.", "", False),
])
def test_rules(tmp_path, prose, printed, ok):
    path = tmp_path / "99_t.ipynb"
    path.write_text(json.dumps(_notebook([_code("x = 1", printed), _md(prose)])), encoding="utf-8")
    assert (prose_numbers.check_notebook(path) == []) is ok


def test_glue_role_needs_its_glue(tmp_path):
    path = tmp_path / "99_t.ipynb"
    glued = _code("glue('acc', 0.97)")
    glued["outputs"] = [{"output_type": "display_data", "data": {"text/plain": "0.97"},
                         "metadata": {"scrapbook": {"name": "acc", "mime_prefix": ""}}}]
    path.write_text(json.dumps(_notebook([glued, _md("Accuracy {glue:text}`acc:.2f`, loss {glue:text}`loss`.")])),
                    encoding="utf-8")
    problems = prose_numbers.check_notebook(path)
    assert len(problems) == 1 and "'loss'" in problems[0]
