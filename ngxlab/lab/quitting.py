"""How long the mesh takes to go: from ``kill(master, SIGQUIT)`` (what
``nginx -s quit`` sends) until every worker has exited (gone, or a zombie
waiting for its master to reap it), and until the master has, ngxlab
beside a real nginx, interleaved in the same runs as the start-up of
:mod:`ngxlab.lab.timing` (whose runs end with the timed QUIT).

Not a mirror of nginx: nothing here has an ``ngx_`` name.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Sequence

from ngxlab.lab import report
from ngxlab.lab.compare import Samples
from ngxlab.lab.report import MachineInfo
from ngxlab.lab.timing import DEFAULT_NS, LifeRun, StartupResult, startup_to_mesh

__all__ = ["QuitResult", "quit_to_exit"]


@dataclass
class QuitResult:
    """What :func:`quit_to_exit` measured: per run, ms from ``kill(SIGQUIT)``
    until every worker had exited (``quit_workers_ms``) and the master
    (``quit_master_ms``)."""

    ns: tuple[int, ...]
    repeats: int
    runs: list[LifeRun]
    nginx_skipped: str | None
    machine: MachineInfo
    duration_s: float = 0.0

    def samples(self, system: str, n: int, what: str = "quit_workers_ms") -> Samples:
        vals = [getattr(r, what) for r in self.runs if r.system == system and r.n == n
                and getattr(r, what) is not None]
        ref = [] if self.nginx_skipped else [getattr(r, what) for r in self.runs
                                             if r.system == "nginx" and r.n == n
                                             and getattr(r, what) is not None]
        return Samples(measure=f"QUIT to {'workers' if 'workers' in what else 'master'} "
                               f"exited (ms), N={n}", variant=system, unit="ms", values=vals,
                       reference="nginx", reference_values=ref, params=dict(n=n),
                       skipped=self.nginx_skipped if system == "nginx" else None)

    def median(self, system: str, n: int, what: str = "quit_workers_ms") -> float | None:
        return self.samples(system, n, what).median

    def ratio(self, n: int, what: str = "quit_workers_ms") -> float | None:
        return None if self.nginx_skipped else self.samples("ngxlab", n, what).ratio

    @classmethod
    def from_dict(cls, d: dict) -> "QuitResult":
        return cls(ns=tuple(d["ns"]), repeats=d["repeats"], runs=[LifeRun(**r) for r in d["runs"]],
                   nginx_skipped=d["nginx_skipped"], machine=MachineInfo.from_dict(d["machine"]),
                   duration_s=d["duration_s"])

    def ratios(self) -> list[dict]:
        rows = []
        for n in self.ns:
            for what, label in (("quit_workers_ms", "workers"), ("quit_master_ms", "master")):
                s = self.samples("ngxlab", n, what)
                rows.append(dict(measure=f"QUIT to {label} exited, N={n}", subject="ngxlab",
                                 reference="nginx", unit="ms", subject_median=s.median,
                                 reference_median=s.reference_median, ratio=s.ratio,
                                 target=None, met=None))
        return rows

    def table(self) -> str:
        def f(x, fmt="{:.1f}"):
            return "-" if x is None else fmt.format(x)
        lines = [f"{'N':>3} {'ngxlab workers':>14} {'nginx workers':>13} {'ratio':>6} "
                 f"{'ngxlab master':>13} {'nginx master':>12} {'ratio':>6}"]
        for n in self.ns:
            lines.append(f"{n:>3} {f(self.median('ngxlab', n)):>14} "
                         f"{f(self.median('nginx', n)):>13} "
                         f"{f(self.ratio(n), '{:.2f}'):>6} "
                         f"{f(self.median('ngxlab', n, 'quit_master_ms')):>13} "
                         f"{f(self.median('nginx', n, 'quit_master_ms')):>12} "
                         f"{f(self.ratio(n, 'quit_master_ms'), '{:.2f}'):>6}")
        return report.table_text(lines, self.nginx_skipped)

    def to_dict(self) -> dict:
        return {"ns": list(self.ns), "repeats": self.repeats,
                "runs": [asdict(r) for r in self.runs if r.system != "inprocess"],
                "nginx_skipped": self.nginx_skipped, "machine": asdict(self.machine),
                "machine_line": self.machine.line(),
                "duration_s": self.duration_s,
                "medians": {s: {str(n): {"workers": self.median(s, n),
                                         "master": self.median(s, n, "quit_master_ms")}
                                for n in self.ns} for s in ("ngxlab", "nginx")},
                "ratios": self.ratios()}


def quit_to_exit(ns: Sequence[int] = DEFAULT_NS, repeats: int | None = None, *,
                 nginx: bool = True, quick: bool = False, nginx_binary=None,
                 poll_interval: float = 0.0005, timeout: float = 30.0,
                 progress: bool = False, reuse: StartupResult | None = None) -> QuitResult:
    """Time from ``kill(master, SIGQUIT)`` until every worker has exited,
    and until the master has, for ngxlab and nginx interleaved. Each run
    starts the program and waits for its full mesh first. ``reuse``: the
    result of ``startup_to_mesh(..., measure_quit=True)``, whose runs already
    ended with a timed QUIT (no new starts)."""
    started = time.monotonic()
    if reuse is not None:
        runs = [r for r in reuse.runs if r.quit_workers_ms is not None]
        if not runs:
            raise ValueError("reuse: the start-up runs were made without measure_quit=True")
        return QuitResult(ns=reuse.ns, repeats=reuse.repeats, runs=runs,
                          nginx_skipped=reuse.nginx_skipped, machine=reuse.machine,
                          duration_s=0.0)
    res = startup_to_mesh(ns, repeats, nginx=nginx, inprocess=False, floor=False, quick=quick,
                          nginx_binary=nginx_binary, python=False, measure_quit=True,
                          poll_interval=poll_interval, timeout=timeout, confirm=False,
                          progress=progress)
    return QuitResult(ns=res.ns, repeats=res.repeats, runs=res.runs,
                      nginx_skipped=res.nginx_skipped, machine=res.machine,
                      duration_s=round(time.monotonic() - started, 3))
