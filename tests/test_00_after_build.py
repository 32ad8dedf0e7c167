"""Runs first (by name), right after the README's test command built the
book: the chapters executed during the build must have left nothing alive.

A chapter forks workers (lab.Master), runs masters (lab.MasterProcess) and
real nginx (lab.Nginx); each must be stopped by the chapter itself.
"""

from __future__ import annotations

import os

from _tools import require

BUILD_HTML = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "_build", "html")


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
        if comm.startswith("ngxlab:") or " -m ngxlab run " in f" {argv} " \
                or ("nginx" in comm and "ngxlab-" in argv):
            out.append((pid, comm, argv))
    return out


def test_no_chapter_left_a_process_alive():
    require(os.path.isdir(BUILD_HTML), "the book is not built (make test builds it first)")
    assert leftovers() == []


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
