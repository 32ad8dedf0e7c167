"""The master at scale (``ngxlab.lab.scale``): a reload and a QUIT with
hundreds of workers complete, and the side-by-side measurement runs.

Timing bounds here are generous on purpose: they separate "completes" from
"stalls" (a reload that used to hang the master for minutes at 300 workers
and more), not fast from slow; ``python -m ngxlab.lab.scale`` measures the
ratio to nginx."""

from __future__ import annotations

import pytest

from ngxlab.lab import scale


@pytest.mark.timeout(600)
def test_300_workers_reload_and_quit():
    run = scale.measure_one("ngxlab", 300, timeout=300)
    assert run.settled, run          # the new generation complete, the old one gone
    assert run.quit_s < 60, run
    assert run.reload_master_cpu_s > 0 and run.reload_workers_cpu_s > 0


@pytest.mark.timeout(120)
def test_side_by_side_with_nginx(nginx_bin):
    result = scale.scale(4)
    assert [r.system for r in result.runs] == ["nginx", "ngxlab"]
    assert all(r.settled for r in result.runs), result.runs
    assert result.reload_ratio > 0 and result.quit_ratio > 0
    assert "ratio" in result.table()
