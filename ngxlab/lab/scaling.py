"""Scaling: how nginx's master/worker mesh grows with N, ngxlab beside a real nginx.

Measurements, not tests: nothing here asserts a speed. Each measurement runs
ngxlab and a real nginx **interleaved in the same run** (for every N and
every repeat one of each, the order alternating), so that whatever else the
machine is doing falls on both alike; the results are medians and the ratio
ngxlab / nginx of the medians of that one run. Where no nginx is installed
its side is reported as skipped, with the reason, and never estimated.

:func:`startup_to_mesh`
    Time from the start of the program until every worker holds its full
    channel set: N channel ends in each worker, 2N in the master. ngxlab is
    ``python -m ngxlab run`` (the command :class:`~ngxlab.lab.run.MasterProcess`
    runs); nginx is the nginx binary with ``master_process on; daemon off``
    in a private prefix (the configuration :class:`~ngxlab.lab.nginx.Nginx`
    writes). Both are started by the same ``subprocess.Popen`` call from this
    process: the clock starts just before it. (``lab.Nginx`` itself starts
    nginx below a small Python keeper process, whose own start-up would be
    counted against nginx; here nginx is this process's direct child.) The
    in-process variant (``lab.Master``: this process is the master and forks
    the workers itself) is measured too, for reference, from the call that
    creates the Master.

    How the end is seen. The census (:mod:`ngxlab.lab.census`) says exactly
    who holds which channel, but one census costs tens of milliseconds (it
    dumps the kernel's Unix socket table): polled during the start-up it
    would both blur the time and slow what it measures. So the start-up is
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

    Where the time goes: :func:`python_startup` times, in the same run, the
    start and exit of ``python -c pass``, of ``python -c "import
    ngxlab.nginx"`` (the interpreter plus ngxlab's master code) and of
    ``nginx -v``; :meth:`StartupResult.ratio_without_python` subtracts the
    median import run from ngxlab's median. Each run also records when the
    first worker appeared and when all N had been forked.

:func:`quit_to_exit`
    Time from ``kill(master, SIGQUIT)`` (what ``nginx -s quit`` sends) until
    every worker has exited (exited means gone or a zombie waiting for the
    master to reap it), and until the master has exited. Same programs,
    interleaved.

:func:`descriptors_vs_n`
    Channel descriptors per process against N, read with the census from a
    settled mesh: a real nginx (``lab.Nginx``), ngxlab (``lab.MasterProcess``)
    and ngxlab's in-process master with the closing in
    ``ngx_worker_process_init`` skipped (``lab.Master(close_inherited=False)``).
    nginx and ngxlab: 2N in the master, N in each worker, N² + 2N in all;
    without the closing the worker in slot k keeps what it inherited: N + k + 1,
    (3N² + 5N) / 2 in all.

:func:`side_by_side`
    One real nginx and one ngxlab with the same N, looked at from outside:
    the census of each (:class:`CensusView`, descriptors described without
    machine paths) and the channel messages of each through start-up and a
    list of actions (reopen, SIGKILL of a worker, reload, quit), decoded from
    strace and normalised with :func:`ngxlab.lab.trace.sequence`, to compare
    with :meth:`SideBySide.diff`.

:func:`record_mesh` and :func:`record_side_by_side` write what the book's
chapters measure, from a real run, as the JSON files in ``ngxlab/lab/data``
that a chapter shows (labelled as recorded) where nginx or strace is missing.

:func:`run_sections` runs the three, writes ``scaling.json`` and PNG figures
into a folder and prints the ratios; :func:`register` plugs it into
:func:`ngxlab.lab.bench.run` as an extra section.

Not a mirror of nginx: nothing here has an ``ngx_`` name.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from ngxlab.lab.proc import start_time as _start_time, state as _state
from ngxlab.lab.runner import free_port as _free_port
from ngxlab.lab.bench import MachineInfo, Samples, machine_info
from ngxlab.lab.census import Census, CensusError, census_master

__all__ = [
    "ScalingError", "Calibration", "LifeRun", "StartupResult", "QuitResult",
    "DescriptorCount", "DescriptorsResult",
    "DEFAULT_NS", "QUICK_NS", "STARTUP_TARGET", "SYSTEMS",
    "mesh_total", "without_closing_total", "without_closing_worker",
    "nginx_available", "calibrate", "python_startup",
    "startup_to_mesh", "quit_to_exit", "descriptors_vs_n",
    "plot_startup", "plot_quit", "plot_descriptors",
    "profile_master_start", "run_sections", "record_mesh", "register",
    "CensusView", "SideBySide", "SIDE_BY_SIDE_ACTIONS", "strace_available", "side_by_side",
    "record_side_by_side",
]

DEFAULT_NS = (1, 2, 4, 8, 16, 32)
SYSTEMS = ("ngxlab", "nginx", "inprocess")
STARTUP_TARGET = (32, 1.5)      # 32 workers to a complete mesh in <= 1.5 x nginx's time

_COLORS = {"ngxlab": "#1f77b4", "nginx": "#009639", "inprocess": "#7f7f7f",
           "ngxlab, no closing": "#d62728"}
_LABELS = {"ngxlab": "ngxlab (python -m ngxlab run)", "nginx": "nginx",
           "inprocess": "ngxlab in-process (lab.Master)"}


class ScalingError(RuntimeError):
    """A measurement could not be made (a program failed to start, a mesh
    never completed); the message says what was seen."""


# -- formulas ------------------------------------------------------------------


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


# -- small /proc readers ---------------------------------------------------------


def _nfds(pid: int) -> int:
    """How many descriptors ``pid`` holds (-1 when it is gone)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return -1


def _children(pid: int) -> list[int]:
    """Children of ``pid`` (zombies included), from /proc/PID/task/*/children."""
    out: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except (FileNotFoundError, ProcessLookupError):
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                out.extend(int(x) for x in f.read().split())
        except OSError:
            continue
    return out


def _cpu_ms(pid: int) -> float | None:
    """CPU time ``pid`` has run so far, in ms (``/proc/PID/schedstat``, ns
    resolution; all its threads), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/schedstat", "rb") as f:
            return int(f.read().split()[0]) / 1e6
    except (OSError, ValueError, IndexError):
        return None


def _minflt(pid: int) -> int | None:
    """Minor page faults of ``pid`` so far (``/proc/PID/stat`` field 10): after
    a fork, mostly copy-on-write copies of the parent's pages."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return int(data[data.rfind(b")") + 2:].split()[7])


def _exited(pid: int) -> bool:
    return _state(pid) in (None, "Z", "X")


