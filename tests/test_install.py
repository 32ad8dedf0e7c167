"""ngxlab as a user installs it: ``pip install <checkout>`` (not editable) into
a fresh virtual environment, then ``ngxlab bench --quick`` and a short script
against the public API, run from outside the checkout so that nothing is
imported from it. Without the bench extra (no matplotlib, no tqdm) the
benchmark still writes its table and results.json and says how to get the
figures; the build leaves no build/ in the checkout.

Real pip, real venv. Time is kept down the way a user's pip keeps it: the
wheel cache is pip's own, and nothing but ngxlab is installed (it needs only
the standard library; ``--no-deps`` would hide a dependency it declared, so
it is not used)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parent.parent


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Use ngxlab in your own experiment", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv with ngxlab installed from this checkout, not editable."""
    where = tmp_path_factory.mktemp("venv")
    venv.create(where, with_pip=True)
    py = where / "bin" / "python"
    tracked_build = (ROOT / "build").exists()
    # setuptools builds under _build/setuptools (pyproject.toml) and does not
    # remove what an earlier build put there: start clean, as a fresh clone does
    shutil.rmtree(ROOT / "_build" / "setuptools", ignore_errors=True)
    done = subprocess.run([str(py), "-m", "pip", "install", "--disable-pip-version-check",
                           "-q", str(ROOT)], capture_output=True, text=True, timeout=600,
                          cwd=where)
    assert done.returncode == 0, done.stderr[-2000:]
    assert tracked_build or not (ROOT / "build").exists(), "pip install left build/ behind"
    return py


@pytest.mark.timeout(900)
def test_the_installed_library_runs_the_readme_example(installed, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([str(installed), "-c", "import ngxlab, sys; print(ngxlab.__file__)"],
                           capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    assert where.returncode == 0 and str(ROOT) not in where.stdout, where.stdout
    script = tmp_path / "example.py"
    script.write_text(_readme_example())
    done = subprocess.run([str(installed), str(script)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "holds the pipe, passed with SCM_RIGHTS" in done.stdout
    assert "full mesh" in done.stdout and "stopped: True" in done.stdout


@pytest.mark.timeout(900)
def test_the_installed_bench_without_matplotlib(installed, tmp_path, nginx_bin):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for module in ("matplotlib", "tqdm"):
        probe = subprocess.run([str(installed), "-c", f"import {module}"], capture_output=True,
                               timeout=60, env=env)
        assert probe.returncode != 0, f"{module} came with ngxlab: it must be an extra"
    ngxlab = installed.parent / "ngxlab"
    out = tmp_path / "out"
    done = subprocess.run([str(ngxlab), "bench", "--quick", "--no-progress", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ngxlab bench on" in done.stdout and "round trip, no descriptor" in done.stdout
    assert "figures skipped" in done.stderr and "ngxlab[bench]" in done.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["figures"] == [] and "matplotlib" in results["figures_skipped"]
    assert [p.name for p in out.iterdir()] == ["results.json"]
    assert any(r["target"] for r in results["ratios"])


def test_readme_and_api_page_show_the_same_example():
    api = (ROOT / "book" / "api.md").read_text()
    assert "```python\n" + _readme_example() + "```" in api


def test_readme_example_runs_here(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(_readme_example())
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "holds the pipe" in done.stdout and "stopped: True" in done.stdout
