"""Channel descriptors per process against N, counted with the census.

:func:`descriptors_vs_n`
    Channel descriptors per process against N, read with the census from a
    settled mesh: a real nginx (``lab.Nginx``), ngxlab (``lab.MasterProcess``)
    and ngxlab's in-process master with the closing in
    ``ngx_worker_process_init`` skipped (``lab.Master(close_inherited=False)``).
    nginx and ngxlab: 2N in the master, N in each worker, N² + 2N in all;
    without the closing the worker in slot k keeps what it inherited: N + k + 1,
    (3N² + 5N) / 2 in all.

The formulas are here too (:func:`mesh_total`, :func:`without_closing_worker`,
:func:`without_closing_total`), so that a chapter or a test compares the
counts with them.

Not a mirror of nginx: nothing here has an ``ngx_`` name.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields
from typing import Sequence

from ngxlab.lab import report
from ngxlab.lab.census import Census
from ngxlab.lab.master import Master
from ngxlab.lab.nginx import Nginx, nginx_available
from ngxlab.lab.report import MachineInfo, machine_info
from ngxlab.lab.run import MasterProcess
from ngxlab.lab.timing import DEFAULT_NS, TimingError, _epoll_count, calibrate

__all__ = ["DescriptorCount", "DescriptorsResult", "mesh_total", "without_closing_worker",
           "without_closing_total", "descriptors_vs_n"]


def mesh_total(n: int) -> int:
    """Channel descriptors in a settled nginx (or ngxlab) with ``n`` workers:
    2n in the master, n in each worker: n² + 2n."""
    return n * n + 2 * n


def without_closing_worker(n: int, slot: int) -> int:
    """Channel descriptors in the worker in ``slot`` when it closes nothing
    it inherited: both ends of slots 0..slot (2(slot+1)), plus the
    ``channel[0]`` of each later slot sent to it (n-1-slot): n + slot + 1."""
    return n + slot + 1


def without_closing_total(n: int) -> int:
    """All channel descriptors without the closing: 2n + sum of n+k+1 = (3n² + 5n) / 2."""
    return 2 * n + sum(without_closing_worker(n, k) for k in range(n))



# -- descriptors against N ---------------------------------------------------------------


@dataclass
class DescriptorCount:
    """The census of one settled mesh: channel ends and all descriptors,
    in the master and in each worker (by slot)."""

    system: str                     # "nginx", "ngxlab", "ngxlab, no closing"
    n: int
    master_channel: int
    master_total: int | None        # None for the in-process master (this process)
    worker_channel: list[int]       # by slot
    worker_total: list[int]
    channel_total: int
    pairs: int

    @property
    def expected_total(self) -> int:
        return without_closing_total(self.n) if self.system == "ngxlab, no closing" \
            else mesh_total(self.n)

    @property
    def expected_workers(self) -> list[int]:
        if self.system == "ngxlab, no closing":
            return [without_closing_worker(self.n, k) for k in range(self.n)]
        return [self.n] * self.n

    @property
    def matches_formula(self) -> bool:
        return (self.channel_total == self.expected_total and self.master_channel == 2 * self.n
                and self.worker_channel == self.expected_workers)


@dataclass
class DescriptorsResult:
    ns: tuple[int, ...]
    counts: list[DescriptorCount]
    nginx_skipped: str | None
    machine: MachineInfo
    duration_s: float = 0.0

    def get(self, system: str, n: int) -> DescriptorCount | None:
        for c in self.counts:
            if c.system == system and c.n == n:
                return c
        return None

    def systems(self) -> list[str]:
        return list(dict.fromkeys(c.system for c in self.counts))

    @property
    def all_match(self) -> bool:
        return all(c.matches_formula for c in self.counts)

    def table(self) -> str:
        lines = [f"{'system':<20} {'N':>3} {'master ch/total':>15} {'worker ch':>14} "
                 f"{'worker total':>13} {'all channel':>11} {'formula':>8}"]
        for c in self.counts:
            wc = sorted(set(c.worker_channel))
            wt = sorted(set(c.worker_total))
            wcs = (f"{wc[0]}" if len(wc) == 1 else f"{min(wc)}..{max(wc)}")
            wts = (f"{wt[0]}" if len(wt) == 1 else f"{min(wt)}..{max(wt)}")
            lines.append(f"{c.system:<20} {c.n:>3} "
                         f"{str(c.master_channel) + '/' + str(c.master_total or '-'):>15} "
                         f"{wcs:>14} {wts:>13} {c.channel_total:>11} {c.expected_total:>8}"
                         + ("" if c.matches_formula else "  MISMATCH"))
        return report.table_text(lines, self.nginx_skipped)

    def to_dict(self) -> dict:
        return {"ns": list(self.ns),
                "counts": [asdict(c) | {"expected_total": c.expected_total,
                                        "matches_formula": c.matches_formula}
                           for c in self.counts],
                "nginx_skipped": self.nginx_skipped, "machine": asdict(self.machine),
                "machine_line": self.machine.line(), "duration_s": self.duration_s}

    @classmethod
    def from_dict(cls, d: dict) -> "DescriptorsResult":
        names = {f.name for f in fields(DescriptorCount)}
        return cls(ns=tuple(d["ns"]),
                   counts=[DescriptorCount(**{k: v for k, v in c.items() if k in names})
                           for c in d["counts"]],
                   nginx_skipped=d["nginx_skipped"], machine=MachineInfo.from_dict(d["machine"]),
                   duration_s=d["duration_s"])


def _count(system: str, n: int, c: Census, master_total: bool = True) -> DescriptorCount:
    ws = c.workers
    m = c.master
    return DescriptorCount(system=system, n=n, master_channel=m.channel_fds,
                           master_total=m.total_fds if master_total else None,
                           worker_channel=[w.channel_fds for w in ws],
                           worker_total=[w.total_fds for w in ws],
                           channel_total=c.channel_fds, pairs=len(c.pairs))


def _settled_without_closing(m, n: int, timeout: float, targets: int) -> Census:
    """The census once every worker has finished its initialisation (its
    epoll set is complete: the last worker's channel count never changes,
    so the count alone cannot say) and holds N + k + 1 channel ends."""
    deadline = time.monotonic() + timeout
    while True:
        c = m.census()
        ws = c.workers
        if len(ws) == n and [w.channel_fds for w in ws] == \
                [without_closing_worker(n, k) for k in range(n)] and len(c.pairs) == n \
                and all(_epoll_count(w.pid) == targets for w in ws):
            return c
        if time.monotonic() >= deadline:
            raise TimingError(f"lab.Master(close_inherited=False): not settled within "
                               f"{timeout} s:\n{c}")
        time.sleep(0.02)


def descriptors_vs_n(ns: Sequence[int] = DEFAULT_NS, *, nginx: bool = True,
                     quick: bool = False, nginx_binary=None, timeout: float = 30.0,
                     progress: bool = False) -> DescriptorsResult:
    """For each N: the census of a settled real nginx (``lab.Nginx``), of
    ngxlab (``lab.MasterProcess``) and of ``lab.Master(close_inherited=False)``.
    ``quick`` limits ``ns`` to those up to 8."""
    started = time.monotonic()
    ns = tuple(int(n) for n in ns if not quick or n <= 8) or (1,)
    machine = machine_info()
    binary, why = ((None, "not asked for (nginx=False)") if not nginx
                   else nginx_available(nginx_binary))
    counts: list[DescriptorCount] = []
    targets = calibrate("inprocess").epoll_targets
    bar = report.bar(len(ns) * 3, "descriptors per process", bool(progress))
    try:
        for n in ns:
            if binary:
                with Nginx(workers=n, binary=binary, start_timeout=timeout) as ngx:
                    counts.append(_count("nginx", n, ngx.wait_mesh(n, timeout=timeout)))
            bar.update(1)
            with MasterProcess(workers=n, start_timeout=timeout) as mp:
                counts.append(_count("ngxlab", n, mp.wait_mesh(n, timeout=timeout)))
            bar.update(1)
            m = Master(workers=n, close_inherited=False)
            try:
                with m:
                    c = _settled_without_closing(m, n, timeout, targets)
                    counts.append(_count("ngxlab, no closing", n, c, master_total=False))
            finally:
                m.cleanup()
            bar.update(1)
    finally:
        bar.close()
    return DescriptorsResult(ns=ns, counts=counts, nginx_skipped=None if binary else why,
                             machine=machine, duration_s=round(time.monotonic() - started, 3))
