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

from typing import Iterable

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from ngxlab.lab.compare import Samples, percentile
from ngxlab.lab.descriptors import DescriptorsResult
from ngxlab.lab.report import MachineInfo
from ngxlab.lab.timing import STARTUP_TARGET, QuitResult, StartupResult

__all__ = ["plot_round_trips", "plot_fds_per_second", "plot_startup", "plot_quit",
           "plot_descriptors"]

_COLORS = {"ngxlab": "#1f77b4", "nginx": "#009639", "inprocess": "#7f7f7f",
           "ngxlab, no closing": "#d62728"}
_LABELS = {"ngxlab": "ngxlab (python -m ngxlab run)", "nginx": "nginx",
           "inprocess": "ngxlab in-process (lab.Master)"}


_COST_COLORS = {"ngxlab": "#1f77b4", "raw": "#ff7f0e", "c": "#000000", "mp_pipe": "#2ca02c",
           "mp_queue": "#d62728", "os_pipe": "#9467bd", "python": "#1f77b4"}


def plot_round_trips(sets: Iterable[dict[str, Samples]], machine: MachineInfo | None = None):
    """A matplotlib Figure: the CDF of round-trip times per variant, one
    panel per set (no descriptor / one descriptor), the C floor's median
    marked. Drawn without pyplot, so it does not change a notebook's backend."""
    sets = list(sets)
    fig = Figure(figsize=(6.0 * len(sets), 4.6), layout="constrained")
    axes = fig.subplots(1, len(sets), squeeze=False)[0]
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
            ax.annotate("C floor", (c.median / 1000, 0.03), rotation=90, fontsize=8,
                        xytext=(3, 0), textcoords="offset points", va="bottom")
        elif c is not None and c.skipped:
            ax.text(0.02, 0.97, f"C floor: {c.skipped}", transform=ax.transAxes, fontsize=7,
                    va="top", wrap=True)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(
            lambda x, _: f"{x:g}" if f"{x:.1e}"[0] in "2345" else ""))
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.set_xlabel(f"round trip (µs, log scale; each sample the mean of {batch})")
        ax.set_ylabel("fraction of samples ≤ x")
        ax.set_title(f"{measure}\n{placement}", fontsize=9)
        ax.set_ylim(0, 1.02)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("Round trip of one 32-byte message, parent → child → parent\n"
                 + (machine.line() if machine else ""), fontsize=10)
    return fig


def plot_fds_per_second(fds: Iterable[Samples], machine: MachineInfo | None = None):
    """A matplotlib Figure: descriptors passed per second, Python beside C,
    for each number per message; bars are medians, whiskers p10 to p90."""
    fds = list(fds)
    fig = Figure(figsize=(7.5, 4.6), layout="constrained")
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
                        (x, hi), ha="center", va="bottom", fontsize=8,
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
    ax.legend(fontsize=8, loc="upper left")
    placement = fds[0].params.get("placement", "") if fds else ""
    fig.suptitle("Descriptors passed per second, one direction\n"
                 + (machine.line() + "\n" if machine else "") + placement, fontsize=9)
    return fig



def _from_zero(ax) -> None:
    """Start the y axis at 0, or lower when a point is below 0: an axis is
    never clipped to hide a value."""
    lo, hi = ax.get_ylim()
    ax.set_ylim(bottom=min(0.0, lo), top=hi)


def _title(text: str, machine: MachineInfo | None) -> str:
    return text + ("\n" + machine.line() if machine else "")


