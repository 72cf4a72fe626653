"""The built book, read the way a reader reads it: served on 127.0.0.1 and opened in headless Chromium.

For every page of the table of contents (``_toc.yml``), in a fresh browser profile (a first-time reader):

* no console error and no uncaught page error (a 404 shows up here too);
* no request leaves 127.0.0.1: every other request is recorded and aborted, and the browser's host resolver maps
  every other name to nothing, so the test never reaches the network even when the page tries to;
* math is typeset by the MathJax the site serves itself: every math element holds a ``mjx-container``, none holds
  a MathJax error, and the MathJax script comes from the local server;
* every image loads and decodes (``complete`` and ``naturalWidth > 0``);
* Chinese text renders with a font that has its glyphs (no missing-glyph boxes), see ``TOFU_JS``;
* a screenshot is written to ``_build/screenshots/<page>.png`` (or ``$COURSE_SCREENSHOTS``).

The search page must find a known word (``search.html?q=attention``) and nothing for a made-up one.

The browser is Debian's ``chromium`` (``make browser`` installs it), driven by Playwright through
``executable_path``: Playwright's own browser download is never used. Without Chromium or Playwright the tests
fail when ``CI`` or ``COURSE_REQUIRE_BROWSER`` is set (``make test`` sets the latter) and are skipped, with the
reason, otherwise.
"""
from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def toc_pages(toc_file: Path = ROOT / "_toc.yml") -> list[str]:
    """Every page of the table of contents, as docnames (``book/02_self_attention``), in reading order."""
    toc = yaml.safe_load(toc_file.read_text(encoding="utf-8"))
    pages = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                pages.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return [p.removesuffix(".md").removesuffix(".ipynb") for p in pages]


PAGES = toc_pages()
HOST = "127.0.0.1"
REQUIRED = bool(os.environ.get("CI") or os.environ.get("COURSE_REQUIRE_BROWSER"))
SCREENSHOTS = Path(os.environ.get("COURSE_SCREENSHOTS") or ROOT / "_build" / "screenshots")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--no-first-run", "--disable-sync", "--disable-default-apps", "--disable-extensions",
    # Belt and braces: any host name other than the local server resolves to nothing.
    f"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE {HOST}",
]

try:
    from playwright.sync_api import sync_playwright
except ImportError as exc:  # pragma: no cover - depends on the environment
    sync_playwright = None
    PLAYWRIGHT_MISSING = f"Playwright is not installed ({exc}); run `make env`"
else:
    PLAYWRIGHT_MISSING = ""


def chromium_path() -> str | None:
    """The system Chromium: ``$COURSE_CHROMIUM``, else ``chromium`` or ``chromium-browser`` on PATH."""
    explicit = os.environ.get("COURSE_CHROMIUM")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _require_browser() -> str:
    why = PLAYWRIGHT_MISSING or ("" if chromium_path() else
                                 "no Chromium found (Debian package `chromium`; install it with `make browser`, "
                                 "or set COURSE_CHROMIUM=/path/to/chromium)")
    if why:
        if REQUIRED:
            pytest.fail(f"the browser test cannot run: {why}", pytrace=False)
        pytest.skip(f"{why}; set COURSE_REQUIRE_BROWSER=1 to make this a failure (make test does)")
    return chromium_path()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture(scope="module")
