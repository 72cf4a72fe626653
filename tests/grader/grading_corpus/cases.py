"""A corpus of submissions for ex02_self_attention, honest and hostile, each with its expected score and message.

Each case is the code a student could really submit: the answer cells' source (or a whole file for the
malformed ones). ``build(folder, paths)`` writes every case as the submissions folder a learning platform would
export: one folder or zip per student. ``paths`` holds the grader's own files that hostile cases try to reach.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from course_lib.grading.notebooks import cells_by_grade_id, fill_release, read, write

ASSIGNMENT = "ex02_self_attention"
NB = f"{ASSIGNMENT}.ipynb"
MAX = 10.0

DEF = "def scaled_dot_product_attention(q, k, v, mask=None):\n"  # the answer's name and signature (as course_lib's)

GOOD_ATTENTION = '''def scaled_dot_product_attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    if mask is not None:
        weights = torch.nan_to_num(weights, nan=0.0)
    return weights @ v
'''

SPY = '''import io

def _peek(label, path):
    try:
        with io.FileIO(path) as f:
            data = f.read(64)
        print(f"{label} visible: True", data[:16])
        return data
    except Exception as e:
        print(f"{label} visible: False ({type(e).__name__})")
        return None
'''


@dataclass
class Case:
    student: str
    score: float
    message: str = ""  # must appear in the student's problems or test messages
    answers: dict = field(default_factory=dict)  # grade_id -> answer cell source (others: the solution)
    extra_cells: list = field(default_factory=list)  # cells the student added after the imports
    drop_cells: list = field(default_factory=list)  # grade ids the student deleted
    edit_cells: dict = field(default_factory=dict)  # grade id -> new source of a locked/test cell
    kind: str = "folder"  # folder | zip | renamed | malformed | empty | foreign
    sandbox_only: bool = False  # the expectation relies on the sandbox's file isolation
    note: str = ""


def cases(paths: dict) -> list[Case]:
    gradebook, solution, other = paths["gradebook"], paths["solution"], paths["other"]
    return [
        # honest students
        Case("aaron", MAX, note="honest, correct"),
        Case("beth", 4.0, "wrong result", answers={"answer_attention": GOOD_ATTENTION.replace(
            '        scores = scores.masked_fill(~mask, float("-inf"))\n', "        pass\n")},
             note="honest, mask ignored"),
        Case("zoe", MAX, note="honest, correct, graded after the attackers"),
        # hostile or broken submissions
        Case("loop", 0.0, "stopped after", answers={"answer_attention": DEF + "    while True:\n        pass\n"},
             note="infinite loop in the answer"),
        Case("loop_swallow", 0.0, "ran longer than", answers={"answer_attention": (
            DEF + "    while True:\n        try:\n            while True:\n"
            "                pass\n        except BaseException:\n            continue\n")},
             note="infinite loop that swallows the grader's timeout"),
        Case("membomb", 0.0, "MemoryError", answers={"answer_attention": (
            DEF + "    blob = bytearray(64 * 2**30)\n    return blob\n")},
             note="memory bomb"),
        Case("flood", MAX, "truncated", extra_cells=["print('x' * 100_000_000)"],
             note="100 MB of output, correct answers"),
        Case("exit", MAX, "_exit", extra_cells=["import os\nos._exit(0)"],
             note="os._exit in an added cell (not run: the answers are still graded)"),
        Case("crash", 0.0, "ended before", extra_cells=["import faulthandler\nfaulthandler._sigsegv()"],
             note="the process crashes (segmentation fault)"),
        Case("forker", MAX, "", extra_cells=["import pty, time\npid, fd = pty.fork()\nif pid == 0:\n"
                                            "    while True:\n        time.sleep(1)"],
             note="leaves a process running after the notebook ends (answers correct)"),
        Case("hider", 0.0, "expected shape", answers={"answer_attention": DEF + "    return torch.zeros(1)\n"},
             extra_cells=["get_ipython().set_custom_exc((Exception,), lambda *a, **k: None)"],
             note="a custom exception handler hides failures"),
        Case("patcher", 0.0, "expected shape", answers={"answer_attention": DEF + "    return torch.zeros(1)\n",
                                          "answer_self_attention": "class SelfAttention(torch.nn.Module):\n"
                                          "    def __init__(self, d_model, d_head):\n        super().__init__()\n"},
             extra_cells=["torch.allclose = lambda *a, **k: True\n"
                          "torch.testing.assert_close = lambda *a, **k: None\n"
                          "torch.equal = lambda *a, **k: True\n"
                          "check_close = lambda *a, **k: None\ncheck_shape = lambda *a, **k: None"],
             note="monkeypatched comparison functions"),
        Case("reader", 0.0, "hidden tests visible: False", answers={"answer_attention": SPY + (
            DEF +
            f"    _peek('hidden tests', {solution!r})\n"
            f"    _peek('gradebook', {gradebook!r})\n"
            "    raise NotImplementedError()\n")}, sandbox_only=True,
             note="reads the hidden tests (source notebook) and the gradebook"),
        Case("writer", 0.0, "gradebook write failed", answers={"answer_attention": (
            "import sqlite3\n\n" + DEF +
            "    try:\n"
            f"        db = sqlite3.connect({gradebook!r})\n"
            "        db.execute('UPDATE grade SET auto_score = 198')\n        db.commit()\n"
            "        print('gradebook written')\n"
            "    except Exception as e:\n        print('gradebook write failed:', type(e).__name__)\n"
            "    raise NotImplementedError()\n")},
             sandbox_only=True, note="rewrites every score in the gradebook"),
        Case("copier", 0.0, "other student visible: False", answers={"answer_attention": SPY + (
            DEF +
            f"    _peek('other student', {other!r})\n"
            "    raise NotImplementedError()\n")}, sandbox_only=True,
             note="reads another student's submission"),
        Case("deleter", MAX, "was deleted", drop_cells=["test_attention_mask", "test_self_attention"],
             note="deleted two test cells (answers correct)"),
        Case("editor", 4.0, "was edited", answers={"answer_attention": GOOD_ATTENTION.replace(
            '        scores = scores.masked_fill(~mask, float("-inf"))\n', "        pass\n")},
             edit_cells={"test_attention_mask": "print('mask: ok')", "test_self_attention": "pass"},
             note="edited the test cells to pass (mask ignored in the answer)"),
        Case("cheater", 0.0, "answer_attention uses scaled_dot_product_attention", answers={"answer_attention": (
            DEF +
            "    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)\n")},
             note="calls the function being reimplemented"),
        Case("broken_json", 0.0, "not a valid notebook", kind="malformed", note="malformed notebook JSON"),
        Case("nothing", 0.0, "no notebook", kind="empty", note="empty submission"),
        Case("wrong_nb", 0.0, "does not belong", kind="foreign", note="another assignment's notebook"),
        Case("renamer", MAX, "renamed", kind="renamed", note="renamed notebook"),
        Case("zipper", MAX, "subfolder", kind="zip", note="a zip with extra folders"),
    ]


def _student_notebook(case: Case, source, release):
    nb = fill_release(release, source)
    by_id = cells_by_grade_id(nb)
    for gid, src in case.answers.items():
        by_id[gid].source = src
    for gid, src in case.edit_cells.items():
        by_id[gid].source = src
    nb.cells = [c for c in nb.cells if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") not in case.drop_cells]
    if case.extra_cells:
        from nbformat.v4 import new_code_cell

        at = next(i for i, c in enumerate(nb.cells) if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "imports")
        nb.cells[at + 1:at + 1] = [new_code_cell(src) for src in case.extra_cells]
    return nb


def build(folder: Path, course_root: Path, paths: dict, only: list[str] | None = None) -> list[Case]:
    """Write the corpus into ``folder`` (one entry per student); return the cases written."""
    source = read(course_root / "solutions" / ASSIGNMENT / NB)
    release = read(course_root / "exercises" / ASSIGNMENT / NB)
    written = []
    for case in cases(paths):
        if only is not None and case.student not in only:
            continue
        written.append(case)
        entry = folder / case.student
        if case.kind == "empty":
            entry.mkdir(parents=True)
            continue
        if case.kind == "malformed":
            entry.mkdir(parents=True)
            (entry / NB).write_text('{"cells": [{"cell_type": "code", "source": "import torch"', encoding="utf-8")
            continue
        if case.kind == "foreign":  # exercise 01's notebook, handed in under exercise 02's name
            entry.mkdir(parents=True)
            other = "ex01_tokens_embeddings"
            write(read(course_root / "exercises" / other / f"{other}.ipynb"), entry / NB)
            continue
        nb = _student_notebook(case, source, release)
        if case.kind == "zip":
            tmp = folder / f".{case.student}.ipynb"
            write(nb, tmp)
            with zipfile.ZipFile(folder / f"{case.student}.zip", "w") as zf:
                zf.write(tmp, f"submission/{ASSIGNMENT}/{NB}")
                zf.writestr(f"__MACOSX/submission/{ASSIGNMENT}/._{NB}", b"\x00\x05\x16\x07junk")
                zf.writestr("submission/notes/readme.txt", "my notes")
            tmp.unlink()
            continue
        entry.mkdir(parents=True)
        name = f"{ASSIGNMENT} (1).ipynb" if case.kind == "renamed" else NB
        write(nb, entry / name)
    return written


def manifest() -> str:
    """The corpus as a table (for the instructor guide)."""
    rows = [f"| {c.student} | {c.note} | {c.score:g} |" for c in cases({"gradebook": "", "solution": "", "other": ""})]
    return "\n".join(["| student | submission | expected score (of 10) |", "|---|---|---|", *rows])

