"""The Chinese edition as `make book` built it (_build/html/zh): every page
of book/zh/_toc.yml was built, in Chinese, each page links to its English
counterpart and back, its search index finds Chinese words and nginx's
names, and no Chinese page was executed (each took its English page's
outputs from the execution cache). Build the book first (``make book``;
``make test`` does).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from _tools import require

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
ZH_HTML = HTML / "zh"
CACHE = ROOT / "_build" / ".jupyter_cache"

# What the Chinese search must find, and the page each must lead to.
SEARCHES = {"辅助数据": "glossary", "ngx_pass_open_channel": "start-workers"}


def _toc(path: Path, prefix: str) -> list[str]:
    toc = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [toc["root"].removeprefix(prefix)] + [
        c["file"].removeprefix(prefix) for p in toc["parts"] for c in p["chapters"]]


def english_pages() -> list[str]:
    return _toc(ROOT / "_toc.yml", "book/")


def chinese_pages() -> list[str]:
    return _toc(ROOT / "book" / "zh" / "_toc.yml", "")


@pytest.fixture(scope="module")
def built():
    require((ZH_HTML / "index.html").is_file(),
            "the Chinese edition is not built (make book builds it into _build/html/zh)")


def _links(html: str) -> list[str]:
    """The hrefs of the page's link to its other edition (book/_ext/ngxlab_book.py)."""
    return re.findall(r'<a class="ngx-counterpart[^"]*" href="([^"]+)"', html)


def test_every_chinese_page_was_built_in_chinese(built):
    bad = []
    for name in chinese_pages():
        path = ZH_HTML / f"{name}.html"
        if not path.is_file():
            bad.append(f"{name}: not built")
            continue
        html = path.read_text(encoding="utf-8")
        if '<html lang="zh-CN"' not in html:
            bad.append(f"{name}: not marked as Chinese (<html lang=...>)")
        title = re.search(r"<h1>(.*?)</h1>", html, re.S)
        if not title or not re.search(r"[\u4e00-\u9fff]", title.group(1)):
            bad.append(f"{name}: its title is not Chinese")
    assert bad == [], bad
    assert (ZH_HTML / "index.html").read_text().count("intro.html") >= 1


def test_the_english_edition_leaves_book_zh_out(built):
    assert not (HTML / "book" / "zh").exists(), "the English build read book/zh"
    index = (HTML / "searchindex.js").read_text(encoding="utf-8")
    assert "book/zh/" not in index


@pytest.mark.parametrize("edition", ["en", "zh"])
def test_every_page_links_to_its_counterpart(built, edition):
    bad = []
    pages = english_pages() if edition == "en" else chinese_pages()
    for name in pages:
        here = HTML / ("book" if edition == "en" else "zh") / f"{name}.html"
        want = ZH_HTML / f"{name}.html" if edition == "en" else HTML / "book" / f"{name}.html"
        links = _links(here.read_text(encoding="utf-8"))
        if len(links) != 1:
            bad.append(f"{here.relative_to(HTML)}: {len(links)} links to the other edition")
            continue
        target = (here.parent / links[0]).resolve()
        if target != want.resolve() or not target.is_file():
            bad.append(f"{here.relative_to(HTML)}: links to {links[0]}, not {want.relative_to(HTML)}")
    assert bad == [], bad


def _search_index(folder: Path) -> dict:
    text = (folder / "searchindex.js").read_text(encoding="utf-8")
    return json.loads(text[text.index("(") + 1:text.rindex(")")])


@pytest.mark.parametrize("word", list(SEARCHES))
def test_chinese_search_index_finds(built, word):
    """The word as the search page looks it up (stemmed as its JavaScript
    does: a Chinese word as it is, a Latin one lowercased by the Porter
    stemmer, which leaves these two alone) leads to the page that explains it."""
    index = _search_index(ZH_HTML)
    docs = index["docnames"]
    # a word of a page's title is indexed among its title's words only
    found = []
    for table in ("terms", "titleterms"):
        hit = index[table].get(word.lower())
        found += [] if hit is None else hit if isinstance(hit, list) else [hit]
    assert found, f"{word!r} is not a word of the Chinese search index"
    assert SEARCHES[word] in [docs[i] for i in found]


def test_chinese_search_index_holds_the_glossarys_terms_whole(built):
    terms = _search_index(ZH_HTML)["terms"]
    for word in ("辅助数据", "套接字对", "文件描述符", "工作进程"):
        assert word in terms, word


def test_no_chinese_page_was_executed(built):
    """A Chinese page found its English page's notebook in the cache: the
    build stored no notebook of book/zh."""
    from jupyter_cache import get_cache

    records = get_cache(str(CACHE)).list_cache_records()
    uris = [r.uri for r in records]
    assert not [u for u in uris if "/book/zh/" in u], uris
    english = {str((ROOT / "book" / f"{n}.md").resolve()) for n in english_pages()}
    assert english & set(uris)


def test_a_chinese_page_shows_its_english_pages_outputs(built):
    """Outputs are the cache's: the same cell output on both editions' pages."""
    def outputs(path: Path) -> list[str]:
        html = path.read_text(encoding="utf-8")
        return re.findall(r'<div class="cell_output docutils container">(.*?)</div>\s*</div>',
                          html, re.S)
    en = outputs(HTML / "book" / "intro.html")
    zh = outputs(ZH_HTML / "intro.html")
    assert en and zh == en


def test_every_chinese_page_offers_its_notebook_for_download(built):
    """As the English pages do: the notebook as the cache gave it, outputs included."""
    bad = []
    for name in chinese_pages():
        html = (ZH_HTML / f"{name}.html").read_text(encoding="utf-8")
        if f"{name}.ipynb" not in html:
            bad.append(f"{name}: no .ipynb in the download menu")
        elif not (ZH_HTML / "_sources" / f"{name}.ipynb").is_file():
            bad.append(f"{name}: _sources/{name}.ipynb is missing")
    assert bad == [], bad
