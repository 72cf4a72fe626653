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
import urllib.error
import urllib.request
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
            if urlsplit(where).path == "/favicon.ico":
                return  # the browser's own late icon request: checked explicitly, not raced
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

# Chinese text, checked in two ways, because either alone can be fooled.
#
# 1. Some font has the glyphs (canvas). Chromium draws a character that no font of the element's font list (nor
#    any system fallback font) covers with the primary font's .notdef glyph, the same box for every missing
#    character. Each distinct CJK character of the page is drawn on a canvas with the font list of the elements
#    it appears in, and compared pixel by pixel with a character no font has (U+10FFFD, private use); one whose
#    picture equals that box has no glyph anywhere. Two such reference characters must draw alike, or the method
#    does not hold and the test says so. (document.fonts.check() cannot do this: it answers true whenever no web
#    font is still loading, whether or not any font has the glyph.)
# 2. The page really painted them with such a font (DevTools' "Rendered Fonts", CSS.getPlatformFontsForNode).
#    A canvas draws with the fonts available now; an element laid out earlier can keep a stale layout (Chromium
#    keeps a sidebar link drawn with .notdef boxes after a web font arrived, seen here). So a fresh element per
#    font list, holding the page's CJK characters, tells which fonts draw CJK here; then every visible element
#    with CJK characters in its own text must have at least that many glyphs drawn by those fonts.
CJK_MARK_JS = r"""
() => {
  const cjk = /[\u2e80-\u2fff\u3001-\u303f\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff\uff01-\uffef]/g;
  const marked = [], groups = {};
  for (const el of document.body.querySelectorAll('*')) {
    if (el.closest('script, style, noscript, template, mjx-container')) continue;
    const details = el.closest('details:not([open])');  // a folded cell: not drawn until opened
    if (details && !el.closest('summary')) continue;
    const chars = [];
    for (const t of el.childNodes) if (t.nodeType === 3) chars.push(...(t.nodeValue.match(cjk) || []));
    if (!chars.length || el.getClientRects().length === 0) continue;
    const family = getComputedStyle(el).fontFamily;
    el.setAttribute('data-cjk-check', String(marked.length));
    marked.push({family: family, count: chars.length, text: el.textContent.trim().slice(0, 50)});
    (groups[family] = groups[family] || new Set());
    chars.forEach(c => groups[family].add(c));
  }
  const probes = [];
  for (const [family, set] of Object.entries(groups)) {
    const span = document.createElement('span');
    span.style.fontFamily = family;
    span.textContent = Array.from(set).join('');
    span.setAttribute('data-cjk-probe', String(probes.length));
    document.body.appendChild(span);
    probes.push({family: family, chars: span.textContent});
  }
  return {marked: marked, probes: probes};
}
"""

TOFU_JS = r"""
async (groups) => {
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
  const result = {checked: 0, boxes: [], method_ok: true};
  for (const {family, chars} of groups) {
    try { await document.fonts.load(`40px ${family}`, chars); } catch (e) {}
    const box = picture('\u{10FFFD}', family);
    if (box !== picture('\u{10FFFC}', family)) result.method_ok = false;
    for (const c of Array.from(chars)) {
      result.checked += 1;
      if (picture(c, family) === box) result.boxes.push(c);
    }
  }
  return result;
}
"""


def _rendered_fonts(page, selector: str) -> dict[int, list[dict]]:
    """For each element matching ``selector[data-...=i]``: the fonts Chromium drew its own text with."""
    attr = selector.strip("[]")
    cdp = page.context.new_cdp_session(page)
    try:
        cdp.send("DOM.enable")
        cdp.send("CSS.enable")
        root = cdp.send("DOM.getDocument", {"depth": 0})["root"]["nodeId"]
        out = {}
        for node in cdp.send("DOM.querySelectorAll", {"nodeId": root, "selector": selector})["nodeIds"]:
            attrs = cdp.send("DOM.getAttributes", {"nodeId": node})["attributes"]
            index = int(dict(zip(attrs[::2], attrs[1::2]))[attr])
            out[index] = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
        return out
    finally:
        cdp.detach()


def _fonts_text(fonts: list[dict]) -> str:
    return ", ".join(f"{f['familyName']}{' (web font)' if f.get('isCustomFont') else ''} x{f['glyphCount']}"
                     for f in fonts) or "nothing"


def check_chinese(page) -> list[str]:
    """Problems with the page's Chinese text: characters no font has, elements drawn without a CJK font."""
    marks = page.evaluate(CJK_MARK_JS)
    if not marks["marked"]:
        return []
    problems = []
    tofu = page.evaluate(TOFU_JS, marks["probes"])
    if not tofu["method_ok"]:
        problems.append("missing-glyph check does not hold here: two characters no font has drew differently")
    probe_fonts = _rendered_fonts(page, "[data-cjk-probe]")
    if tofu["boxes"]:
        problems.append(f"{len(tofu['boxes'])} of {tofu['checked']} distinct Chinese characters have no glyph in "
                        f"any font (e.g. {''.join(tofu['boxes'][:20])}); drawn with: "
                        f"{_fonts_text(probe_fonts.get(0, []))}")
    cjk_fonts = {p["family"]: {f["familyName"] for f in probe_fonts.get(i, []) if f["glyphCount"]}
                 for i, p in enumerate(marks["probes"])}
    stale = []
    for i, fonts in sorted(_rendered_fonts(page, "[data-cjk-check]").items()):
        mark = marks["marked"][i]
        if not fonts:
            continue  # not drawn at all (nothing for a reader to see)
        drawn = sum(f["glyphCount"] for f in fonts if f["familyName"] in cjk_fonts[mark["family"]])
        if drawn < mark["count"]:
            stale.append(f"{mark['text']!r} ({mark['count']} CJK characters) drawn with {_fonts_text(fonts)}")
    if stale:
        problems.append(f"{len(stale)} of {len(marks['marked'])} elements draw Chinese without a CJK font "
                        f"(the CJK fonts here: {sorted(set().union(*cjk_fonts.values()))}): " + "; ".join(stale[:5]))
    page.evaluate("() => document.querySelectorAll('[data-cjk-probe]').forEach(e => e.remove())")
    return problems


def _http_status(url: str) -> int | None:
    if urlsplit(url).hostname != HOST:
        return None
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


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

    problems += check_chinese(visit.page)

    icon = visit.page.evaluate("() => { const l = document.querySelector('link[rel~=\"icon\"]'); "
                               "return l ? l.href : new URL('/favicon.ico', location.href).href; }")
    status = _http_status(icon)
    if status != 200:
        # Browsers fetch the icon on their own after the load event (a late, racy console error): check it here.
        problems.append(f"the page icon {icon} does not load (HTTP {status}); a reader's console shows that "
                        f"error (set html.favicon in _config.yml)")

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
    family = visit.page.evaluate("getComputedStyle(document.body).fontFamily")
    tofu = visit.page.evaluate(TOFU_JS, [{"family": family, "chars": "\U000F0000A"}])
    assert tofu["method_ok"]
    assert tofu["boxes"] == ["\U000F0000"], tofu
