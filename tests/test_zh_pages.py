"""The Chinese edition keeps in step with the English one: fast checks on the
pages' sources (no build needed).

Every English page book/NAME.md has its Chinese counterpart book/zh/NAME.md
and the other way round, and the two have

- the same jupytext front matter, byte for byte;
- the same code cells, cell by cell, byte for byte (options and tags
  included): the execution cache is keyed by the code, so the Chinese page
  reuses the English page's outputs and is never executed again;
- the same headings at the same levels in the same order (the text is
  translated), the same MyST labels, and the same {glue} keys, {doc},
  {ref} and {numref} targets and links into nginx's source;

and the Chinese page's prose is Chinese. book/zh/_toc.yml lists the pages of
_toc.yml in the same parts, and the Chinese glossary has the English
glossary's term pairs, entry by entry (book/glossary.md is their one source;
the Chinese search's dictionary is made from it).

When an English page gains or loses a section or a code cell, its Chinese
page must follow: edit the English page, then the Chinese one (copy the code
cells verbatim), then run this file alone:

    .venv/bin/python -m pytest tests/test_zh_pages.py
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import yaml

from _tools import require_module

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
ZH = BOOK / "zh"

_spec = importlib.util.spec_from_file_location("zh_edition", ROOT / "tools" / "zh_edition.py")
zh_edition = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(zh_edition)

CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
LATIN = re.compile(r"[A-Za-z][A-Za-z'-]*")

# Of the letters of a Chinese page's prose (outside code, backticks, links'
# targets, directives' options; see cjk_share), at least this share must be
# Chinese characters. An English page has none; a translated section about
# 0.6 to 0.95.
MIN_CJK_SHARE = 0.5

NAMES = sorted({p.stem for p in BOOK.glob("*.md")} | {p.stem for p in ZH.glob("*.md")})


def front_matter(text: str) -> str:
    m = re.match(r"---\n.*?\n---\n", text, re.S)
    return m.group(0) if m else ""


def blocks(text: str):
    """The page after its front matter as (kind, text) pieces: "code" for a
    code cell (the whole fenced block), "fence" for any other fenced block
    (its first line, and its body as further pieces), "line" for a line of
    prose. Fences are ``` or ~~~ (or ::: for MyST's colon directives)."""
    body = text[len(front_matter(text)):]
    lines = body.splitlines(keepends=True)
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^(`{3,}|~{3,}|:{3,})(\S*)", line)
        if not m:
            yield "line", line
            i += 1
            continue
        fence = m.group(1)
        j = i + 1
        while j < len(lines) and lines[j].rstrip("\n").rstrip() != fence:
            j += 1
        block = "".join(lines[i:j + 1])
        if m.group(2).startswith("{code-cell}"):
            yield "code", block
        else:
            yield "fence", block
        i = j + 1


def code_cells(text: str) -> list[str]:
    return [b for kind, b in blocks(text) if kind == "code"]


def _outside_code(text: str) -> str:
    """The page's markdown outside code cells (other fenced blocks included)."""
    return "".join(b for kind, b in blocks(text) if kind != "code")


def headings(text: str) -> list[int]:
    """The level of each heading outside fenced blocks, in order."""
    return [len(m.group(1)) for kind, b in blocks(text) if kind == "line"
            for m in [re.match(r"^(#{1,6}) ", b)] if m]


def labels(text: str) -> list[str]:
    return [b.strip() for kind, b in blocks(text)
            if kind == "line" and re.match(r"^\([^)\s]+\)=\s*$", b)]


def targets(text: str) -> dict[str, set[str]]:
    """What the page's prose points at: glue keys, {doc}/{ref}/{numref}
    targets (``text <target>`` or a bare target) and nginx's source."""
    md = _outside_code(text)
    found: dict[str, set[str]] = {"glue": set(), "doc": set(), "ref": set(), "numref": set(),
                                  "nginx": set()}
    for role, content in re.findall(r"\{(glue(?::\w+)?|doc|ref|numref)\}`([^`]+)`", md):
        m = re.search(r"<([^<>]+)>\s*$", content)
        target = (m.group(1) if m else content).strip()
        found["glue" if role.startswith("glue") else role].add(target)
    found["nginx"] = set(re.findall(r"https://github\.com/nginx/nginx/[^\s)>\]]+", md))
    return found


