"""The Chinese pages read words in Chinese: fast checks on the sources (no build).

A chapter's cell that glues a word or a sentence also glues its Chinese
wording, ``glue(name, value, zh=...)``, which lands as ``name_zh``
(:func:`ngxlab.lab.notebook.glue`). The Chinese page has the same cells, so
the values come from the same run; then:

- every key glued with ``zh=`` is read on the Chinese page as ``name_zh``,
  never as the bare ``name`` (which would put the English words into a
  Chinese sentence); numbers, glued without ``zh=``, are read bare;
- every ``name_zh`` a Chinese page reads is glued with ``zh=`` by that
  page's cells (a missing one would show as an unknown key, or stale).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

BOOK = Path(__file__).resolve().parent.parent / "book"
ZH = BOOK / "zh"

CELL = re.compile(r"^(`{3,})\{code-cell\}[^\n]*\n(?P<body>.*?)^\1$", re.S | re.M)
USE = re.compile(r"\{glue(?::\w+)?\}`([^`:]+)(?::[^`]*)?`")
FIGURE = re.compile(r"^```\{glue:figure\}\s+(\S+)", re.M)


def cells(text: str) -> list[str]:
    """The code of every code cell, without its option block and IPython magics."""
    out = []
    for m in CELL.finditer(text):
        body = m.group("body")
        if body.startswith("---\n"):
            body = body[body.index("\n---\n", 4) + 5:]
        out.append("\n".join("" if line.lstrip().startswith(("%", "!", ":tags:")) else line
                             for line in body.splitlines()))
    return out


def glued(text: str) -> tuple[set[str], set[str]]:
    """(every key the cells glue, the keys glued with zh=), read with ast."""
    every, with_zh = set(), set()
    for code in cells(text):
        for node in ast.walk(ast.parse(code)):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "glue"
                    and node.args and isinstance(node.args[0], ast.Constant)):
                every.add(node.args[0].value)
                if any(k.arg == "zh" for k in node.keywords):
                    with_zh.add(node.args[0].value)
    return every, with_zh


def prose(text: str) -> str:
    """The page without its code cells."""
    return CELL.sub("", text)


def used(text: str) -> set[str]:
    return set(USE.findall(prose(text))) | set(FIGURE.findall(prose(text)))


def zh_pages() -> list[Path]:
    return sorted(p for p in ZH.glob("*.md") if (BOOK / p.name).exists())


@pytest.mark.parametrize("page", zh_pages(), ids=lambda p: p.name)
def test_words_glued_in_chinese_are_read_in_chinese(page: Path):
    text = page.read_text(encoding="utf-8")
    every, with_zh = glued(text)
    keys = used(text)
    bare = sorted(k for k in keys if k in with_zh)
    assert not bare, f"{page.name} reads the English words of {bare}; use NAME_zh"
    unread = sorted(k for k in with_zh if k + "_zh" not in keys)
    assert not unread, f"{page.name} glues {unread} in Chinese but does not read NAME_zh"
    missing = sorted(k for k in keys if k.endswith("_zh") and k[:-3] not in with_zh)
    assert not missing, f"{page.name} reads {missing}, which no cell glues with zh="
    assert keys <= every | {k + "_zh" for k in with_zh}, sorted(keys - every)


def test_the_chinese_pages_have_the_english_cells():
    """The check above reads the Chinese page's cells; they are the English page's."""
    for page in zh_pages():
        assert cells(page.read_text(encoding="utf-8")) == \
            cells((BOOK / page.name).read_text(encoding="utf-8")), page.name


def test_the_check_catches_what_it_should():
    page = '''---
jupytext: {}
---
# 一章

```{code-cell} ipython3
:tags: [remove-cell]
%matplotlib inline
glue("x_read", "it did" if got else "it did not", zh="读到了" if got else "没有读到",
     display=False)
glue("x_n", 3, display=False)
glue("x_word", "same", zh="相同", display=False)
```

读到了吗？{glue:text}`x_read`。一共 {glue:text}`x_n` 条，{glue:text}`y_zh`。
'''
    every, with_zh = glued(page)
    assert every == {"x_read", "x_n", "x_word"} and with_zh == {"x_read", "x_word"}
    keys = used(page)
    assert keys == {"x_read", "x_n", "y_zh"}
    assert [k for k in keys if k in with_zh] == ["x_read"]                     # bare
    assert sorted(k for k in with_zh if k + "_zh" not in keys) == ["x_read", "x_word"]
    assert [k for k in keys if k.endswith("_zh") and k[:-3] not in with_zh] == ["y_zh"]