def _nsockets(pid: int) -> int:
    """How many of ``pid``'s descriptors are sockets (-1 when it is gone)."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return -1
    n = 0
    for name in names:
        try:
            if os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"):
                n += 1
        except OSError:
            continue
    return n


def _epoll_targets(pid: int, cache: dict[int, int] | None = None) -> int:
    """How many descriptors are in ``pid``'s epoll set; -1 unless it holds
    exactly one epoll instance (a worker forked from a process that has its
    own, e.g. a notebook kernel, holds that one too until it closes what it
    inherited). ``cache`` is accepted for compatibility and not used: a
    descriptor number seen once may be closed and reused."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return -1
    found = []
    for name in names:
        try:
            if os.readlink(f"/proc/{pid}/fd/{name}") == "anon_inode:[eventpoll]":
                found.append(name)
        except OSError:
            continue
    if len(found) != 1:
        return -1
    try:
        with open(f"/proc/{pid}/fdinfo/{found[0]}") as f:
            return sum(1 for line in f if line.startswith("tfd:"))
    except OSError:
        return -1


# -- the programs ----------------------------------------------------------------


def nginx_available(binary=None) -> tuple[str | None, str | None]:
    """(path, None) when nginx can be run here, else (None, the reason)."""
    from ngxlab.lab.nginx import NginxError, find_nginx, nginx_version
    try:
        path = find_nginx(binary)
        nginx_version(path)
    except NginxError as e:
        return None, str(e)
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"nginx cannot run here: {e}"
    return path, None


def _ngxlab_env() -> dict[str, str]:
    """This environment with the directory holding ``ngxlab`` first on
    PYTHONPATH (as ``MasterProcess`` runs it)."""
    import ngxlab
    root = str(Path(ngxlab.__file__).resolve().parent.parent)
    env = dict(os.environ)
    rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    env["PYTHONPATH"] = os.pathsep.join([root] + rest)
    return env


def _ngxlab_command(n: int, prefix: Path) -> list[str]:
    from ngxlab.lab.run import MasterProcess
    return MasterProcess(workers=n, prefix=prefix).command()


def _nginx_command(binary: str, n: int, prefix: Path, port: int) -> list[str]:
    """Write the configuration ``lab.Nginx`` writes (``master_process on``,
    ``daemon off``, one server on 127.0.0.1) and return nginx's command line."""
    p = prefix
    (p / "temp").mkdir(exist_ok=True)
    lines = []
    if os.geteuid() == 0:
        lines.append("user root;")
    lines += [
        f"worker_processes {n};", "master_process on;", "daemon off;",
        f"pid {p}/nginx.pid;", f"lock_file {p}/nginx.lock;",
        f"error_log {p}/error.log notice;",
        "events { worker_connections 64; }",
        "http {", "    access_log off;", "    default_type text/plain;",
        f"    client_body_temp_path {p}/temp/client_body;",
        f"    proxy_temp_path {p}/temp/proxy;",
        f"    fastcgi_temp_path {p}/temp/fastcgi;",
        f"    uwsgi_temp_path {p}/temp/uwsgi;",
        f"    scgi_temp_path {p}/temp/scgi;",
        "    server {", f"        listen 127.0.0.1:{port};",
        '        location / { return 200 "ok\\n"; }', "    }", "}",
    ]
    (p / "nginx.conf").write_text("\n".join(lines) + "\n")
    return [binary, "-p", f"{p}/", "-c", str(p / "nginx.conf"), "-e", str(p / "error.log")]


class _Program:
    """One master started by this process (``Popen``), stopped by pid.

    ``stop()`` sends QUIT, then TERM, then SIGKILL after deadlines, SIGKILLs
    any worker seen that is still alive (known by pid and start time, so a
    recycled pid is never signalled), reaps the master and removes the
    temporary prefix. Safe to call twice."""

    def __init__(self, system: str, n: int, binary: str | None = None):
        self.system = system
        self.n = n
        self.binary = binary
        self._tmp = tempfile.TemporaryDirectory(prefix=f"ngxlab-scaling-{system}-")
        self.prefix = Path(self._tmp.name)
        self.popen: subprocess.Popen | None = None
        self.workers: dict[int, int] = {}          # pid -> start time, every child seen
        self.t0 = 0.0

    def start(self) -> float:
        """Start the program; return the perf_counter time taken just before."""
        if self.system == "ngxlab":
            (self.prefix / "logs").mkdir(exist_ok=True)
            argv = _ngxlab_command(self.n, self.prefix)
            env = _ngxlab_env()
        else:
            argv = _nginx_command(self.binary, self.n, self.prefix, _free_port())
            env = None
        err = open(self.prefix / "stderr.log", "ab")
        try:
            self.t0 = time.perf_counter()
            self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err,
                                          stderr=err, cwd=str(self.prefix), env=env,
                                          close_fds=True, start_new_session=True)
        finally:
            err.close()
        return self.t0

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def note(self, pids: Iterable[int]) -> None:
        for pid in pids:
            if pid not in self.workers:
                st = _start_time(pid)
                if st is not None:
                    self.workers[pid] = st

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def slots(self) -> dict[int, int] | None:
        """{pid: slot} from an ngxlab master's table file; None for nginx
        (right after start-up the census's spawn order is nginx's slot order)."""
        if self.system != "ngxlab":
            return None
        try:
            with open(self.prefix / "logs" / "ngxlab.slots") as f:
                table = json.load(f)
        except (OSError, ValueError):
            return None
        if table.get("master") != self.pid:
            return None
        return {s["slot"]: s["pid"] for s in table.get("slots", [])}

    def census(self) -> Census:
        return census_master(self.pid, slots=self.slots())

    def log_tail(self, lines: int = 12) -> str:
        text = []
        for name in ("logs/error.log", "error.log", "stderr.log"):
            try:
                text += (self.prefix / name).read_text(errors="replace").splitlines()
            except OSError:
                pass
        return "\n".join(text[-lines:])

    def stop(self, quit_timeout: float = 5.0) -> None:
        p = self.popen
        try:
            if p is not None and p.poll() is None:
                self.note(_children(p.pid))
                for signum, timeout in ((signal.SIGQUIT, quit_timeout), (signal.SIGTERM, 3.0),
                                        (signal.SIGKILL, 3.0)):
                    if p.poll() is not None:
                        break
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p.pid, signum)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        p.wait(timeout=timeout)
            left = [pid for pid, st in self.workers.items() if _start_time(pid) == st]
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 3.0
            while any(_start_time(pid) == self.workers[pid] for pid in left) \
                    and time.monotonic() < deadline:
                time.sleep(0.005)
            if p is not None and p.returncode is None:
                p.wait(timeout=5.0)
        finally:
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None

    def __enter__(self) -> "_Program":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


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
        raise ScalingError(f"{system}: workers differ in their non-channel descriptors "
                           f"({sorted(others)}):\n{c}")
    cache: dict[int, int] = {}
    targets = {_epoll_targets(w.pid, cache) for w in workers}
    if len(targets) != 1 or -1 in targets:
        raise ScalingError(f"{system}: cannot read the workers' epoll sets ({sorted(targets)})")
    socks = {sum(1 for f in w.fds if f.target.startswith("socket:") and not f.is_channel)
             for w in workers}
    if len(socks) != 1:
        raise ScalingError(f"{system}: workers differ in their other sockets ({sorted(socks)})")
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
            raise ScalingError(f"{what}: no full mesh of {n} workers within {timeout} s ({last})")
        time.sleep(0.02)