def prose(text: str) -> str:
    """The Chinese page's words: outside code cells and other code blocks,
    without inline code, roles' targets, links' addresses, directives'
    options and eval-rst blocks (the API page's autodoc stays English)."""
    kept = []
    for kind, b in blocks(text):
        if kind == "code":
            continue
        if kind == "fence":
            first, _, rest = b.partition("\n")
            name = re.sub(r"^(`{3,}|~{3,}|:{3,})", "", first).strip()
            if not name.startswith("{") or name.startswith(("{eval-rst}", "{code")):
                continue          # a code block, or reStructuredText
            for line in rest.splitlines():
                # not its options, nor its closing fence (whose backticks
                # would pair with the next inline code's)
                if not re.match(r"^\s*:[\w-]+:|^(`{3,}|~{3,}|:{3,})\s*$", line):
                    kept.append(line)
            continue
        kept.append(b)
    out = "\n".join(kept)
    out = re.sub(r"\{[\w:-]+\}`[^`]*`", " ", out)     # roles
    out = re.sub(r"`[^`]*`", " ", out)                  # inline code
    out = re.sub(r"\]\([^)]*\)", "]", out)              # links' addresses
    out = re.sub(r"https?://\S+", " ", out)
    return out


# Latin words that a Chinese sentence keeps: the two programs' names.
KEPT = {"nginx", "ngxlab"}


def cjk_share(text: str) -> float:
    """Chinese characters / (Chinese characters + letters of English words)
    in the prose. Names in capitals (SIGHUP, QUIT, EAGAIN, IPC) and nginx's
    and ngxlab's names are not English prose and do not count."""
    p = prose(text)
    cjk = len(CJK.findall(p))
    latin = sum(len(w) for w in LATIN.findall(p) if re.search(r"[a-z]", w) and w not in KEPT)
    return cjk / (cjk + latin) if cjk + latin else 0.0


def _pair(name: str) -> tuple[str, str]:
    en, zh = BOOK / f"{name}.md", ZH / f"{name}.md"
    missing = [str(p.relative_to(ROOT)) for p in (en, zh) if not p.is_file()]
    if missing:
        pytest.fail(f"{name}: {', '.join(missing)} is missing", pytrace=False)
    return en.read_text(encoding="utf-8"), zh.read_text(encoding="utf-8")


def test_the_checks_see_the_pages():
    assert len(list(BOOK.glob("*.md"))) >= 26
    text = (BOOK / "spawn.md").read_text(encoding="utf-8")
    assert len(code_cells(text)) >= 5 and headings(text)[0] == 1
    assert cjk_share(text) == 0.0


@pytest.mark.parametrize("name", NAMES)
def test_every_page_has_its_counterpart(name):
    missing = [str(p.relative_to(ROOT)) for p in (BOOK / f"{name}.md", ZH / f"{name}.md")
               if not p.is_file()]
    assert not missing, f"{name}: no {' and no '.join(missing)}"


@pytest.mark.parametrize("name", NAMES)
def test_same_front_matter_and_code_cells(name):
    en, zh = _pair(name)
    assert front_matter(zh) == front_matter(en), f"{name}: the front matter differs"
    ce, cz = code_cells(en), code_cells(zh)
    for i, (a, b) in enumerate(zip(ce, cz), 1):
        assert a == b, f"{name}: code cell {i} differs (copy it from book/{name}.md):\n" \
                       f"--- English\n{a}--- Chinese\n{b}"
    assert len(ce) == len(cz), f"{name}: {len(ce)} code cells in English, {len(cz)} in Chinese"


@pytest.mark.parametrize("name", NAMES)
def test_same_headings_and_labels(name):
    en, zh = _pair(name)
    assert headings(zh) == headings(en), \
        f"{name}: heading levels differ\n English {headings(en)}\n Chinese {headings(zh)}"
    assert labels(zh) == labels(en), f"{name}: MyST labels differ"


@pytest.mark.parametrize("name", NAMES)
def test_same_glue_keys_references_and_nginx_links(name):
    en, zh = _pair(name)
    te, tz = targets(en), targets(zh)
    # a word glued in Chinese too is read as name_zh (tests/test_zh_glue.py
    # checks that each such name is glued with zh=)
    tz["glue"] = {k.removesuffix("_zh") for k in tz["glue"]}
    for kind in te:
        assert tz[kind] == te[kind], \
            f"{name}: {kind} differs: only in English {sorted(te[kind] - tz[kind])}, " \
            f"only in Chinese {sorted(tz[kind] - te[kind])}"