def site(built_book):
    """The built book served on 127.0.0.1 (a free port); yields its base URL."""
    if not (built_book.html / "index.html").is_file():
        pytest.fail(f"the book build produced no index.html (exit {built_book.returncode}):\n{built_book.log}")
    handler = functools.partial(_QuietHandler, directory=str(built_book.html))
    server = http.server.ThreadingHTTPServer((HOST, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{HOST}:{server.server_port}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    executable = _require_browser()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Visit:
    """A fresh browser context (no cookies, no localStorage) that records what a page does."""

    def __init__(self, browser, base: str):
        self.base = base
        self.context = browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
        self.context.set_default_timeout(60_000)
        self.outside: list[str] = []  # requests to anything but the local server (aborted)
        self.errors: list[str] = []  # console errors, uncaught exceptions, failed local requests
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.errors.append(f"uncaught exception: {exc}"))
        self.page.on("response", self._response)

    def _route(self, route):
        url = route.request.url
        if urlsplit(url).netloc == urlsplit(self.base).netloc:
            route.continue_()
        else:
            self.outside.append(url)
            route.abort("blockedbyclient")

    def _console(self, msg):
        if msg.type == "error":
            where = msg.location.get("url", "") if isinstance(msg.location, dict) else ""
            self.errors.append(f"console error: {msg.text} ({where})")

    def _response(self, response):
        if response.status >= 400:
            self.errors.append(f"HTTP {response.status} for {response.url}")

    def close(self):
        self.context.close()


@pytest.fixture
def visit(browser, site):
    v = Visit(browser, site)
    yield v
    v.close()


# Math: Sphinx writes every formula into an element of class "math"; MathJax replaces its TeX by an mjx-container.
MATH_JS = """
async () => {
  const nodes = Array.from(document.querySelectorAll('.math'));
  const script = Array.from(document.scripts).map(s => s.src).find(s => /mathjax/i.test(s)) || null;
  if (nodes.length && window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  return {
    count: nodes.length,
    script: script,
    version: (window.MathJax && MathJax.version) || null,
    untypeset: nodes.filter(n => !n.querySelector('mjx-container')).map(n => n.textContent.slice(0, 60)),
    errors: Array.from(document.querySelectorAll('mjx-merror, [data-mjx-error]'))
                 .map(n => n.getAttribute('data-mjx-error') || n.textContent.slice(0, 60)),
  };
}
"""

IMAGES_JS = """
async () => {
  const imgs = Array.from(document.images);
  for (const img of imgs) img.loading = 'eager';
  await Promise.all(imgs.map(img => img.decode().catch(() => null)));
  return {count: imgs.length,
          broken: imgs.filter(img => !(img.complete && img.naturalWidth > 0)).map(img => img.currentSrc || img.src)};
}
"""

# Missing glyphs, measured: Chromium draws a character that no font in the element's font list (nor any system
# fallback font) covers with the primary font's .notdef glyph, and that box is the same picture for every
# missing character. So each distinct CJK character of the page is drawn on a canvas with the font list of the
# element it appears in, and compared pixel by pixel with a character no font has (U+10FFFD, private use):
# a character whose picture equals it is rendered as a box. Two such reference characters must give the same
# picture, or the method does not hold on this machine and the test says so. (document.fonts.check() cannot do
# this: it answers true whenever no web font is still loading, whether or not a glyph exists.)
TOFU_JS = r"""
async (extra) => {
  const cjk = /[\u2e80-\u2fff\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff]/g;
  const groups = new Map();   // font-family list -> set of characters
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  let node;
  while ((node = walker.nextNode())) {
    const chars = node.nodeValue.match(cjk);
    if (!chars) continue;
    const el = node.parentElement;
    if (!el || el.closest('script, style, noscript')) continue;
    const family = getComputedStyle(el).fontFamily;
    if (!groups.has(family)) groups.set(family, new Set());
    chars.forEach(c => groups.get(family).add(c));
  }
  if (extra) {
    const family = getComputedStyle(document.body).fontFamily;
    if (!groups.has(family)) groups.set(family, new Set());
    Array.from(extra).forEach(c => groups.get(family).add(c));
  }
  await document.fonts.ready;
  const canvas = document.createElement('canvas');
  canvas.width = 48; canvas.height = 48;
  const ctx = canvas.getContext('2d', {willReadFrequently: true});
  const picture = (ch, family) => {
    ctx.font = `40px ${family}`;
    ctx.clearRect(0, 0, 48, 48);
    ctx.fillStyle = '#000';
    ctx.textBaseline = 'top';
    ctx.fillText(ch, 2, 2);
    return ctx.getImageData(0, 0, 48, 48).data.join(',');
  };
  const result = {checked: 0, boxes: [], groups: [], method_ok: true};
  for (const [family, chars] of groups) {
    const text = Array.from(chars).join('');
    try { await document.fonts.load(`40px ${family}`, text); } catch (e) {}
    const box = picture('\u{10FFFD}', family);
    if (box !== picture('\u{10FFFC}', family)) result.method_ok = false;
    const missing = Array.from(chars).filter(c => picture(c, family) === box);
    result.checked += chars.size;
    result.boxes.push(...missing);
    result.groups.push({family: family, chars: chars.size, boxes: missing.join('')});
  }
  return result;
}
"""


def _platform_fonts(page, text: str) -> list[str]:
    """The fonts Chromium actually used to draw ``text`` in the body's font (DevTools' "Rendered Fonts")."""
    page.evaluate("t => { const s = document.createElement('span'); s.id = 'cjk-probe'; s.textContent = t; "
                  "document.body.appendChild(s); }", text)
    cdp = page.context.new_cdp_session(page)
    try:
        cdp.send("DOM.enable")
        cdp.send("CSS.enable")
        root = cdp.send("DOM.getDocument", {"depth": 0})["root"]["nodeId"]
        node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": "#cjk-probe"})["nodeId"]
        fonts = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
        return [f"{f['familyName']}{' (web font)' if f.get('isCustomFont') else ''}: {f['glyphCount']} glyphs"
                for f in fonts]
    finally:
        page.evaluate("() => document.getElementById('cjk-probe')?.remove()")
        cdp.detach()


def _screenshot_name(docname: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "__", docname) + ".png"


@pytest.mark.slow
@pytest.mark.parametrize("docname", PAGES)
def test_page_reads_right_in_a_browser(visit, docname):
    url = visit.base + docname + ".html"
    response = visit.page.goto(url, wait_until="load")
    assert response is not None and response.ok, f"{url}: HTTP {response.status if response else 'no response'}"
    problems = []

    math = visit.page.evaluate(MATH_JS)
    if math["count"]:
        if not (math["script"] or "").startswith(visit.base):
            problems.append(f"MathJax is not served by the site: script {math['script']!r}")
        if not math["version"]:
            problems.append("MathJax did not start (window.MathJax.version is missing)")
        if math["untypeset"]:
            problems.append(f"{len(math['untypeset'])} of {math['count']} formulas not typeset, e.g. "
                            f"{math['untypeset'][:3]}")
        if math["errors"]:
            problems.append(f"MathJax errors: {math['errors'][:5]}")

    images = visit.page.evaluate(IMAGES_JS)
    if images["broken"]:
        problems.append(f"{len(images['broken'])} of {images['count']} images do not load: {images['broken'][:5]}")

    tofu = visit.page.evaluate(TOFU_JS, "")
    if not tofu["method_ok"]:
        problems.append("missing-glyph check does not hold here: two characters no font has drew differently")
    if tofu["boxes"]:
        sample = "".join(tofu["boxes"][:20])
        problems.append(f"{len(tofu['boxes'])} of {tofu['checked']} Chinese characters render as missing-glyph "
                        f"boxes (e.g. {sample}); fonts used: {_platform_fonts(visit.page, sample)}")

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / _screenshot_name(docname)
    visit.page.screenshot(path=str(shot), full_page=False)
    if shot.stat().st_size < 2000:
        problems.append(f"screenshot {shot} is suspiciously small ({shot.stat().st_size} bytes)")

    visit.page.wait_for_timeout(300)  # late console errors (deferred and async scripts)
    problems += visit.errors
    if visit.outside:
        problems.append(f"requests leaving {HOST} (blocked): {sorted(set(visit.outside))[:10]}")
    assert not problems, f"{docname}.html:\n  " + "\n  ".join(problems)


@pytest.mark.slow
def test_search_finds_a_known_word_and_not_a_made_up_one(visit):
    found = {}
    for word in ("attention", "qzxjvwk"):
        visit.page.goto(visit.base + f"search.html?q={word}", wait_until="load")
        # Sphinx's searchtools writes its verdict into #search-results once the index is searched.
        visit.page.wait_for_function(
            "() => { const s = document.querySelector('#search-results'); "
            "return s && s.querySelector('p.search-summary, .search-summary'); }")
        links = visit.page.eval_on_selector_all("#search-results ul.search li a",
                                                "els => els.map(a => a.getAttribute('href'))")
        found[word] = links
    assert found["attention"], "search.html?q=attention found nothing"
    assert any("02_self_attention" in href for href in found["attention"]), found["attention"]
    assert not found["qzxjvwk"], f"a made-up word was found: {found['qzxjvwk']}"
    assert not visit.errors, visit.errors
    assert not visit.outside, visit.outside


@pytest.mark.slow
def test_the_checks_themselves_catch_faults(visit):
    """The detectors can fail: an outside request is caught and blocked, a glyph no font has is a box."""
    visit.page.goto(visit.base + PAGES[0] + ".html", wait_until="load")
    visit.page.evaluate("() => new Promise(r => { const i = new Image(); i.onload = i.onerror = r; "
                        "i.src = 'http://example.com/pixel.png'; document.body.appendChild(i); })")
    assert any("example.com" in u for u in visit.outside), visit.outside
    assert visit.page.evaluate(IMAGES_JS)["broken"], "a blocked image must count as broken"
    tofu = visit.page.evaluate(TOFU_JS, "\U000F0000A")
    assert tofu["method_ok"]
    assert "\U000F0000" in tofu["boxes"] and "A" not in tofu["boxes"], tofu