def calibrate(system: str, *, binary=None, n: int = 2, timeout: float = 20.0,
              refresh: bool = False) -> Calibration:
    """Start ``system`` ("ngxlab", "nginx" or "inprocess") with ``n`` workers,
    wait for the full mesh with the census, and read what each process holds
    besides its channels. Cached per system for this process (``refresh``
    measures again). Doubles as the warm-up before timed runs."""
    if system not in SYSTEMS:
        raise ValueError(f"system must be one of {SYSTEMS}, not {system!r}")
    if system == "nginx":
        from ngxlab.lab.nginx import find_nginx
        binary = find_nginx(binary)
    key = (system, binary)
    if not refresh and key in _calibrations:
        return _calibrations[key]
    if system == "inprocess":
        from ngxlab.lab.master import Master
        with Master(workers=n) as m:
            c = _settle(m.census, n, timeout, "lab.Master")
            cal = _calibration_from(system, n, c, master=False)
        m.cleanup()
    else:
        with _Program(system, n, binary) as prog:
            prog.start()
            deadline = time.monotonic() + timeout
            while len(_children(prog.pid)) < n:
                if not prog.alive():
                    raise ScalingError(f"{system} exited during start-up:\n{prog.log_tail()}")
                if time.monotonic() >= deadline:
                    raise ScalingError(f"{system}: {n} workers not forked within {timeout} s:\n"
                                       f"{prog.log_tail()}")
                time.sleep(0.005)
            prog.note(_children(prog.pid))
            c = _settle(prog.census, n, timeout, system)
            cal = _calibration_from(system, n, c)
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
    pages shared with the master after the fork; ``worker_cpu_list``: each
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
    epfd: dict[int, int] = {}
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
        if ok and want_master is not None and _nfds(master) < want_master:
            ok = False
        if ok:
            for pid in kids:
                # cheap first: the count (it may be one too high for a moment
                # while a worker holds a file open, e.g. during an import)
                if _nfds(pid) < want_worker:
                    ok = False
                    break
                if pid not in inited:
                    if _epoll_targets(pid, epfd) == cal.epoll_targets:
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
            kids = sorted(kids, key=lambda p: (_start_time(p) or 0, p))     # spawn order
            cpu = [_cpu_ms(pid) for pid in kids]
            flt = [_minflt(pid) for pid in kids]
            return dict(mesh=a, first=first, forked=forked, polls=polls, pids=list(kids),
                        poll_us=spent / polls * 1e6,
                        master_cpu=None if master is None else _cpu_ms(master),
                        workers_cpu=None if None in cpu else sum(cpu),
                        cpu_list=[] if None in cpu else [round(x, 3) for x in cpu],
                        faults=None if None in flt or not flt else sum(flt) / len(flt))
        if not alive():
            raise ScalingError(f"{what} exited during start-up")
        if b > deadline:
            raise ScalingError(f"{what}: no full mesh of {n} workers within {timeout} s "
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


def _life_program(system: str, n: int, repeat: int, order: int, cal: Calibration, *,
                  binary=None, poll_interval: float, timeout: float, measure_quit: bool,
                  confirm: bool, attempts: int = 3) -> LifeRun:
    for attempt in range(attempts):
        try:
            return _life_program_once(system, n, repeat, order, cal, binary=binary,
                                      poll_interval=poll_interval, timeout=timeout,
                                      measure_quit=measure_quit, confirm=confirm)
        except _PortTaken:
            if attempt + 1 == attempts:
                raise ScalingError(f"{system}: the port picked was taken {attempts} times") \
                    from None
    raise AssertionError("unreachable")


class _PortTaken(ScalingError):
    """nginx found its port taken between _free_port() and its bind()."""


def _life_program_once(system: str, n: int, repeat: int, order: int, cal: Calibration, *,
                       binary=None, poll_interval: float, timeout: float, measure_quit: bool,
                       confirm: bool) -> LifeRun:
    with _Program(system, n, binary) as prog:
        t0 = prog.start()
        try:
            w = _watch_mesh(t0, n, cal, master=prog.pid, workers=lambda: _children(prog.pid),
                            alive=prog.alive, poll_interval=poll_interval, timeout=timeout,
                            what=system, note=prog.note)
        except ScalingError as e:
            tail = prog.log_tail()
            if "Address already in use" in tail:
                raise _PortTaken(str(e)) from None
            raise ScalingError(f"{e}\n--- log tail ---\n{tail}") from None
        confirmed, detail, census_ms = True, "", None
        if confirm:
            a = time.perf_counter()
            try:
                c = prog.census()
                census_ms = round((time.perf_counter() - a) * 1000, 3)
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
                      master_pid=prog.pid, worker_pids=w["pids"])
        if measure_quit:
            workers = list(_children(prog.pid))
            prog.note(workers)
            q0 = time.perf_counter()
            os.kill(prog.pid, signal.SIGQUIT)
            gone = master_gone = None
            deadline = q0 + timeout
            while gone is None or master_gone is None:
                now = time.perf_counter()
                if gone is None and all(_exited(p) for p in workers):
                    gone = now
                if master_gone is None and prog.popen.poll() is not None:
                    master_gone = now
                    if gone is None:
                        gone = now          # the master reaps its workers before it exits
                if now > deadline:
                    raise ScalingError(f"{system}: still running {timeout} s after QUIT:\n"
                                       f"{prog.log_tail()}")
                time.sleep(poll_interval)
            run.quit_workers_ms = _ms(gone, q0)
            run.quit_master_ms = _ms(master_gone, q0)
        return run


