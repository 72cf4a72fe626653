"""Finding, unpacking and checking submissions, before any of their code runs. Trusted side only.

A submissions folder holds one entry per student, as learning platforms export them: a folder
(``alice/`` with the notebook somewhere inside) or a zip (``bob.zip``). The student id is the entry's name
(without ``.zip``).
"""
from __future__ import annotations

import ast
import hashlib
import json
import re
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from course_lib.grading.notebooks import (
    grade_id, is_locked_cell, is_solution_cell, is_test_cell, nbgrader_meta, remove_hidden_tests,
)

__all__ = ["Submission", "discover", "locate_notebook", "belongs", "restore_notebook", "forbidden_uses", "defined_names", "ALWAYS_FORBIDDEN"]

MAX_ZIP_BYTES = 50 * 2**20  # uncompressed size a zip may unpack to
MAX_NOTEBOOK_BYTES = 20 * 2**20
IGNORED_PARTS = {"__MACOSX", ".ipynb_checkpoints", ".git"}
# A student id as learning platforms export it: letters and digits of any script (李雷, Zoë), then also . _ @ + -.
STUDENT_ID = re.compile(r"^[^\W_][\w.@+-]{0,99}$")

# Names no answer cell may use, whatever the exercise: they read files, reach other modules by name or run
# code from strings, which would let an answer dodge the exercise's own list.
ALWAYS_FORBIDDEN = [
    "open", "eval", "exec", "compile", "__import__", "importlib", "getattr", "setattr", "delattr", "globals",
    "locals", "vars", "__dict__", "__builtins__", "__subclasses__", "__globals__", "builtins", "os", "sys",
    "subprocess", "ctypes", "inspect", "gc", "signal", "socket", "shutil", "pathlib", "pickle", "marshal",
    "_exit", "posix", "nt", "threading", "multiprocessing",
]


