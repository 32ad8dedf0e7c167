"""The master at scale: a reload and a QUIT with hundreds of workers, ngxlab
beside a real nginx and the Python floor, measured in one run.

A measurement, not a test: nothing here asserts a speed. :func:`scale` starts
a real nginx (:class:`~ngxlab.lab.nginx.Nginx`), ``ngxlab run``
(:class:`~ngxlab.lab.run.MasterProcess`) and the Python floor
(:class:`~ngxlab.lab.run.FloorProcess`, :mod:`ngxlab.lab.floor`: only the
mesh's system calls, in Python, a reload's included) with the same number
of workers, one after the other (the order rotating between repeats), and
times on each:

reload
    from ``kill(master, SIGHUP)`` until the new generation is complete and
    the old one is gone: the master has exactly N children, none of them of
    the old generation, and the master and every worker hold as many
    descriptors as a settled master and worker did before the reload (the
    master closes a reaped worker's pair; a worker closes a peer's
    ``channel[0]`` on CLOSE_CHANNEL, so the counts come down to the settled
    ones only when the old generation is gone everywhere).
quit
    from ``kill(master, SIGQUIT)`` until the master has exited (it exits
    only once every worker has been reaped).

The reload's end is seen by polling ``/proc`` (children, and one
descriptor count per process: the size ``stat()`` gives ``/proc/PID/fd``
on Linux 6.2 and later, a ``listdir`` of it before), every ``poll``
seconds; each result records how many polls it took, what one cost and
the CPU the polling process used, so the resolution is known and so is
what the measurement took from the machine. (A ``listdir`` of every
worker's ``/proc/PID/fd`` would cost a hundred times the ``stat()``s, at
each poll once the old generation is gone, while the new workers still
read their CLOSE_CHANNELs; and it leaves an entry in the kernel's cache
for each descriptor listed, which the process's exit then has to drop, so
that the old generation's exits and the QUIT that follows are slowed, the
short ones of nginx most.) The QUIT's end is seen by the runner's
``wait_exit`` (a poll every 5 to 10 ms).
During the reload, :data:`SAMPLE` old workers (spread over the slots) are
followed at each poll: how often each was woken (its voluntary context
switches: it sleeps in ``epoll_wait``) and how much CPU it used, until it
exits. All three wake an old worker once per message it is sent (one
OPEN_CHANNEL per new worker, then QUIT), so the CPU per wake is where they
differ; with no core to spare, the reload takes as long as the CPU of the
master and of all workers, the third ratio of the table.

Absolute times on a shared machine are noise; the ratios ngxlab / nginx of
one run are the result. The floor splits each of them in two: ngxlab /
floor is what ngxlab does beyond the mesh's system calls in Python, floor /
nginx what Python costs over C for those same calls. Its reload ends as
the others' do, at the descriptor counts its master and workers held
before it (a worker: its channel, N-1 peers' ``channel[0]``, its epoll
instance and stdio). Where nginx cannot run, its side is skipped, with the
reason.

``python -m ngxlab.lab.scale [--workers 400] [--repeats 1] [--no-floor]``
prints the table.

Where a wake's CPU goes: :func:`wake_ladder` follows one channel message
through a worker, with the layers of nginx's path (the worker's cycle and
``ngx_process_events_and_timers``, ``ngx_channel_handler``,
``ngx_read_channel``) put back one at a time on top of the floor's loop,
each rung measured as the reload measures its workers (hundreds of them,
woken in turn, so that each wake finds its caches cold, as a reload's
do). ``python -m ngxlab.lab.scale --wakes [--workers 300] [--repeats 3]
[--out FILE]`` prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import statistics
import struct
import sys
import time
from dataclasses import asdict, dataclass, field

from ngxlab import channel
from ngxlab.core import NGX_AGAIN, NGX_ERROR
from ngxlab.process import NGX_MAX_PROCESSES
from ngxlab.lab import proc, report
from ngxlab.lab.compare import Target, row
from ngxlab.lab.floor import _CLOSE_CHANNEL, _MESSAGE, _OPEN_CHANNEL, _QUIT
from ngxlab.lab.nginx import Nginx, nginx_available, nginx_version
from ngxlab.lab.report import machine_info
from ngxlab.lab.run import FloorProcess, MasterProcess

__all__ = ["ScaleRun", "ScaleResult", "TARGETS", "SYSTEMS", "PAIRS", "FULL_WORKERS",
           "QUICK_WORKERS", "scale", "measure_one", "LAYERS", "LadderRun", "LadderResult",
           "wake_ladder", "bytecodes_per_message"]

# ngxlab bench --only scale: the worker counts of a full and a quick run
FULL_WORKERS = 400
QUICK_WORKERS = 50
# repeats of ngxlab bench --only scale (medians of three), and with --quick
FULL_REPEATS = 3
QUICK_REPEATS = 1

# how many old workers are followed during a reload for their wakes and CPU
SAMPLE = 16

# the systems, in the order of a first repeat (later repeats rotate it)
SYSTEMS = ("nginx", "ngxlab", "floor")
# the pairs ratios() compares: ngxlab / nginx (the targets), then ngxlab /
# floor (what ngxlab adds to Python) and floor / nginx (what Python adds to C)
PAIRS = (("ngxlab", "nginx"), ("ngxlab", "floor"), ("floor", "nginx"))

# what the book asks of the master at scale: a reload and a QUIT within
# twice nginx's time, measured in the same run
TARGETS = (
    Target(f"reload of {FULL_WORKERS} workers, HUP to settled", "ngxlab", "nginx", "<=", 2.0),
    Target(f"QUIT of {FULL_WORKERS} workers, to the master's exit", "ngxlab", "nginx", "<=", 2.0),
)


@dataclass(frozen=True)
class ScaleRun:
    """One system, one repeat."""

    system: str             # "nginx", "ngxlab" or "floor"
    workers: int
    repeat: int
    start_s: float          # start until the full mesh (the runner's own wait, census included)
    reload_s: float
    quit_s: float
    polls: int              # polls during the reload
    poll_ms: float          # mean cost of one poll during the reload
    settled: bool           # the reload ended settled (not at the deadline)
    reload_master_cpu_s: float = 0.0   # CPU time the master used during the reload
    reload_workers_cpu_s: float = 0.0  # CPU time all workers (old and new) used during it
    # a sample of the old generation during the reload, as the polls saw it
    # (a worker's last wakes, after the last poll before its exit, are missed)
    old_wakes: float = 0.0             # wakes per old worker (once per message when 1.0 per message)
    old_wake_us: float = 0.0           # CPU per wake of an old worker, in us
    measure_cpu_s: float = 0.0         # CPU the polling (this process) used during the reload

    @property
    def reload_cpu_s(self) -> float:
        """The CPU time the master and all workers used during the reload,
        which is how long the reload takes when no core is to spare."""
        return self.reload_master_cpu_s + self.reload_workers_cpu_s


@dataclass
class ScaleResult:
    workers: int
    runs: list[ScaleRun]
    machine: str
    nginx_version: str | None = None
    nginx_skipped: str | None = None
    extra: dict = field(default_factory=dict)

    def median(self, system: str, what: str) -> float | None:
        values = [getattr(r, what) for r in self.runs if r.system == system]
        return statistics.median(values) if values else None

    @property
    def reload_ratio(self) -> float | None:
        """ngxlab / nginx, medians of the reload times."""
        return self.ratio("ngxlab", "nginx", "reload_s")

    @property
    def quit_ratio(self) -> float | None:
        return self.ratio("ngxlab", "nginx", "quit_s")

    def ratio(self, subject: str, reference: str, what: str = "reload_s") -> float | None:
        """``subject`` / ``reference``, medians of ``what``; None where
        either did not run (or the reference is zero)."""
        a, b = self.median(subject, what), self.median(reference, what)
        return None if a is None or not b else a / b

    def ratios(self) -> list[dict]:
        """Rows of ``ngxlab bench``'s table, medians of this run: ngxlab /
        nginx with the targets of :data:`TARGETS` at their worker count,
        then ngxlab / floor and floor / nginx (no target: where the gap
        is) for the pairs that ran."""
        n = self.workers
        measures = ((f"reload of {n} workers, HUP to settled", "reload_s", "s"),
                    (f"QUIT of {n} workers, to the master's exit", "quit_s", "s"),
                    (f"reload of {n} workers, CPU of master and workers", "reload_cpu_s", "s"),
                    (f"reload of {n} workers, CPU per wake of an old worker", "old_wake_us",
                     "us"))
        ran = {r.system for r in self.runs}
        return [row(measure, subject, reference, self.median(subject, what),
                    self.median(reference, what), unit, TARGETS)
                for subject, reference in PAIRS if subject in ran and reference in ran
                for measure, what, unit in measures]

    def table(self) -> str:
        lines = [f"{self.workers} workers, {self.machine}",
                 f"{'':12} {'reload s':>9} {'quit s':>9} {'start s':>9}"
                 f"   reload CPU s: master, workers"]
        for system in SYSTEMS:
            if not any(r.system == system for r in self.runs):
                continue
            lines.append(f"{system:12} {self.median(system, 'reload_s'):>9.2f} "
                         f"{self.median(system, 'quit_s'):>9.2f} "
                         f"{self.median(system, 'start_s'):>9.2f}"
                         f"   {self.median(system, 'reload_master_cpu_s'):>6.2f} "
                         f"{self.median(system, 'reload_workers_cpu_s'):>7.2f}"
                         f"   old worker: {self.median(system, 'old_wakes'):>5.0f} wakes, "
                         f"{self.median(system, 'old_wake_us'):>5.1f} us CPU each;"
                         f"   polling {self.median(system, 'measure_cpu_s'):.2f} s CPU")

        def f(x):
            return "-" if x is None else f"{x:.2f}"

        for subject, reference in PAIRS:
            name = f"{subject}/{reference}"
            if self.ratio(subject, reference) is None:
                continue
            lines.append(f"{name:12} {f(self.ratio(subject, reference)):>9} "
                         f"{f(self.ratio(subject, reference, 'quit_s')):>9}"
                         f"   (medians of this run; reload CPU "
                         f"{f(self.ratio(subject, reference, 'reload_cpu_s'))}, "
                         f"CPU per wake {f(self.ratio(subject, reference, 'old_wake_us'))})")
        return report.table_text(lines, self.nginx_skipped)

    def to_dict(self) -> dict:
        return {"workers": self.workers, "machine": self.machine,
                "nginx_version": self.nginx_version, "nginx_skipped": self.nginx_skipped,
                "reload_ratio": self.reload_ratio, "quit_ratio": self.quit_ratio,
                "floor_reload_ratios": {"ngxlab/floor": self.ratio("ngxlab", "floor"),
                                        "floor/nginx": self.ratio("floor", "nginx")},
                "runs": [asdict(r) for r in self.runs], **self.extra}


# -- /proc, quickly (one listdir or read per process and poll) ------------------


def _children(pid: int) -> set[int]:
    """Every child of ``pid``, zombies included: a reaped child is gone."""
    return set(proc.children(pid, zombies=True) or ())


def _cpu(pid: int) -> tuple[float, float]:
    return proc.cpu_times(pid) or (0.0, 0.0)


def _fd_count(pid: int) -> int:
    """How many descriptors ``pid`` holds, -1 when it is gone: the size
    that ``stat()`` gives ``/proc/PID/fd`` (Linux 6.2 and later count its
    open descriptors there, without listing them), else one ``listdir``
    (``proc.fd_count``), whose count is the same."""
    try:
        size = os.stat(f"/proc/{pid}/fd").st_size
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return -1
    return size if size > 0 else proc.fd_count(pid)


def _runner(system: str, n: int, start_timeout: float):
    if system == "nginx":
        return Nginx(workers=n, start_timeout=start_timeout)
    if system == "floor":
        return FloorProcess(n, start_timeout=start_timeout)
    return MasterProcess(workers=n, start_timeout=start_timeout)


def measure_one(system: str, n: int, *, repeat: int = 0, poll: float = 0.02,
                timeout: float = 600.0, start_timeout: float = 300.0) -> ScaleRun:
    """Start ``system`` ("nginx", "ngxlab" or "floor") with ``n`` workers, time a
    reload and then a QUIT (see the module's docstring), stop it."""
    r = _runner(system, n, start_timeout)
    t = time.perf_counter()
    r.start()
    start_s = time.perf_counter() - t
    try:
        master = r.master_pid
        old = _children(master)
        base_master = _fd_count(master)
        base_worker = statistics.mode(_fd_count(p) for p in old)

        cpu0, reaped0 = _cpu(master)
        old_cpu = sum(_cpu(p)[0] for p in old)
        ordered = sorted(old)
        sample = ordered[::max(1, len(ordered) // SAMPLE)][:SAMPLE]
        first = {p: (proc.voluntary_switches(p), proc.cpu_ms(p)) for p in sample}
        seen = dict(first)
        t0 = time.perf_counter()          # before the kill: the system may run at once
        measure0 = time.process_time()
        os.kill(master, signal.SIGHUP)
        polls, cost, settled = 0, 0.0, False
        while time.perf_counter() - t0 < timeout:
            p0 = time.perf_counter()
            for p in sample:
                w, c = proc.voluntary_switches(p), proc.cpu_ms(p)
                if w is not None and c is not None:
                    seen[p] = (w, c)
            kids = _children(master)
            done = (len(kids) == n and not kids & old and _fd_count(master) == base_master
                    and all(_fd_count(k) == base_worker for k in kids))
            cost += time.perf_counter() - p0
            polls += 1
            if done:
                settled = True
                break
            time.sleep(poll)
        reload_s = time.perf_counter() - t0
        measure_cpu = time.process_time() - measure0
        cpu1, reaped1 = _cpu(master)
        new_cpu = sum(_cpu(p)[0] for p in _children(master))
        master_cpu = cpu1 - cpu0
        sampled = [p for p in sample if None not in first[p]]
        wakes = sum(seen[p][0] - first[p][0] for p in sampled)
        old_ms = sum(seen[p][1] - first[p][1] for p in sampled)
        workers_cpu = (reaped1 - reaped0) - old_cpu + new_cpu

        t0 = time.perf_counter()
        os.kill(master, signal.SIGQUIT)
        r.wait_exit(timeout)              # polls every 5 to 10 ms, and reaps
        quit_s = time.perf_counter() - t0
    finally:
        r.stop()
    return ScaleRun(system=system, workers=n, repeat=repeat, start_s=round(start_s, 6),
                    reload_s=round(reload_s, 6), quit_s=round(quit_s, 6), polls=polls,
                    poll_ms=round(1000 * cost / max(polls, 1), 2), settled=settled,
                    reload_master_cpu_s=round(master_cpu, 2),
                    reload_workers_cpu_s=round(workers_cpu, 2),
                    old_wakes=round(wakes / max(len(sampled), 1), 1),
                    old_wake_us=round(1000 * old_ms / max(wakes, 1), 1),
                    measure_cpu_s=round(measure_cpu, 3))


def scale(n: int = 400, *, repeats: int = 1, poll: float = 0.02,
          timeout: float = 600.0, floor: bool = True) -> ScaleResult:
    """nginx, ngxlab and (with ``floor``) the Python floor with ``n``
    workers: ``repeats`` reloads and QUITs of each, interleaved, the order
    of :data:`SYSTEMS` rotated by one at each repeat (nginx first on the
    first; without the floor, nginx first on even repeats). nginx is
    skipped, with the reason, where it cannot run."""
    path, why = nginx_available()
    version = None
    if path is not None:
        version = nginx_version(path)
    systems = [s for s in SYSTEMS if s != "floor" or floor]
    runs = []
    for repeat in range(repeats):
        k = repeat % len(systems)
        for system in systems[k:] + systems[:k]:
            if system == "nginx" and path is None:
                continue
            runs.append(measure_one(system, n, repeat=repeat, poll=poll, timeout=timeout))
    return ScaleResult(workers=n, runs=runs, machine=machine_info().line(),
                       nginx_version=version, nginx_skipped=why)


# -- the wake ladder: where a wake's CPU goes ---------------------------------------

# the rungs, from the floor's loop to the whole mirror; each puts back one
# layer of nginx's path (see wake_ladder)
LAYERS = ("floor", "bare", "event loop", "handler", "mirror")
# wake_ladder's defaults: as many workers as make every wake a cold one (a
# reload of 400 wakes 800 processes in turn), and messages per worker
LADDER_WORKERS = 300
LADDER_ROUNDS = 50
# the slot the ladder's OPEN_CHANNEL and CLOSE_CHANNEL name: the table's
# last, which no worker of the ladder has
_LADDER_SLOT = NGX_MAX_PROCESSES - 1

_SPACE = socket.CMSG_SPACE(4)


@dataclass(frozen=True)
class LadderRun:
    """One rung, one repeat."""

    layer: str              # one of LAYERS
    workers: int
    rounds: int
    repeat: int
    messages: int           # messages sent (an OPEN_CHANNEL and a CLOSE_CHANNEL per round and worker)
    cpu_us: float           # the workers' CPU per message (/proc/PID/schedstat), in us
    wakes: float            # the workers' voluntary context switches per message


@dataclass
class LadderResult:
    workers: int
    rounds: int
    runs: list[LadderRun]
    machine: str

    def median(self, layer: str) -> float | None:
        values = [r.cpu_us for r in self.runs if r.layer == layer]
        return statistics.median(values) if values else None

    def median_per_wake(self, layer: str) -> float | None:
        """The median over repeats of the CPU per wake (``cpu_us / wakes``):
        a worker that finds a second message waiting reads it in the same
        wake, for a fraction of a wake's CPU, so a repeat whose workers
        slept less often costs less per message without being cheaper per
        wake."""
        values = [r.cpu_us / r.wakes for r in self.runs if r.layer == layer and r.wakes > 0]
        return statistics.median(values) if values else None

    def table(self) -> str:
        lines = [f"CPU per channel message in a worker, {self.workers} workers woken in "
                 f"turn, {self.rounds} rounds; {self.machine}",
                 f"{'layer':12} {'us/message':>10} {'step':>7} {'wakes':>6} {'us/wake':>8}"
                 f"   repeats (us/message)"]
        previous = None
        for layer in LAYERS:
            m = self.median(layer)
            if m is None:
                continue
            runs = [r for r in self.runs if r.layer == layer]
            step = "" if previous is None else f"{m - previous:+7.1f}"
            per_wake = self.median_per_wake(layer)
            lines.append(f"{layer:12} {m:>10.1f} {step:>7} "
                         f"{statistics.median(r.wakes for r in runs):>6.2f} "
                         f"{'-' if per_wake is None else f'{per_wake:.1f}':>8}   "
                         + ", ".join(f"{r.cpu_us:.1f}" for r in runs))
            previous = m
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"workers": self.workers, "rounds": self.rounds, "machine": self.machine,
                "medians": {layer: self.median(layer) for layer in LAYERS},
                "runs": [asdict(r) for r in self.runs]}


def _drain(sock, peers):
    """The floor's reading: recvmsg until EAGAIN, keep an OPEN_CHANNEL's
    descriptor, close it on CLOSE_CHANNEL, exit on QUIT. A copy of the inner
    loop of ngxlab.lab.floor's child, which keeps it inline: a call there
    would add to every wake of the floor itself."""
    flags = 0
    while True:
        try:
            data, anc, _, _ = sock.recvmsg(_MESSAGE.size, _SPACE, flags)
        except BlockingIOError:
            return
        if not data:
            os._exit(0)
        command, _, slot, _ = _MESSAGE.unpack(data)
        if command == _OPEN_CHANNEL:
            for _, _, cdata in anc:
                peers[slot] = int.from_bytes(cdata[:4], sys.byteorder, signed=True)
        elif command == _CLOSE_CHANNEL:
            fd = peers.pop(slot, None)
            if fd is not None:
                os.close(fd)
        elif command == _QUIT:
            os._exit(0)
        flags = socket.MSG_DONTWAIT


def _bare_cycle(cycle, data):
    """Rung "bare": ngxlab's worker, spawned and initialised by the mirrors,
    then the floor's loop on its channel instead of its cycle."""
    from ngxlab import process, process_cycle as pc
    pc.ngx_worker_process_init(cycle, data)
    own = process.ngx_channel
    sock = socket.socket(fileno=own)
    ep = select.epoll()
    ep.register(own, select.EPOLLIN)
    parent, peers = process.ngx_parent, {}
    while True:
        if not ep.poll(1.0) and os.getppid() != parent:
            os._exit(0)
        _drain(sock, peers)


_floor_peers: dict = {}


def _floor_handler(ev):
    """Rung "event loop": the floor's reading as the channel's handler."""
    _drain(channel._socket(ev.data.fd), _floor_peers)


def _plain_read(s, ch, size, log, nginx_quirks=False):
    """Rung "handler": one recvmsg and the message's fields, in place of
    ngx_read_channel (none of its checks)."""
    try:
        data, anc, _, _ = channel._socket(s).recvmsg(size, _SPACE)
    except BlockingIOError:
        return NGX_AGAIN
    if not data:
        return NGX_ERROR
    ch.command, ch.pid, ch.slot, ch.fd = _MESSAGE.unpack(data)
    for _, _, cdata in anc:
        ch.fd = int.from_bytes(cdata[:4], sys.byteorder, signed=True)
    return len(data)


def _patches(layer: str) -> dict:
    """What a rung replaces in ngxlab.process_cycle: {name: function}."""
    return {"bare": {"ngx_worker_process_cycle": _bare_cycle},
            "event loop": {"ngx_channel_handler": _floor_handler},
            "handler": {"ngx_read_channel": _plain_read},
            "mirror": {}}[layer]


def _queued(sock) -> int:
    """Bytes written into ``sock`` that its peer has not read (SIOCOUTQ)."""
    import array
    import fcntl
    out = array.array("i", [0])
    fcntl.ioctl(sock.fileno(), 0x5411, out, True)     # SIOCOUTQ (TIOCOUTQ)
    return out[0]


def _ladder_messages(fd):
    """The ladder's two messages, as ``(bytes, ancillary data)``: an
    OPEN_CHANNEL carrying ``fd``, then its CLOSE_CHANNEL."""
    return ((_MESSAGE.pack(_OPEN_CHANNEL, 0, _LADDER_SLOT, fd),
             [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))]),
            (_MESSAGE.pack(_CLOSE_CHANNEL, 0, _LADDER_SLOT, -1), []))


