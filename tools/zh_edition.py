"""The Chinese edition's build configuration, made from the English one.

``make book`` builds the English edition from the repository root (pages
book/*.md, configuration _config.yml, contents _toc.yml) and then the
Chinese edition from book/zh (pages book/zh/*.md, contents book/zh/_toc.yml)
with the configuration this script writes: _config.yml with only what a
second edition must change (title, language, where its pages, extensions,
static files and the shared execution cache are, its search dictionary).
Nothing else is written twice, so the two editions cannot be configured
apart.

The glossary (book/glossary.md) is the one source of the book's term pairs:
each entry of its ``{glossary}`` directive names a term in English and in
Chinese. The Chinese search splits text into words with jieba, which knows
none of nginx's terms (it cuts 辅助数据 into 辅助 / 数据, so a search for
辅助数据 would find nothing); the user dictionary written here from the
glossary's Chinese terms keeps each one a word.

    python tools/zh_edition.py BUILD_DIR

writes BUILD_DIR/_config.yml and BUILD_DIR/jieba-dict.txt, and prints the
config's path. A changed dictionary removes BUILD_DIR's doctrees, so that
every Chinese page is indexed again with it.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
ZH = BOOK / "zh"

# The Chinese edition's own values; every other setting is _config.yml's.
TITLE = "ngxlab：nginx 的进程如何通信"
LANGUAGE = "zh_CN"

CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def glossary_entries(path: Path = BOOK / "glossary.md") -> list[list[str]]:
    """The term lines of each entry of the page's ``{glossary}`` directive, in order."""
    text = path.read_text(encoding="utf-8")
    m = re.search(r"^(`{3,})\{glossary\}[^\n]*\n(.*?)^\1\s*$", text, re.M | re.S)
    if not m:
        raise ValueError(f"{path}: no {{glossary}} directive")
    entries: list[list[str]] = []
    terms: list[str] = []
    for line in m.group(2).splitlines():
        if not line.strip() or line.lstrip().startswith(":"):
            if terms:
                entries.append(terms)
                terms = []
            continue
        if line[0].isspace():          # the definition
            if terms:
                entries.append(terms)
                terms = []
            continue
        terms.append(line.strip())
    if terms:
        entries.append(terms)
    return entries


def term_pairs(path: Path = BOOK / "glossary.md") -> list[tuple[list[str], list[str]]]:
    """(English terms, Chinese terms) of each glossary entry: a term with a
    CJK character in it is Chinese."""
    pairs = []
    for terms in glossary_entries(path):
        zh = [t for t in terms if CJK.search(t)]
        en = [t for t in terms if not CJK.search(t)]
        pairs.append((en, zh))
    return pairs


def jieba_dictionary(path: Path = BOOK / "glossary.md") -> str:
    """jieba's user dictionary: one Chinese term a line (jieba chooses the
    frequency that keeps it one word). A term with a space (``pid 文件``) is
    left out: jieba never joins across a space, and its parts are words."""
    words = []
    for _en, zh in term_pairs(path):
        for term in zh:
            if " " not in term and term not in words:
                words.append(term)
    return "".join(f"{w}\n" for w in words)


def zh_config(build: Path) -> dict:
    """_config.yml as the Chinese edition uses it."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    config["title"] = TITLE
    # The shared cache: book/zh's code cells are book's, cell by cell, so
    # every Chinese page finds its English page's outputs there.
    config.setdefault("execute", {})["cache"] = str(ROOT / "_build" / ".jupyter_cache")
    sphinx = config.setdefault("sphinx", {})
    sphinx["local_extensions"] = {name: str((ROOT / where).resolve())
                                  for name, where in sphinx.get("local_extensions", {}).items()}
    sc = sphinx.setdefault("config", {})
    # The source root is book/zh itself: all of it is the edition's pages.
    sc.pop("include_patterns", None)
    sc["language"] = LANGUAGE
    sc["html_search_options"] = {"dict": str(build / "jieba-dict.txt")}
    sc["ngxlab_edition"] = "zh"
    # Jupyter Book adds the source root's _static on its own; here it is the
    # repository's, so it is named with each of its style sheets and scripts.
    static = ROOT / "_static"
    sc["html_static_path"] = [str(static)]
    sc["html_css_files"] = sorted(p.relative_to(static).as_posix() for p in static.rglob("*.css"))
    sc["html_js_files"] = sorted(p.relative_to(static).as_posix() for p in static.rglob("*.js"))
    return config


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.split("\n\n")[-2], file=sys.stderr)
        return 2
    build = Path(argv[0]).resolve()
    build.mkdir(parents=True, exist_ok=True)
    words = jieba_dictionary()
    dict_path = build / "jieba-dict.txt"
    if not dict_path.is_file() or dict_path.read_text(encoding="utf-8") != words:
        dict_path.write_text(words, encoding="utf-8")
        shutil.rmtree(build / "_build" / ".doctrees", ignore_errors=True)
    config_path = build / "_config.yml"
    text = ("# Written by tools/zh_edition.py from _config.yml: edit that file, not this one.\n"
            + yaml.safe_dump(zh_config(build), allow_unicode=True, sort_keys=False))
    if not config_path.is_file() or config_path.read_text(encoding="utf-8") != text:
        config_path.write_text(text, encoding="utf-8")
    print(config_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
