"""The project's own machinery: the command line starts, strict mode turns
skips into failures, and the leak guard catches what it should (and nothing else)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent


def test_module_help():
    done = subprocess.run(
        [sys.executable, "-m", "ngxlab", "--help"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    assert "usage: ngxlab" in done.stdout


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester whose runs (in a subprocess) use this suite's conftest.py and _tools.py."""
    pythonpath = [str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in pythonpath if p))
    monkeypatch.delenv("NGXLAB_STRICT", raising=False)
    monkeypatch.setenv("COLUMNS", "300")  # summary lines are cut to the terminal's width
    pytester.makeconftest((TESTS_DIR / "conftest.py").read_text())
    return pytester


STRICT_TESTS = """
from _tools import require, require_tool

def test_condition():
    require(False, "the frobnicator is missing")

def test_missing_tool():
    require_tool("ngxlab-no-such-tool", "/nonexistent/ngxlab-no-such-tool")

def test_present_tool():
    assert require_tool("sh")
"""


def test_missing_tool_skips_normally(inner: pytest.Pytester):
    inner.makepyfile(STRICT_TESTS)
    result = inner.runpytest_subprocess("-ra", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines([
        "SKIPPED*the frobnicator is missing",
        "SKIPPED*ngxlab-no-such-tool is not installed*",
    ])


def test_missing_tool_fails_under_strict(inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NGXLAB_STRICT", "1")
    inner.makepyfile(STRICT_TESTS)
    result = inner.runpytest_subprocess("-ra", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines([
        "FAILED*NGXLAB_STRICT=1, and the frobnicator is missing",
        "FAILED*NGXLAB_STRICT=1, and ngxlab-no-such-tool is not installed*",
    ])


LEAKY_TESTS = """
import os
import socket

import pytest

kept = []

def test_leaks_a_socketpair():
    kept.extend(socket.socketpair())

def test_leaks_a_child():
    pid = os.fork()
    if pid == 0:
        os._exit(0)

def test_cleans_up():
    a, b = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    a.close()
    b.close()
    os.waitpid(pid, 0)

@pytest.mark.no_leak_check
def test_opted_out():
    kept.append(os.open(os.devnull, os.O_RDONLY))
"""


def test_leak_guard_catches_leaks(inner: pytest.Pytester):
    inner.makepyfile(LEAKY_TESTS)
    result = inner.runpytest_subprocess("-ra", "-p", "no:cacheprovider")
    # Each test body passes; the guard adds an error at teardown to the two leaky ones.
    result.assert_outcomes(passed=4, errors=2)
    out = result.stdout.str()
    assert "ERROR at teardown of test_leaks_a_socketpair" in out
    assert "ERROR at teardown of test_leaks_a_child" in out
    result.stdout.fnmatch_lines([
        "*leak guard: this test left descriptors open:*",
        "*fd * -> socket:[[]*[]]",
        "*leak guard: this test left child processes behind*",
        "*(zombie: exited, never reaped)*",
    ])
    assert "test_cleans_up" not in out.split("short test summary info")[-1]
