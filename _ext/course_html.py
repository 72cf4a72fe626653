"""Small fixes to the HTML that Jupyter Book 1 writes, each found by the browser test (tests/book/test_browser.py).

* Every page declared ``const THEBE_JS_URL`` (sphinx-thebe) and ``togglebuttonSelector`` (sphinx-togglebutton)
  twice, because both extensions add their inline scripts on every ``env-before-read-docs`` event: the second
  ``const`` is a SyntaxError in the reader's console. Identical scripts are dropped from each page's list here.
* pydata-sphinx-theme 0.15 sets ``<html data-mode="">`` for a first-time reader (empty localStorage) and then logs
  "Got invalid theme mode" (pydata/pydata-sphinx-theme#1635). ``_static/theme-mode.js``, loaded before the theme's
  script, makes an empty mode ``auto``, which is what the theme falls back to anyway.
"""
from __future__ import annotations


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for script in scripts:
        # An inline script has filename None or "" depending on who added it: the same script either way.
        key = (str(getattr(script, "filename", script) or ""),
               tuple(sorted((k, str(v)) for k, v in getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    scripts[:] = kept


def setup(app):
    app.add_js_file("theme-mode.js", priority=0)
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
