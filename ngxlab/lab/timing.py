"""How long the mesh takes to form, and to go, against N: ngxlab beside a real nginx.

Measurements, not tests: nothing here asserts a speed. Each measurement runs
ngxlab and a real nginx **interleaved in the same run** (for every N and
every repeat one of each, the order alternating), so that whatever else the
machine is doing falls on both alike; the results are medians and the ratio
ngxlab / nginx of the medians of that one run. Where no nginx is installed
its side is reported as skipped, with the reason, and never estimated.

:func:`startup_to_mesh`
    Time from the start of the program until every worker holds its full
    channel set: N channel ends in each worker, 2N in the master. ngxlab is
    ``python -m ngxlab run`` (:class:`~ngxlab.lab.run.MasterProcess`); nginx
    is :class:`~ngxlab.lab.nginx.Nginx` with ``keeper=False``, so that nginx
    is this process's own child (the keeper is a Python process whose
    start-up would be counted against nginx). The Python floor is
    ``python -m ngxlab.lab.floor`` (:class:`~ngxlab.lab.run.FloorProcess`;
    :mod:`ngxlab.lab.floor`), started as ngxlab is: only the mesh's system
    calls, in Python, so that ngxlab / floor is what ngxlab adds to Python
    and floor / nginx what Python adds to C (:data:`FLOOR_TARGET`). All are
    started with ``Runner.launch()``, and the clock starts just before its
    ``subprocess.Popen`` (``launched_at``). The
    in-process variant (``lab.Master``: this process is the master and forks
    the workers itself) is measured too, for reference, from the call that
    creates the Master.

    How the end is seen. The census (:mod:`ngxlab.lab.census`) says exactly
    who holds which channel, but one census dumps the kernel's Unix socket
    table and reads every process's descriptors, far slower than a look at
    ``/proc`` (each run records what its census cost): polled during the
    start-up it would both blur the time and slow what it measures. So the start-up is
    watched through ``/proc`` only: a poll lists the master's children
    (``/proc/PID/task/*/children``) and counts each process's descriptors
    (one ``listdir`` of ``/proc/PID/fd`` each), sleeping
    ``poll_interval`` between polls. A worker counts as complete when it has
    finished ``ngx_worker_process_init`` (its epoll instance holds the
    calibrated number of descriptors: the channel is registered last, after
    the inherited ends are closed) and its descriptor count is N plus the
    calibrated number of non-channel descriptors; the master when it holds
    2N plus its own. Both conditions only grow after initialisation, so the
    first poll where every process meets them is the end of the start-up, to
    within one poll. The numbers of non-channel descriptors are calibrated
    once per system (a start with two workers, read with the census), and
    every timed run is confirmed afterwards by a census: full mesh, and the
    calibrated totals. Each run records its poll count and the mean cost of
    one poll, and the census's cost, so the resolution is known.

    Where the time goes: each run records when the first worker appeared
    (everything before it is the program's own start-up: for ngxlab the
    interpreter and its imports) and when all N had been forked;
    :meth:`StartupResult.ratio_after_first_fork` compares the two systems
    from their first fork on, within the same runs. :func:`python_startup`
    times, in the same rotation, the start and exit of ``python -c pass``,
    of ``python -c "import ngxlab.nginx"`` and of ``nginx -v``, for
    reference; nothing is subtracted from another run's median.

How long the mesh takes to go after QUIT is :mod:`ngxlab.lab.quitting`'s,
measured in the same runs.

Not a mirror of nginx: nothing here has an ``ngx_`` name.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import select
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Sequence

from ngxlab.lab import proc, report
from ngxlab.lab.census import Census, CensusError
from ngxlab.lab.compare import Samples, Target, percentile, rotated, row
from ngxlab.lab.master import Master
from ngxlab.lab.nginx import Nginx, find_nginx, nginx_available
from ngxlab.lab.report import MachineInfo, machine_info
from ngxlab.lab.run import FloorProcess, MasterProcess
from ngxlab.lab.runner import ngxlab_env

__all__ = [
    "TimingError", "Calibration", "LifeRun", "StartupResult",
    "DEFAULT_NS", "QUICK_NS", "STARTUP_TARGET", "FLOOR_TARGET", "TARGETS", "SYSTEMS",
    "calibrate", "python_startup", "startup_to_mesh", "profile_master_start",
]

DEFAULT_NS = (1, 2, 4, 8, 16, 32)
QUICK_NS = (1, 4, 16, 32)
SYSTEMS = ("ngxlab", "nginx", "floor", "inprocess")
STARTUP_TARGET = (32, 1.5)      # 32 workers to a complete mesh in <= 1.5 x nginx's time
FLOOR_TARGET = (32, 1.3)        # ... and in <= 1.3 x the Python floor's
TARGETS = (Target(f"start-up to full mesh, N={STARTUP_TARGET[0]}", "ngxlab", "nginx", "<=",
                  STARTUP_TARGET[1]),
           Target(f"start-up to full mesh, N={FLOOR_TARGET[0]}", "ngxlab", "floor", "<=",
                  FLOOR_TARGET[1]))



def _target_ns() -> set[int]:
    return {STARTUP_TARGET[0], FLOOR_TARGET[0]}


class TimingError(RuntimeError):
    """A measurement could not be made (a program failed to start, a mesh
    never completed); the message says what was seen."""



def _nsockets(pid: int) -> int:
    """How many of ``pid``'s descriptors are sockets (-1 when it is gone)."""
    fds = proc.fd_targets(pid)
    return -1 if fds is None else sum(1 for t in fds.values() if t.startswith("socket:"))


