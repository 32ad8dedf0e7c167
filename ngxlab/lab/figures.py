"""Every figure of ``ngxlab.lab``, drawn with matplotlib's object API (no
pyplot, so a notebook's backend is left alone), at a size readable in the
book's column.

matplotlib is optional (``pip install ngxlab[bench]``): this module imports
it at the top, so importing it without matplotlib raises ImportError, and
``ngxlab bench`` then writes its tables and ``results.json`` and says the
figures were skipped. No axis is clipped to hide a point: a value below
zero would show as one.

Not a mirror of nginx: nothing here has an ``ngx_`` name.
"""

from __future__ import annotations

import textwrap
from typing import Iterable

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from ngxlab.lab.compare import Samples, percentile
from ngxlab.lab.descriptors import DescriptorsResult
from ngxlab.lab.report import MachineInfo
from ngxlab.lab.quitting import QuitResult
from ngxlab.lab.timing import FLOOR_TARGET, STARTUP_TARGET, StartupResult

__all__ = ["COLUMN_PX", "DPI", "WIDTH", "MIN_FONT_PT", "small_text", "title_lines",
           "plot_round_trips", "plot_fds_per_second", "plot_startup", "plot_quit",
           "plot_descriptors", "plot_under_load", "plot_storm", "plot_master_kill"]

# The book's text column, measured in the built HTML with Chromium at a
# 1400 px wide window (784 px) (tests/test_browser.py checks that no figure is shown
# below 90 % of the width it was drawn at). A figure drawn WIDTH inches wide
# at DPI is shown at its own size there, not scaled down.
COLUMN_PX = 784
DPI = 100
# the notebook's PNG adds 0.1 in of padding on each side (bbox_inches="tight")
WIDTH = (COLUMN_PX - 24) / DPI
# The body text is 16 px; 80 % of it is 12.8 px, 9.2 pt at DPI. No text of a
# figure here is smaller than this (tests/test_figures.py).
MIN_FONT_PT = 9.5
_SMALL = MIN_FONT_PT
_TITLE = 11


def title_lines(text: str, width: int = 84) -> str:
    """``text`` folded into lines of at most ``width`` characters (84 fit
    across WIDTH at 11 pt): a title longer than its figure would make the
    notebook's PNG wider than the figure, and the book would scale it down."""
    return "\n".join(textwrap.fill(line, width) for line in text.split("\n"))


def small_text(fig, min_pt: float = MIN_FONT_PT) -> list[str]:
    """The visible texts of ``fig`` (titles, labels, ticks, legends,
    annotations) smaller than ``min_pt`` points, as ``"size: text"``."""
    from matplotlib.text import Text

    fig.draw_without_rendering()            # tick labels exist only once drawn
    found = []
    for t in fig.findobj(Text):
        if t.get_visible() and t.get_text().strip() and t.get_fontsize() < min_pt - 1e-9:
            found.append(f"{t.get_fontsize():g}: {t.get_text()[:60]!r}")
    return found


_COLORS = {"ngxlab": "#1f77b4", "nginx": "#009639", "inprocess": "#7f7f7f",
           "floor": "#ff7f0e", "ngxlab, no closing": "#d62728"}
_LABELS = {"ngxlab": "ngxlab (python -m ngxlab run)", "nginx": "nginx",
           "floor": "Python floor (python -m ngxlab.lab.floor)",
           "inprocess": "ngxlab in-process (lab.Master)"}


_COST_COLORS = {"ngxlab": "#1f77b4", "raw": "#ff7f0e", "raw_fields": "#bcbd22", "c": "#000000",
                "mp_pipe": "#2ca02c", "mp_queue": "#d62728", "os_pipe": "#9467bd",
                "python": "#1f77b4"}


