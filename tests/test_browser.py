"""The built book, as a reader's browser shows it.

Serves _build/html on 127.0.0.1 and opens it in Debian's Chromium through
Playwright (the PyPI package drives the system browser; no browser download).
Every page: its images load, no cell shows a traceback unless the cell is
tagged ``raises-exception``, and nothing it asks the server for is missing.
The sidebar reaches every page in _toc.yml, and the search page finds
SEARCH_TERM. Build the book first (``make book``; ``make test`` does).

Chromium opens each page of an edition once per window width (the fixture
``walk``) and runs every check on it then; the tests read what it found.
"""

from __future__ import annotations

import functools
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urldefrag, urlsplit

import pytest
import yaml
from playwright.sync_api import BrowserContext, Page, sync_playwright

from _tools import require

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
TOC = ROOT / "_toc.yml"

# A word the search page must find. It must be in the book's text.
SEARCH_TERM = "ngx_pass_open_channel"

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 30_000

# The module's server and browser live across its tests, and Chromium opens
# and closes its connections to the server on its own schedule: the
# per-test leak guard would see those sockets come and go.
pytestmark = [pytest.mark.browser, pytest.mark.no_leak_check]


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    """The base URL of _build/html served on 127.0.0.1."""
    require((HTML / "index.html").is_file(), "the book is not built (run make book)")
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(HTML)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="book-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser(chromium_bin: str, site: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """Chromium with a fresh profile; requests that leave the local server are refused."""
    profile = tmp_path_factory.mktemp("chromium-profile")
    # The theme may name CDN scripts (MathJax, Thebe); the book must not
    # depend on them, and a test machine must not wait for them. Every
    # request but the local server's goes to a proxy that refuses it: a port
    # bound on 127.0.0.1 that does not listen (ERR_PROXY_CONNECTION_FAILED,
    # at once). Not Playwright's context.route: routing turns Chromium's HTTP
    # cache off, and every page then fetches and compiles the theme's thirty
    # files again, which took most of a walk's time.
    with socket.socket() as refuser, sync_playwright() as pw:
        refuser.bind(("127.0.0.1", 0))
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=chromium_bin,
            headless=True,
            args=CHROMIUM_ARGS + [
                f"--proxy-server=http://127.0.0.1:{refuser.getsockname()[1]}",
                # "<-loopback>": 127.0.0.1 too, except the server's own port
                f"--proxy-bypass-list=<-loopback>;127.0.0.1:{urlsplit(site).port}",
            ],
        )
        try:
            context.set_default_timeout(TIMEOUT_MS)
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser: BrowserContext) -> Iterator[Page]:
    page = browser.new_page()
    try:
        yield page
    finally:
        page.close()


# -- one walk per edition and window width ----------------------------------------------------

# The window widths a reader brings: a laptop and a phone.
DESKTOP = {"width": 1400, "height": 900}
PHONE = {"width": 400, "height": 800}
WIDTHS = {"1400px": DESKTOP, "400px": PHONE}


@dataclass
class Visit:
    """What one visit of a page found: its response, and what each check's
    script returned (the scripts are below, beside the tests that read them).
    A walk at 400 px runs only the overflow check."""
    rel: str
    ok: bool
    status: int | None
    overflow: list[str] = field(default_factory=list)
    lang: str = ""
    # the page's "中文"/"English" links: their text, href (absolute) and hreflang
    counterparts: list[dict] = field(default_factory=list)
    # test_every_page's findings, each starting with the page's path
    problems: list[str] = field(default_factory=list)
    figures: dict | None = None
    chinese: dict | None = None
    boxes: dict | None = None


def _walk(browser: BrowserContext, site: str, edition: str, width: str) -> dict[str, Visit]:
    """Open every page of an edition once (each page of _pages that is not a
    redirect, and for zh each page of book/zh/_toc.yml) in a window of
    ``width``, and run the checks on it after its load event."""
    _require_edition(edition)
    rels = [p.relative_to(HTML).as_posix() for p in _pages(edition) if _redirect_target(p) is None]
    if edition == "zh":
        rels += [rel for rel in _zh_pages() if rel not in rels]
    full = width == "1400px"
    page = browser.new_page()
    missing: list[str] = []
    page.on("response", lambda r: missing.append(f"{r.status} {r.url}") if r.url.startswith(site) and r.status >= 400 else None)
    page.on("requestfailed", lambda r: missing.append(f"failed {r.url}") if r.url.startswith(site) else None)
    # a script that throws (e.g. "Identifier 'THEBE_JS_URL' has already been declared")
    js_errors: list[str] = []
    page.on("pageerror", lambda e: js_errors.append(str(e)))
    visits = {}
    try:
        page.set_viewport_size(WIDTHS[width])
        for rel in rels:
            missing.clear()
            js_errors.clear()
            response = page.goto(site + rel, wait_until="load")
            visit = visits[rel] = Visit(rel, response is not None and response.ok, response and response.status)
            # first, as the page is when it has loaded (lazy images not yet loaded)
            visit.overflow = page.evaluate(_OVERFLOW_JS)
            if not full:
                continue
            visit.lang = page.evaluate("document.documentElement.lang")
            visit.counterparts = page.eval_on_selector_all(
                ".bd-article .ngx-editions a.ngx-counterpart",
                "links => links.map(a => ({text: a.innerText.trim(), href: a.href,"
                " hreflang: a.getAttribute('hreflang') || ''}))")
            tracebacks = page.evaluate(_TRACEBACKS_JS)
            if edition == "zh":
                visit.chinese = page.evaluate(_CHINESE_TEXT_JS)
                visit.boxes = page.evaluate(_BOXES_JS)
            # these two wait for every image, lazy ones made eager
            broken = page.evaluate(_BROKEN_IMAGES_JS)
            visit.figures = page.evaluate(_FIGURES_JS)
            visit.problems = (
                [f"{rel}: image did not load: {src}" for src in broken]
                + [f"{rel}: a cell not tagged raises-exception shows an error:\n{text}" for text in tracebacks]
                + [f"{rel}: {what}" for what in missing]
                + [f"{rel}: JavaScript error: {error}" for error in js_errors])
    finally:
        page.close()
    return visits


class _Walks:
    """Each walk once, the first time a test asks for it (a walk that failed
    fails every test that asks for it again, without walking again)."""

    def __init__(self, browser: BrowserContext, site: str):
        self.browser, self.site = browser, site
        self.done: dict[tuple[str, str], dict[str, Visit] | BaseException] = {}

    def __call__(self, edition: str, width: str = "1400px") -> dict[str, Visit]:
        _require_edition(edition)
        key = (edition, width)
        if key not in self.done:
            try:
                self.done[key] = _walk(self.browser, self.site, edition, width)
            except Exception as e:
                self.done[key] = e
                raise
        found = self.done[key]
        if isinstance(found, BaseException):
            raise RuntimeError(f"the walk of the {edition} pages at {width} failed: {found!r}")
        return found


@pytest.fixture(scope="module")
def walk(browser: BrowserContext, site: str) -> _Walks:
    """``walk(edition, width)``: the pages of an edition as a window of
    ``width`` ("1400px", "400px") showed them, by their path below _build/html."""
    return _Walks(browser, site)


# The two editions: the English pages, and the Chinese ones in zh/.
EDITIONS = ["en", "zh"]


def _pages(edition: str | None = None) -> list[Path]:
    """Every page of the built book (of one edition, or both) except Sphinx's
    generated index and search pages (of either edition)."""
    skip_dirs = {"_static", "_sources", "_images", "reports"}
    skip_files = {"genindex.html", "search.html", "py-modindex.html"}
    pages = []
    for path in sorted(HTML.rglob("*.html")):
        rel = path.relative_to(HTML)
        in_zh = rel.parts[0] == "zh"
        parts = rel.parts[1:] if in_zh else rel.parts
        if skip_dirs.intersection(parts[:-1]) or "/".join(parts) in skip_files:
            continue
        if edition is not None and in_zh != (edition == "zh"):
            continue
        pages.append(path)
    return pages


def _require_edition(edition: str) -> None:
    if edition == "zh":
        require((HTML / "zh" / "index.html").is_file(),
                "the Chinese edition is not built (make book builds it into _build/html/zh)")


def _redirect_target(path: Path) -> str | None:
    """Where a meta-refresh page (Jupyter Book's index.html) sends the reader, else None."""
    text = path.read_text(errors="replace")
    lowered = text.lower()
    if 'http-equiv="refresh"' not in lowered:
        return None
    start = lowered.index("url=", lowered.index('http-equiv="refresh"')) + 4
    end = min(i for i in (text.find('"', start), text.find("'", start)) if i != -1)
    return text[start:end]


def _toc_files() -> list[str]:
    """The documents _toc.yml lists (root, parts, chapters, sections), without suffix."""
    toc = yaml.safe_load(TOC.read_text())
    files: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            for key in ("root", "file"):
                if key in node:
                    name = str(node[key])
                    for suffix in (".md", ".ipynb", ".rst"):
                        name = name.removesuffix(suffix)
                    files.append(name)
            for key in ("parts", "chapters", "sections", "entries", "subtrees"):
                walk(node.get(key, []))

    walk(toc)
    return files


# JavaScript, in the page: wait until every image of ``images`` has loaded or
# failed (lazy ones made eager), at most 10 s each. Both scripts below use it.
_WAIT_FOR_IMAGES_JS = """
  await Promise.all(images.map((img) => {
    img.loading = 'eager';
    if (img.complete) return null;
    return new Promise((done) => {
      img.addEventListener('load', done, {once: true});
      img.addEventListener('error', done, {once: true});
      setTimeout(done, 10000);
    });
  }));
"""

# Run in the page: wait for every image, then list those that did not load.
_BROKEN_IMAGES_JS = """
async () => {
  const images = Array.from(document.images);
""" + _WAIT_FOR_IMAGES_JS + """  return images
    .filter((img) => !(img.complete && img.naturalWidth > 0))
    .map((img) => img.getAttribute('src') || img.outerHTML.slice(0, 200));
}
"""

# Run in the page: the text of each cell whose output shows a Python error,
# unless the cell carries the raises-exception tag (myst-nb renders a cell's
# tags as classes of its container: class="cell tag_raises-exception ...").
_TRACEBACKS_JS = """
() => {
  const found = new Map();
  for (const out of document.querySelectorAll('.cell_output, .output')) {
    const text = out.textContent || '';
    const isError = out.classList.contains('traceback')
      || out.querySelector('.traceback') !== null
      || text.includes('Traceback (most recent call last)');
    if (!isError) continue;
    const cell = out.closest('.cell') || out;
    if (cell.classList.contains('tag_raises-exception')) continue;
    if (!found.has(cell)) found.set(cell, text.trim().slice(0, 400));
  }
  return Array.from(found.values());
}
"""


@pytest.mark.parametrize("edition", EDITIONS)
def test_every_page(walk, edition: str):
    _require_edition(edition)
    pages = _pages(edition)
    assert pages, f"no pages in {HTML.relative_to(ROOT)}"
    visits = walk(edition)
    problems = []
    for path in pages:
        rel = path.relative_to(HTML).as_posix()
        target = _redirect_target(path)
        if target is not None:
            if not (path.parent / urldefrag(target).url).is_file():
                problems.append(f"{rel}: redirects to {target}, which does not exist")
            continue
        visit = visits[rel]
        assert visit.ok, f"{rel}: {visit.status}"
        problems += visit.problems
    assert not problems, "\n".join(problems)


def test_sidebar_reaches_every_toc_page(page: Page, site: str):
    files = _toc_files()
    root = files[0]
    page.goto(f"{site}{root}.html", wait_until="load")
    hrefs = page.eval_on_selector_all(
        "nav.bd-docs-nav a[href], a.navbar-brand[href]", "links => links.map(a => a.href)"
    )
    reached = {f"{root}.html"}
    broken = []
    for href in hrefs:
        url = urldefrag(href).url
        if not url.startswith(site):
            continue
        rel = urlsplit(url).path.removeprefix(urlsplit(site).path)
        reached.add(rel)
        if not (HTML / rel).is_file():
            broken.append(rel)
    assert not broken, f"the sidebar links to pages that were not built: {broken}"
    unreached = [f for f in files if f"{f}.html" not in reached]
    assert not unreached, f"pages in _toc.yml that the sidebar does not link to: {unreached}"


def _search(page: Page, url: str, what: str):
    """Open a search page (``url`` with its ``?q=``) and return its result
    items once the first is shown; fail saying ``what`` found nothing."""
    page.goto(url, wait_until="load")
    results = page.locator("#search-results ul.search li")
    try:
        results.first.wait_for(state="attached", timeout=TIMEOUT_MS)
    except Exception:
        shown = page.locator("#search-results").inner_text() if page.locator("#search-results").count() else "(no #search-results)"
        pytest.fail(f"{what} found nothing: {shown.strip()[:500]}", pytrace=False)
    return results


def test_search_finds_the_term(page: Page, site: str):
    results = _search(page, f"{site}search.html?q={SEARCH_TERM}",
                      f"searching for {SEARCH_TERM!r}")
    assert results.count() >= 1


# -- figures and wide content (the reader's column) -------------------------------------------

# Run in the page: every image of the article once loaded, with the width it
# was drawn at (naturalWidth), the width it is shown at, its alt text and its
# figure's caption.
_FIGURES_JS = """
async () => {
  const article = document.querySelector('.bd-article');
  if (!article) return {column: 0, figures: []};
  const images = Array.from(article.querySelectorAll('img'));
""" + _WAIT_FOR_IMAGES_JS + """  const style = getComputedStyle(article);
  const column = article.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  const empty = Array.from(article.querySelectorAll('figure'))
    .filter((f) => !f.querySelector('img'))
    .map((f) => (f.id || '') + ' ' + (f.textContent || '').trim().slice(0, 80));
  return {column, empty, figures: images.map((img) => {
    const figure = img.closest('figure');
    const caption = figure ? figure.querySelector('figcaption') : null;
    const number = caption ? caption.querySelector('.caption-number') : null;
    return {
      src: img.getAttribute('src'),
      drawn: img.naturalWidth,
      shown: img.getBoundingClientRect().width,
      alt: img.getAttribute('alt') || '',
      caption: caption ? caption.textContent.trim() : '',
      number: number ? number.textContent.trim() : '',
    };
  })};
}
"""

# Run in the page: what does not fit. The page must not scroll sideways;
# every table, output, figure and image must end inside the article; a code
# or output block, or an image's box, wider than its frame must scroll, and
# say so (the mark of _static/ngxlab-scroll.js, drawn by ngxlab.css).
_OVERFLOW_JS = """
() => {
  const article = document.querySelector('.bd-article');
  const found = [];
  const root = document.documentElement;
  if (root.scrollWidth > window.innerWidth + 1)
    found.push(`the page scrolls sideways: ${root.scrollWidth} px in a ${window.innerWidth} px window`);
  if (!article) return found;
  if (root.getAttribute('data-ngx-scroll-marked') !== '1')
    found.push('ngxlab-scroll.js did not run');
  const right = article.getBoundingClientRect().right - parseFloat(getComputedStyle(article).paddingRight);
  const what = (el) => `${el.tagName.toLowerCase()}.${Array.from(el.classList).join('.')} ` +
    JSON.stringify((el.textContent || el.getAttribute('src') || '').trim().slice(0, 60));
  for (const el of article.querySelectorAll('table, .cell_output, .output, figure, img, div.highlight')) {
    if (el.closest('pre') || (el.parentElement && el.parentElement.closest('.ngx-wide'))) continue;
    const r = el.getBoundingClientRect();
    if (r.width > 0 && r.right > right + 1)
      found.push(`sticks out of the column by ${Math.round(r.right - right)} px: ${what(el)}`);
  }
  for (const pre of article.querySelectorAll('pre, .ngx-wide')) {
    if (pre.scrollWidth <= pre.clientWidth + 1) continue;
    const ox = getComputedStyle(pre).overflowX;
    const box = pre.parentElement;
    const mark = box && box.classList.contains('ngx-scrolls')
      && getComputedStyle(box, '::after').content !== 'none';
    if (!['auto', 'scroll'].includes(ox))
      found.push(`cut off (overflow-x: ${ox}), ${pre.scrollWidth} px in ${pre.clientWidth}: ${what(pre)}`);
    else if (!mark)
      found.push(`scrolls without showing it, ${pre.scrollWidth} px in ${pre.clientWidth}: ${what(pre)}`);
  }
  return found;
}
"""


def _chapter_pages(edition: str) -> list[str]:
    """The built pages of one edition's chapters (their paths below _build/html)."""
    _require_edition(edition)
    return [p.relative_to(HTML).as_posix() for p in _pages(edition) if _redirect_target(p) is None]


@pytest.mark.parametrize("edition", EDITIONS)
def test_figures_shown_at_the_width_drawn_with_caption_and_alt(walk, edition: str):
    """At a 1400 px window no figure is scaled below 90 % of the width it was
    drawn at, every figure has a numbered caption and alt text that is not
    its file name, and every figure shows an image."""
    problems, figures_seen = [], 0
    visits = walk(edition, "1400px")
    for rel in _chapter_pages(edition):
        found = visits[rel].figures
        problems += [f"{rel}: a figure without an image (a Figure shown as text?): {e}"
                     for e in found["empty"]]
        for f in found["figures"]:
            figures_seen += 1
            name = f"{rel}: {f['src']}"
            if f["drawn"] <= 0:
                problems.append(f"{name}: did not load")
                continue
            if f["shown"] < 0.9 * f["drawn"]:
                problems.append(f"{name}: drawn {f['drawn']} px wide, shown at {f['shown']:.0f} px "
                                f"({f['shown'] / f['drawn']:.0%}; the column is {found['column']:.0f} px)")
            if not f["caption"] or not f["number"]:
                problems.append(f"{name}: no numbered caption")
            alt = f["alt"].strip()
            if len(alt) < 20 or alt.lower().endswith((".png", ".svg", ".jpg", ".jpeg")) \
                    or alt.split(".")[0].strip("0123456789abcdef") == "":
                problems.append(f"{name}: no real alt text ({alt!r})")
    assert figures_seen, "no figure in the book"
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("edition", EDITIONS)
@pytest.mark.parametrize("width", list(WIDTHS))
def test_nothing_cut_off(walk, width: str, edition: str):
    """No table, output or figure runs past the column, and a block that is
    wider than its box scrolls visibly, at a laptop's width and a phone's."""
    problems = []
    visits = walk(edition, width)
    for rel in _chapter_pages(edition):
        problems += [f"{rel}: {p}" for p in visits[rel].overflow]
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)