def _epoll_count(pid: int) -> int:
    """How many descriptors are in ``pid``'s epoll set; -1 unless it holds
    exactly one epoll instance (a worker forked from a process that has its
    own, e.g. a notebook kernel, holds that one too until it closes what it
    inherited)."""
    fds = proc.fd_targets(pid)
    found = [fd for fd, t in (fds or {}).items() if t == "anon_inode:[eventpoll]"]
    if len(found) != 1:
        return -1
    targets = proc.epoll_set(pid, found[0])
    return -1 if targets is None else len(targets)


# -- calibration -------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """What one settled process of a system holds besides its channels: the
    master's other descriptors, a worker's other descriptors, and how many
    descriptors a worker's epoll instance holds once its initialisation is
    over (the channel is the last one added). Read with the census from a
    start with ``n`` workers."""

    system: str
    n: int
    master_other: int | None        # None for the in-process master (this process)
    worker_other: int
    epoll_targets: int
    worker_sockets: int             # sockets in a worker that are not channels (listening)

    def worker_socket_total(self, n: int) -> int:
        return n + self.worker_sockets

    def worker_total(self, n: int) -> int:
        return n + self.worker_other

    def master_total(self, n: int) -> int | None:
        return None if self.master_other is None else 2 * n + self.master_other


_calibrations: dict[tuple, Calibration] = {}


def _calibration_from(system: str, n: int, c: Census, master: bool = True) -> Calibration:
    workers = c.workers
    others = {w.total_fds - w.channel_fds for w in workers}
    if len(others) != 1:
        raise TimingError(f"{system}: workers differ in their non-channel descriptors "
                           f"({sorted(others)}):\n{c}")
    targets = {_epoll_count(w.pid) for w in workers}
    if len(targets) != 1 or -1 in targets:
        raise TimingError(f"{system}: cannot read the workers' epoll sets ({sorted(targets)})")
    socks = {sum(1 for f in w.fds if f.target.startswith("socket:") and not f.is_channel)
             for w in workers}
    if len(socks) != 1:
        raise TimingError(f"{system}: workers differ in their other sockets ({sorted(socks)})")
    m = c.master
    return Calibration(system=system, n=n,
                       master_other=(m.total_fds - m.channel_fds) if master and m else None,
                       worker_other=others.pop(), epoll_targets=targets.pop(),
                       worker_sockets=socks.pop())


def _settle(get_census: Callable[[], Census], n: int, timeout: float, what: str) -> Census:
    deadline = time.monotonic() + timeout
    last = "no census"
    while True:
        try:
            c = get_census()
            if c.is_full_mesh(n) and len(c.workers) == n:
                return c
            last = c.summary()
        except CensusError as e:
            last = str(e)
        if time.monotonic() >= deadline:
            raise TimingError(f"{what}: no full mesh of {n} workers within {timeout} s ({last})")
        time.sleep(0.02)


def calibrate(system: str, *, binary=None, n: int = 2, timeout: float = 20.0,
              refresh: bool = False) -> Calibration:
    """Start ``system`` ("ngxlab", "nginx", "floor" or "inprocess") with ``n`` workers,
    wait for the full mesh with the census, and read what each process holds
    besides its channels. Cached per system for this process (``refresh``
    measures again). Doubles as the warm-up before timed runs."""
    if system not in SYSTEMS:
        raise ValueError(f"system must be one of {SYSTEMS}, not {system!r}")
    if system == "nginx":
        binary = find_nginx(binary)
    key = (system, binary)
    if not refresh and key in _calibrations:
        return _calibrations[key]
    if system == "inprocess":
        with Master(workers=n) as m:
            c = _settle(m.census, n, timeout, "lab.Master")
            cal = _calibration_from(system, n, c, master=False)
        m.cleanup()
    else:
        with _runner(system, n, binary, timeout) as r:
            cal = _calibration_from(system, n, r.wait_mesh(n, timeout=timeout))
    _calibrations[key] = cal
    return cal



# -- one life: start, mesh, quit ------------------------------------------------------


@dataclass
class LifeRun:
    """One timed start (and, for the two programs, one timed QUIT) of one system.

    Times in ms from the clock's start (just before ``Popen``, or before the
    ``lab.Master`` is created): ``first_worker_ms`` when the first child was
    seen, ``all_forked_ms`` when all N were, ``mesh_ms`` when every process
    held its full channel set. ``polls``: /proc polls made; ``poll_us``: the
    mean cost of one; ``census_ms``: what the confirming census cost.
    ``master_cpu_ms``/``workers_cpu_ms``: CPU time the master, and all the
    workers together, had used when the mesh was seen complete
    (``/proc/PID/schedstat``; None for the in-process master, which is this
    process); ``worker_page_faults``: the mean number of minor page faults
    per worker by then (``/proc/PID/stat``), mostly copy-on-write copies of
    pages shared with the master after the fork; ``master_page_faults``:
    the master's own minor page faults by then (None in-process): every
    fork shares the master's pages with the child again, so each page the
    master writes after a fork is copied first, fork after fork
    (:meth:`StartupResult.master_faults_per_worker`); ``worker_cpu_list``: each
    worker's CPU ms by then, in spawn order (slot k has read N-1-k
    OPEN_CHANNEL messages: the slope is the cost of one, the intercept the
    cost of a worker's start). For ``inprocess`` the first-worker and all-forked times are
    when ``lab.Master`` returned, all workers forked.
    ``quit_workers_ms``/``quit_master_ms``: from ``kill(SIGQUIT)`` until
    every worker had exited, and the master."""

    system: str
    n: int
    repeat: int
    order: int                       # position in this (N, repeat)'s interleaving
    mesh_ms: float
    first_worker_ms: float | None
    all_forked_ms: float | None
    polls: int
    poll_us: float
    confirmed: bool
    census_ms: float | None = None
    detail: str = ""
    master_cpu_ms: float | None = None
    workers_cpu_ms: float | None = None
    worker_page_faults: float | None = None     # mean minor faults per worker
    worker_cpu_list: list[float] = field(default_factory=list)  # by spawn order (slot)
    master_page_faults: int | None = None       # the master's minor faults
    master_pid: int | None = None
    worker_pids: list[int] = field(default_factory=list)
    quit_workers_ms: float | None = None
    quit_master_ms: float | None = None


def _watch_mesh(t0: float, n: int, cal: Calibration, *, master: int | None,
                workers: Callable[[], list[int]], alive: Callable[[], bool],
                poll_interval: float, timeout: float, what: str,
                note: Callable[[Iterable[int]], None] | None = None) -> dict:
    """Poll /proc until every process holds its full channel set (see the
    module docstring); return the phase times and the poll statistics."""
    want_worker = cal.worker_total(n)
    want_sockets = cal.worker_socket_total(n)
    want_master = cal.master_total(n) if master is not None else None
    inited: set[int] = set()
    complete: set[int] = set()
    first = forked = None
    polls = 0
    spent = 0.0
    clock = time.perf_counter
    deadline = t0 + timeout
    while True:
        a = clock()
        kids = workers()
        if kids and first is None:
            first = a
        ok = len(kids) == n
        if ok and forked is None:
            forked = a
            if note is not None:
                note(kids)
        if ok and want_master is not None and proc.fd_count(master) < want_master:
            ok = False
        if ok:
            for pid in kids:
                # cheap first: the count (it may be one too high for a moment
                # while a worker holds a file open, e.g. during an import)
                if proc.fd_count(pid) < want_worker:
                    ok = False
                    break
                if pid not in inited:
                    if _epoll_count(pid) == cal.epoll_targets:
                        inited.add(pid)     # initialisation over: only grows from now
                    else:
                        ok = False
                        break
                if pid not in complete:
                    if _nsockets(pid) == want_sockets:
                        complete.add(pid)   # after initialisation sockets only arrive
                    else:
                        ok = False
                        break
        b = clock()
        polls += 1
        spent += b - a
        if ok:
            kids = sorted(kids, key=lambda p: (proc.start_time(p) or 0, p))     # spawn order
            cpu = [proc.cpu_ms(pid) for pid in kids]
            flt = [proc.minor_faults(pid) for pid in kids]
            return dict(mesh=a, first=first, forked=forked, polls=polls, pids=list(kids),
                        poll_us=spent / polls * 1e6,
                        master_cpu=None if master is None else proc.cpu_ms(master),
                        master_faults=None if master is None else proc.minor_faults(master),
                        workers_cpu=None if None in cpu else sum(cpu),
                        cpu_list=[] if None in cpu else [round(x, 3) for x in cpu],
                        faults=None if None in flt or not flt else sum(flt) / len(flt))
        if not alive():
            raise TimingError(f"{what} exited during start-up")
        if b > deadline:
            raise TimingError(f"{what}: no full mesh of {n} workers within {timeout} s "
                               f"({len(kids)} children)")
        time.sleep(poll_interval)


def _confirm(c: Census, n: int, cal: Calibration) -> tuple[bool, str]:
    """Confirmed: the census shows the full mesh. Totals that differ from the
    calibration (a worker holding a file open for a moment) are noted."""
    if not c.is_full_mesh(n):
        return False, "not a full mesh\n" + c.table()
    problems = []
    for w in c.workers:
        if w.total_fds != cal.worker_total(n):
            problems.append(f"worker {w.pid} holds {w.total_fds} descriptors, "
                            f"calibrated {cal.worker_total(n)}")
    m = c.master
    if cal.master_other is not None and m is not None and m.total_fds != cal.master_total(n):
        problems.append(f"master holds {m.total_fds}, calibrated {cal.master_total(n)}")
    return True, c.summary() + ("; note: " + "; ".join(problems) if problems else "")


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def _ms(t: float | None, t0: float) -> float | None:
    return None if t is None else round((t - t0) * 1000, 3)


def _runner(system: str, n: int, binary, timeout: float):
    """The runner of ``system`` ("ngxlab", "floor" or "nginx"), not started."""
    if system == "ngxlab":
        return MasterProcess(n, start_timeout=timeout)
    if system == "floor":
        return FloorProcess(n, start_timeout=timeout)
    return Nginx(n, binary=binary, keeper=False, start_timeout=timeout)


def _life_program(system: str, n: int, repeat: int, order: int, cal: Calibration, *,
                  binary=None, poll_interval: float, timeout: float, measure_quit: bool,
                  confirm: bool) -> LifeRun:
    r = _runner(system, n, binary, timeout)
    try:
        r.launch()
        t0, master = r.launched_at, r.master_pid
        try:
            w = _watch_mesh(t0, n, cal, master=master,
                            workers=lambda: proc.children(master, zombies=True) or [],
                            alive=lambda: r.running, poll_interval=poll_interval,
                            timeout=timeout, what=system)
        except TimingError as e:
            raise TimingError(f"{e}\n--- log tail ---\n{r.log_tail()}") from None
        confirmed, detail, census_ms = True, "", None
        if confirm:
            a = time.perf_counter()
            try:
                c = r.census()
                census_ms = round((time.perf_counter() - a) * 1000, 3)
                # the mesh can be complete before the master has written the
                # table that names its workers' slots (ngxlab's logs/ngxlab.slots,
                # written on the master's first pass): wait for the names
                named_by = time.monotonic() + 2.0
                while any(w.slot is None for w in c.workers) and time.monotonic() < named_by:
                    time.sleep(0.01)
                    c = r.census()
                confirmed, detail = _confirm(c, n, cal)
            except CensusError as e:
                confirmed, detail = False, f"census failed: {e}"
        run = LifeRun(system=system, n=n, repeat=repeat, order=order,
                      mesh_ms=_ms(w["mesh"], t0), first_worker_ms=_ms(w["first"], t0),
                      all_forked_ms=_ms(w["forked"], t0), polls=w["polls"],
                      poll_us=round(w["poll_us"], 2), confirmed=confirmed,
                      census_ms=census_ms, detail=detail,
                      master_cpu_ms=_round(w["master_cpu"]),
                      workers_cpu_ms=_round(w["workers_cpu"]),
                      worker_page_faults=_round(w["faults"]), worker_cpu_list=w["cpu_list"],
                      master_page_faults=w["master_faults"],
                      master_pid=master, worker_pids=w["pids"])
        if measure_quit:
            workers = list(w["pids"])
            q0 = time.perf_counter()
            r.send_signal(signal.SIGQUIT)
            gone = master_gone = None
            deadline = q0 + timeout
            while gone is None or master_gone is None:
                now = time.perf_counter()
                if gone is None and not any(proc.alive(p) for p in workers):
                    gone = now
                if master_gone is None and not r.running:
                    master_gone = now
                    if gone is None:
                        gone = now          # the master reaps its workers before it exits
                if now > deadline:
                    raise TimingError(f"{system}: still running {timeout} s after QUIT:\n"
                                      f"{r.log_tail()}")
                time.sleep(poll_interval)
            run.quit_workers_ms = _ms(gone, q0)
            run.quit_master_ms = _ms(master_gone, q0)
        return run
    finally:
        r.stop()


def _life_inprocess(n: int, repeat: int, order: int, cal: Calibration, *,
                    poll_interval: float, timeout: float, confirm: bool) -> LifeRun:
    t0 = time.perf_counter()
    m = Master(workers=n)
    try:
        with m:
            pids = [wk.pid for wk in m.workers]
            w = _watch_mesh(t0, n, cal, master=None, workers=lambda: pids,
                            alive=lambda: True, poll_interval=poll_interval,
                            timeout=timeout, what="lab.Master")
            confirmed, detail, census_ms = True, "", None
            if confirm:
                a = time.perf_counter()
                c = m.census()
                census_ms = round((time.perf_counter() - a) * 1000, 3)
                confirmed, detail = _confirm(c, n, cal)
    finally:
        m.cleanup()
    return LifeRun(system="inprocess", n=n, repeat=repeat, order=order,
                   mesh_ms=_ms(w["mesh"], t0), first_worker_ms=_ms(w["first"], t0),
                   all_forked_ms=_ms(w["forked"], t0), polls=w["polls"],
                   poll_us=round(w["poll_us"], 2), confirmed=confirmed,
                   census_ms=census_ms, detail=detail,
                   workers_cpu_ms=_round(w["workers_cpu"]),
                   worker_page_faults=_round(w["faults"]), worker_cpu_list=w["cpu_list"],
                   master_pid=os.getpid(), worker_pids=w["pids"])



# -- Python's own start-up --------------------------------------------------------------


_STARTUP_COMMANDS = {
    "python -c pass": lambda: [sys.executable, "-c", "pass"],
    "python -c 'import ngxlab.nginx'": lambda: [sys.executable, "-c", "import ngxlab.nginx"],
    "python -m ngxlab --version": lambda: [sys.executable, "-m", "ngxlab", "--version"],
}


def _time_command(argv: list[str], env=None, timeout: float = 60.0) -> float:
    """Run ``argv`` to its end; the wall time in ms. The exit is waited for
    with a pidfd in ``poll()``, which wakes at once (``subprocess``'s own
    wait with a timeout sleeps in doubling steps, up to 50 ms, and would
    round every time up to its next step)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env=env)
    try:
        try:
            fd = os.pidfd_open(p.pid)
        except (AttributeError, OSError):
            fd = -1
        if fd >= 0:
            try:
                poller = select.poll()
                poller.register(fd, select.POLLIN)
                if not poller.poll(timeout * 1000):
                    raise TimingError(f"{' '.join(argv)} did not exit within {timeout} s")
            finally:
                os.close(fd)
        code = p.wait()
        t = (time.perf_counter() - t0) * 1000
    finally:
        if p.returncode is None:
            p.kill()
            p.wait()
    if code != 0:
        raise TimingError(f"{' '.join(argv)} exited with status {code}")
    return t


