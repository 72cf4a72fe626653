"""Small helpers for writing course notebooks from Python (chapters and nbgrader sources).

Usage (in a throw-away build script)::

    from tools.nbtools import md, code, solution, tests, readonly, write
    cells = [md("# Title"), code("import torch"), solution("def f():\\n    ### BEGIN SOLUTION\\n    ...", "impl_f"),
             tests("assert f() == 1", "test_f", points=2)]
    write(cells, "solutions/ex00_demo/ex00_demo.ipynb")

then execute it (``jupyter nbconvert --to notebook --execute --inplace``).
The committed .ipynb is the source of truth; the build script is not kept.
"""
from __future__ import annotations

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


def _nbg(grade_id: str, *, grade: bool, solution: bool, locked: bool, points: float | None = None) -> dict:
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": 3, "solution": solution,
            "task": False}
    if grade:
        meta["points"] = points
    return {"nbgrader": meta}


def md(text: str, **metadata) -> nbformat.NotebookNode:
    return new_markdown_cell(text.strip("\n"), metadata=metadata)


def code(src: str, tags: tuple[str, ...] = (), **metadata) -> nbformat.NotebookNode:
    if tags:
        metadata = {**metadata, "tags": list(tags)}
    return new_code_cell(src.strip("\n"), metadata=metadata)


def solution(src: str, grade_id: str) -> nbformat.NotebookNode:
    """An answer cell: the student's code goes between ### BEGIN SOLUTION / ### END SOLUTION."""
    return code(src, **_nbg(grade_id, grade=False, solution=True, locked=False))


def tests(src: str, grade_id: str, points: float) -> nbformat.NotebookNode:
    """A graded, locked test cell; hidden tests go between ### BEGIN HIDDEN TESTS / ### END HIDDEN TESTS."""
    return code(src, **_nbg(grade_id, grade=True, solution=False, locked=True, points=points))


def readonly(src: str, grade_id: str, markdown: bool = False) -> nbformat.NotebookNode:
    """A locked cell students cannot edit (instructions, imports, reference code)."""
    meta = _nbg(grade_id, grade=False, solution=False, locked=True)
    return md(src, **meta) if markdown else code(src, **meta)


def write(cells, path) -> None:
    nb = new_notebook(cells=cells, metadata={"kernelspec": KERNELSPEC, "language_info": {"name": "python"}})
    nbformat.validate(nb)
    nbformat.write(nb, str(path))
