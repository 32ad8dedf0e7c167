"""Helpers shared by the tests: strict mode, finding tools, and looking at this
process's descriptors and children (the leak guard in conftest.py uses them).

Strict mode
    A test that needs a tool the machine lacks (nginx, strace, gcc, chromium)
    is skipped with the reason. With ``NGXLAB_STRICT=1`` in the environment
    (as CI runs) it fails instead, so a missing package cannot turn a red
    run into a green one full of skips::

        from _tools import require, require_module, require_tool

        def test_something():
            nginx = require_tool("nginx", "/usr/sbin/nginx")
            jupytext = require_module("jupytext")
            require(os.path.exists("/proc/self/fd"), "needs /proc")

    Every skip of the suite for a missing tool, module, build or limit goes
    through ``require``: a bare ``pytest.skip``, ``pytest.importorskip`` or
    ``skipif`` would skip under strict mode too (``test_strict.py`` checks
    both that there is none and that hiding a tool fails the suite).
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable

import pytest

__all__ = [
    "STRICT",
    "strict_mode",
    "require",
    "require_tool",
    "require_module",
    "fd_table",
    "child_pids",
    "describe_pid",
    "wait_for",
]


def strict_mode() -> bool:
    """True when NGXLAB_STRICT is set to anything but empty, 0, false, no or off."""
    value = os.environ.get("NGXLAB_STRICT", "").strip().lower()
    return value not in ("", "0", "false", "no", "off")


STRICT = strict_mode()


def require(condition: object, reason: str) -> None:
    """Skip the test with ``reason`` unless ``condition`` holds; fail under NGXLAB_STRICT=1."""
    if condition:
        return
    if strict_mode():
        pytest.fail(f"NGXLAB_STRICT=1, and {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)   # also from a module's top


def require_tool(
    name: str,
    *fallbacks: str,
    package: str | None = None,
    probe: Iterable[str] | None = None,
    check: Callable[[str], str | None] | None = None,
) -> str:
    """Return the path of tool ``name`` (on PATH, else the first existing fallback path).

    ``package`` names the Debian package that provides it, for the message.
    ``probe`` is an argument list run as ``[path, *probe]`` that must exit 0
    (a tool that is installed but cannot work here counts as missing), and
    ``check(path)`` may return a reason why the tool is unusable. Skips, or
    fails under NGXLAB_STRICT=1, when the tool is missing or unusable.
    """
    path = shutil.which(name)
    if path is None:
        path = next((p for p in fallbacks if os.path.isfile(p) and os.access(p, os.X_OK)), None)
    require(path is not None, f"{name} is not installed (apt-get install {package or name})")
    assert path is not None
    if probe is not None:
        argv = [path, *probe]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
            problem = None if done.returncode == 0 else f"exit {done.returncode}: {(done.stderr or done.stdout).strip()[-300:]}"
        except (OSError, subprocess.TimeoutExpired) as exc:
            problem = str(exc)
        require(problem is None, f"{name} is installed but does not work here ({' '.join(argv)}: {problem})")
    if check is not None:
        problem = check(path)
        require(problem is None, f"{name} is installed but does not work here: {problem}")
    return path


def require_module(name: str, package: str | None = None):
    """Import and return module ``name``; skip (fail under NGXLAB_STRICT=1)
    when it cannot be imported. ``package`` names what pip installs it from."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        require(False, f"the Python module {name} cannot be imported ({exc}; "
                       f"pip install {package or name})")


# -- this process's descriptors and children -------------------------------------


def fd_table() -> dict[int, str]:
    """This process's open descriptors: {fd: what it points to} (from /proc/self/fd)."""
    table = {}
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            table[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            # The directory listing's own descriptor, closed by now.
            continue
    return table


def child_pids() -> set[int]:
    """The pids of this process's children, zombies included (any thread's children)."""
    pids: set[int] = set()
    try:
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/children") as f:
                    pids.update(int(p) for p in f.read().split())
            except FileNotFoundError:
                if not os.path.exists(f"/proc/self/task/{tid}"):
                    continue  # the thread has ended
                raise
        return pids
    except FileNotFoundError:
        pass
    # Kernels without CONFIG_PROC_CHILDREN: scan every process's parent pid.
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == me:
            pids.add(int(name))
    return pids


def describe_pid(pid: int) -> str:
    """``pid (state) command line``, for messages about a leaked child."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        state = stat[stat.rindex(")") + 2 :].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return f"{pid} (gone)"
    label = {"Z": "zombie: exited, never reaped"}.get(state, f"state {state}")
    return f"{pid} ({label}) {cmdline or '[no command line]'}"


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.005):
    """Call ``predicate()`` until it returns something true, and return that;
    fail the test with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s: {what}"
        time.sleep(interval)