def _startup_commands(nginx_binary: str | None) -> dict[str, list[str]]:
    cmds = {name: make() for name, make in _STARTUP_COMMANDS.items()}
    if nginx_binary:
        cmds["nginx -v"] = [nginx_binary, "-v"]
    return cmds


def _startup_samples(values: dict[str, list[float]], cmds: dict[str, list[str]],
                     repeats: int) -> dict[str, Samples]:
    ref = "nginx -v" if "nginx -v" in values else None
    return {name: Samples(measure="start and exit", variant=name, unit="ms", values=v,
                          reference=ref, reference_values=list(values[ref]) if ref else [],
                          params=dict(argv=cmds[name], repeats=repeats,
                                      dont_write_bytecode=bool(
                                          os.environ.get("PYTHONDONTWRITEBYTECODE"))))
            for name, v in values.items()}


def python_startup(repeats: int = 5, *, nginx_binary: str | None = None) -> dict[str, Samples]:
    """Start-and-exit times (ms) of ``python -c pass``, ``python -c "import
    ngxlab.nginx"``, ``python -m ngxlab --version`` and, when nginx is given,
    ``nginx -v``, interleaved, ``repeats`` of each (after one unmeasured
    warm-up each); the reference of each is ``nginx -v`` where measured.
    (:func:`startup_to_mesh` takes these inside its own rotation.)"""
    env = ngxlab_env()
    cmds = _startup_commands(nginx_binary)
    values: dict[str, list[float]] = {name: [] for name in cmds}
    for argv in cmds.values():
        _time_command(argv, env)
    names = list(cmds)
    for r in range(repeats):
        for name in rotated(names, r):
            values[name].append(_time_command(cmds[name], env))
    return _startup_samples(values, cmds, repeats)


