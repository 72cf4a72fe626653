"""Reading nbgrader notebooks: cells by grade id, solution markers, filling a release with a solution.

Nothing here executes notebook code.
"""
from __future__ import annotations

import copy

import nbformat

__all__ = [
    "nbgrader_meta", "grade_id", "is_solution_cell", "is_test_cell", "is_locked_cell",
    "cells_by_grade_id", "strip_markers", "remove_hidden_tests", "fill_release", "apply_bug", "BEGIN_SOLUTION",
]

BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"
BEGIN_HIDDEN = "### BEGIN HIDDEN TESTS"
END_HIDDEN = "### END HIDDEN TESTS"


def nbgrader_meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def grade_id(cell) -> str | None:
    return nbgrader_meta(cell).get("grade_id")


def is_solution_cell(cell) -> bool:
    return bool(nbgrader_meta(cell).get("solution"))


def is_test_cell(cell) -> bool:
    m = nbgrader_meta(cell)
    return bool(m.get("grade")) and not m.get("solution") and cell.get("cell_type") == "code"


def is_locked_cell(cell) -> bool:
    m = nbgrader_meta(cell)
    return bool(m.get("locked")) and not m.get("solution")


def cells_by_grade_id(nb) -> dict:
    return {grade_id(c): c for c in nb.cells if grade_id(c)}


def _drop_region(src: str, begin: str, end: str, keep_inside: bool) -> str:
    out, inside = [], False
    for line in src.splitlines():
        s = line.strip()
        if s == begin:
            inside = True
            continue
        if s == end:
            inside = False
            continue
        if not inside or keep_inside:
            out.append(line)
    return "\n".join(out)


def strip_markers(src: str) -> str:
    """A source cell's code as a student who solved it would write it: markers removed, solution kept."""
    src = _drop_region(src, BEGIN_SOLUTION, END_SOLUTION, keep_inside=True)
    return _drop_region(src, BEGIN_HIDDEN, END_HIDDEN, keep_inside=True)


def remove_hidden_tests(src: str) -> str:
    return _drop_region(src, BEGIN_HIDDEN, END_HIDDEN, keep_inside=False)


def fill_release(release_nb, source_nb):
    """The release notebook with every answer cell filled from the source's solution (a model submission)."""
    src_cells = cells_by_grade_id(source_nb)
    nb = copy.deepcopy(release_nb)
    for cell in nb.cells:
        gid = grade_id(cell)
        if gid and is_solution_cell(cell):
            cell.source = strip_markers(src_cells[gid].source)
    return nb


def apply_bug(nb, bug: dict):
    """Apply one classic bug ({"cell": grade_id, "find": ..., "replace": ...}) to an answer cell."""
    nb = copy.deepcopy(nb)
    cells = cells_by_grade_id(nb)
    if bug["cell"] not in cells:
        raise ValueError(f"bug {bug.get('name')!r}: no cell with grade_id {bug['cell']!r}; have {sorted(cells)}")
    cell = cells[bug["cell"]]
    if bug["find"] not in cell.source:
        raise ValueError(f"bug {bug.get('name')!r}: text {bug['find']!r} not found in cell {bug['cell']!r}")
    cell.source = cell.source.replace(bug["find"], bug["replace"])
    return nb


def read(path):
    return nbformat.read(str(path), as_version=4)


def write(nb, path) -> None:
    nbformat.write(nb, str(path))