# -- the Chinese edition (_build/html/zh) ------------------------------------------------------

ZH_TOC = ROOT / "book" / "zh" / "_toc.yml"

# What the Chinese search page must find: a Chinese term (one word only with
# the glossary's dictionary) and an nginx function, each on the page named.
ZH_SEARCHES = {"辅助数据": "glossary.html", "ngx_pass_open_channel": "start-workers.html"}

# Run in the page: the article's visible text outside code (pre), outputs
# and the edition link, and its share of Chinese characters among its
# letters. The API page's reference, generated from ngxlab's docstrings, is
# English in both editions: a section that documents Python objects (autodoc's
# dl.py) is left out.
_CHINESE_TEXT_JS = """
() => {
  const article = document.querySelector('.bd-article');
  if (!article) return {text: '', share: 0};
  const copy = article.cloneNode(true);
  for (const dl of copy.querySelectorAll('section > dl.py')) {
    const section = dl.parentElement;
    if (section.isConnected || copy.contains(section)) section.remove();
  }
  for (const el of copy.querySelectorAll('pre, code, .ngx-editions, .cell_output, script, style'))
    el.remove();
  const text = copy.textContent || '';
  const cjk = (text.match(/[\\u3400-\\u4dbf\\u4e00-\\u9fff]/g) || []).length;
  // letters of English words: not names in capitals (SIGHUP, QUIT), nor nginx's and ngxlab's
  const latin = (text.match(/[A-Za-z][A-Za-z'-]*/g) || [])
    .filter((w) => /[a-z]/.test(w) && w !== 'nginx' && w !== 'ngxlab')
    .reduce((n, w) => n + w.length, 0);
  return {text: text.trim().slice(0, 200), share: cjk + latin ? cjk / (cjk + latin) : 0};
}
"""