# -- start-up to full mesh ----------------------------------------------------------------


@dataclass
class StartupResult:
    """What :func:`startup_to_mesh` measured. ``runs``: every timed start;
    ``calibrations``; ``python``: :func:`python_startup`'s samples;
    ``nginx_skipped``: why nginx was not measured (None when it was)."""

    ns: tuple[int, ...]
    repeats: int
    runs: list[LifeRun]
    calibrations: dict[str, Calibration]
    python: dict[str, Samples]
    nginx_skipped: str | None
    nginx_version: str | None
    machine: MachineInfo
    poll_interval_ms: float
    duration_s: float = 0.0
    interpreter: str | None = None      # report.interpreter_line(): which Python, .pyc or not
    target_repeats: int | None = None   # the runs at the targets' N, where more than repeats

    def systems(self) -> list[str]:
        return [s for s in SYSTEMS if any(r.system == s for r in self.runs)]

    def values(self, system: str, n: int, what: str = "mesh_ms") -> list[float]:
        return [getattr(r, what) for r in self.runs
                if r.system == system and r.n == n and getattr(r, what) is not None]

    def samples(self, system: str, n: int, what: str = "mesh_ms") -> Samples:
        """The times of ``system`` at ``n`` (ms), nginx's as the reference."""
        ref = [] if self.nginx_skipped else self.values("nginx", n, what)
        return Samples(measure=f"{what[:-3].replace('_', ' ')} (ms), N={n}", variant=system,
                       unit="ms", values=self.values(system, n, what), reference="nginx",
                       reference_values=ref, params=dict(n=n, repeats=self.repeats_at(n)),
                       skipped=self.nginx_skipped if system == "nginx" else None)

    def median(self, system: str, n: int, what: str = "mesh_ms") -> float | None:
        return self.samples(system, n, what).median

    def repeats_at(self, n: int) -> int:
        """How many times each system was started with ``n`` workers."""
        return self.target_repeats if self.target_repeats and n in _target_ns() else self.repeats

    def ratio(self, n: int, system: str = "ngxlab") -> float | None:
        """median(system) / median(nginx) at ``n``, both from this run; None without nginx."""
        return None if self.nginx_skipped else self.samples(system, n).ratio

    def ratio_to(self, n: int, system: str, reference: str) -> float | None:
        """median(system) / median(reference) at ``n``, both from this run
        (e.g. ``ratio_to(32, "ngxlab", "floor")``); None where either was
        not measured."""
        a, b = self.median(system, n), self.median(reference, n)
        return None if a is None or not b else a / b

    def floor_ratio(self, n: int) -> float | None:
        """ngxlab / the Python floor at ``n`` (what ngxlab adds to Python)."""
        return self.ratio_to(n, "ngxlab", "floor")

    def floor_over_nginx(self, n: int) -> float | None:
        """The Python floor / nginx at ``n`` (what Python adds to C)."""
        return None if self.nginx_skipped else self.ratio_to(n, "floor", "nginx")

    def import_ms(self) -> float | None:
        """Median start and exit of ``python -c "import ngxlab.nginx"`` (ms)."""
        s = self.python.get("python -c 'import ngxlab.nginx'")
        return s.median if s else None

    def after_first_fork(self, system: str, n: int) -> list[float]:
        """Each run's time from its first worker to its full mesh (ms): the
        start-up without the program's own (for ngxlab, the interpreter and
        its imports), measured within the same run, never below zero."""
        return [r.mesh_ms - r.first_worker_ms for r in self.runs
                if r.system == system and r.n == n and r.first_worker_ms is not None]

    def ratio_after_first_fork(self, n: int) -> float | None:
        """median(ngxlab's time from first fork to full mesh) / the same of
        nginx, both from this run's runs; None without nginx, and None when
        either median is 0 ms: that program's mesh was already complete at
        the poll that saw its first worker, below the polls' resolution, so
        the runs give no ratio (not 0, nor infinity)."""
        if self.nginx_skipped:
            return None
        s = Samples(measure=f"first fork to full mesh (ms), N={n}", variant="ngxlab",
                    unit="ms", values=self.after_first_fork("ngxlab", n), reference="nginx",
                    reference_values=self.after_first_fork("nginx", n))
        return s.ratio if s.median else None

    def poll_us(self, system: str, n: int) -> float | None:
        xs = [r.poll_us for r in self.runs if r.system == system and r.n == n]
        return sorted(xs)[len(xs) // 2] if xs else None

    def cpu_ms(self, system: str, n: int) -> tuple[float | None, float | None]:
        """Median CPU ms used by the master, and by all workers together, by
        the time the mesh was complete."""
        return (self.median(system, n, "master_cpu_ms"), self.median(system, n, "workers_cpu_ms"))

    def master_faults_per_worker(self, system: str, n: int) -> float | None:
        """The master's minor page faults per further worker: the median at
        ``n`` less the median at this run's smallest N, over the workers
        between them. The interpreter's and the program's own start-up
        cancel out; what remains is what each spawn costs the master in
        pages copied after a fork. None where either median is missing."""
        low = min(self.ns)
        if n <= low:
            return None
        a = self.median(system, n, "master_page_faults")
        b = self.median(system, low, "master_page_faults")
        return None if a is None or b is None else (a - b) / (n - low)

    def worker_cost(self, system: str, n: int) -> tuple[float, float] | None:
        """(CPU ms of a worker's start, CPU ms per OPEN_CHANNEL read): a
        least-squares line through every run's per-worker CPU at ``n``
        against the number of OPEN_CHANNEL messages each worker read
        (N-1-slot). None with fewer than 4 workers."""
        xs, ys = [], []
        for r in self.runs:
            if r.system == system and r.n == n and len(r.worker_cpu_list) == n:
                for k, cpu in enumerate(r.worker_cpu_list):
                    xs.append(n - 1 - k)
                    ys.append(cpu)
        if n < 4 or len(set(xs)) < 2:
            return None
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        sxx = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
        return my - slope * mx, slope

    def census_ms(self, n: int) -> float | None:
        xs = sorted(r.census_ms for r in self.runs if r.n == n and r.census_ms is not None)
        return xs[len(xs) // 2] if xs else None

    @property
    def all_confirmed(self) -> bool:
        return all(r.confirmed for r in self.runs)

    def ratios(self) -> list[dict]:
        """Rows of :func:`ngxlab.lab.compare.row`: ngxlab / nginx per N (with
        :data:`TARGETS`); where the floor ran, ngxlab / floor and floor /
        nginx per N; and ngxlab / nginx from the first fork on."""
        rows = []
        for n in self.ns:
            s = self.samples("ngxlab", n)
            rows.append(row(f"start-up to full mesh, N={n}", "ngxlab", "nginx", s.median,
                            s.reference_median, "ms", TARGETS))
        if "floor" in self.systems():
            for n in self.ns:
                rows.append(row(f"start-up to full mesh, N={n}", "ngxlab", "floor",
                                self.median("ngxlab", n), self.median("floor", n), "ms",
                                TARGETS))
            for n in self.ns:
                rows.append(row(f"start-up to full mesh, N={n}", "floor", "nginx",
                                self.median("floor", n),
                                None if self.nginx_skipped else self.median("nginx", n),
                                "ms", TARGETS))
        for n in self.ns:
            line = row(f"first fork to full mesh, N={n}", "ngxlab", "nginx",
                       percentile(self.after_first_fork("ngxlab", n), 50),
                       None if self.nginx_skipped else
                       percentile(self.after_first_fork("nginx", n), 50), "ms")
            line["ratio"] = self.ratio_after_first_fork(n)     # none below the resolution
            rows.append(line)
        return rows

    def table(self) -> str:
        """Three tables, one line per N in each, narrow enough for the book's
        column: the medians and their ratios (ngxlab, nginx, the Python
        floor, ngxlab in-process); the phases (first worker, all forked),
        the CPU time used and the page faults per worker; the cost of a look
        (one poll of /proc, one census); and, where the floor ran, ngxlab
        beside it: the CPU time, the page faults per worker, and the
        master's page faults per further worker."""
        head = (f"{'N':>3} {'ngxlab ms':>10} {'nginx ms':>9} {'ratio':>6} {'fork→':>6} "
                f"{'floor ms':>9} {'ngxlab/floor':>12} {'floor/nginx':>11} {'in-proc ms':>10}")
        head2 = (f"{'N':>3} {'ngxlab first/forked':>19} {'nginx first/forked':>18} "
                 f"{'CPU ms ngxlab m+w':>17} {'nginx m+w':>11} {'faults/worker':>13}")
        head3 = f"{'N':>3} {'poll µs':>8} {'census ms':>9}"
        head4 = (f"{'N':>3} {'CPU ms floor m+w':>16} {'faults/worker ngxlab/floor':>26} "
                 f"{'master faults/worker ngxlab/floor':>33}")
        lines = [head, "-" * len(head)]
        lines2 = [head2, "-" * len(head2)]
        lines3 = [head3, "-" * len(head3)]
        lines4 = [head4, "-" * len(head4)]

        def f(x, fmt="{:.1f}"):
            return "-" if x is None else fmt.format(x)

        def two(a, b, sep="/", fmt="{:.1f}"):
            return f(a, fmt) + sep + f(b, fmt)

        def faults(n, other):
            return two(self.median("ngxlab", n, "worker_page_faults"),
                       self.median(other, n, "worker_page_faults"), fmt="{:.0f}")

        def cpu(s, n):
            return two(*self.cpu_ms(s, n), sep="+")

        def per_worker(n):
            return two(self.master_faults_per_worker("ngxlab", n),
                       self.master_faults_per_worker("floor", n), fmt="{:.0f}")

        for n in self.ns:
            ph = {s: (self.median(s, n, "first_worker_ms"), self.median(s, n, "all_forked_ms"))
                  for s in ("ngxlab", "nginx")}
            lines.append(
                f"{n:>3} {f(self.median('ngxlab', n)):>10} {f(self.median('nginx', n)):>9} "
                f"{f(self.ratio(n), '{:.2f}'):>6} {f(self.ratio_after_first_fork(n), '{:.2f}'):>6} "
                f"{f(self.median('floor', n)):>9} {f(self.floor_ratio(n), '{:.2f}'):>12} "
                f"{f(self.floor_over_nginx(n), '{:.2f}'):>11} "
                f"{f(self.median('inprocess', n)):>10}")
            lines2.append(
                f"{n:>3} {two(*ph['ngxlab']):>19} {two(*ph['nginx']):>18} "
                f"{cpu('ngxlab', n):>17} {cpu('nginx', n):>11} {faults(n, 'nginx'):>13}")
            lines3.append(
                f"{n:>3} {f(self.poll_us('ngxlab', n), '{:.0f}'):>8} {f(self.census_ms(n)):>9}")
            lines4.append(
                f"{n:>3} {cpu('floor', n):>16} {faults(n, 'floor'):>26} "
                f"{per_worker(n):>33}")
        lines += [""] + lines2 + [""] + lines3
        if "floor" in self.systems():
            lines += ["", "ngxlab beside the Python floor:"] + lines4
        for name, s in self.python.items():
            lines.append(f"{name}: median {s.median:.1f} ms")
        if self.nginx_skipped:
            lines.append(f"nginx: skipped ({self.nginx_skipped})")
        if self.interpreter:
            lines.append(f"Python: {self.interpreter}")
        return "\n".join(lines)

    @classmethod
    def from_dict(cls, d: dict) -> "StartupResult":
        """The inverse of ``to_dict()`` (e.g. a run recorded as JSON)."""
        return cls(ns=tuple(d["ns"]), repeats=d["repeats"],
                   runs=[LifeRun(**r) for r in d["runs"]],
                   calibrations={k: Calibration(**v) for k, v in d["calibrations"].items()},
                   python={k: Samples.from_dict(v) for k, v in d["python"].items()},
                   nginx_skipped=d["nginx_skipped"], nginx_version=d["nginx_version"],
                   machine=MachineInfo.from_dict(d["machine"]),
                   poll_interval_ms=d["poll_interval_ms"], duration_s=d["duration_s"],
                   interpreter=d.get("interpreter"), target_repeats=d.get("target_repeats"))

    def to_dict(self) -> dict:
        return {
            "ns": list(self.ns), "repeats": self.repeats, "target_repeats": self.target_repeats,
            "runs": [asdict(r) for r in self.runs],
            "calibrations": {k: asdict(v) for k, v in self.calibrations.items()},
            "python": {k: v.to_dict() for k, v in self.python.items()},
            "nginx_skipped": self.nginx_skipped, "nginx_version": self.nginx_version,
            "machine": asdict(self.machine), "machine_line": self.machine.line(),
            "poll_interval_ms": self.poll_interval_ms, "duration_s": self.duration_s,
            "interpreter": self.interpreter,
            "medians": {s: {str(n): self.median(s, n) for n in self.ns} for s in self.systems()},
            "ratios": self.ratios(),
        }


def startup_to_mesh(ns: Sequence[int] = DEFAULT_NS, repeats: int | None = None, *,
                    nginx: bool = True, inprocess: bool = True, quick: bool = False,
                    nginx_binary=None, python: bool = True, measure_quit: bool = False,
                    floor: bool = True, target_repeats: int | None = None,
                    poll_interval: float = 0.0005, timeout: float = 30.0,
                    confirm: bool = True, progress: bool = False) -> StartupResult:
    """Time from start until every worker holds its full channel set, for
    each N in ``ns``: ngxlab (``python -m ngxlab run``) and nginx interleaved
    (one of each per N and repeat, the order alternating), and lab.Master in
    this process (``inprocess``) and the Python floor (``floor``:
    :mod:`ngxlab.lab.floor`, started as ngxlab is) in the same rotation. ``repeats``: 5, or 1
    with ``quick``. ``python``: also time the interpreter's start-up
    (the commands of :func:`python_startup`), inside the same rotation
    (before every N; every other N with ``quick``). ``target_repeats``: this many
    starts (instead of ``repeats``) at the N of the targets (:data:`STARTUP_TARGET`,
    :data:`FLOOR_TARGET`) where it is in ``ns``, in further rounds of the same
    rotation after the ``repeats`` rounds of every N: the medians the targets
    are judged on get more runs than the rest of the curve, at the cost of those
    rounds only. ``measure_quit``: also time each QUIT (what
    :func:`~ngxlab.lab.quitting.quit_to_exit` reports). See the module docstring for how the end
    is seen; ``poll_interval`` is the sleep between /proc polls."""
    started = time.monotonic()
    ns = tuple(int(n) for n in ns)
    if not ns or any(n < 1 or n > 512 for n in ns):
        raise ValueError("ns: worker counts from 1 to 512")
    if repeats is None:
        repeats = 1 if quick else 5
    targeted = ([n for n in ns if n in _target_ns()]
                if target_repeats is not None and target_repeats > repeats else [])
    if not targeted:
        target_repeats = None
    machine = machine_info()
    binary, why = ((None, "not asked for (nginx=False)") if not nginx
                   else nginx_available(nginx_binary))
    version = machine.nginx if binary else None
    systems = (["ngxlab"] + (["nginx"] if binary else []) + (["floor"] if floor else [])
               + (["inprocess"] if inprocess else []))
    cals = {s: calibrate(s, binary=binary if s == "nginx" else None) for s in systems}
    runs: list[LifeRun] = []
    cmds = _startup_commands(binary) if python else {}
    env = ngxlab_env()
    py_values: dict[str, list[float]] = {name: [] for name in cmds}
    for argv in cmds.values():
        _time_command(argv, env)            # warm-up
    total = (len(ns) * repeats + len(targeted) * ((target_repeats or repeats) - repeats)) * len(systems)
    bar = report.bar(total, "start-up to full mesh", bool(progress))
    try:
        for r in range(target_repeats or repeats):
            for n in (ns if r < repeats else targeted):
                i = ns.index(n)             # the rotation goes on as in the first rounds
                if cmds and r < repeats and (quick is False or i % 2 == 0):
                    for name in rotated(list(cmds), r + i):
                        py_values[name].append(_time_command(cmds[name], env))
                for order, s in enumerate(rotated(systems, r + i)):
                    if s == "inprocess":
                        runs.append(_life_inprocess(n, r, order, cals[s],
                                                    poll_interval=poll_interval,
                                                    timeout=timeout, confirm=confirm))
                    else:
                        runs.append(_life_program(s, n, r, order, cals[s], binary=binary,
                                                  poll_interval=poll_interval, timeout=timeout,
                                                  measure_quit=measure_quit and s != "floor",
                                                  confirm=confirm))
                    bar.update(1)
    finally:
        bar.close()
    py = _startup_samples(py_values, cmds, repeats) if cmds else {}
    return StartupResult(ns=ns, repeats=repeats, runs=runs, calibrations=cals, python=py,
                         nginx_skipped=None if binary else why, nginx_version=version,
                         machine=machine, poll_interval_ms=poll_interval * 1000,
                         duration_s=round(time.monotonic() - started, 3),
                         interpreter=report.interpreter_line(), target_repeats=target_repeats)



# -- where the time goes ----------------------------------------------------------------


def profile_master_start(n: int = 32, *, top: int = 12, timeout: float = 30.0) -> str:
    """cProfile of an in-process master (``lab.Master``) from its creation to
    the full mesh, sorted by cumulative time: the master's share of a
    start-up (the workers' own work runs in other processes and is not in
    it; :class:`LifeRun`'s phase times show it). Profiling slows everything
    down: read proportions, not speeds."""
    cal = calibrate("inprocess")
    prof = cProfile.Profile()
    m = Master(workers=n, start=False)
    try:
        with m:
            prof.enable()
            try:
                m.spawn(n)
            finally:
                prof.disable()
            pids = [w.pid for w in m.workers]
            _watch_mesh(time.perf_counter(), n, cal, master=None, workers=lambda: pids,
                        alive=lambda: True, poll_interval=0.0005, timeout=timeout,
                        what="lab.Master")
    finally:
        m.cleanup()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(top)
    return out.getvalue()
