"""Runs first (by name), right after the README's test command built the
book: the chapters executed during the build must have left nothing alive.

A chapter forks workers (lab.Master), runs masters (lab.MasterProcess) and
real nginx (lab.Nginx); each must be stopped by the chapter itself.
"""

from __future__ import annotations

import os

import pytest


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
    if not os.path.isdir(os.path.join(os.path.dirname(__file__), "..",
                                      "_build", "html")):
        pytest.skip("the book is not built (make test builds it first)")
    assert leftovers() == []