# Run in the page: which of the page's Chinese characters the browser draws
# as a box. Each distinct character of the article is drawn on a canvas in
# the font of the element it sits in, and so are two code points that no
# font has (U+10FFFD, U+10FFFC), which the browser draws as its "missing
# glyph" box. A character drawn exactly as that box has no glyph on this
# machine. That the two missing code points look alike is checked too: it is
# what makes the comparison find boxes at all.
_BOXES_JS = """
() => {
  const canvas = document.createElement('canvas');
  canvas.width = 48; canvas.height = 48;
  const ctx = canvas.getContext('2d', {willReadFrequently: true});
  const draw = (ch, font) => {
    ctx.clearRect(0, 0, 48, 48);
    ctx.font = font;
    ctx.textBaseline = 'middle';
    ctx.fillStyle = '#000';
    ctx.fillText(ch, 4, 24);
    const data = ctx.getImageData(0, 0, 48, 48).data;
    let h = 0, ink = 0;
    for (let i = 3; i < data.length; i += 4) {
      if (data[i]) { ink++; h = (h * 31 + i * data[i]) | 0; }
    }
    return `${ink}:${h}`;
  };
  const article = document.querySelector('.bd-article') || document.body;
  const fonts = new Map();         // font -> set of characters drawn in it
  const walker = document.createTreeWalker(article, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const chars = node.textContent.match(/[\\u3400-\\u4dbf\\u4e00-\\u9fff\\uff01-\\uff5e\\u3001-\\u3011]/g);
    if (!chars) continue;
    const s = getComputedStyle(node.parentElement);
    const font = `${s.fontStyle} ${s.fontWeight} 32px ${s.fontFamily}`;
    if (!fonts.has(font)) fonts.set(font, new Set());
    for (const ch of chars) fonts.get(font).add(ch);
  }
  const result = {checked: 0, boxes: [], missingAlike: true, fonts: fonts.size};
  for (const [font, chars] of fonts) {
    const box = draw(String.fromCodePoint(0x10FFFD), font);
    if (draw(String.fromCodePoint(0x10FFFC), font) !== box) result.missingAlike = false;
    for (const ch of chars) {
      result.checked++;
      const drawn = draw(ch, font);
      if (drawn === box || drawn.startsWith('0:')) result.boxes.push(ch);
    }
  }
  return result;
}
"""


