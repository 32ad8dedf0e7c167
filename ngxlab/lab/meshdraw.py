"""The channel mesh drawn from a census: the master, its workers, and who
holds which end of which socketpair.

``draw_mesh(census)`` takes a :class:`ngxlab.lab.census.Census` (of an
in-process ``Master``, of ``MasterProcess`` or of a real nginx) and draws
what it found, not what nginx should have: one box per process, one
socketpair per slot with its ``channel[0]`` and ``channel[1]``, and a line
from each process to every channel end it holds. After
``ngx_worker_process_init`` a settled mesh shows:

* the master holding both ends of every pair (grey lines);
* worker k holding its own ``channel[1]``, the end it reads (blue);
* worker k holding ``channel[0]`` of every other slot, inherited or received
  with OPEN_CHANNEL (orange);

and nothing else. An end held against that rule (a worker with another
slot's ``channel[1]``, or with its own ``channel[0]``) is drawn red and
dashed, and named in the figure. ``before=`` an earlier census marks the
workers that are new since then (a respawn, a reload).

Drawn with matplotlib's object API at the book's column width
(``ngxlab.lab.figures.WIDTH``), fonts no smaller than
``ngxlab.lab.figures.MIN_FONT_PT``. Not a mirror of nginx.
"""

from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyBboxPatch, Rectangle

from ngxlab.lab.census import Census
from ngxlab.lab.figures import MIN_FONT_PT, WIDTH

__all__ = ["draw_mesh", "mesh_edges", "MeshEdge"]

COLORS = {"master": "0.55", "own": "#1f77b4", "peer": "#ff7f0e", "wrong": "#d62728"}

FONT = MIN_FONT_PT + 0.5


class MeshEdge(tuple):
    """``(holder pid, slot of the pair, end, kind)``; kind is ``"master"``,
    ``"own"`` (a worker's own channel[1]), ``"peer"`` (another slot's
    channel[0] in a worker) or ``"wrong"`` (any other end in a worker)."""

    __slots__ = ()

    def __new__(cls, pid: int, slot: int | None, end: int, kind: str):
        return super().__new__(cls, (pid, slot, end, kind))

    pid = property(lambda self: self[0])
    slot = property(lambda self: self[1])
    end = property(lambda self: self[2])
    kind = property(lambda self: self[3])


def mesh_edges(census: Census) -> list[MeshEdge]:
    """Every (holder, channel end) the census found among the master and the
    workers, classified as the drawing colours it."""
    master = census.master_pid
    slot_of = {w.pid: w.slot for w in census.workers}
    edges = []
    for pair in census.pairs:
        for pid, _fd, end in pair.holders:
            if pid == master:
                kind = "master"
            elif pid not in slot_of:
                continue                       # a helper process, not a worker
            elif end == 1 and pid == pair.worker_pid:
                kind = "own"
            elif end == 0 and pid != pair.worker_pid:
                kind = "peer"
            else:
                kind = "wrong"
            edges.append(MeshEdge(pid, pair.slot, end, kind))
    return sorted(set(edges), key=lambda e: (e.slot is None, e.slot or 0, e.end, e.pid))


