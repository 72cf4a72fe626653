"""Shared fixtures for the book's tests: one HTML build of the book per test session.

``built_book`` builds the book once with ``jupyter-book build --warningiserror --keep-going`` from a copy of the
sources (``_config.yml``, ``_toc.yml``, ``references.bib``, ``book/`` and the folders ``_config.yml`` reads
assets from), and every test of the session reuses it. Under pytest-xdist the workers share one build: the
first worker to need it builds it under a file lock in the session's common temporary folder; the others wait
and read the result.

Set ``COURSE_BOOK_HTML=/path/to/_build/html`` to test an existing build instead (for example the output of
``make book``); nothing is built then.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

# What the book build reads besides the paths that _config.yml names (see _config_paths).
BOOK_FILES = ("_config.yml", "_toc.yml", "references.bib")
BOOK_DIRS = ("book", "_static", "bench/results")  # _static/: served, its CSS and JS linked; bench/results: the
# data the Performance appendix reads


@dataclass(frozen=True)
class BookBuild:
    """One HTML build of the book."""

    html: Path  # the site's root folder (index.html, book/..., _static/)
    returncode: int  # jupyter-book's exit status (0: no Sphinx warning)
    log: str  # jupyter-book's output, for failure messages
    seconds: float  # how long the build took (0 for a prebuilt site)


def _copy_sources(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name in BOOK_FILES:
        shutil.copy(ROOT / name, dest / name)
    for name in BOOK_DIRS:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    for rel in _config_paths():
        src, target = ROOT / rel, dest / rel
        if target.exists() or not src.exists():
            continue
        if src.is_dir():
            shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, target)


def _config_paths() -> list[str]:
    """Files and folders of the repository that _config.yml points to: static folders, local Sphinx
    extensions, the favicon and the logo."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8")) or {}
    sphinx = config.get("sphinx") or {}
    html = config.get("html") or {}
    paths = list((sphinx.get("config") or {}).get("html_static_path") or [])
    paths += list((sphinx.get("local_extensions") or {}).values())
    paths += [p for p in (html.get("favicon"), config.get("logo"), (sphinx.get("config") or {}).get("html_favicon"))
              if p]
    return [str(p) for p in paths]


def build_book(dest: Path) -> BookBuild:
    """Build the book from a copy of its sources in ``dest``; return where the site is and how it went."""
    src = dest / "src"
    _copy_sources(src)
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    jb = Path(sys.executable).parent / "jupyter-book"
    start = time.perf_counter()
    proc = subprocess.run([str(jb), "build", str(src), "--warningiserror", "--keep-going"],
                          capture_output=True, text=True, env=env, timeout=900)
    seconds = time.perf_counter() - start
    return BookBuild(src / "_build" / "html", proc.returncode, proc.stdout[-8000:] + proc.stderr[-4000:], seconds)


def _shared_tmp(tmp_path_factory) -> Path:
    """A folder shared by every xdist worker of this session (the workers' basetemp folders' parent)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def built_book(tmp_path_factory) -> BookBuild:
    """The book built once per test session (shared by xdist workers), or ``$COURSE_BOOK_HTML``."""
    prebuilt = os.environ.get("COURSE_BOOK_HTML")
    if prebuilt:
        html = Path(prebuilt).resolve()
        if not (html / "index.html").is_file():
            pytest.fail(f"COURSE_BOOK_HTML={prebuilt}: expected a built book (index.html), found none")
        return BookBuild(html, 0, f"prebuilt site {html}", 0.0)
    shared = _shared_tmp(tmp_path_factory)
    dest = shared / "book_build"
    record = shared / "book_build.json"
    with open(shared / "book_build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if record.is_file():
            data = json.loads(record.read_text(encoding="utf-8"))
            return BookBuild(Path(data["html"]), data["returncode"], data["log"], data["seconds"])
        build = build_book(dest)
        record.write_text(json.dumps({"html": str(build.html), "returncode": build.returncode,
                                      "log": build.log, "seconds": build.seconds}), encoding="utf-8")
        return build