def plot_round_trips(sets: Iterable[dict[str, Samples]], machine: MachineInfo | None = None):
    """A matplotlib Figure: the CDF of round-trip times per variant, one
    panel per set (no descriptor / one descriptor), the C floor's median
    marked. Drawn without pyplot, so it does not change a notebook's backend."""
    sets = list(sets)
    fig = Figure(figsize=(WIDTH, 0.6 + 3.9 * len(sets)), layout="constrained")
    axes = fig.subplots(len(sets), 1, squeeze=False)[:, 0]
    for ax, rts in zip(axes, sets):
        first = next(iter(rts.values()))
        measure, batch = first.measure, first.params.get("batch")
        placement = first.params.get("placement", "")
        for name, s in rts.items():
            if s.skipped or not s.values:
                continue
            xs = sorted(v / 1000 for v in s.values)
            ys = [(i + 1) / len(xs) for i in range(len(xs))]
            ax.step(xs, ys, where="post", color=_COST_COLORS.get(name), label=f"{name} "
                    f"(median {s.median / 1000:.1f} µs)", linewidth=2.2 if name == "c" else 1.4)
        c = rts.get("c")
        if c is not None and c.median is not None:
            ax.axvline(c.median / 1000, color="black", linestyle=":", linewidth=1)
            ax.annotate("C floor", (c.median / 1000, 0.03), rotation=90, fontsize=_SMALL,
                        xytext=(3, 0), textcoords="offset points", va="bottom")
        elif c is not None and c.skipped:
            ax.text(0.02, 0.97, f"C floor: {c.skipped}", transform=ax.transAxes, fontsize=_SMALL,
                    va="top", wrap=True)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(
            lambda x, _: f"{x:g}" if f"{x:.1e}"[0] in "2345" else ""))
        ax.tick_params(axis="x", which="minor", labelsize=_SMALL)
        ax.set_xlabel(f"round trip (µs, log scale; each sample the mean of {batch})")
        ax.set_ylabel("fraction of samples ≤ x")
        ax.set_title(title_lines(f"{measure}\n{placement}", 90), fontsize=_SMALL)
        ax.set_ylim(0, 1.02)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=_SMALL, loc="lower right")
    fig.suptitle("Round trip of one 32-byte message, parent → child → parent\n"
                 + (title_lines(machine.line()) if machine else ""), fontsize=_TITLE)
    return fig