def draw_mesh(census: Census, *, title: str | None = None, before: Census | None = None,
              width: float = WIDTH):
    """A matplotlib ``Figure`` of the mesh the census found (see the module's
    docstring). ``before``: an earlier census; workers not in it are drawn
    with a thick outline and marked "new"."""
    pairs = list(census.pairs)
    workers = list(census.workers)
    # one column per pair, in slot order; a worker without a pair gets one too
    columns: list[tuple[int | None, int | None]] = [(p.slot, p.worker_pid) for p in pairs]
    for w in workers:
        if w.pid not in {pid for _s, pid in columns}:
            columns.append((w.slot, w.pid))
    n = max(1, len(columns))
    x_of_slot = {slot: i for i, (slot, _pid) in enumerate(columns)}
    x_of_pid = {pid: i for i, (_slot, pid) in enumerate(columns) if pid is not None}

    fig = Figure(figsize=(width, 4.3), layout="constrained")
    ax = fig.add_subplot()
    ax.set_xlim(-0.62, n - 0.38)
    ax.set_ylim(-0.3, 2.75)
    ax.set_axis_off()

    y_master, y_pair, y_worker = 2.2, 1.12, 0.0
    pair_w, pair_h, worker_h = 0.17, 0.26, 0.62
    box_w = min(0.9, 0.86)

    def end_xy(slot, end, top):
        x = x_of_slot.get(slot, 0) + (-pair_w if end == 0 else 0.0) + pair_w / 2
        return x, y_pair + (pair_h if top else 0.0)

    # edges first, so the boxes sit on top of them
    edges = mesh_edges(census)
    wrong = []
    for e in edges:
        x_end, y_end = end_xy(e.slot, e.end, top=e.kind == "master")
        if e.kind == "master":
            x0 = x_end
            ax.plot([x0, x_end], [y_master, y_end], color=COLORS["master"], lw=1.0, zorder=1)
            continue
        x0 = x_of_pid.get(e.pid, 0)
        style = dict(color=COLORS[e.kind], zorder=2 if e.kind != "wrong" else 3,
                     lw=2.4 if e.kind == "own" else 1.2,
                     ls="--" if e.kind == "wrong" else "-")
        ax.plot([x0, x_end], [y_worker + worker_h / 2, y_end], **style)
        if e.kind == "wrong":
            wrong.append(e)

    # the master
    master = census.master
    mtext = "master"
    if master is not None:
        mtext += f"  pid {master.pid}:  both ends of {len(pairs)} pair" \
                 f"{'s' if len(pairs) != 1 else ''}, {master.channel_fds} channel descriptors"
    ax.add_patch(FancyBboxPatch((-0.5, y_master), n - 0.0, 0.42,
                                boxstyle="round,pad=0.02,rounding_size=0.06",
                                fc="#eeeeee", ec="0.3", lw=1.2, zorder=4))
    ax.text(-0.5 + n / 2, y_master + 0.21, mtext, ha="center", va="center", fontsize=FONT,
            zorder=5)

    # the socketpairs
    for slot, _pid in columns[:len(pairs)]:
        x = x_of_slot[slot]
        for end in (0, 1):
            x0 = x - pair_w if end == 0 else x
            ax.add_patch(Rectangle((x0, y_pair), pair_w, pair_h, fc="white",
                                   ec=COLORS["own"] if end == 1 else COLORS["peer"], lw=1.6,
                                   zorder=4))
            ax.text(x0 + pair_w / 2, y_pair + pair_h / 2, str(end), ha="center", va="center",
                    fontsize=FONT, zorder=5)
        label = "slot ?" if slot is None else f"slot {slot}"
        ax.text(x + pair_w + 0.04, y_pair + pair_h / 2, label, ha="left", va="center",
                fontsize=FONT, zorder=5,
                bbox=dict(fc="white", ec="none", pad=0.5, alpha=0.85))

    # the workers
    old_pids = set(before.worker_pids) if before is not None else None
    for slot, pid in columns:
        if pid is None:
            continue
        try:
            w = census.process(pid)
        except KeyError:
            continue
        x = x_of_pid[pid]
        new = old_pids is not None and pid not in old_pids
        ax.add_patch(FancyBboxPatch((x - box_w / 2, y_worker - 0.05), box_w, worker_h,
                                    boxstyle="round,pad=0.02,rounding_size=0.06",
                                    fc="#e8f1fa" if not new else "#fff4e0",
                                    ec="0.3" if not new else "black",
                                    lw=1.2 if not new else 2.6, zorder=4))
        head = "worker" if w.slot is None else f"worker {w.slot}"
        ax.text(x, y_worker + worker_h / 2 - 0.05,
                f"{head}{'  (new)' if new else ''}\npid {pid}\n{w.channel_fds} channel ends",
                ha="center", va="center", fontsize=FONT, zorder=5, linespacing=1.25)

    handles = [Line2D([], [], color=COLORS["master"], lw=1.0,
                      label="master: both ends of every pair"),
               Line2D([], [], color=COLORS["own"], lw=2.4,
                      label="worker: its own channel[1], the end it reads"),
               Line2D([], [], color=COLORS["peer"], lw=1.2,
                      label="worker: channel[0] of every other slot")]
    if wrong:
        handles.append(Line2D([], [], color=COLORS["wrong"], lw=1.2, ls="--",
                              label="against nginx's rule: " + ", ".join(
                                  f"pid {e.pid} holds {e.slot}:{e.end}" for e in wrong[:3])
                              + (" ..." if len(wrong) > 3 else "")))
    fig.legend(handles=handles, loc="outside lower center", ncol=1, fontsize=FONT,
               frameon=False, handlelength=2.2)
    if title:
        ax.set_title(title, fontsize=FONT + 1, loc="left")
    return fig
