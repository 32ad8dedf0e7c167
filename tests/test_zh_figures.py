"""The Chinese edition's figure captions and alt text (no build needed).

A figure drawn by a code cell takes its caption and alt text from the cell's
options, which a Chinese page shares byte for byte with its English page. The
Chinese page gives its own in a ``{figure-text}`` block right after the cell
(book/_ext/ngxlab_zh.py). These tests check, page by page, that every figure
of an English page has exactly one block on its Chinese counterpart, that
every block names a figure of that page, that it is Chinese and complete,
and that it states no number the English caption does not.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
ZH = BOOK / "zh"

CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
CELL = re.compile(r"^(`{3,})\{code-cell\}[^\n]*\n(.*?)^\1[ \t]*$", re.M | re.S)
BLOCK = re.compile(r"^(`{3,})\{figure-text\}[ \t]*(\S*)[ \t]*\n(.*?)^\1[ \t]*$", re.M | re.S)


def figures(text: str) -> list[dict]:
    """The figures the page's code cells draw: name, caption, alt, and where
    the cell ends, in order."""
    found = []
    for m in CELL.finditer(text):
        head = re.match(r"---\n(.*?)\n---\n", m.group(2), re.S)
        if not head:
            continue
        mystnb = (yaml.safe_load(head.group(1)) or {}).get("mystnb") or {}
        figure = mystnb.get("figure") or {}
        if figure.get("name"):
            found.append({"name": figure["name"], "caption": str(figure.get("caption", "")),
                          "alt": str((mystnb.get("image") or {}).get("alt", "")),
                          "end": m.end()})
    return found


def blocks(text: str) -> list[dict]:
    """The page's figure-text blocks outside code cells: name, alt, caption,
    where the block starts."""
    cells = [(m.start(), m.end()) for m in CELL.finditer(text)]
    found = []
    for m in BLOCK.finditer(text):
        if any(a <= m.start() < b for a, b in cells):
            continue
        alt, lines = "", []
        for line in m.group(3).splitlines():
            if line.startswith(":alt:"):
                alt = line[len(":alt:"):].strip()
            else:
                lines.append(line)
        found.append({"name": m.group(2), "alt": alt, "caption": "\n".join(lines).strip(),
                      "start": m.start()})
    return found


def pages_with_counterpart() -> list[str]:
    return sorted(p.stem for p in BOOK.glob("*.md") if (ZH / p.name).is_file())


def numbers(text: str) -> set[str]:
    return set(re.findall(r"\d+(?:[.,]\d+)*", text))


def test_there_are_pages_and_figures_to_check():
    """Guards the tests below against checking nothing."""
    names = pages_with_counterpart()
    assert len(names) >= 20
    assert sum(len(figures((BOOK / f"{n}.md").read_text(encoding="utf-8"))) for n in names) >= 20


def test_english_pages_give_no_figure_text():
    """An English page's caption and alt text are its cells' options."""
    bad = [p.name for p in BOOK.glob("*.md") if BLOCK.search(p.read_text(encoding="utf-8"))]
    assert bad == []


@pytest.mark.parametrize("name", pages_with_counterpart())
def test_every_figure_has_one_chinese_text_right_after_its_cell(name):
    en = figures((BOOK / f"{name}.md").read_text(encoding="utf-8"))
    zh_text = (ZH / f"{name}.md").read_text(encoding="utf-8")
    zh_figures = {f["name"]: f for f in figures(zh_text)}
    given = blocks(zh_text)
    bad = []
    for f in en:
        mine = [b for b in given if b["name"] == f["name"]]
        if len(mine) != 1:
            bad.append(f"{f['name']}: {len(mine)} figure-text blocks (one wanted)")
    names = {f["name"] for f in en}
    for b in given:
        if b["name"] not in names:
            bad.append(f"figure-text {b['name']!r}: no figure of that name on the page")
            continue
        cell_end = zh_figures[b["name"]]["end"] if b["name"] in zh_figures else None
        between = zh_text[cell_end:b["start"]] if cell_end is not None else "?"
        if between.strip():
            bad.append(f"{b['name']}: the block does not follow the figure's code cell")
    assert bad == [], bad


@pytest.mark.parametrize("name", pages_with_counterpart())
def test_figure_texts_are_chinese_and_state_only_the_english_numbers(name):
    en = {f["name"]: f for f in figures((BOOK / f"{name}.md").read_text(encoding="utf-8"))}
    bad = []
    for b in blocks((ZH / f"{name}.md").read_text(encoding="utf-8")):
        if b["name"] not in en:
            continue                      # reported by the test above
        for what in ("caption", "alt"):
            zh_value, en_value = b[what], en[b["name"]][what]
            if not CJK.search(zh_value):
                bad.append(f"{b['name']}: no Chinese {what}")
            if "\n\n" in zh_value:
                bad.append(f"{b['name']}: the {what} must be one paragraph")
            extra = numbers(zh_value) - numbers(en_value)
            if extra:
                bad.append(f"{b['name']}: the {what} states {sorted(extra)}, "
                           "which the English one does not")
    assert bad == [], bad
