"""The book never drifts from the code: fast checks on the chapters' sources.

- every page in book/ is in _toc.yml, and every toc entry has a page;
- every chapter is a MyST notebook with a jupytext header and no outputs;
- ngxlab code is shown by a ``show_source`` cell (read from the library when
  the chapter runs), never by ``literalinclude``, whose options JupyterLab
  shows as text;
- every name a chapter shows exists (a module and a function or class in it);
- every public ``ngx_*`` mirror is shown by some chapter;
- every permalink to nginx is pinned to the release the mirrors follow, and
  one that starts at a mirrored definition ends where that definition ends;
- no page names a machine path.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
from pathlib import Path

import pytest

from ngxlab.lab.notebook import source_calls, show_source
from ngxlab.sources import NGINX_SOURCES, NGINX_TAG, mirrors

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"

INCLUDE = re.compile(r"^(?:`{3,}|:{3,})\{literalinclude\}", re.M)
PERMALINK = re.compile(
    r"https://github\.com/nginx/nginx/blob/(?P<ref>[^/\s]+)/(?P<path>[^#\s)]+)"
    r"(?:#L(?P<first>\d+)(?:-L(?P<last>\d+))?)?")


def toc_files():
    text = (ROOT / "_toc.yml").read_text()
    files = re.findall(r"^\s*(?:-\s*)?(?:file|root):\s*(\S+)", text, re.M)
    return [f for f in files]


def chapters():
    return sorted(BOOK.glob("*.md"))


def includes(page: Path):
    """(file of the module, dotted name in it) of everything the page shows."""
    for name, _ in source_calls(page.read_text()):
        parts = name.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            path = ROOT.joinpath(*parts[:cut]).with_suffix(".py")
            if path.is_file():
                yield path, ".".join(parts[cut:])
                break
        else:
            yield ROOT.joinpath(*parts[:-1]).with_suffix(".py"), parts[-1]


def defined(path: Path, dotted: str) -> bool:
    tree = ast.parse(path.read_text())
    scope = tree.body
    for part in dotted.split("."):
        found = None
        for node in scope:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                 ast.ClassDef)) and node.name == part:
                found = node
                break
        if found is None:
            return False
        scope = getattr(found, "body", [])
    return True


def test_every_page_is_in_the_toc_and_every_entry_has_a_page():
    listed = {f.removesuffix(".md") for f in toc_files()}
    pages = {f"book/{p.stem}" for p in chapters()}
    assert pages - listed == set(), "pages missing from _toc.yml"
    assert listed - pages == set(), "_toc.yml entries without a page"


@pytest.mark.parametrize("page", chapters(), ids=lambda p: p.stem)
def test_chapter_is_a_myst_notebook_without_outputs(page):
    text = page.read_text()
    assert text.startswith("---\njupytext:"), "missing jupytext header"
    assert "format_name: myst" in text.split("---", 2)[1]
    assert "kernelspec:" in text.split("---", 2)[1]
    assert '"outputs"' not in text and "output_type" not in text


def test_no_notebook_with_outputs_is_tracked():
    tracked = subprocess.run(["git", "ls-files", "*.ipynb"], cwd=ROOT,
                             capture_output=True, text=True).stdout.split()
    for name in tracked:
        nb = json.loads((ROOT / name).read_text())
        for cell in nb.get("cells", []):
            assert not cell.get("outputs"), f"{name} is committed with outputs"


@pytest.mark.parametrize("page", chapters(), ids=lambda p: p.stem)
def test_shown_code_exists(page):
    for path, obj in includes(page):
        assert path.is_file(), f"{page.name}: {path.relative_to(ROOT)} does not exist"
        assert defined(path, obj), \
            f"{page.name}: {path.relative_to(ROOT)} has no {obj} (renamed or removed?)"
    for name, kwargs in source_calls(page.read_text()):
        assert show_source(name, **kwargs).code.strip(), f"{page.name}: {name} shows nothing"


@pytest.mark.parametrize("page", chapters(), ids=lambda p: p.stem)
def test_code_is_shown_from_the_library_not_included(page):
    assert not INCLUDE.search(page.read_text()), \
        f"{page.name}: a literalinclude (JupyterLab shows its options as text); " \
        "use a show_source cell tagged remove-input"


def test_the_sync_checks_see_the_chapters_code():
    # the reader of show_source calls finds them all, with their options
    text = (BOOK / "reload.md").read_text()
    calls = source_calls(text)
    assert ("ngxlab.process_cycle.ngx_master_process_cycle",
            {"start_at": "if ngx_reconfigure:", "end_before": "if ngx_restart:"}) in calls
    assert sum(len(source_calls(p.read_text())) for p in chapters()) >= 80


def test_every_mirror_is_in_a_chapter():
    shown = set()
    for page in chapters():
        for path, obj in includes(page):
            shown.add(obj.split(".")[0])
    missing = sorted(set(mirrors()) - shown)
    assert not missing, f"mirrors no chapter shows: {missing}"


def test_every_mirror_has_its_nginx_source():
    assert set(mirrors()) == set(NGINX_SOURCES)


@pytest.mark.parametrize("page", chapters(), ids=lambda p: p.stem)
def test_permalinks_are_pinned_and_point_at_the_mirrored_lines(page):
    starts = {(path, first): last
              for path, first, last, _ in NGINX_SOURCES.values()}
    for m in PERMALINK.finditer(page.read_text()):
        assert m.group("ref") == NGINX_TAG, \
            f"{page.name}: {m.group(0)} is not pinned to {NGINX_TAG}"
        if m.group("first") and m.group("last"):
            key = (m.group("path"), int(m.group("first")))
            if key in starts:
                assert int(m.group("last")) == starts[key], \
                    f"{page.name}: {m.group(0)} ends at the wrong line " \
                    f"(the definition ends at L{starts[key]})"


def test_sources_ranges_are_sane():
    for name, (path, first, last, _) in NGINX_SOURCES.items():
        assert path.startswith("src/") and 0 < first <= last, name


@pytest.mark.parametrize("path", sorted(
    [*BOOK.glob("*.md"), *BOOK.glob("zh/*.md"), *(ROOT / "ngxlab").rglob("*.py"),
     ROOT / "README.md"]),
    ids=lambda p: str(p.relative_to(ROOT)))
def test_no_machine_paths(path):
    text = path.read_text()
    for bad in ("/work/", "/root/", "shared/reference", "shared/seed",
                "STYLE.md"):
        assert bad not in text, f"{path.name} mentions {bad!r}"


def numbered_chapters():
    """The pages of the toc's numbered parts: the chapters that run something."""
    text = (ROOT / "_toc.yml").read_text()
    found = []
    for part in re.split(r"^\s*- caption:", text, flags=re.M)[1:]:
        if re.search(r"numbered:\s*true", part):
            found += re.findall(r"file:\s*book/(\S+)", part)
    return found


