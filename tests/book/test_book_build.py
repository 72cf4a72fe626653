"""The book builds with Sphinx warnings as errors, and its pages load nothing from the network.

Uses the session's one build (``built_book`` in conftest.py), the same one the browser test reads.
"""
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_book_builds_without_warnings_and_offline(built_book):
    assert built_book.returncode == 0, f"book build failed:\n{built_book.log}"
    html = built_book.html
    pages = sorted(html.rglob("*.html"))
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    wanted = [toc["root"]] + [c["file"] for part in toc["parts"] for c in part["chapters"]]
    missing = [f for f in wanted if not (html / f"{f}.html").is_file()]
    assert not missing, f"pages of _toc.yml that the build did not write: {missing}"
    assert (html / "_static" / "mathjax" / "tex-chtml.js").is_file(), "MathJax must be served from the site"
    fetched = re.compile(r'<(?:script|link|img)[^>]+(?:src|href)="(https?:)?//', re.I)
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert not fetched.search(text), f"{page.relative_to(html)} loads something from the network"
    chapter = (html / "book" / "02_self_attention.html").read_text(encoding="utf-8")
    assert "_static/mathjax/tex-chtml.js" in chapter and "Q17" in chapter
