"""The chapters run as notebooks outside the book build, as a reader runs them.

Each chapter is converted with jupytext (MyST Markdown -> .ipynb) and executed
by nbclient in its own kernel, in a child process under a timeout (the kernel,
its ZMQ sockets and whatever the chapter forks stay out of the test process).
Then:

- the mirrors a chapter shows are in its outputs: every ``show_source`` cell's
  output holds the function's source as the library has it now, the same text
  the book shows, as a fenced block and as coloured HTML (which JupyterLab
  shows); and every glued value is shown under its name (the prose, opened
  in JupyterLab, shows only the name);
- with nginx hidden (``NGXLAB_NGINX=`` set empty and the directories that hold
  an ``nginx`` left off ``PATH``), a chapter that runs nginx still executes
  without an error, and its prose, with the glued values put in, reads as
  whole sentences: no "nginx not available leaks ..." fragment.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ngxlab.lab.notebook import show_source, source_calls

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"

RUN = r"""
import sys, jupytext, nbformat
from nbclient import NotebookClient
src, out, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3])
nb = jupytext.read(src, fmt="md:myst")
client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                        resources={"metadata": {"path": sys.argv[4]}})
client.execute()
nbformat.write(nb, out)
"""


def execute(chapter: str, tmp_path: Path, env: dict | None = None, timeout: int = 100) -> dict:
    """Execute book/CHAPTER.md as a notebook; return the executed notebook (JSON)."""
    out = tmp_path / f"{chapter}.ipynb"
    done = subprocess.run(
        [sys.executable, "-c", RUN, str(BOOK / f"{chapter}.md"), str(out), str(timeout), str(BOOK)],
        capture_output=True, text=True, timeout=timeout + 20, env=env, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"{chapter} did not execute:\n{done.stderr[-3000:]}"
    return json.loads(out.read_text())


def errors(nb: dict) -> list[str]:
    return [f"{o.get('ename')}: {o.get('evalue')}" for cell in nb["cells"]
            for o in cell.get("outputs", []) if o.get("output_type") == "error"]


def text(data) -> str:
    return "".join(data) if isinstance(data, list) else str(data)


@pytest.mark.slow
@pytest.mark.timeout(150)
@pytest.mark.parametrize("chapter", ["spawn", "channel-handler", "event-loop"])
def test_a_chapter_run_as_a_notebook_shows_its_mirrors(chapter, tmp_path):
    shown = source_calls((BOOK / f"{chapter}.md").read_text())
    assert shown, f"{chapter} shows no mirror"
    nb = execute(chapter, tmp_path)
    assert not errors(nb), f"{chapter}: {errors(nb)}"
    outputs = [text(o["data"].get("text/markdown", ""))
               for cell in nb["cells"] if cell["cell_type"] == "code"
               for o in cell.get("outputs", []) if "data" in o]
    for name, kwargs in shown:
        for block in show_source(name, **kwargs).blocks:
            assert any(block.rstrip() in out for out in outputs), \
                f"{chapter}: the source of {name} is not in the notebook's outputs"
    # rendered as a highlighted Python block, not as bare text: a fenced block
    # for the book, coloured HTML for JupyterLab
    assert any(out.startswith("```python\n") for out in outputs)
    html = [text(o["data"].get("text/html", "")) for cell in nb["cells"]
            for o in cell.get("outputs", []) if "data" in o]
    assert any('<span style="color' in h and "ngx_" in h for h in html)
    # a glued value is shown under its name, since the prose shows only the name
    values = glued(nb)
    shown = {text(o["data"].get("text/plain", "")) for cell in nb["cells"]
             for o in cell.get("outputs", []) if "data" in o}
    for name, value in values.items():
        if name.endswith("_zh") and name[:-3] in values:
            # the Chinese wording of a value (glue(..., zh=)): glued, never shown
            assert not any(s.startswith(f"{name} = ") for s in shown), f"{chapter}: {name} shown"
        elif isinstance(value, str) and not value.startswith("<"):
            assert f"{name} = {value}" in shown, f"{chapter}: {name} is not shown outside the book"
    if chapter == "spawn":
        assert "fp_nw_zh" in values and "fp_sp_default_zh" in values


def test_glue_with_zh_glues_the_chinese_twin_and_shows_only_the_english(monkeypatch):
    """glue(name, value, zh=...) glues ``name`` and ``name_zh`` (both hidden
    from the page: ``display=False``); outside the book's build it shows
    ``name = value`` only, and in the build nothing. What myst_nb and IPython
    would send to the notebook's outputs is caught here (no kernel in a fast
    test); the chapters run in a real kernel above."""
    import IPython.core.formatters
    import IPython.display
    import myst_nb.ext.glue as myst_glue

    from ngxlab.lab.notebook import glue

    glued, shown = [], []
    monkeypatch.setattr(IPython.core.formatters, "format_display_data",
                        lambda value: ({"text/plain": repr(value)}, {}))
    monkeypatch.setattr(myst_glue, "ipy_display",
                        lambda bundle, raw, metadata: glued.append((metadata["scrapbook"], bundle)))
    monkeypatch.setattr(IPython.display, "display", lambda obj, raw=False: shown.append(obj))

    monkeypatch.delenv("NGXLAB_BOOK", raising=False)
    glue("x_read", "it did", display=False, zh="读到了")
    glue("x_n", 3, display=False)
    names = [(meta["name"], bundle) for meta, bundle in glued]
    assert [n for n, _ in names] == ["x_read", "x_read_zh", "x_n"]
    assert all(meta["mime_prefix"] for meta, _ in glued)          # none displayed in the page
    assert list(names[1][1].values()) == ["'读到了'"]
    assert shown == [{"text/plain": "x_read = it did"}, {"text/plain": "x_n = 3"}]

    glued.clear(), shown.clear()
    monkeypatch.setenv("NGXLAB_BOOK", "1")
    glue("x_read", "it did not", display=False, zh="没有读到")
    assert [meta["name"] for meta, _ in glued] == ["x_read", "x_read_zh"] and shown == []


# -- without nginx -------------------------------------------------------------

GLUE = re.compile(r"\{glue:text\}`(?P<key>[^`:]+)(?::(?P<fmt>[^`]*))?`")
# What a glued "not available" / "(not run)" / None looks like once it lands in
# a sentence written for a real run.
FRAGMENTS = [
    re.compile(r"\bnginx (?:not available|None|\(not run\)|unknown)\b"),
    re.compile(r"\b(?:not available|\(not run\)|None) (?:leaks|reads|said|holds|sends|wrote)\b"),
    re.compile(r"\"\(not run\)\""),
    re.compile(r"\bNone\b"),
]


def hidden_nginx_env() -> dict:
    env = dict(os.environ)
    dirs = [d for d in env.get("PATH", "").split(os.pathsep)
            if d and not os.access(os.path.join(d, "nginx"), os.X_OK)]
    env["PATH"] = os.pathsep.join(dirs)
    env["NGXLAB_NGINX"] = ""
    return env


def glued(nb: dict) -> dict[str, str]:
    values = {}
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            record = o.get("metadata", {}).get("scrapbook", {})
            if record.get("name") is not None:
                name, prefix = record["name"], record.get("mime_prefix", "")
                plain = text(o["data"].get(prefix + "text/plain", ""))
                values[name] = plain[1:-1] if plain[:1] in "'\"" and plain[-1:] == plain[:1] else plain
    return values


def prose(nb: dict) -> str:
    values = glued(nb)

    def put(m):
        value = values.get(m.group("key"), f"<missing {m.group('key')}>")
        if m.group("fmt"):
            try:
                return format(float(value), m.group("fmt"))
            except ValueError:
                return value
        return value

    return "\n\n".join(GLUE.sub(put, text(cell["source"]))
                       for cell in nb["cells"] if cell["cell_type"] == "markdown")


def test_the_prose_check_catches_a_fragment():
    nb = {"cells": [
        {"cell_type": "code", "source": "", "outputs": [
            {"output_type": "display_data",
             "metadata": {"scrapbook": {"name": "v", "mime_prefix": "application/papermill.record/"}},
             "data": {"application/papermill.record/text/plain": "'not available'"}}]},
        {"cell_type": "markdown", "source": "nginx {glue:text}`v` leaks exactly where"}]}
    assert prose(nb) == "nginx not available leaks exactly where"
    assert any(f.search(prose(nb)) for f in FRAGMENTS)


@pytest.mark.slow
@pytest.mark.timeout(150)
@pytest.mark.parametrize("chapter", ["read-channel", "channel-t"])
def test_without_nginx_a_chapter_reads_as_whole_sentences(chapter, tmp_path):
    env = hidden_nginx_env()
    assert shutil.which("nginx", path=env["PATH"]) is None
    nb = execute(chapter, tmp_path, env=env)
    assert not errors(nb), f"{chapter}: {errors(nb)}"
    page = prose(nb)
    assert "<missing" not in page, re.findall(r"<missing [^>]+>", page)
    for fragment in FRAGMENTS:
        found = [page[max(0, m.start() - 60):m.end() + 60] for m in fragment.finditer(page)]
        assert not found, f"{chapter} without nginx: {found}"
    # the chapter did run without nginx: it says so in its outputs
    said = " ".join(text(o.get("text", "")) + text(o.get("data", {}).get("text/plain", ""))
                    for cell in nb["cells"] for o in cell.get("outputs", []))
    assert re.search(r"nginx (?:is )?not (?:found|available|installed)|not run", said), \
        f"{chapter}: nothing says nginx was missing"