def _life_inprocess(n: int, repeat: int, order: int, cal: Calibration, *,
                    poll_interval: float, timeout: float, confirm: bool) -> LifeRun:
    from ngxlab.lab.master import Master
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
    import select
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
                    raise ScalingError(f"{' '.join(argv)} did not exit within {timeout} s")
            finally:
                os.close(fd)
        code = p.wait()
        t = (time.perf_counter() - t0) * 1000
    finally:
        if p.returncode is None:
            p.kill()
            p.wait()
    if code != 0:
        raise ScalingError(f"{' '.join(argv)} exited with status {code}")
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
    env = _ngxlab_env()
    cmds = _startup_commands(nginx_binary)
    values: dict[str, list[float]] = {name: [] for name in cmds}
    for argv in cmds.values():
        _time_command(argv, env)
    names = list(cmds)
    for r in range(repeats):
        for name in _rotation(names, r):
            values[name].append(_time_command(cmds[name], env))
    return _startup_samples(values, cmds, repeats)


def _machine_from(d: dict) -> MachineInfo:
    d = dict(d)
    if d.get("loadavg") is not None:
        d["loadavg"] = tuple(d["loadavg"])
    return MachineInfo(**d)


def _samples_from(d: dict) -> Samples:
    from dataclasses import fields
    return Samples(**{f.name: d[f.name] for f in fields(Samples) if f.name in d})


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
                       reference_values=ref, params=dict(n=n, repeats=self.repeats),
                       skipped=self.nginx_skipped if system == "nginx" else None)

    def median(self, system: str, n: int, what: str = "mesh_ms") -> float | None:
        return self.samples(system, n, what).median

    def ratio(self, n: int, system: str = "ngxlab") -> float | None:
        """median(system) / median(nginx) at ``n``, both from this run; None without nginx."""
        return None if self.nginx_skipped else self.samples(system, n).ratio

    def import_ms(self) -> float | None:
        s = self.python.get("python -c 'import ngxlab.nginx'")
        return s.median if s else None

    def ratio_without_python(self, n: int) -> float | None:
        """(median ngxlab - median start and exit of ``python -c "import
        ngxlab.nginx"``) / median nginx: ngxlab's start-up without the start
        of the interpreter and the import of its master code, measured
        separately in the same run. nginx's own exec is not subtracted."""
        imp, ngx, ngl = self.import_ms(), self.median("nginx", n), self.median("ngxlab", n)
        if imp is None or not ngx or ngl is None:
            return None
        return (ngl - imp) / ngx

    def poll_us(self, system: str, n: int) -> float | None:
        xs = [r.poll_us for r in self.runs if r.system == system and r.n == n]
        return sorted(xs)[len(xs) // 2] if xs else None

    def cpu_ms(self, system: str, n: int) -> tuple[float | None, float | None]:
        """Median CPU ms used by the master, and by all workers together, by
        the time the mesh was complete."""
        return (self.median(system, n, "master_cpu_ms"), self.median(system, n, "workers_cpu_ms"))

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
        """Rows like :func:`ngxlab.lab.bench.ratio_table`'s: ngxlab / nginx per N
        (the target at N = 32), and without Python's start-up."""
        rows = []
        tn, bound = STARTUP_TARGET
        for n in self.ns:
            s = self.samples("ngxlab", n)
            ratio = s.ratio
            target = f"<= {bound:g}" if n == tn else None
            rows.append(dict(measure=f"start-up to full mesh, N={n}", subject="ngxlab",
                             reference="nginx", unit="ms", subject_median=s.median,
                             reference_median=s.reference_median, ratio=ratio, target=target,
                             met=(ratio <= bound) if (target and ratio is not None) else None))
        for n in self.ns:
            r = self.ratio_without_python(n)
            rows.append(dict(measure=f"start-up to full mesh, N={n}, without Python start-up",
                             subject="ngxlab - import", reference="nginx", unit="ms",
                             subject_median=(None if r is None else
                                             self.median("ngxlab", n) - self.import_ms()),
                             reference_median=self.median("nginx", n), ratio=r,
                             target=None, met=None))
        return rows

    def table(self) -> str:
        """One line per N: medians, ratio, phases, poll cost."""
        head = (f"{'N':>3} {'ngxlab ms':>10} {'nginx ms':>9} {'ratio':>6} {'w/o py':>7} "
                f"{'in-proc ms':>10}  {'ngxlab first/forked':>19} {'nginx first/forked':>18} "
                f"{'poll µs':>8} {'census ms':>9}  {'CPU ms ngxlab m+w':>17} {'nginx m+w':>11} "
                f"{'faults/worker':>13}")
        lines = [head, "-" * len(head)]

        def f(x, fmt="{:.1f}"):
            return "-" if x is None else fmt.format(x)

        def faults(n):
            return (f(self.median("ngxlab", n, "worker_page_faults"), "{:.0f}") + "/"
                    + f(self.median("nginx", n, "worker_page_faults"), "{:.0f}"))

        for n in self.ns:
            ph = {s: (self.median(s, n, "first_worker_ms"), self.median(s, n, "all_forked_ms"))
                  for s in ("ngxlab", "nginx")}
            lines.append(
                f"{n:>3} {f(self.median('ngxlab', n)):>10} {f(self.median('nginx', n)):>9} "
                f"{f(self.ratio(n), '{:.2f}'):>6} {f(self.ratio_without_python(n), '{:.2f}'):>7} "
                f"{f(self.median('inprocess', n)):>10}  "
                f"{f(ph['ngxlab'][0]) + '/' + f(ph['ngxlab'][1]):>19} "
                f"{f(ph['nginx'][0]) + '/' + f(ph['nginx'][1]):>18} "
                f"{f(self.poll_us('ngxlab', n), '{:.0f}'):>8} {f(self.census_ms(n)):>9}  "
                f"{f(self.cpu_ms('ngxlab', n)[0]) + '+' + f(self.cpu_ms('ngxlab', n)[1]):>17} "
                f"{f(self.cpu_ms('nginx', n)[0]) + '+' + f(self.cpu_ms('nginx', n)[1]):>11} "
                f"{faults(n):>13}")
        for name, s in self.python.items():
            lines.append(f"{name}: median {s.median:.1f} ms")
        if self.nginx_skipped:
            lines.append(f"nginx: skipped ({self.nginx_skipped})")
        return "\n".join(lines)

    @classmethod
    def from_dict(cls, d: dict) -> "StartupResult":
        """The inverse of :meth:`to_dict` (e.g. a run recorded as JSON)."""
        return cls(ns=tuple(d["ns"]), repeats=d["repeats"],
                   runs=[LifeRun(**r) for r in d["runs"]],
                   calibrations={k: Calibration(**v) for k, v in d["calibrations"].items()},
                   python={k: _samples_from(v) for k, v in d["python"].items()},
                   nginx_skipped=d["nginx_skipped"], nginx_version=d["nginx_version"],
                   machine=_machine_from(d["machine"]),
                   poll_interval_ms=d["poll_interval_ms"], duration_s=d["duration_s"])

    def to_dict(self) -> dict:
        return {
            "ns": list(self.ns), "repeats": self.repeats,
            "runs": [asdict(r) for r in self.runs],
            "calibrations": {k: asdict(v) for k, v in self.calibrations.items()},
            "python": {k: v.to_dict() for k, v in self.python.items()},
            "nginx_skipped": self.nginx_skipped, "nginx_version": self.nginx_version,
            "machine": asdict(self.machine), "machine_line": self.machine.line(),
            "poll_interval_ms": self.poll_interval_ms, "duration_s": self.duration_s,
            "medians": {s: {str(n): self.median(s, n) for n in self.ns} for s in self.systems()},
            "ratios": self.ratios(),
        }


def _rotation(systems: list[str], k: int) -> list[str]:
    k %= len(systems)
    return systems[k:] + systems[:k]


def _progress_bar(progress, total: int, desc: str):
    from ngxlab.lab.bench import _bar
    return _bar(total, desc, bool(progress))


def startup_to_mesh(ns: Sequence[int] = DEFAULT_NS, repeats: int | None = None, *,
                    nginx: bool = True, inprocess: bool = True, quick: bool = False,
                    nginx_binary=None, python: bool = True, measure_quit: bool = False,
                    poll_interval: float = 0.0005, timeout: float = 30.0,
                    confirm: bool = True, progress: bool = False) -> StartupResult:
    """Time from start until every worker holds its full channel set, for
    each N in ``ns``: ngxlab (``python -m ngxlab run``) and nginx interleaved
    (one of each per N and repeat, the order alternating), and lab.Master in
    this process (``inprocess``) in the same rotation. ``repeats``: 5, or 1
    with ``quick``. ``python``: also time the interpreter's start-up
    (the commands of :func:`python_startup`), inside the same rotation
    (before every N; every other N with ``quick``). ``measure_quit``: also time each QUIT (what
    :func:`quit_to_exit` reports). See the module docstring for how the end
    is seen; ``poll_interval`` is the sleep between /proc polls."""
    started = time.monotonic()
    ns = tuple(int(n) for n in ns)
    if not ns or any(n < 1 or n > 512 for n in ns):
        raise ValueError("ns: worker counts from 1 to 512")
    if repeats is None:
        repeats = 1 if quick else 5
    machine = machine_info()
    binary, why = ((None, "not asked for (nginx=False)") if not nginx
                   else nginx_available(nginx_binary))
    version = machine.nginx if binary else None
    systems = ["ngxlab"] + (["nginx"] if binary else []) + (["inprocess"] if inprocess else [])
    cals = {s: calibrate(s, binary=binary if s == "nginx" else None) for s in systems}
    runs: list[LifeRun] = []
    cmds = _startup_commands(binary) if python else {}
    env = _ngxlab_env()
    py_values: dict[str, list[float]] = {name: [] for name in cmds}
    for argv in cmds.values():
        _time_command(argv, env)            # warm-up
    total = len(ns) * repeats * len(systems)
    bar = _progress_bar(progress, total, "start-up to full mesh")
    try:
        for r in range(repeats):
            for i, n in enumerate(ns):
                if cmds and (quick is False or i % 2 == 0):
                    for name in _rotation(list(cmds), r + i):
                        py_values[name].append(_time_command(cmds[name], env))
                for order, s in enumerate(_rotation(systems, r + i)):
                    if s == "inprocess":
                        runs.append(_life_inprocess(n, r, order, cals[s],
                                                    poll_interval=poll_interval,
                                                    timeout=timeout, confirm=confirm))
                    else:
                        runs.append(_life_program(s, n, r, order, cals[s], binary=binary,
                                                  poll_interval=poll_interval, timeout=timeout,
                                                  measure_quit=measure_quit, confirm=confirm))
                    bar.update(1)
    finally:
        bar.close()
    py = _startup_samples(py_values, cmds, repeats) if cmds else {}
    return StartupResult(ns=ns, repeats=repeats, runs=runs, calibrations=cals, python=py,
                         nginx_skipped=None if binary else why, nginx_version=version,
                         machine=machine, poll_interval_ms=poll_interval * 1000,
                         duration_s=round(time.monotonic() - started, 3))


# -- QUIT to exit ------------------------------------------------------------------------


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
                   nginx_skipped=d["nginx_skipped"], machine=_machine_from(d["machine"]),
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
        if self.nginx_skipped:
            lines.append(f"nginx: skipped ({self.nginx_skipped})")
        return "\n".join(lines)

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
    res = startup_to_mesh(ns, repeats, nginx=nginx, inprocess=False, quick=quick,
                          nginx_binary=nginx_binary, python=False, measure_quit=True,
                          poll_interval=poll_interval, timeout=timeout, confirm=False,
                          progress=progress)
    return QuitResult(ns=res.ns, repeats=res.repeats, runs=res.runs,
                      nginx_skipped=res.nginx_skipped, machine=res.machine,
                      duration_s=round(time.monotonic() - started, 3))


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
        if self.nginx_skipped:
            lines.append(f"nginx: skipped ({self.nginx_skipped})")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"ns": list(self.ns),
                "counts": [asdict(c) | {"expected_total": c.expected_total,
                                        "matches_formula": c.matches_formula}
                           for c in self.counts],
                "nginx_skipped": self.nginx_skipped, "machine": asdict(self.machine),
                "machine_line": self.machine.line(), "duration_s": self.duration_s}

    @classmethod
    def from_dict(cls, d: dict) -> "DescriptorsResult":
        from dataclasses import fields
        names = {f.name for f in fields(DescriptorCount)}
        return cls(ns=tuple(d["ns"]),
                   counts=[DescriptorCount(**{k: v for k, v in c.items() if k in names})
                           for c in d["counts"]],
                   nginx_skipped=d["nginx_skipped"], machine=_machine_from(d["machine"]),
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
    cache: dict[int, int] = {}
    while True:
        c = m.census()
        ws = c.workers
        if len(ws) == n and [w.channel_fds for w in ws] == \
                [without_closing_worker(n, k) for k in range(n)] and len(c.pairs) == n \
                and all(_epoll_targets(w.pid, cache) == targets for w in ws):
            return c
        if time.monotonic() >= deadline:
            raise ScalingError(f"lab.Master(close_inherited=False): not settled within "
                               f"{timeout} s:\n{c}")
        time.sleep(0.02)


def descriptors_vs_n(ns: Sequence[int] = DEFAULT_NS, *, nginx: bool = True,
                     quick: bool = False, nginx_binary=None, timeout: float = 30.0,
                     progress: bool = False) -> DescriptorsResult:
    """For each N: the census of a settled real nginx (``lab.Nginx``), of
    ngxlab (``lab.MasterProcess``) and of ``lab.Master(close_inherited=False)``.
    ``quick`` limits ``ns`` to those up to 8."""
    from ngxlab.lab.master import Master
    from ngxlab.lab.nginx import Nginx
    from ngxlab.lab.run import MasterProcess

    started = time.monotonic()
    ns = tuple(int(n) for n in ns if not quick or n <= 8) or (1,)
    machine = machine_info()
    binary, why = ((None, "not asked for (nginx=False)") if not nginx
                   else nginx_available(nginx_binary))
    counts: list[DescriptorCount] = []
    targets = calibrate("inprocess").epoll_targets
    bar = _progress_bar(progress, len(ns) * 3, "descriptors per process")
    try:
        for n in ns:
            if binary:
                with Nginx(workers=n, binary=binary, start_timeout=timeout) as ngx:
                    counts.append(_count("nginx", n, ngx.wait_workers(n, timeout=timeout)))
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


# -- where the time goes ----------------------------------------------------------------


def profile_master_start(n: int = 32, *, top: int = 12, timeout: float = 30.0) -> str:
    """cProfile of an in-process master (``lab.Master``) from its creation to
    the full mesh, sorted by cumulative time: the master's share of a
    start-up (the workers' own work runs in other processes and is not in
    it; :class:`LifeRun`'s phase times show it). Profiling slows everything
    down: read proportions, not speeds."""
    import cProfile
    import io
    import pstats

    from ngxlab.lab.master import Master
    cal = calibrate("inprocess")
    prof = cProfile.Profile()
    m = Master(workers=n, start=False)
    try:
        with m:
            prof.enable()
            try:
                m.start(n)
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



# -- side by side: one nginx and one ngxlab, census and messages ---------------------------

SIDE_BY_SIDE_ACTIONS = ("reopen", "kill_worker:1", "reload", "quit")


def strace_available() -> tuple[str | None, str | None]:
    """(path, None) when strace can trace a child here, else (None, the reason)."""
    import shutil
    path = shutil.which("strace")
    if path is None:
        return None, "strace is not installed (apt-get install strace)"
    try:
        done = subprocess.run([path, "-f", "-o", os.devnull, "true"], capture_output=True,
                              text=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"strace cannot run here: {e}"
    if done.returncode != 0:
        return None, f"strace cannot trace here: {(done.stderr or done.stdout).strip()[-200:]}"
    return path, None


def _what(f) -> str:
    """A descriptor described briefly and without machine paths (a file by
    its name only)."""
    if f.kind in ("file", "dir", "fifo", "char", "block", "other") and f.target.startswith("/"):
        return f"{f.kind} {os.path.basename(f.target)}"
    if f.kind == "devnull":
        return "/dev/null"
    if f.kind == "unix":
        return f"channel {f.label}" if f.label else "unix socket"
    if f.kind.startswith("tcp") or f.kind.startswith("udp"):
        addr, _, state = f.detail.partition(" ")
        return f"{f.kind} {state.lower() or 'socket'} :{addr.rsplit(':', 1)[-1]}"
    if f.kind == "eventpoll":
        return f"epoll ({len(f.epoll_targets)} in its set)"
    return f.kind


@dataclass
class CensusView:
    """A census reduced to what a page may show: per process its role,
    slot, channel and total counts, and every descriptor as (number, kind,
    channel label, description without machine paths)."""

    system: str
    table: str                      # Census.table(), as printed
    processes: list[dict]           # role, slot, channel, total, fds: [[fd, kind, label, what]]

    @classmethod
    def of(cls, system: str, c: Census) -> "CensusView":
        order = {"master": 0, "worker": 1, "other": 2}
        procs = sorted(c.processes, key=lambda p: (order.get(p.role, 3),
                                                   p.slot if p.slot is not None else -1))
        return cls(system=system, table=c.table(), processes=[
            dict(role=p.role, slot=p.slot, channel=p.channel_fds, total=p.total_fds,
                 fds=[[f.fd, f.kind, f.label, _what(f)] for f in p.fds]) for p in procs])

    def process(self, role: str, slot: int | None = None) -> dict:
        for p in self.processes:
            if p["role"] == role and (slot is None or p["slot"] == slot):
                return p
        raise KeyError(f"{self.system}: no {role} {'' if slot is None else slot}")

    def kinds(self, role: str = "worker", slot: int | None = 0) -> dict[str, int]:
        """{kind: count} of one process's descriptors (channel ends as "channel")."""
        out: dict[str, int] = {}
        for fd, kind, label, _what_ in self.process(role, slot)["fds"]:
            k = "channel" if label else kind
            out[k] = out.get(k, 0) + 1
        return out

    def counts(self) -> list[tuple[str, int | None, int, int]]:
        """(role, slot, channel descriptors, all descriptors) per process."""
        return [(p["role"], p["slot"], p["channel"], p["total"]) for p in self.processes]


def _seq_lists(messages) -> list[list]:
    from ngxlab.lab.trace import sequence
    return [list(x) for x in sequence(messages)]


def _trace_ngxlab(n: int, actions: Sequence[str], strace: str, out: Path,
                  timeout: float = 10.0) -> dict[str, list]:
    """``python -m ngxlab run`` under strace; ``actions`` performed as
    :func:`ngxlab.lab.trace.trace_nginx` performs them on nginx, each time
    waiting until the master has settled; the decoded messages cut into the
    same phases."""
    from ngxlab.lab.nginx import STRACE_SYSCALLS
    from ngxlab.lab.run import MasterProcess
    from ngxlab.lab.trace import parse_trace

    prefix = [strace, "-f", "-ttt", "-xx", "-s", "64", "-q", "--seccomp-bpf",
              "-e", "trace=" + ",".join(STRACE_SYSCALLS), "-o", str(out), "--"]
    cuts: list[tuple[str, float | None]] = [("startup", None)]

    def wait(pred, what):
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise ScalingError(f"ngxlab under strace: {what} not seen in {timeout} s")
            time.sleep(0.01)

    with MasterProcess(n, command_prefix=prefix, start_timeout=timeout) as mp:
        for action in actions:
            time.sleep(0.05)     # let the last CLOSE_CHANNEL of a reap pass be written
            cuts.append((action, time.time()))
            name, _, arg = action.partition(":")
            if name == "reopen":
                off = mp.log_offset()
                mp.signal("reopen")
                mp.wait_log(r"#\d+: reopening logs$", count=n + 1, since=off, timeout=timeout)
            elif name == "kill_worker":
                slot = int(arg or 0)
                victim = mp.kill_worker(slot)
                wait(lambda: mp.slots().get(slot) not in (None, victim), f"slot {slot} respawned")
                mp.wait_mesh(n, timeout=timeout)
            elif name == "reload":
                before = set(mp.slots())
                mp.signal("reload")
                wait(lambda: set(mp.slots()).isdisjoint(before) and len(mp.slots()) == n,
                     "the new generation")
                mp.wait_mesh(n, timeout=timeout)
            elif name in ("quit", "stop"):
                mp.signal(name)
                mp.wait_exit(timeout)
                break
            else:
                raise ValueError(f"unknown action {action!r}")
    trace = parse_trace(out.read_text())
    phases = {}
    for i, (phase, t0) in enumerate(cuts):
        t1 = cuts[i + 1][1] if i + 1 < len(cuts) else None
        phases[phase] = _seq_lists(trace.window(t0, t1).messages)
    return phases


@dataclass
class SideBySide:
    """One real nginx and one ngxlab (``python -m ngxlab run``) with the same
    N: the census of each after start-up (:class:`CensusView`), and the
    channel messages of each, decoded from strace and normalised with
    :func:`ngxlab.lab.trace.sequence` (command, slot, target slot, whether a
    descriptor travelled), per phase: start-up, then each action."""

    n: int
    actions: list[str]
    nginx_version: str
    machine: MachineInfo
    census: dict[str, CensusView]
    sequences: dict[str, dict[str, list[list]]]     # system -> phase -> [[cmd, slot, target, fd?]]

    @property
    def phases(self) -> list[str]:
        return list(self.sequences["nginx"])

    def sequence(self, system: str, phase: str):
        from ngxlab.lab.trace import SeqItem
        return [SeqItem(*x) for x in self.sequences[system][phase]]

    def diff(self, phase: str, *, without: Iterable[str] = ()) -> list[str]:
        """:func:`ngxlab.lab.trace.diff_sequences` of nginx's and ngxlab's
        messages in ``phase``, leaving out the commands in ``without``."""
        from ngxlab.lab.trace import diff_sequences
        skip = set(without)
        a = [x for x in self.sequence("nginx", phase) if x.command_name not in skip]
        b = [x for x in self.sequence("ngxlab", phase) if x.command_name not in skip]
        return diff_sequences(a, b, names=("nginx", "ngxlab"))

    def counts(self, system: str, phase: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for x in self.sequences[system][phase]:
            out[x[0]] = out.get(x[0], 0) + 1
        return out

    def to_dict(self) -> dict:
        return {"n": self.n, "actions": list(self.actions), "nginx_version": self.nginx_version,
                "machine": asdict(self.machine), "machine_line": self.machine.line(),
                "census": {k: asdict(v) for k, v in self.census.items()},
                "sequences": self.sequences}

    @classmethod
    def from_dict(cls, d: dict) -> "SideBySide":
        return cls(n=d["n"], actions=list(d["actions"]), nginx_version=d["nginx_version"],
                   machine=_machine_from(d["machine"]),
                   census={k: CensusView(**v) for k, v in d["census"].items()},
                   sequences=d["sequences"])


def side_by_side(n: int = 4, actions: Sequence[str] = SIDE_BY_SIDE_ACTIONS, *,
                 nginx_binary=None, timeout: float = 10.0) -> SideBySide:
    """Start a real nginx and ngxlab with ``n`` workers each and take both
    censuses; then run each under strace through start-up and ``actions``
    (see :func:`ngxlab.lab.trace.trace_nginx`) and decode their channel
    messages. Raises :class:`ScalingError` when nginx or strace is missing."""
    from ngxlab.lab.nginx import Nginx
    from ngxlab.lab.run import MasterProcess
    from ngxlab.lab.trace import trace_nginx

    binary, why = nginx_available(nginx_binary)
    if binary is None:
        raise ScalingError(why)
    strace, why = strace_available()
    if strace is None:
        raise ScalingError(why)
    machine = machine_info()
    with Nginx(workers=n, binary=binary, start_timeout=timeout) as ngx:
        c_nginx = CensusView.of("nginx", ngx.wait_workers(n, timeout=timeout))
        version = ngx.version
    with MasterProcess(workers=n, start_timeout=timeout) as mp:
        c_ngxlab = CensusView.of("ngxlab", mp.wait_mesh(n, timeout=timeout))
    run = trace_nginx(n, actions=tuple(actions), binary=binary, timeout=timeout)
    nginx_seq = {phase: _seq_lists(msgs) for phase, msgs in run.phases.items()}
    with tempfile.TemporaryDirectory(prefix="ngxlab-strace-") as tmp:
        ngxlab_seq = _trace_ngxlab(n, actions, strace, Path(tmp) / "strace.txt", timeout)
    return SideBySide(n=n, actions=list(actions), nginx_version=version, machine=machine,
                      census={"nginx": c_nginx, "ngxlab": c_ngxlab},
                      sequences={"nginx": nginx_seq, "ngxlab": ngxlab_seq})


def record_side_by_side(path, n: int = 4) -> dict:
    """Run :func:`side_by_side` and write it as JSON to ``path``, with the
    date, the nginx version and the machine (what the chapter "Side by side
    with nginx" shows, labelled as recorded, where nginx or strace is
    missing)."""
    sbs = side_by_side(n)
    rec = {"what": f"ngxlab.lab.scaling.record_side_by_side(n={n})",
           "date": sbs.machine.date[:10], "nginx": sbs.nginx_version,
           "machine": sbs.machine.line(), "side_by_side": sbs.to_dict()}
    with open(path, "w") as f:
        json.dump(rec, f, separators=(",", ":"))
        f.write("\n")
    return rec


# -- figures ---------------------------------------------------------------------------


def _title(text: str, machine: MachineInfo | None) -> str:
    return text + ("\n" + machine.line() if machine else "")


def plot_startup(result: StartupResult, *, phases: bool = True):
    """A matplotlib Figure: start-up to full mesh against N, one line per
    system (medians, the runs as dots), and the ratio ngxlab / nginx per N
    with the target at N = 32. Drawn without pyplot."""
    from matplotlib.figure import Figure

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
    ax.set_ylim(bottom=0)
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
        wo = [result.ratio_without_python(n) for n in xs]
        if all(v is not None for v in wo):
            ax2.plot(xs, wo, "s--", color=_COLORS["ngxlab"], alpha=0.6,
                     label="(ngxlab − Python start-up) / nginx")
        tn, bound = STARTUP_TARGET
        ax2.axhline(bound, color="black", linestyle=":", linewidth=1)
        ax2.annotate(f"target at N={tn}: ≤ {bound:g}", (xs[0], bound), fontsize=7,
                     xytext=(2, 3), textcoords="offset points")
        ax2.axhline(1.0, color=_COLORS["nginx"], linewidth=0.8)
        ax2.set_xscale("log", base=2)
        ax2.set_xticks(xs, [str(n) for n in xs])
        ax2.set_xlabel("worker processes N (log scale)")
        ax2.set_ylabel("ratio of medians (same run)")
        ax2.set_ylim(bottom=0)
        ax2.grid(True, alpha=0.3)
        ax2.legend(fontsize=7)
        ax2.set_title("ngxlab / nginx", fontsize=10)
    fig.suptitle(_title("Time from start until every worker holds its full channel set",
                        result.machine), fontsize=10)
    return fig


def plot_quit(result: QuitResult):
    """A matplotlib Figure: QUIT to every worker exited, against N."""
    from matplotlib.figure import Figure

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
    ax.set_ylim(bottom=0)
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
    from matplotlib.figure import Figure

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
    ax2.set_ylim(bottom=0)
    ax2.grid(True, alpha=0.3)
    ax2.legend(fontsize=8)
    ax2.set_title("Per worker: N, or N + k + 1 without the closing", fontsize=10)
    fig.suptitle(_title("Channel descriptors against N (census of settled meshes)",
                        result.machine), fontsize=10)
    return fig


# -- everything ---------------------------------------------------------------------------


def _print_rows(rows: list[dict], machine: MachineInfo, file=None) -> None:
    file = file or sys.stdout
    print(f"ngxlab scaling on {machine.line()}", file=file)
    head = (f"{'measure':<52} {'subject':>26} {'reference':>17} {'ratio':>7} "
            f"{'target':>8}  met")
    print(head, file=file)
    print("-" * len(head), file=file)

    def f(x):
        return "-" if x is None else f"{x:.1f} ms"

    for r in rows:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        met = {True: "yes", False: "NO", None: ""}[r["met"]]
        print(f"{r['measure']:<52} {r['subject'] + ' ' + f(r['subject_median']):>26} "
              f"{r['reference'] + ' ' + f(r['reference_median']):>17} {ratio:>7} "
              f"{r['target'] or '':>8}  {met}", file=file)


QUICK_NS = (1, 4, 16, 32)


def run_sections(out_dir, quick: bool = False, progress: bool = True, *,
                 ns: Sequence[int] | None = None, repeats: int | None = None) -> dict:
    """Run :func:`startup_to_mesh` (with the QUIT of each run timed: that is
    :func:`quit_to_exit`'s data), and :func:`descriptors_vs_n`; write
    ``scaling.json``, ``startup_to_mesh.png``, ``quit_to_exit.png`` and
    ``descriptors_vs_n.png`` into ``out_dir``; print the ratios against nginx
    measured in this run; return a dict with ``figures`` and ``ratios`` (the
    shape :func:`ngxlab.lab.bench.run` expects of a section). ``ns``: the
    worker counts (:data:`DEFAULT_NS`, or :data:`QUICK_NS` with ``quick``);
    ``repeats``: 5, or 1 with ``quick``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    ns = tuple(ns) if ns else (QUICK_NS if quick else DEFAULT_NS)
    if repeats is None:
        repeats = 1 if quick else 5
    startup = startup_to_mesh(ns, repeats, quick=quick, measure_quit=True,
                              progress=progress)
    quit_ = quit_to_exit(reuse=startup)
    desc = descriptors_vs_n(ns, quick=quick, progress=progress)
    figures = []
    for name, fig in (("startup_to_mesh.png", plot_startup(startup)),
                      ("quit_to_exit.png", plot_quit(quit_)),
                      ("descriptors_vs_n.png", plot_descriptors(desc))):
        fig.savefig(out / name, dpi=110)
        figures.append(name)
    rows = startup.ratios() + quit_.ratios()
    result = {
        "machine": asdict(startup.machine), "machine_line": startup.machine.line(),
        "quick": quick,
        "command": f"python -c 'from ngxlab.lab import scaling; "
                   f"scaling.run_sections(\"OUT\", quick={quick}, ns={ns}, "
                   f"repeats={repeats})'",
        "startup_to_mesh": startup.to_dict(),
        "quit_to_exit": quit_.to_dict(),
        "descriptors_vs_n": desc.to_dict(),
        "figures": figures,
        "ratios": rows,
        "duration_s": round(time.monotonic() - started, 3),
    }
    with open(out / "scaling.json", "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    _print_rows(rows, startup.machine)
    print(startup.table())
    print(quit_.table())
    print(desc.table())
    print(f"took {result['duration_s']:.1f} s; scaling.json and figures in {out}")
    return result


def record_mesh(path, *, ns: Sequence[int] = QUICK_NS, repeats: int = 5,
                descriptor_ns: Sequence[int] = DEFAULT_NS) -> dict:
    """Measure what the chapter "How the mesh grows" measures, with more
    repeats, against a real nginx, and write it as JSON to ``path`` (what the
    chapter shows, labelled as recorded, where nginx is missing). Raises
    :class:`ScalingError` when nginx is not available: a recording is always
    of a real run."""
    binary, why = nginx_available()
    if binary is None:
        raise ScalingError(f"cannot record without nginx: {why}")
    startup = startup_to_mesh(ns, repeats, measure_quit=True)
    desc = descriptors_vs_n(descriptor_ns)
    if not (startup.all_confirmed and desc.all_match):
        raise ScalingError("the run did not confirm the mesh; not recorded")
    data = startup.to_dict()
    for r in data["runs"]:
        if r["confirmed"]:
            r["detail"] = ""            # the census summary: long, and says "full mesh"
    m = startup.machine
    rec = {"what": f"ngxlab.lab.scaling.record_mesh(ns={tuple(ns)}, repeats={repeats}, "
                   f"descriptor_ns={tuple(descriptor_ns)})",
           "date": m.date[:10], "nginx": m.nginx, "machine": m.line(),
           "startup_to_mesh": data, "descriptors_vs_n": desc.to_dict()}
    with open(path, "w") as f:
        json.dump(rec, f, separators=(",", ":"))
        f.write("\n")
    return rec


def register() -> None:
    """Add :func:`run_sections` to :func:`ngxlab.lab.bench.run` as the section
    "scaling"."""
    from ngxlab.lab import bench
    bench.register_section("scaling", run_sections,
                           "start-up to full mesh, QUIT to exit and descriptors against N, "
                           "ngxlab beside a real nginx")
