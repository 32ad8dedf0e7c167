"""The Chinese edition's figures as built: every figure of a Chinese page has
a Chinese caption and Chinese alt text on every image (the code cells' own
options are English; book/_ext/ngxlab_zh.py puts the page's figure-text in
their place). Build the book first (``make book``; ``make test`` does).

A caption's glued values (``{glue:text}``, shown as ``pasted-text``) come
from the cells, which both editions share, and its inline code stays as it
is; what the page itself writes around them must be Chinese.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest

from _tools import require
from test_zh_figures import BOOK, CJK, ZH, figures, pages_with_counterpart

ROOT = Path(__file__).resolve().parent.parent
# Where the build puts the Chinese edition's pages (<name>.html for book/zh/<name>.md).
ZH_HTML = ROOT / "_build" / "html" / "zh"

FIGURE = re.compile(r'<figure\b[^>]*\bid="([^"]+)"[^>]*>(.*?)</figure>', re.S)
CAPTION = re.compile(r"<figcaption>(.*?)</figcaption>", re.S)
IMG_ALT = re.compile(r'<img\b[^>]*?\balt="([^"]*)"', re.S)
# Five or more Latin words in a row: a sentence left in English.
ENGLISH_RUN = re.compile(r"(?:\b[A-Za-z][A-Za-z'’-]*[ ,;:]+){4,}[A-Za-z]")


def _outside_values(caption_html: str) -> str:
    """The caption's own words: without its number, glued values, code and tags."""
    text = re.sub(r'<span class="caption-number">.*?</span>', "", caption_html, flags=re.S)
    text = re.sub(r'<span class="pasted-text">.*?</span>', " ", text, flags=re.S)
    text = re.sub(r"<code\b.*?</code>", " ", text, flags=re.S)
    text = re.sub(r'<a class="headerlink".*?</a>', "", text, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", text)).strip()


def figure_names(name: str) -> list[str]:
    """The names of the English page's figures: drawn by a cell, or given by a
    {figure} / {glue:figure} directive."""
    text = (BOOK / f"{name}.md").read_text(encoding="utf-8")
    names = [f["name"] for f in figures(text)]
    names += re.findall(r"^```\{(?:glue:)?figure\}[^\n]*\n(?::[^\n]*\n)*?:name:\s*(\S+)", text, re.M)
    return names


@pytest.fixture(scope="module")
def built():
    require(ZH_HTML.is_dir() and any(ZH_HTML.glob("*.html")),
            f"the Chinese edition is not built ({ZH_HTML.relative_to(ROOT)}; make book builds it)")


def test_figures_to_check_exist():
    """Guards the test below against checking nothing."""
    assert sum(len(figure_names(n)) for n in pages_with_counterpart()) >= 20


@pytest.mark.parametrize("name", pages_with_counterpart())
def test_every_figure_is_captioned_and_described_in_chinese(built, name):
    page = ZH_HTML / f"{name}.html"
    assert page.is_file(), f"{page.relative_to(ROOT)} was not built"
    found = {fid: body for fid, body in FIGURE.findall(page.read_text(encoding="utf-8"))}
    bad = []
    for fig in figure_names(name):
        if fig not in found:
            bad.append(f"{fig}: not in the built page")
            continue
        body = found[fig]
        caption = CAPTION.search(body)
        own = _outside_values(caption.group(1)) if caption else ""
        if not CJK.search(own):
            bad.append(f"{fig}: caption not in Chinese: {own[:80]!r}")
        elif ENGLISH_RUN.search(own):
            bad.append(f"{fig}: English left in the caption: {ENGLISH_RUN.search(own).group(0)!r}")
        alts = [html.unescape(a) for a in IMG_ALT.findall(body)]
        if not alts:
            bad.append(f"{fig}: no image with alt text")
        for alt in alts:
            if not CJK.search(alt):
                bad.append(f"{fig}: alt text not in Chinese: {alt[:80]!r}")
    assert bad == [], bad
