"""The mesh drawn from a real census (ngxlab.lab.meshdraw), and the size
rules of the book's figures (ngxlab.lab.figures): drawn at the column's
width, no text below MIN_FONT_PT.

Real workers: an in-process ``Master`` and ``python -m ngxlab run``
(``MasterProcess``), respawned and reloaded; no mock.
"""

from __future__ import annotations

import io

import pytest

from _tools import require_module

require_module("matplotlib")   # skipped without it, failed under NGXLAB_STRICT=1

from ngxlab.lab import Master, MasterProcess  # noqa: E402
from ngxlab.lab.figures import COLUMN_PX, DPI, MIN_FONT_PT, small_text  # noqa: E402
from ngxlab.lab.meshdraw import draw_mesh, mesh_edges  # noqa: E402


def _warm_fonts() -> None:
    """matplotlib keeps its font files open once it has drawn text; open
    them before any test, so the leak guard does not count them."""
    from matplotlib.figure import Figure

    fig = Figure()
    fig.text(0.5, 0.5, "warm [0] → ≤ △")
    fig.savefig(io.BytesIO(), format="png")


_warm_fonts()


def _png_width(fig) -> int:
    """The width in pixels of the PNG a notebook shows for ``fig`` (the
    inline backend saves with bbox_inches="tight")."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    data = buf.getvalue()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big")


def _kinds(c) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in mesh_edges(c):
        out[e.kind] = out.get(e.kind, 0) + 1
    return out


def test_settled_mesh_edges_and_drawing():
    n = 3
    with Master(workers=n) as m:
        c = m.wait_mesh()
        fig = draw_mesh(c, title="three workers")
    # the master holds both ends of every pair; each worker its own channel[1]
    # and the other slots' channel[0]; nothing else
    assert _kinds(c) == {"master": 2 * n, "own": n, "peer": n * (n - 1)}
    own = {(e.pid, e.slot) for e in mesh_edges(c) if e.kind == "own"}
    assert own == {(pid, slot) for slot, pid in c.slots.items()}
    texts = " ".join(t.get_text() for t in fig.texts + fig.axes[0].texts)
    for slot, pid in c.slots.items():
        assert f"pid {pid}" in texts and f"slot {slot}" in texts
    assert f"{c.master.channel_fds} channel descriptors" in texts
    assert small_text(fig) == []
    assert 0.9 * COLUMN_PX <= _png_width(fig) <= COLUMN_PX


def test_redrawn_after_respawn_and_reload():
    with MasterProcess(2) as mp:
        first = mp.wait_mesh()
        victim = mp.kill_worker(1)
        respawned = mp.wait_mesh()
        mp.signal("reload")
        reloaded = mp.wait_mesh()
        figs = [draw_mesh(first), draw_mesh(respawned, before=first),
                draw_mesh(reloaded, before=respawned)]
    assert victim not in respawned.worker_pids and set(respawned.slots) == {0, 1}
    assert set(reloaded.slots) == {2, 3}
    for c in (first, respawned, reloaded):
        assert _kinds(c) == {"master": 4, "own": 2, "peer": 2}

    def new_marks(fig):
        return [t.get_text() for t in fig.axes[0].texts if "(new)" in t.get_text()]

    assert new_marks(figs[0]) == []
    # after the respawn only slot 1's worker is new; after the reload both are
    assert [t.splitlines()[0] for t in new_marks(figs[1])] == ["worker 1  (new)"]
    assert len(new_marks(figs[2])) == 2
    for fig in figs:
        assert small_text(fig) == []


def test_ends_nginx_closes_are_drawn_red():
    """Workers that skip the closing of ngx_worker_process_init
    (``Master(close_inherited=False)``) keep their own channel[0] and the
    channel[1] of every earlier slot: the drawing names those ends."""
    n = 3
    m = Master(workers=n, close_inherited=False)
    try:
        with m:
            c = m.wait_for(lambda: (lambda c: c if [w.channel_fds for w in c.workers]
                                    == [n + k + 1 for k in range(n)] else None)(m.census()),
                           what="N + k + 1 channel ends in worker k")
            fig = draw_mesh(c)
    finally:
        m.cleanup()
    wrong = {(e.pid, e.slot, e.end) for e in mesh_edges(c) if e.kind == "wrong"}
    expect = set()
    for k, pid in c.slots.items():
        expect.add((pid, k, 0))
        expect.update((pid, j, 1) for j in range(k))
    assert wrong == expect
    legend = " ".join(t.get_text() for t in fig.legends[0].get_texts())
    assert "against nginx's rule" in legend


def test_library_figures_fit_the_column():
    """Every figure of ngxlab.lab.figures is made WIDTH wide, and no size
    given to a text there is below MIN_FONT_PT (read from the source: the
    functions need a benchmark's results to draw)."""
    import re

    from ngxlab.lab import figures

    assert MIN_FONT_PT >= 0.8 * 16 * 72 / DPI      # 80 % of the 16 px body text
    src = open(figures.__file__).read()
    made = re.findall(r"Figure\(figsize=\(([^,]+),", src)
    assert made and set(made) == {"WIDTH"}, made
    sizes = re.findall(r"(?:fontsize|labelsize)=([^,)]+)", src)
    assert sizes
    for size in sizes:
        value = float(size) if re.fullmatch(r"[\d.]+", size) else getattr(figures, size)
        assert value >= MIN_FONT_PT, size