def plot_startup(result: StartupResult, *, phases: bool = True):
    """A matplotlib Figure: start-up to full mesh against N, one line per
    system (medians, the runs as dots), and the ratio ngxlab / nginx per N
    with the target at N = 32. Drawn without pyplot."""
    fig = Figure(figsize=(11, 4.6), layout="constrained")
    ax, ax2 = fig.subplots(1, 2, gridspec_kw=dict(width_ratios=[3, 2]))
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
        ax.annotate("python -c 'import ngxlab.nginx'", (result.ns[0], imp), fontsize=7,
                    xytext=(2, 3), textcoords="offset points", color=_COLORS["ngxlab"])
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(result.ns), [str(n) for n in result.ns])
    ax.set_xlabel("worker processes N (log scale)")
    ax.set_ylabel("start → every worker holds its N channels (ms)")
    _from_zero(ax)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title("Start-up to the full mesh (medians; dots: runs)", fontsize=10)
    if result.nginx_skipped:
        ax2.text(0.5, 0.5, f"nginx not measured:\n{result.nginx_skipped}", ha="center",
                 va="center", fontsize=8, wrap=True, transform=ax2.transAxes)
        ax2.set_axis_off()
    else:
        xs = list(result.ns)
        ax2.plot(xs, [result.ratio(n) for n in xs], "o-", color=_COLORS["ngxlab"],
                 label="ngxlab / nginx")
        after = [result.ratio_after_first_fork(n) for n in xs]
        if all(v is not None for v in after):
            ax2.plot(xs, after, "s--", color=_COLORS["ngxlab"], alpha=0.6,
                     label="from the first fork on (same runs)")
        tn, bound = STARTUP_TARGET
        ax2.axhline(bound, color="black", linestyle=":", linewidth=1)
        ax2.annotate(f"target at N={tn}: ≤ {bound:g}", (xs[0], bound), fontsize=7,
                     xytext=(2, 3), textcoords="offset points")
        ax2.axhline(1.0, color=_COLORS["nginx"], linewidth=0.8)
        ax2.set_xscale("log", base=2)
        ax2.set_xticks(xs, [str(n) for n in xs])
        ax2.set_xlabel("worker processes N (log scale)")
        ax2.set_ylabel("ratio of medians (same run)")
        _from_zero(ax2)
        ax2.grid(True, alpha=0.3)
        ax2.legend(fontsize=7)
        ax2.set_title("ngxlab / nginx", fontsize=10)
    fig.suptitle(_title("Time from start until every worker holds its full channel set",
                        result.machine), fontsize=10)
    return fig


def plot_quit(result: QuitResult):
    """A matplotlib Figure: QUIT to every worker exited, against N."""
    fig = Figure(figsize=(9, 4.4), layout="constrained")
    ax = fig.subplots()
    for s in ("ngxlab", "nginx"):
        xs = [n for n in result.ns if result.median(s, n) is not None]
        if not xs:
            continue
        ax.plot(xs, [result.median(s, n) for n in xs], "o-", color=_COLORS[s],
                label=f"{s}: every worker exited")
        ax.plot(xs, [result.median(s, n, "quit_master_ms") for n in xs], "x:",
                color=_COLORS[s], label=f"{s}: master exited")
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(result.ns), [str(n) for n in result.ns])
    ax.set_xlabel("worker processes N (log scale)")
    ax.set_ylabel("time after kill(master, SIGQUIT) (ms)")
    _from_zero(ax)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    if result.nginx_skipped:
        ax.text(0.02, 0.6, f"nginx not measured: {result.nginx_skipped}", fontsize=7,
                transform=ax.transAxes, wrap=True)
    fig.suptitle(_title("QUIT to exit (medians)", result.machine), fontsize=10)
    return fig


def plot_descriptors(result: DescriptorsResult):
    """A matplotlib Figure: channel descriptors against N, all processes
    together (left, with the formulas N² + 2N and (3N² + 5N)/2 drawn as
    lines through the measured points) and per worker by slot at the
    largest N (right)."""
    fig = Figure(figsize=(11, 4.6), layout="constrained")
    ax, ax2 = fig.subplots(1, 2)
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
    ax.legend(fontsize=8)
    ax.set_title("Channel descriptors held in all processes", fontsize=10)
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
    ax2.legend(fontsize=8)
    ax2.set_title("Per worker: N, or N + k + 1 without the closing", fontsize=10)
    fig.suptitle(_title("Channel descriptors against N (census of settled meshes)",
                        result.machine), fontsize=10)
    return fig