def test_the_toc_has_numbered_chapters():
    assert len(numbered_chapters()) >= 20


@pytest.mark.parametrize("name", numbered_chapters())
def test_chapter_says_what_it_needs_at_its_top(name):
    text = (BOOK / f"{name}.md").read_text()
    body = text.split("---", 2)[2]
    title = re.search(r"^# .*$", body, re.M)
    assert title, f"{name}: no title"
    top = body[title.end():].lstrip()
    assert top.startswith("```{admonition} Before you run it"), \
        f"{name}: the first thing after the title is not what the chapter needs"
    note = top.split("\n```", 1)[0]
    assert "**Needs:**" in note and "**Runs in**" in note, f"{name}: {note}"
    if re.search(r"nginx|strace|gcc", note.split("**Runs in**")[0]):
        assert re.search(r"[Ww]ithout", note), \
            f"{name}: uses a tool but does not say what is shown without it"


@pytest.mark.parametrize("name", numbered_chapters())
def test_chapter_has_a_folded_solution_that_the_build_runs(name):
    text = (BOOK / f"{name}.md").read_text()
    exercises = text.split("\n## Exercises", 1)
    assert len(exercises) == 2, f"{name}: no Exercises section"
    after = exercises[1]
    m = re.search(r"^(`{3,}|:{3,})\{dropdown\} Hint and solution to exercise (\d+)\n(.*?)^\1\s*$",
                  after, re.M | re.S)
    assert m, f"{name}: no folded hint and solution after the exercises"
    assert "**Hint.**" in m.group(3) and "**Solution.**" in m.group(3), name
    assert re.search(rf"^{m.group(2)}\. ", after, re.M), \
        f"{name}: the solution is to exercise {m.group(2)}, which the list does not have"
    cell = re.search(r"^```\{code-cell\}[^\n]*\n:tags: \[([^\]]*)\]\n(.*?)^```\s*$",
                     after[m.end():], re.M | re.S)
    assert cell and "hide-cell" in cell.group(1), \
        f"{name}: the solution's code is not a folded (hide-cell) code cell"
    assert "assert " in cell.group(2), f"{name}: the solution checks nothing it claims"


@pytest.mark.parametrize("page", chapters(), ids=lambda p: p.stem)
def test_chapters_glue_through_ngxlab(page):
    """ngxlab.lab.notebook.glue also shows a value under its name when the
    chapter runs as a notebook (JupyterLab shows only the name in the prose);
    myst_nb's own glue would leave the reader there with a bare name."""
    assert not re.search(r"from myst_nb import[^\n]*\bglue\b|myst_nb\.glue\(", page.read_text()), \
        f"{page.name}: glue from myst_nb; use `from ngxlab.lab.notebook import glue`"