@dataclass
class Submission:
    student: str
    entry: Path  # the folder or zip in the submissions folder
    problems: list = field(default_factory=list)  # messages for the report and the feedback
    notebook_path: Path | None = None
    digest: str = ""  # hash of the entry's content: unchanged submissions are not graded twice


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path.parent if path.is_file() else path)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def discover(folder: Path) -> list[Submission]:
    """One Submission per folder or zip in ``folder`` (other files are reported and skipped)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"submissions folder not found: {folder}")
    subs, seen = [], {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.name in IGNORED_PARTS:
            continue
        if entry.is_dir():
            student = entry.name
        elif entry.suffix.lower() == ".zip":
            student = entry.stem
        else:
            continue
        original = student
        if not STUDENT_ID.match(student):
            safe = re.sub(r"[^\w.@+-]", "_", student).lstrip("_.-@+")[:100] or "student"
            while safe in seen and seen[safe][0] != original:  # never merge two different entries
                safe = f"{safe}_{len(seen) + 1}"
            sub = Submission(safe, entry, [f"the entry {entry.name!r} has an unusual name; graded as {safe!r}"])
            student = safe
        else:
            sub = Submission(student, entry)
        if student in seen and seen[student][0] != original:
            base = student
            while student in seen:
                student = f"{base}_{len(seen) + 1}" if student == base else f"{student}_"
            sub.student = student
            sub.problems.append(f"the entry {entry.name!r} has the id of another entry; graded as {student!r}")
        if student in seen:  # a folder and a zip of the same name: the folder is graded, and says so
            message = (f"two entries for {student!r} ({seen[student][1]} and {entry.name}); "
                       f"the zip is ignored, the folder is graded")
            if entry.is_dir():
                subs = [s for s in subs if s.student != student]
                sub.problems.append(message)
            else:
                next(s for s in subs if s.student == student).problems.append(message)
                continue
        seen[student] = (original, entry.name)
        sub.digest = _digest(entry)
        subs.append(sub)
    return subs


def _safe_extract(zip_path: Path, dest: Path, problems: list) -> bool:
    try:
        with zipfile.ZipFile(zip_path) as zf:
            total = 0
            for info in zf.infolist():
                name = info.filename
                parts = Path(name).parts
                if name.startswith("/") or ".." in parts or any(p in IGNORED_PARTS for p in parts):
                    continue
                if info.is_dir() or not name.lower().endswith(".ipynb"):
                    continue
                total += info.file_size
                if total > MAX_ZIP_BYTES:
                    problems.append(f"the zip unpacks to more than {MAX_ZIP_BYTES // 2**20} MB; the rest is ignored")
                    return True
                target = dest / Path(*parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
        return True
    except (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError) as e:
        problems.append(f"the zip file could not be read ({type(e).__name__}: {e})")
        return False


def _candidates(root: Path) -> list[Path]:
    found = []
    for p in sorted(root.rglob("*.ipynb")):
        if any(part in IGNORED_PARTS for part in p.relative_to(root).parts) or p.name.startswith("._"):
            continue
        if p.is_file() and not p.is_symlink():
            found.append(p)
    return found


def graded_ids(nb) -> set[str]:
    """Grade ids of a notebook's answer and graded cells: what identifies an exercise's notebook."""
    return {grade_id(c) for c in nb.cells
            if grade_id(c) and (nbgrader_meta(c).get("solution") or nbgrader_meta(c).get("grade"))}


def belongs(nb, source_nb) -> bool:
    """Most of the notebook's answer and test cells are this assignment's (a few names may recur elsewhere)."""
    mine, theirs = graded_ids(nb), graded_ids(source_nb)
    return bool(mine & theirs) and 2 * len(mine & theirs) >= len(mine)


def _read_notebook(path: Path, problems: list):
    if path.stat().st_size > MAX_NOTEBOOK_BYTES:
        problems.append(f"{path.name} is larger than {MAX_NOTEBOOK_BYTES // 2**20} MB and was not read")
        return None
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
        nb = nbformat.from_dict(raw)
        if nb.get("nbformat") != 4 or not isinstance(nb.get("cells"), list):
            raise ValueError("not a version 4 notebook")
        for cell in nb.cells:
            if not isinstance(cell.get("source"), (str, list)) or cell.get("cell_type") not in ("code", "markdown", "raw"):
                raise ValueError("a cell has no valid source or type")
            if isinstance(cell.source, list):
                cell.source = "".join(cell.source)
        return nb
    except (ValueError, UnicodeDecodeError, json.JSONDecodeError, TypeError, AttributeError) as e:
        problems.append(f"{path.name} is not a valid notebook ({type(e).__name__}: {str(e)[:200]}); it cannot be graded")
        return None


def locate_notebook(sub: Submission, assignment: str, source_nb, work: Path):
    """Find the submission's notebook for ``assignment``; returns the parsed notebook or None (with problems)."""
    expected = f"{assignment}.ipynb"
    root = sub.entry
    if sub.entry.is_file():
        root = work / "unzipped"
        root.mkdir(parents=True, exist_ok=True)
        if not _safe_extract(sub.entry, root, sub.problems):
            return None
    found = _candidates(root)
    if not found:
        sub.problems.append("no notebook (.ipynb) found in the submission")
        return None
    exact = [p for p in found if p.name == expected]
    chosen, nb = None, None
    for path in exact + [p for p in found if p not in exact]:
        probs = []
        candidate = _read_notebook(path, probs)
        if candidate is None:
            if path in exact:
                sub.problems.extend(probs)
            continue
        if belongs(candidate, source_nb):
            chosen, nb = path, candidate
            break
        if path in exact or len(found) == 1:
            sub.problems.append(f"{path.name} does not belong to {assignment}: none of its cells are this "
                                f"assignment's (was another exercise submitted?)")
    if nb is None:
        if not any("not a valid notebook" in p or "does not belong" in p for p in sub.problems):
            sub.problems.append(f"none of the submitted notebooks ({', '.join(p.name for p in found[:5])}) "
                                f"belongs to {assignment}")
        return None
    rel = chosen.relative_to(root)
    if chosen.name != expected:
        sub.problems.append(f"the notebook was renamed ({rel}); it was graded as {expected}")
    elif len(rel.parts) > 1:
        sub.problems.append(f"the notebook was found in a subfolder ({rel})")
    others = [p for p in found if p != chosen]
    if others:
        sub.problems.append(f"other notebooks were ignored: {', '.join(str(p.relative_to(root)) for p in others[:5])}")
    sub.notebook_path = chosen
    return nb