@pytest.mark.parametrize("name", NAMES)
def test_chinese_page_is_in_chinese(name):
    _en, zh = _pair(name)
    share = cjk_share(zh)
    assert share >= MIN_CJK_SHARE, \
        f"{name}: only {share:.0%} of the prose's letters are Chinese (at least {MIN_CJK_SHARE:.0%})"


def _toc_parts(path: Path, prefix: str):
    toc = yaml.safe_load(path.read_text(encoding="utf-8"))
    root = toc["root"].removeprefix(prefix)
    parts = [(bool(p.get("numbered")), [c["file"].removeprefix(prefix) for c in p["chapters"]])
             for p in toc["parts"]]
    captions = [p["caption"] for p in toc["parts"]]
    return toc["format"], root, parts, captions


def test_chinese_toc_lists_the_same_pages_in_the_same_parts():
    fe, re_, pe, ce = _toc_parts(ROOT / "_toc.yml", "book/")
    fz, rz, pz, cz = _toc_parts(ZH / "_toc.yml", "")
    assert (fz, rz, pz) == (fe, re_, pe)
    assert all(CJK.search(c) for c in cz), f"captions not in Chinese: {cz}"


def test_every_chinese_page_is_in_the_chinese_toc():
    _f, root, parts, _c = _toc_parts(ZH / "_toc.yml", "")
    listed = {root, *(f for _n, files in parts for f in files)}
    assert {p.stem for p in ZH.glob("*.md")} - listed == set()


def test_glossary_pairs_are_the_same_in_both_editions():
    en = zh_edition.glossary_entries(BOOK / "glossary.md")
    assert len(en) >= 30
    zh_path = ZH / "glossary.md"
    if not zh_path.is_file():
        pytest.fail("book/zh/glossary.md is missing", pytrace=False)
    zh = zh_edition.glossary_entries(zh_path)
    assert [sorted(e) for e in zh] == [sorted(e) for e in en], \
        "book/zh/glossary.md must list the terms of book/glossary.md, entry by entry"
    for english, chinese in zh_edition.term_pairs(BOOK / "glossary.md"):
        assert english and chinese, f"an entry without both languages: {english or chinese}"


def test_the_search_dictionary_keeps_the_glossarys_terms_whole():
    """jieba alone cuts 辅助数据 in two, so the Chinese search would not find
    it; with the dictionary made from the glossary it is one word."""
    jieba = require_module("jieba")
    import logging

    jieba.setLogLevel(logging.WARNING)
    words = zh_edition.jieba_dictionary().split()
    assert "辅助数据" in words and "套接字对" in words and "文件描述符" in words
    plain = jieba.Tokenizer()
    assert "辅助数据" not in plain.lcut_for_search("辅助数据")
    tokenizer = jieba.Tokenizer()
    for w in words:
        tokenizer.add_word(w)
    for w in words:
        assert w in tokenizer.lcut_for_search(f"这是{w}。"), w


def test_the_chinese_config_changes_only_what_an_edition_must(tmp_path):
    en = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    zh = zh_edition.zh_config(tmp_path)
    assert "book/zh" in en["exclude_patterns"], "the English build would read book/zh"
    assert zh["sphinx"]["config"]["language"] == "zh_CN"
    assert zh["sphinx"]["config"]["html_search_options"]["dict"] == str(tmp_path / "jieba-dict.txt")
    assert zh["execute"]["cache"] == str(ROOT / "_build" / ".jupyter_cache")
    zh["execute"].pop("cache")
    assert zh.pop("execute") == en.pop("execute")
    assert zh.pop("title") != en.pop("title")
    zs, es = zh.pop("sphinx"), en.pop("sphinx")
    assert zs.pop("local_extensions").keys() == es.pop("local_extensions").keys()
    for key in ("language", "html_search_options", "ngxlab_edition", "html_static_path",
                "html_css_files", "html_js_files"):
        zs["config"].pop(key)
    es["config"].pop("include_patterns")
    assert zs == es
    assert zh == en