def _ladder_send(socks, pids, rounds, fd, timeout):
    """``rounds`` times an OPEN_CHANNEL (carrying ``fd``) and a CLOSE_CHANNEL
    to every worker in turn; the workers' CPU and voluntary switches over
    them, once every message has been read."""
    def totals():
        return (sum(proc.cpu_ms(p) or 0.0 for p in pids),
                sum(proc.voluntary_switches(p) or 0 for p in pids))

    def drained():
        deadline = time.monotonic() + timeout
        while any(_queued(s) for s in socks):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the workers did not read their channels within {timeout} s")
            time.sleep(0.01)
        time.sleep(0.05)        # the last reader's return to epoll_wait

    drained()
    cpu0, woken0 = totals()
    (opened, anc), (closed, _) = _ladder_messages(fd)
    for _ in range(rounds):
        for s in socks:
            s.sendmsg([opened], anc)
        for s in socks:
            s.sendmsg([closed])
    drained()
    cpu1, woken1 = totals()
    messages = 2 * rounds * len(socks)
    return messages, 1000 * (cpu1 - cpu0) / messages, (woken1 - woken0) / messages


def _ladder_floor(n, rounds, fd, timeout):
    from ngxlab.lab import floor
    master = floor._Master(n, os.getpid())
    try:
        for _ in range(n):
            master.spawn()
        socks = [s for s in master.socks if s is not None]
        pids = [entry[0] for entry in master.table if entry is not None]
        return _ladder_send(socks, pids, rounds, fd, timeout)
    finally:
        master.terminate()
        for entry in master.table:
            if entry is not None:
                os.close(entry[1])
                os.close(entry[2])