def restore_notebook(student_nb, source_nb, release_nb) -> tuple[list, list[str]]:
    """The notebook to run: the source's read-only and test cells (with hidden tests), the student's answers.

    Returns (cells, notes). Each cell is a dict ``{"index", "grade_id", "kind", "source"}`` where kind is
    "answer", "test", "readonly" or "extra" (a cell the student added; it is kept in place).
    """
    notes = []
    release_cells = {grade_id(c): c for c in release_nb.cells if grade_id(c)}
    student_by_id, extras, anchor = {}, {}, None
    for cell in student_nb.cells:
        gid = grade_id(cell)
        if gid and gid in release_cells:
            if gid in student_by_id:
                notes.append(f"cell {gid} appears twice; the first copy is used")
                continue
            student_by_id[gid] = cell
            anchor = gid
        elif cell.get("cell_type") == "code":
            extras.setdefault(anchor, []).append(cell)
    cells = []

    def add(kind, gid, src):
        cells.append({"index": len(cells), "grade_id": gid, "kind": kind, "source": src})

    for cell in extras.get(None, []):
        add("extra", None, cell.source)
    for src_cell in source_nb.cells:
        gid = grade_id(src_cell)
        if src_cell.cell_type == "code":
            if gid and is_solution_cell(src_cell):
                if gid in student_by_id:
                    add("answer", gid, student_by_id[gid].source)
                else:
                    notes.append(f"answer cell {gid} was deleted; it was graded as unanswered")
                    add("answer", gid, release_cells[gid].source)
            elif gid and (is_test_cell(src_cell) or is_locked_cell(src_cell)):
                kind = "test" if is_test_cell(src_cell) else "readonly"
                if gid not in student_by_id:
                    notes.append(f"{kind} cell {gid} was deleted; it was restored from the source before grading")
                elif student_by_id[gid].source.strip() != remove_hidden_tests(release_cells[gid].source).strip() \
                        and student_by_id[gid].source.strip() != release_cells[gid].source.strip():
                    notes.append(f"{kind} cell {gid} was edited; it was restored from the source before grading")
                add(kind, gid, src_cell.source)
            else:
                add("readonly", gid, src_cell.source)
        for cell in extras.get(gid, []) if gid else []:
            add("extra", None, cell.source)
    return cells, notes


def _names(tree: ast.AST, own: frozenset[str] = frozenset()) -> set[str]:
    """Every name the code uses. A bare name in ``own`` (a function or class the notebook defines itself) is
    the notebook's own and is left out; the same name reached as an attribute (``F.one_hot``) or imported
    (``from torch.nn.functional import one_hot``) is always counted. A star import counts every bare name."""
    star = any(isinstance(n, ast.ImportFrom) and any(a.name == "*" for a in n.names) for n in ast.walk(tree))
    own = frozenset() if star else own
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            if node.id not in own:
                names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] + [a.asname for a in node.names if a.asname]
            mods += [node.module] if getattr(node, "module", None) else []
            for m in mods:
                names.update(m.split("."))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", node.value))
    return names


def defined_names(sources) -> frozenset[str]:
    """Functions and classes that cells define with ``def`` or ``class`` (not by assignment or import)."""
    out = set()
    for source in sources:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        out.update(n.name for n in ast.walk(tree)
                   if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))
    return frozenset(out)


def forbidden_uses(source: str, forbidden: list[str], own=frozenset()) -> list[str]:
    """Forbidden names an answer cell's code uses: identifiers, attributes, imports, and names inside strings.

    Docstrings and comments may mention anything; only code counts. ``own``: functions and classes the
    notebook itself defines (:func:`defined_names` of its cells). An exercise whose answer is called like
    PyTorch's function (``scaled_dot_product_attention``, ``one_hot``) forbids PyTorch's, not the student's:
    calling one's own function by its bare name is allowed, reaching PyTorch's through an attribute or an
    import is not.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []  # it fails when it runs; nothing to check
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and body:
            first = body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                body[0] = ast.Pass()
    used = _names(tree, frozenset(own))
    # A name defined by def/class and also bound by an assignment or import somewhere in this cell is not
    # (only) the notebook's own: count it.
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.NamedExpr)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for t in targets:
            for n in ast.walk(t):
                if isinstance(n, ast.Name) and n.id in own:
                    used.add(n.id)
    return sorted(n for n in set(forbidden) if n in used)
