"""`ngxlab bench --quick` runs end to end (CI runs it so the command never
rots): it exits 0, prints the ratio table with the machine it ran on, and
writes its JSON results and figures. No timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.timeout(240)
def test_bench_quick_writes_results_and_figures(tmp_path, nginx_bin, cc):
    out = tmp_path / "bench"
    done = subprocess.run(
        [sys.executable, "-m", "ngxlab", "bench", "--quick", "--out", str(out),
         "--no-progress"], capture_output=True, text=True, timeout=230)
    assert done.returncode == 0, done.stderr[-2000:]
    text = done.stdout
    assert "ngxlab bench on" in text and "cores" in text
    assert "round trip, no descriptor" in text
    assert "descriptors per second, 253 per message" in text
    assert "start-up to full mesh, N=32" in text
    results = json.loads((out / "results.json").read_text())
    assert results
    scaling = json.loads((out / "scaling.json").read_text())
    assert scaling
    for png in ("round_trip_cdf.png", "fds_per_second.png",
                "startup_to_mesh.png", "quit_to_exit.png",
                "descriptors_vs_n.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", png