def _ladder_ngxlab(layer, n, rounds, fd, timeout):
    from ngxlab import process, process_cycle as pc
    from ngxlab.lab.master import Master
    with Master(workers=n, start=False) as m:
        saved = {name: getattr(pc, name) for name in _patches(layer)}
        try:
            for name, function in _patches(layer).items():
                setattr(pc, name, function)
            m.spawn(n)
        finally:
            for name, function in saved.items():
                setattr(pc, name, function)
        m.wait_mesh(n, timeout=timeout)
        slots = process.ngx_processes[:n]
        socks = [channel._socket(p.channel[0]) for p in slots]
        return _ladder_send(socks, [p.pid for p in slots], rounds, fd, timeout)


def wake_ladder(n: int = LADDER_WORKERS, *, rounds: int = LADDER_ROUNDS, repeats: int = 3,
                timeout: float = 120.0) -> LadderResult:
    """Where a worker's CPU goes when a channel message wakes it: ``n``
    workers, each sent ``rounds`` OPEN_CHANNEL messages (carrying a
    descriptor, for a slot no worker has) each followed by its
    CLOSE_CHANNEL, the workers woken in turn, as a reload wakes them; the
    workers' CPU per message, read from ``/proc/PID/schedstat``. The rungs
    of :data:`LAYERS`, interleaved, ``repeats`` times:

    floor
        :mod:`ngxlab.lab.floor`'s master and children: one loop (``epoll``,
        then ``recvmsg`` until EAGAIN).
    bare
        ngxlab's worker, spawned and initialised by the mirrors
        (``ngx_spawn_process``, ``ngx_worker_process_init``), then the
        floor's loop on its channel: the same work in ngxlab's process.
    event loop
        ``ngx_worker_process_cycle`` and ``ngx_process_events_and_timers``,
        with the floor's reading as the channel's handler.
    handler
        ``ngx_channel_handler`` too, with one ``recvmsg`` and an unpack in
        place of ``ngx_read_channel``.
    mirror
        ``ngx_read_channel`` too: the worker as ``ngxlab run`` has it.

    This process is the master of each rung (:class:`~ngxlab.lab.master.Master`
    for ngxlab's, the floor's own master for the floor's), and stops and
    reaps its workers before the next. The system calls are the same on
    every rung (epoll_wait, one recvmsg per message and one that finds
    nothing, close); what differs is the Python around them, and the
    memory it touches. A measurement, not a test."""
    if n < 1 or rounds < 1 or repeats < 1:
        raise ValueError("n, rounds and repeats: 1 or more")
    runs = []
    fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        for repeat in range(repeats):
            k = repeat % len(LAYERS)
            for layer in LAYERS[k:] + LAYERS[:k]:
                if layer == "floor":
                    messages, cpu, woken = _ladder_floor(n, rounds, fd, timeout)
                else:
                    messages, cpu, woken = _ladder_ngxlab(layer, n, rounds, fd, timeout)
                runs.append(LadderRun(layer=layer, workers=n, rounds=rounds, repeat=repeat,
                                      messages=messages, cpu_us=round(cpu, 2),
                                      wakes=round(woken, 3)))
    finally:
        os.close(fd)
    return LadderResult(workers=n, rounds=rounds, runs=runs, machine=machine_info().line())


