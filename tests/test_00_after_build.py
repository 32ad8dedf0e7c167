"""Runs first (by name), right after the README's test command built the
book: the chapters executed during the build must have left nothing alive.

A chapter forks workers (lab.Master), runs masters (lab.MasterProcess) and
real nginx (lab.Nginx); each must be stopped by the chapter itself. Only the
processes of this checkout count: the machine may run other checkouts' builds
and tests at the same time.
"""

from __future__ import annotations

import os

from _tools import require

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD_HTML = os.path.join(ROOT, "_build", "html")


def _under_root(path: bytes) -> bool:
    root = ROOT.encode()
    return path == root or path.startswith(root + b"/")


def of_this_checkout(pid: int) -> bool:
    """Whether ``pid`` was started from this checkout: its working directory
    is in it (a kernel, the workers it forks), or its environment names it in
    PWD or PYTHONPATH (a master started by lab.MasterProcess, nginx started
    by a kernel). A process whose environment cannot be read counts."""
    try:
        if _under_root(os.readlink(f"/proc/{pid}/cwd").encode()):
            return True
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read().split(b"\0")
    except OSError:
        return True
    for var in env:
        name, _, value = var.partition(b"=")
        if name in (b"PWD", b"PYTHONPATH") and any(map(_under_root, value.split(b":"))):
            return True
    return False


def processes():
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/comm") as f:
                comm = f.read().strip()
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{name}/stat") as f:
                state = f.read().rsplit(") ", 1)[1].split()[0]
        except OSError:
            continue
        yield int(name), comm, argv.strip(), state


def leftovers():
    """ngxlab masters and workers, and nginx run from an ngxlab prefix."""
    me = os.getpid()
    out = []
    for pid, comm, argv, state in processes():
        if pid == me or state == "Z":
            continue
        if (comm.startswith("ngxlab:") or " -m ngxlab run " in f" {argv} "
                or ("nginx" in comm and "ngxlab-" in argv)) and of_this_checkout(pid):
            out.append((pid, comm, argv))
    return out


def test_no_chapter_left_a_process_alive():
    require(os.path.isdir(BUILD_HTML), "the book is not built (make test builds it first)")
    assert leftovers() == []


def test_the_scan_sees_a_master_of_this_checkout():
    # what the check above looks for is found: a master and its workers,
    # started with a temporary prefix as a chapter starts them
    from ngxlab.lab import MasterProcess

    with MasterProcess(2) as mp:
        found = {pid for pid, _comm, _argv in leftovers()}
        assert {mp.master_pid, *mp.slots.values()} <= found


def test_built_pages_name_no_path_of_this_machine():
    """A page shows what a cell printed: it must not be this checkout's
    absolute path or a kernel's temporary file."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    html = BUILD_HTML
    require(os.path.isdir(html), "the book is not built (make test builds it first)")
    bad = []
    for folder, _dirs, files in os.walk(html):
        if "_static" in folder or "_sources" in folder:
            continue
        for name in files:
            if not name.endswith(".html"):
                continue
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                text = f.read()
            for needle in (root + os.sep, "ipykernel_"):
                if needle in text:
                    bad.append(f"{name}: {needle}")
    assert bad == []


def _chapters() -> list[str]:
    import re
    with open(os.path.join(ROOT, "_toc.yml"), encoding="utf-8") as f:
        return re.findall(r"^\s*(?:-\s*)?(?:file|root):\s*(book/\S+)", f.read(), re.M)


def test_every_chapter_offers_its_notebook_for_download():
    """The download menu of every chapter lists an .ipynb, and the file is
    there: the chapter as the build executed it, outputs included."""
    import json
    require(os.path.isdir(BUILD_HTML), "the book is not built (make test builds it first)")
    chapters = _chapters()
    assert len(chapters) > 20
    bad = []
    for chapter in chapters:
        with open(os.path.join(BUILD_HTML, chapter + ".html"), encoding="utf-8") as f:
            html = f.read()
        name = chapter.rsplit("/", 1)[-1]
        if f"_sources/{chapter}.ipynb" not in html and f"_sources/{name}.ipynb" not in html \
                and f"{name}.ipynb\"" not in html:
            bad.append(f"{chapter}: no .ipynb in the download menu")
            continue
        path = os.path.join(BUILD_HTML, "_sources", chapter + ".ipynb")
        if not os.path.isfile(path):
            bad.append(f"{chapter}: {os.path.relpath(path, BUILD_HTML)} is missing")
            continue
        with open(path, encoding="utf-8") as f:
            nb = json.load(f)
        if nb.get("nbformat") != 4 or not nb.get("cells"):
            bad.append(f"{chapter}: the .ipynb is not a notebook")
    assert bad == [], bad


def test_each_script_is_included_once():
    """sphinx-thebe's configuration script declares ``const THEBE_JS_URL``:
    twice on a page is a SyntaxError in the browser."""
    require(os.path.isdir(BUILD_HTML), "the book is not built (make test builds it first)")
    bad = []
    for chapter in _chapters():
        with open(os.path.join(BUILD_HTML, chapter + ".html"), encoding="utf-8") as f:
            n = f.read().count("const THEBE_JS_URL")
        if n > 1:
            bad.append(f"{chapter}: {n} times")
    assert bad == [], bad