def plot_fds_per_second(fds: Iterable[Samples], machine: MachineInfo | None = None):
    """A matplotlib Figure: descriptors passed per second, Python beside C,
    for each number per message; bars are medians, whiskers p10 to p90."""
    fds = list(fds)
    fig = Figure(figsize=(WIDTH, 4.6), layout="constrained")
    ax = fig.subplots()
    width = 0.38
    for i, s in enumerate(fds):
        for j, (name, values) in enumerate((("python", s.values), ("c", s.reference_values))):
            if not values:
                continue
            med = percentile(values, 50) / 1e6
            lo, hi = percentile(values, 10) / 1e6, percentile(values, 90) / 1e6
            x = i + (j - 0.5) * width
            ax.bar(x, med, width, color=_COST_COLORS[name], label=name if i == 0 else None,
                   yerr=[[med - lo], [hi - med]], capsize=3, error_kw=dict(linewidth=1))
            ax.annotate(f"{med:.2f}M" if med >= 1 else f"{med * 1e3:.0f}k",
                        (x, hi), ha="center", va="bottom", fontsize=_SMALL,
                        xytext=(0, 2), textcoords="offset points")
    labels = []
    for s in fds:
        label = f"{s.params['per_message']}"
        if s.ratio is not None:
            label += f"\nPython/C {s.ratio:.2f}"
        elif s.params.get("reference_skipped"):
            label += "\n(C not measured)"
        labels.append(label)
    ax.set_xticks(range(len(fds)), labels)
    ax.set_xlabel("descriptors per SCM_RIGHTS message")
    ax.set_ylabel("descriptors per second, millions\n(received and closed)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=_SMALL, loc="upper left")
    placement = fds[0].params.get("placement", "") if fds else ""
    fig.suptitle("Descriptors passed per second, one direction\n"
                 + (title_lines(machine.line()) + "\n" if machine else "")
                 + title_lines(placement), fontsize=_SMALL)
    return fig



def _n_axis(ax, ns, ylabel: str) -> None:
    """The x axis of a figure against the number of workers (``ns`` on a
    log-2 scale, each labelled), ``ylabel``, the y axis from zero, a grid."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(ns), [str(n) for n in ns])
    ax.set_xlabel("worker processes N (log scale)")
    ax.set_ylabel(ylabel)
    _from_zero(ax)
    ax.grid(True, alpha=0.3)


def _from_zero(ax) -> None:
    """Start the y axis at 0, or lower when a point is below 0: an axis is
    never clipped to hide a value."""
    lo, hi = ax.get_ylim()
    ax.set_ylim(bottom=min(0.0, lo), top=hi)


def _title(text: str, machine: MachineInfo | None) -> str:
    return title_lines(text + ("\n" + machine.line() if machine else ""))


def plot_startup(result: StartupResult, *, phases: bool = True):
    """A matplotlib Figure: start-up to full mesh against N, one line per
    system (medians, the runs as dots: ngxlab, nginx, the Python floor where
    it ran), and the ratios per N: ngxlab / nginx with its target at N = 32,
    and, where the floor ran, ngxlab / floor (with its target) and floor /
    nginx. Drawn without pyplot."""
    fig = Figure(figsize=(WIDTH, 8.6), layout="constrained")
    ax, ax2 = fig.subplots(2, 1, gridspec_kw=dict(height_ratios=[3, 2]))
    for s in result.systems():
        xs = [n for n in result.ns if result.median(s, n) is not None]
        ys = [result.median(s, n) for n in xs]
        ax.plot(xs, ys, "o-", color=_COLORS[s], label=_LABELS[s])
        for n in xs:
            vals = result.values(s, n)
            ax.plot([n] * len(vals), vals, ".", color=_COLORS[s], alpha=0.35)
        if phases and s in ("ngxlab", "nginx"):
            fw = [result.median(s, n, "all_forked_ms") for n in xs]
            if all(v is not None for v in fw):
                ax.plot(xs, fw, ":", color=_COLORS[s], label=f"{s}: all N forked")
    imp = result.import_ms()
    if imp is not None:
        ax.axhline(imp, color=_COLORS["ngxlab"], linestyle="--", linewidth=0.8)
        ax.annotate("python -c 'import ngxlab.nginx'", (result.ns[0], imp), fontsize=_SMALL,
                    xytext=(2, 3), textcoords="offset points", color=_COLORS["ngxlab"])
    _n_axis(ax, result.ns, "start → every worker holds its N channels (ms)")
    ax.legend(fontsize=_SMALL, loc="upper left")
    ax.set_title("Start-up to the full mesh (medians; dots: runs)", fontsize=_TITLE)
    if result.nginx_skipped:
        ax2.text(0.5, 0.5, f"nginx not measured:\n{result.nginx_skipped}", ha="center",
                 va="center", fontsize=_SMALL, wrap=True, transform=ax2.transAxes)
        ax2.set_axis_off()
    else:
        xs = list(result.ns)
        ax2.plot(xs, [result.ratio(n) for n in xs], "o-", color=_COLORS["ngxlab"],
                 label="ngxlab / nginx")
        # undefined where a mesh was complete at the look that saw its first
        # worker (0 ms from first fork to mesh, either side): no point there
        after = [(n, result.ratio_after_first_fork(n)) for n in xs]
        after = [(n, v) for n, v in after if v is not None]
        if after:
            ax2.plot([n for n, _ in after], [v for _, v in after], "s--",
                     color=_COLORS["ngxlab"], alpha=0.6,
                     label="from the first fork on (same runs)")
        tn, bound = STARTUP_TARGET
        ax2.axhline(bound, color="black", linestyle=":", linewidth=1)
        ax2.annotate(f"ngxlab / nginx target at N={tn}: ≤ {bound:g}", (xs[0], bound),
                     fontsize=_SMALL, xytext=(2, 3), textcoords="offset points")
        if "floor" in result.systems():
            fl = [(n, result.floor_ratio(n), result.floor_over_nginx(n)) for n in xs]
            ax2.plot([n for n, r, _ in fl if r is not None], [r for _, r, _ in fl if r is not None],
                     "^-", color=_COLORS["floor"], label="ngxlab / floor (ours)")
            ax2.plot([n for n, _, r in fl if r is not None], [r for _, _, r in fl if r is not None],
                     "v:", color=_COLORS["floor"], label="floor / nginx (Python's)")
            fn, fbound = FLOOR_TARGET
            ax2.plot([fn], [fbound], "_", color=_COLORS["floor"], markersize=18,
                     markeredgewidth=2, label=f"ngxlab / floor target at N={fn}: ≤ {fbound:g}")
        ax2.axhline(1.0, color=_COLORS["nginx"], linewidth=0.8)
        _n_axis(ax2, xs, "ratio of medians (same run)")
        ax2.legend(fontsize=_SMALL)
        ax2.set_title("ratios of medians" if "floor" in result.systems()
                      else "ngxlab / nginx", fontsize=_TITLE)
    fig.suptitle(_title("Time from start until every worker holds its full channel set",
                        result.machine), fontsize=_TITLE)
    return fig


def plot_quit(result: QuitResult):
    """A matplotlib Figure: QUIT to every worker exited, against N."""
    fig = Figure(figsize=(WIDTH, 4.4), layout="constrained")
    ax = fig.subplots()
    for s in ("ngxlab", "nginx"):
        xs = [n for n in result.ns if result.median(s, n) is not None]
        if not xs:
            continue
        ax.plot(xs, [result.median(s, n) for n in xs], "o-", color=_COLORS[s],
                label=f"{s}: every worker exited")
        ax.plot(xs, [result.median(s, n, "quit_master_ms") for n in xs], "x:",
                color=_COLORS[s], label=f"{s}: master exited")
    _n_axis(ax, result.ns, "time after kill(master, SIGQUIT) (ms)")
    ax.legend(fontsize=_SMALL)
    if result.nginx_skipped:
        ax.text(0.02, 0.6, f"nginx not measured: {result.nginx_skipped}", fontsize=_SMALL,
                transform=ax.transAxes, wrap=True)
    fig.suptitle(_title("QUIT to exit (medians)", result.machine), fontsize=_TITLE)
    return fig


def plot_descriptors(result: DescriptorsResult):
    """A matplotlib Figure: channel descriptors against N, all processes
    together (left, with the formulas N² + 2N and (3N² + 5N)/2 drawn as
    lines through the measured points) and per worker by slot at the
    largest N (right)."""
    fig = Figure(figsize=(WIDTH, 8.4), layout="constrained")
    ax, ax2 = fig.subplots(2, 1)
    ns = list(result.ns)
    grid = []
    x = 1.0
    while x <= max(ns) + 1e-9:
        grid.append(x)
        x *= 2 ** 0.125
    ax.plot(grid, [g * g + 2 * g for g in grid], "-", color="black", linewidth=1,
            label="N² + 2N")
    ax.plot(grid, [(3 * g * g + 5 * g) / 2 for g in grid], "--",
            color=_COLORS["ngxlab, no closing"], linewidth=1, label="(3N² + 5N) / 2")
    markers = {"nginx": ("o", 9), "ngxlab": ("x", 7), "ngxlab, no closing": ("^", 6)}
    for s in result.systems():
        pts = [(c.n, c.channel_total) for c in result.counts if c.system == s]
        mk, size = markers.get(s, ("o", 6))
        ax.plot([p[0] for p in pts], [p[1] for p in pts], mk, color=_COLORS.get(s, "gray"),
                markersize=size, label=s, fillstyle="none" if s == "nginx" else "full",
                linestyle="none")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel("worker processes N (log scale)")
    ax.set_ylabel("channel descriptors, all processes (log scale)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=_SMALL)
    ax.set_title("Channel descriptors held in all processes", fontsize=_TITLE)
    big = max(ns)
    for s in result.systems():
        c = result.get(s, big)
        if c is None:
            continue
        mk, size = markers.get(s, ("o", 6))
        ax2.plot(range(c.n), c.worker_channel, mk + "-", color=_COLORS.get(s, "gray"),
                 markersize=size / 1.5, label=s, fillstyle="none" if s == "nginx" else "full",
                 linewidth=0.8)
    ax2.set_xlabel(f"worker slot k (N = {big})")
    ax2.set_ylabel("channel descriptors in that worker")
    _from_zero(ax2)
    ax2.grid(True, alpha=0.3)
    ax2.legend(fontsize=_SMALL)
    ax2.set_title("Per worker: N, or N + k + 1 without the closing", fontsize=_TITLE)
    fig.suptitle(_title("Channel descriptors against N (census of settled meshes)",
                        result.machine), fontsize=_TITLE)
    return fig


# -- under fire (ngxlab.lab.fire) ---------------------------------------------------------


def _log_ticks(axis) -> None:
    """Plain numbers on a log axis: 1, 2, 5, 10, 20, 50, ..."""
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.1e}"[0] in "25"
                                           else ""))


def plot_under_load(runs, *, title: str | None = None, machine: MachineInfo | None = None):
    """A matplotlib Figure of one action under load (``{system: UnderLoad}``
    of :mod:`ngxlab.lab.fire`): per system, the requests answered per
    second (bins of the timeline) with the bins that hold failed requests,
    and the caller's marks, each signal shaded until what it started was
    over (a reload: each HUP until the master settled; an upgrade: USR2,
    WINCH and QUIT, labelled); below, the slowest answer of each bin,
    counted from when the request was due, for both systems."""
    systems = list(runs)
    fig = Figure(figsize=(WIDTH, 2.0 * len(systems) + 2.5), layout="constrained")
    axes = fig.subplots(len(systems) + 1, 1, sharex=True)
    lat_ax = axes[-1]
    top = max(max(runs[s].load.timeline()["ok_per_s"], default=0) for s in systems)
    for ax, s in zip(axes, systems):
        u = runs[s]
        tl = u.load.timeline()
        ax.step(tl["t_s"], tl["ok_per_s"], where="post", color=_COLORS[s], linewidth=1.1)
        bad = [(t, k) for t, k in zip(tl["t_s"], tl["failed"]) if k]
        if bad:
            ax.plot([t for t, _ in bad], [0] * len(bad), "x", color="#d62728", markersize=8,
                    clip_on=False, label="bins with failed requests")
            ax.legend(fontsize=_SMALL, loc="lower right")
        _draw_marks(ax, u.load.marks, labels=u.action != "reload")
        ax.axhline(u.load.rate, color="black", linestyle=":", linewidth=0.8)
        ax.set_ylim(0, top * 1.3 or 1)
        ax.set_ylabel("answered per s")
        f = u.failures
        ax.set_title(f"{s}: {u.load.total} requests, {u.failed} failed"
                     + (f" ({', '.join(f'{k} {v}' for k, v in f.items() if v)})"
                        if u.failed else ""), fontsize=_TITLE, loc="left")
        ax.grid(True, alpha=0.3)
        lat = [(t, v) for t, v in zip(tl["t_s"], tl["latency_max_ms"]) if v is not None]
        lat_ax.step([t for t, _ in lat], [v for _, v in lat], where="post", color=_COLORS[s],
                    linewidth=1.1, label=s)
    lat_ax.set_yscale("log")
    _log_ticks(lat_ax.yaxis)
    lat_ax.set_ylabel("slowest answer\nper bin (ms)")
    lat_ax.set_xlabel("time since the load started (s)")
    lat_ax.grid(True, which="both", alpha=0.3)
    lat_ax.legend(fontsize=_SMALL, loc="upper right")
    first = runs[systems[0]].load
    fig.suptitle(_title(f"{title or runs[systems[0]].action}: {first.rate:g} requests/s "
                        f"offered (dotted), bins of {first.timeline()['bin_ms']:g} ms", machine),
                 fontsize=_TITLE)
    return fig


def _draw_marks(ax, marks, *, labels: bool) -> None:
    """The caller's marks on a timeline, which come in pairs (a signal, then
    the moment what it started was over): each pair shaded, its signal a
    thin line, labelled with ``labels``."""
    for (t, k), (t2, _done) in zip(marks[::2], marks[1::2]):
        ax.axvspan(t / 1000, t2 / 1000, color="grey", alpha=0.18, linewidth=0)
        ax.axvline(t / 1000, color="grey", linewidth=0.7)
        if labels:
            ax.annotate(k, (t / 1000, 1.0), xycoords=("data", "axes fraction"), fontsize=_SMALL,
                        va="top", ha="left", xytext=(2, -2), textcoords="offset points")


def plot_storm(storms):
    """A matplotlib Figure of a kill storm (``{system: StormResult}``): the
    distribution of respawn times (SIGKILL to a whole mesh, log scale,
    median and p99 marked), and how far the master's and the workers'
    descriptor counts were from their counts before the first kill, after
    every respawn (flat: zero throughout)."""
    fig = Figure(figsize=(WIDTH, 6.6), layout="constrained")
    ax, ax2 = fig.subplots(2, 1)
    for s, st in storms.items():
        xs = sorted(st.whole_ms)
        ys = [(i + 1) / len(xs) for i in range(len(xs))]
        rs = st.respawn
        ax.step(xs, ys, where="post", color=_COLORS[s], linewidth=1.4,
                label=f"{s}: median {rs['median']:.1f}, p99 {rs['p99']:.1f}, "
                      f"max {rs['max']:.1f} ms")
        ax.plot([rs["median"]], [0.5], "o", color=_COLORS[s])
        ax.plot([rs["p99"]], [0.99], "^", color=_COLORS[s])
    ax.set_xscale("log")
    _log_ticks(ax.xaxis)
    ax.set_xlabel("SIGKILL of a worker → mesh whole again (ms, log scale)")
    ax.set_ylabel("fraction of kills ≤ x")
    ax.set_ylim(0, 1.02)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=_SMALL, loc="lower right")
    ax.set_title("Respawn time (o median, △ p99)", fontsize=_TITLE, loc="left")
    series = []
    for s, st in storms.items():
        series += [(f"{s} master ({st.base_master_fds} at the start)", s, "-", "o",
                    [x - st.base_master_fds for x in st.master_fds]),
                   (f"{s} workers, fewest ({st.base_worker_fds})", s, "--", "s",
                    [x - st.base_worker_fds for x in st.worker_fds_min]),
                   (f"{s} workers, most ({st.base_worker_fds})", s, ":", "^",
                    [x - st.base_worker_fds for x in st.worker_fds_max])]
    worst = 1
    for i, (label, s, style, mk, ys) in enumerate(series):
        every = max(1, len(ys) // 8)
        ax2.plot(range(1, len(ys) + 1), ys, style, color=_COLORS[s], marker=mk, markersize=5,
                 markevery=(i * every // len(series), every), linewidth=1.2, label=label)
        worst = max([worst] + [abs(y) for y in ys])
    ax2.set_ylim(-worst - 1, worst + 1)
    ax2.set_xlabel("kill number")
    ax2.set_ylabel("descriptors held,\nchange since the start")
    ax2.grid(True, alpha=0.3)
    ax2.legend(fontsize=_SMALL, loc="upper center", ncol=2)
    ax2.set_ylim(-worst - 1, worst + 1.8)
    ax2.set_title("Descriptor counts after every respawn", fontsize=_TITLE, loc="left")
    first = next(iter(storms.values()))
    fig.suptitle(f"SIGKILL of a random worker, {first.kills} times, {first.n} workers",
                 fontsize=_TITLE)
    return fig


def plot_master_kill(results):
    """A matplotlib Figure: the workers still alive after SIGKILL of their
    master (``{variant: MasterKillResult}``), against time (log scale)."""
    fig = Figure(figsize=(WIDTH, 3.8), layout="constrained")
    ax = fig.subplots()
    look = {"ngxlab": (_COLORS["ngxlab"], "-", 2.0),
            "ngxlab --nginx-orphans": ("#9467bd", "--", 1.6),
            "nginx": (_COLORS["nginx"], "-", 3.5)}
    first = 0.05
    for v in sorted(results, key=lambda v: -look.get(v, ("", "", 1))[2]):
        m = results[v]
        hold = m.hold_s * 1000
        pts = [(max(t, first), k) for t, k in m.alive] + [(hold, m.alive[-1][1])]
        color, style, width = look.get(v, ("gray", "-", 1.5))
        ans = m.answered
        ax.step([t for t, _ in pts], [k for _, k in pts], style, where="post", color=color,
                linewidth=width, label=f"{v}: {ans['ok']} of {sum(ans.values())} requests "
                                       f"answered after {hold:g} ms")
    ax.set_xscale("log")
    _log_ticks(ax.xaxis)
    ax.set_xlabel("time since SIGKILL of the master (ms, log scale)")
    ax.set_ylabel("workers alive")
    ax.set_ylim(-0.2, max(m.n for m in results.values()) + 0.8)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=_SMALL, loc="center left")
    ax.set_title("The workers after kill -9 of their master", fontsize=_TITLE, loc="left")
    return fig