def bytecodes_per_message(messages: int = 20) -> dict:
    """How many bytecode instructions one channel message costs a worker,
    counted with ``sys.settrace`` (opcode events) in a forked child: the
    floor's reading (``epoll``, then ``recvmsg`` until EAGAIN) against the
    mirror's (``ngx_process_events_and_timers``, ``ngx_channel_handler``,
    ``ngx_read_channel``; the few tests of the worker cycle's own loop are
    left out). The messages are :func:`wake_ladder`'s, an OPEN_CHANNEL and
    its CLOSE_CHANNEL in turn, each read in a wake of its own. Returns
    ``{"floor": n, "mirror": n, "mirror by function": {name: n}}``, per
    message. Exact, and the same on every run of one Python version (not
    of another: the compiler changes between versions)."""
    if messages < 2:
        raise ValueError("messages: 2 or more")
    from ngxlab import _forking
    r, w = os.pipe()
    pid = _forking.fork()
    if pid == 0:
        os.close(r)
        _forking.run_child(lambda: os.write(w, json.dumps(
            _count_bytecodes(messages // 2)).encode()))
    os.close(w)
    try:
        data = b""
        while chunk := os.read(r, 65536):
            data += chunk
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    if not data:
        raise RuntimeError("the counting child failed")
    return json.loads(data)


def _count_bytecodes(rounds):
    """In the child of bytecodes_per_message: this process becomes a
    worker's event loop (the mirror's, then the floor's) on one end of a
    socketpair, and counts what each message costs it."""
    from collections import Counter
    from ngxlab import cycle as cy, event as evt, process, process_cycle as pc
    from ngxlab.core import NGX_LOG_NOTICE, ngx_log_t

    master, worker = socket.socketpair()
    worker.setblocking(False)
    fd = os.open(os.devnull, os.O_RDONLY)
    sent = _ladder_messages(fd)
    by = Counter()

    def tracer(frame, event, arg):
        frame.f_trace_opcodes = True
        if event == "opcode":
            by[frame.f_code.co_name] += 1
        return tracer

    def count(wake):
        for _ in range(3):                          # warm: specialised as a worker's would be
            for data, a in sent:
                master.sendmsg([data], a)
                wake()
        by.clear()
        for _ in range(rounds):
            for data, a in sent:
                master.sendmsg([data], a)
                sys.settrace(tracer)
                wake()
                sys.settrace(None)
        total = sum(by.values()) / (2 * rounds)
        return total, {name: n / (2 * rounds) for name, n in by.most_common()}

    cycle = cy.ngx_cycle_t(log=ngx_log_t(log_level=NGX_LOG_NOTICE))
    evt.ngx_event_process_init(cycle)
    process.ngx_channel = worker.fileno()
    channel.ngx_add_channel_event(cycle, worker.fileno(), evt.NGX_READ_EVENT,
                                  pc.ngx_channel_handler)

    def worker_loop():
        evt.ngx_process_events_and_timers(cycle)

    mirror, functions = count(worker_loop)
    evt.close_event_loop()

    ep = select.epoll()
    ep.register(worker.fileno(), select.EPOLLIN)
    peers = {}

    def floor_loop():
        ep.poll(1.0)
        _drain(worker, peers)

    floor, _ = count(floor_loop)
    return {"floor": floor, "mirror": mirror, "mirror by function": functions}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ngxlab.lab.scale",
                                description="A reload and a QUIT with many workers: "
                                            "ngxlab beside a real nginx and the Python "
                                            "floor, in one run.")
    p.add_argument("--workers", type=int, default=400)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--no-floor", action="store_true", help="leave the Python floor out")
    p.add_argument("--wakes", action="store_true",
                   help="the wake ladder instead (wake_ladder): the CPU of one channel "
                        "message in a worker, layer by layer of nginx's path")
    p.add_argument("--rounds", type=int, default=LADDER_ROUNDS,
                   help="with --wakes: messages per worker and rung (default %(default)s)")
    p.add_argument("--out", help="with --wakes: also write the result as JSON to this file")
    args = p.parse_args(argv)
    if args.wakes:
        result = wake_ladder(args.workers if args.workers != FULL_WORKERS else LADDER_WORKERS,
                             rounds=args.rounds, repeats=max(args.repeats, 1))
        counts = bytecodes_per_message()
        print(result.table())
        print(f"bytecodes per message: floor {counts['floor']:.0f}, mirror "
              f"{counts['mirror']:.0f} (" + ", ".join(
                  f"{name} {n:.0f}" for name, n in counts["mirror by function"].items()) + ")")
        if args.out:
            with open(args.out, "w") as f:
                json.dump({**result.to_dict(), "bytecodes": counts}, f, indent=1)
                f.write("\n")
        return 0
    print(scale(args.workers, repeats=args.repeats, floor=not args.no_floor).table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
