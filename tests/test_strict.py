"""Strict mode without holes: under ``NGXLAB_STRICT=1`` (as CI runs) no test
of the suite may skip because a tool, a module, the book's build or a
resource limit is missing; it must fail and say why.

Two checks: no test file skips except through ``_tools.require`` (a bare
``pytest.skip``, ``importorskip``, ``skipif`` or ``xfail`` would skip in
strict mode too), and a run of real tests of the suite with their tools
hidden skips without strict mode and fails with it.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

# the ways pytest offers to skip that do not ask NGXLAB_STRICT
SKIPS = {"skip", "importorskip", "skipif", "xfail"}


def _skip_calls(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and node.attr in SKIPS:
            # pytest.skip(...), pytest.importorskip(...), pytest.mark.skipif, ...
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in ("pytest", "unittest"):
                found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_test_skips_around_strict_mode():
    found = []
    for path in sorted(TESTS.glob("*.py")):
        if path.name != "_tools.py":
            found += _skip_calls(path)
    assert found == []
    # and the scan sees one where there is one: _tools.require's own skip
    assert [f.split(": ", 1)[1] for f in _skip_calls(TESTS / "_tools.py")] == ["pytest.skip"]


# Real tests of the suite, each needing something the run below hides.
HIDDEN = {
    "test_00_after_build.py::test_no_chapter_left_a_process_alive": "the book is not built",
    "test_00_after_build.py::test_built_pages_name_no_path_of_this_machine": "the book is not built",
    "test_fork.py::test_forked_in_a_notebook": "the Python module jupytext cannot be imported",
    "test_nginx_lab.py::test_start_serve_stop": "nginx is installed but does not work here",
    "test_channel.py::test_layout_matches_a_compiled_c_struct": "is installed but does not work here",
    "test_trace.py::test_trace_of_a_real_nginx": "does not work here",
    "test_browser.py::test_search_finds_the_term": "chromium is installed but does not work here",
}

BROKEN_TOOL = "#!/bin/sh\necho 'hidden by test_strict' >&2\nexit 1\n"


def _hidden_run(tmp_path: Path, strict: bool) -> dict[str, tuple[str, str]]:
    """Run the HIDDEN tests from a copy of tests/ that has no built book
    beside it, with nginx, strace, gcc, cc and chromium replaced by programs
    that fail and jupytext not importable. Returns {test: (outcome, message)}."""
    copy = tmp_path / "suite" / "tests"
    shutil.copytree(TESTS, copy, ignore=shutil.ignore_patterns("__pycache__"))
    hide = tmp_path / "hide"
    hide.mkdir()
    for tool in ("nginx", "strace", "gcc", "cc", "chromium"):
        (hide / tool).write_text(BROKEN_TOOL)
        (hide / tool).chmod(0o755)
    (hide / "jupytext.py").write_text("raise ImportError('hidden by test_strict')\n")
    env = dict(os.environ, PATH=f"{hide}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONPATH=os.pathsep.join([str(hide), str(ROOT)]), COLUMNS="300")
    env.pop("NGXLAB_STRICT", None)
    if strict:
        env["NGXLAB_STRICT"] = "1"
    report = tmp_path / f"report-{int(strict)}.xml"

    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"),
         "--rootdir", str(copy.parent), "-p", "no:cacheprovider", "-q",
         f"--junitxml={report}", *(str(copy / t) for t in HIDDEN)],
        capture_output=True, text=True, timeout=300, cwd=copy.parent, env=env,
        stdin=subprocess.DEVNULL)
    assert report.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        name = f"{case.get('file') or case.get('classname').replace('.', '/') + '.py'}"
        name = f"{Path(name).name}::{case.get('name')}"
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("skipped", "failure", "error"):
                outcome = child.tag
                message = (child.get("message") or "") + (child.text or "")
        outcomes[name] = (outcome, message)
    return outcomes


@pytest.mark.timeout(600)
@pytest.mark.parametrize("strict", (False, True), ids=("default", "strict"))
def test_hidden_tools_skip_by_default_and_fail_under_strict(tmp_path, strict):
    outcomes = _hidden_run(tmp_path, strict)
    assert sorted(outcomes) == sorted(HIDDEN)
    for test, reason in HIDDEN.items():
        outcome, message = outcomes[test]
        if strict:
            assert outcome in ("failure", "error"), (test, outcome, message[:500])
            assert "NGXLAB_STRICT=1, and" in message and reason in message, (test, message[:500])
        else:
            assert outcome == "skipped", (test, outcome, message[:500])
            assert reason in message, (test, message[:500])
