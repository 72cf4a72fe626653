"""The book builds with Sphinx warnings as errors, and its pages load nothing from the network."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


@pytest.mark.slow
def test_book_builds_without_warnings_and_offline(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("_config.yml", "_toc.yml", "references.bib"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "book", src / "book", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    jb = Path(sys.executable).parent / "jupyter-book"
    proc = subprocess.run([str(jb), "build", str(src), "--warningiserror", "--keep-going"],
                          capture_output=True, text=True, env=_env(), timeout=900)
    assert proc.returncode == 0, f"book build failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    html = src / "_build" / "html"
    pages = sorted(html.rglob("*.html"))
    assert len(pages) >= 12
    assert (html / "_static" / "mathjax" / "tex-chtml.js").is_file(), "MathJax must be served from the site"
    fetched = re.compile(r'<(?:script|link|img)[^>]+(?:src|href)="(https?:)?//', re.I)
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert not fetched.search(text), f"{page.relative_to(html)} loads something from the network"
    chapter = (html / "book" / "02_self_attention.html").read_text(encoding="utf-8")
    assert "_static/mathjax/tex-chtml.js" in chapter and "Q17" in chapter