def _zh_pages() -> list[str]:
    """The Chinese edition's pages, below _build/html (zh/NAME.html)."""
    toc = yaml.safe_load(ZH_TOC.read_text(encoding="utf-8"))
    names = [toc["root"]] + [c["file"] for p in toc["parts"] for c in p["chapters"]]
    return [f"zh/{name}.html" for name in names]


@pytest.fixture(scope="module")
def zh_built() -> None:
    require((HTML / "zh" / "index.html").is_file(),
            "the Chinese edition is not built (make book builds it into _build/html/zh)")


def _clicked_pages() -> list[str]:
    """The Chinese pages whose links test_chinese_pages_are_chinese_and_link_both_ways
    clicks: the first, a chapter in the middle, the last."""
    pages = _zh_pages()
    return list(dict.fromkeys([pages[0], pages[len(pages) // 2], pages[-1]]))


@pytest.mark.timeout(300)
def test_chinese_pages_are_chinese_and_link_both_ways(page: Page, site: str, zh_built: None, walk):
    """Every Chinese page: marked zh-CN, its text mostly Chinese, and its
    "English" link leads to the English page, whose "中文" link leads back.
    On every page the walks of both editions read where the links lead (their
    href, and the language they announce); on three pages (the first, a
    chapter in the middle, the last) the links are clicked, there and back."""
    zh, en = walk("zh"), walk("en")
    base = urlsplit(site).path

    def target(href: str) -> str:
        return urlsplit(href).path.removeprefix(base)

    problems = []
    for rel in _zh_pages():
        visit = zh[rel]
        if not visit.ok:
            problems.append(f"{rel}: {visit.status}")
            continue
        if visit.lang != "zh-CN":
            problems.append(f"{rel}: not marked zh-CN")
        found = visit.chinese
        if found["share"] < 0.5:
            problems.append(f"{rel}: only {found['share']:.0%} of its letters are Chinese: "
                            f"{found['text']!r}")
        links = visit.counterparts
        if len(links) != 1 or links[0]["text"] != "English":
            problems.append(f"{rel}: no single 'English' link at the top")
            continue
        english = "book/" + rel.removeprefix("zh/")
        if target(links[0]["href"]) != english:
            problems.append(f"{rel}: 'English' opens {links[0]['href']}, not {english}")
            continue
        if links[0]["hreflang"] != "en":
            problems.append(f"{rel}: its 'English' link says hreflang={links[0]['hreflang']!r}, not en")
        there = en.get(english)
        if there is None or not there.ok:
            problems.append(f"{rel}: 'English' opens {english}, which is {there and there.status or 'not built'}")
            continue
        if there.lang != "en":
            problems.append(f"{english}: not marked en")
        back = there.counterparts
        if len(back) != 1 or back[0]["text"] != "中文":
            problems.append(f"{english}: no single '中文' link at the top")
            continue
        if target(back[0]["href"]) != rel:
            problems.append(f"{english}: '中文' opens {back[0]['href']}, not {rel}")
        elif back[0]["hreflang"] != "zh-CN":
            problems.append(f"{english}: its '中文' link says hreflang={back[0]['hreflang']!r}, not zh-CN")

    for rel in _clicked_pages():
        page.goto(site + rel, wait_until="load")
        link = page.locator(".bd-article .ngx-editions a.ngx-counterpart")
        if link.count() != 1 or link.inner_text().strip() != "English":
            problems.append(f"{rel}: no single 'English' link at the top")
            continue
        link.click()
        page.wait_for_load_state("load")
        english = "book/" + rel.removeprefix("zh/")
        if urlsplit(page.url).path != urlsplit(site + english).path:
            problems.append(f"{rel}: 'English' opened {page.url}, not {english}")
            continue
        if page.evaluate("document.documentElement.lang") != "en":
            problems.append(f"{english}: not marked en")
        back = page.locator(".bd-article .ngx-editions a.ngx-counterpart")
        if back.count() != 1 or back.inner_text().strip() != "中文":
            problems.append(f"{english}: no single '中文' link at the top")
            continue
        back.click()
        page.wait_for_load_state("load")
        if urlsplit(page.url).path != urlsplit(site + rel).path:
            problems.append(f"{english}: '中文' opened {page.url}, not {rel}")
        elif page.evaluate("document.documentElement.lang") != "zh-CN":
            problems.append(f"{rel}: not marked zh-CN")
    assert not problems, "\n".join(problems)


def test_no_chinese_character_is_drawn_as_a_box(zh_built: None, walk):
    """A machine without a CJK font draws every Chinese character as the
    same box (.ci/run installs fonts-noto-cjk for that)."""
    problems, checked = [], 0
    visits = walk("zh")
    for rel in _zh_pages():
        found = visits[rel].boxes
        assert found["missingAlike"], \
            f"{rel}: two code points without a glyph are drawn differently: the check cannot see boxes"
        checked += found["checked"]
        if found["boxes"]:
            problems.append(f"{rel}: {len(found['boxes'])} of {found['checked']} Chinese characters "
                            f"drawn as a box: {''.join(found['boxes'][:40])}")
    assert checked > 1000, f"only {checked} characters checked"
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("query", list(ZH_SEARCHES))
def test_chinese_search_finds(page: Page, site: str, zh_built: None, query: str):
    results = _search(page, f"{site}zh/search.html?q={query}",
                      f"the Chinese search for {query!r}")
    hrefs = results.locator("a").evaluate_all("links => links.map(a => a.href)")
    pages = {urlsplit(h).path.rsplit("/", 1)[-1] for h in hrefs}
    assert ZH_SEARCHES[query] in pages, f"{query!r} found {sorted(pages)}"
    assert all(urlsplit(h).path.startswith(urlsplit(site).path + "zh/") for h in hrefs), hrefs


def test_chinese_sidebar_reaches_every_page(page: Page, site: str, zh_built: None):
    pages = _zh_pages()
    page.goto(site + pages[0], wait_until="load")
    hrefs = page.eval_on_selector_all("nav.bd-docs-nav a[href]", "links => links.map(a => a.href)")
    reached = {urlsplit(urldefrag(h).url).path.removeprefix(urlsplit(site).path) for h in hrefs}
    unreached = [p for p in pages[1:] if p not in reached]
    assert not unreached, f"pages of book/zh/_toc.yml the Chinese sidebar does not link to: {unreached}"
