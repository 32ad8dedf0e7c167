"""Benchmarks: what ngxlab's channel costs, measured beside what it is built from.

Measurements, not tests: nothing here asserts a speed. Each function returns
:class:`Samples` (every sample kept, with the median, p10, p90, and the ratio of
its median to a reference's median measured **in the same run**), and
:func:`run` runs them all, writes ``results.json`` and PNG figures, and prints
the ratios beside the targets the book tracks.

Round trips: :func:`round_trip`, :func:`round_trips`
    One 32-byte message (the size of ``ngx_channel_t``) from a parent to a
    forked child and back; the time of one round trip, in ns, measured with
    ``time.perf_counter_ns`` around a batch of round trips (each sample is the
    mean of one batch). Variants:

    ``ngxlab``
        ``ngx_write_channel`` / ``ngx_read_channel`` on a socketpair made as
        ``ngx_spawn_process`` makes it: ``AF_UNIX``/``SOCK_STREAM``, both ends
        non-blocking (``ioctl(FIONBIO)``). Not ``FIOASYNC``/``F_SETOWN``: that
        would send SIGIO to the benchmark on every reply (nginx's master has a
        handler for it; the benchmark has none).
    ``raw``
        ``socket.sendmsg`` / ``socket.recvmsg`` on the same kind of socketpair.
    ``c``
        The C floor: ``ngxlab/lab/csrc/floor.c``, the same system calls from C,
        compiled at run time (``cc -O2``). Reported as skipped, with the
        reason, where no C compiler exists; never estimated.
    ``mp_pipe``
        ``multiprocessing.Pipe()`` (a duplex socketpair), ``send_bytes`` /
        ``recv_bytes``; a descriptor goes with ``multiprocessing.reduction
        .send_handle`` / ``recv_handle``, the module's own way.
    ``mp_queue``
        Two ``multiprocessing.Queue`` objects, ``put`` / ``get``. Cannot carry
        a descriptor.
    ``os_pipe``
        Two ``os.pipe()`` pipes, ``os.write`` / ``os.read``. Cannot carry a
        descriptor.

    The decision on blocking: ``ngxlab``, ``raw`` and ``c`` use non-blocking
    sockets, as nginx does, and every reader (parent and child alike) waits
    for readability with a blocking ``poll()`` on the one descriptor before
    each ``recvmsg()`` (no busy loop). All three make the same system calls
    (sendmsg, poll, recvmsg on each side), so their ratios show the cost of
    Python, and of the mirror on top of Python, nothing else. (nginx's
    worker reads channel messages in a loop until ``NGX_AGAIN``, one more
    recvmsg per event; the benchmark measures the channel functions, not that
    handler.) ``mp_pipe``, ``mp_queue`` and ``os_pipe`` are used the way their
    documentation shows: blocking reads.

    With ``with_fd=True`` each message carries one ``SCM_RIGHTS`` descriptor
    (the sender's ``/dev/null``) in each direction: the child echoes the
    descriptor it received, then closes it, and the parent closes the one it
    gets back, so nothing accumulates. ``ngxlab`` sends it with
    ``NGX_CMD_OPEN_CHANNEL`` (the only command that carries one); without a
    descriptor the message is ``NGX_CMD_REOPEN`` with ``fd = -1``.

Descriptors per second: :func:`fds_per_second`
    One direction: a forked child sends 32-byte messages each carrying K
    copies of one descriptor in a single ``SCM_RIGHTS`` control message
    (``sendmsg``); the parent receives them (``recvmsg``) and closes every
    descriptor it gets. Python against the same program in C. Flow control
    keeps the descriptors in flight under the sender's ``RLIMIT_NOFILE``
    (Linux refuses more with ``ETOOMANYREFS``): the receiver acknowledges
    every few messages with one byte and the sender waits when a window of
    ``min(16384, NOFILE / 2)`` descriptors is unacknowledged.

    Linux accepts at most 253 descriptors in one ``SCM_RIGHTS`` message
    (``SCM_MAX_FD``); ``sendmsg`` with 254 fails with ``EINVAL``
    (``OSError: [Errno 22] Invalid argument``). :func:`scm_rights_limit`
    checks that on the running kernel and :func:`run` records it.

Fairness. Every comparison runs its variants interleaved, in rounds (A B C,
then B C A, ...), so that noise from the rest of the machine falls on all of
them alike, and ratios are taken between medians of one run. In every round
each variant starts afresh (a new child, or a new run of the C program, which
forks its own), warms up with one batch, then is measured: Python and C
variants have the same life cycle, and the scheduler places each new pair of
processes anew. Absolute times differ from machine to machine and with the
machine's load (:func:`machine_info` records the load average); the ratios
are what the book tracks (:data:`TARGETS`). A target that is missed is
reported as missed.

Placement. Where the two processes run matters more than anything else
measured here. On a virtual machine, waking a process on an idle virtual CPU
costs tens of µs (the CPU had halted, and the host must resume it), and the
scheduler keeps some pairs of processes on one CPU and splits others, from
run to run; measured on a 2-vCPU VM, one C round trip took 8 µs with parent
and child on one CPU and 49 µs on two. So every variant gets the same
placement, chosen with ``placement``: ``"same"`` (parent and child pinned to
one CPU, the first this thread may use: the default for round trips; it
measures the system calls plus two context switches, and is what the
scheduler itself chooses for the C pair), ``"split"`` (parent on one CPU,
child on the next: the default for descriptors per second, where sender and
receiver work in parallel), or ``"free"`` (the scheduler decides). Pinning
applies to the calling thread for the duration of the measurement and is
then undone (in a notebook, the kernel's other threads are untouched).

Extra sections. :data:`EXTRA_SECTIONS` is where the measurements that need
a real nginx runner plug in ("startup time to full mesh vs N", "QUIT to exit
vs N", "descriptors per process vs N"): :func:`register_section` adds one and
:func:`run` runs it after its own and stores what it returns.

Not a mirror of nginx: nothing here has an ``ngx_`` name.
"""

from __future__ import annotations

import array
import contextlib
import datetime as _dt
import errno
import fcntl
import io
import json
import math
import multiprocessing
import multiprocessing.reduction
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import termios
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from ngxlab import _forking
from ngxlab.channel import (
    NGX_CMD_OPEN_CHANNEL, NGX_CMD_REOPEN, ngx_channel_t, ngx_read_channel, ngx_write_channel,
)
from ngxlab.core import NGX_AGAIN, NGX_LOG_ALERT, NGX_OK, ngx_log_t, sizeof
from ngxlab.lab import _cbuild
from ngxlab.lab.fork import set_parent_death_signal

__all__ = [
    "BenchError", "MachineInfo", "Samples", "Section", "Target",
    "ROUND_TRIP_VARIANTS", "DESCRIPTOR_VARIANTS", "FDS_PER_MESSAGE", "SCM_MAX_FD",
    "PLACEMENTS", "ROUND_TRIP_PLACEMENT", "FDS_PLACEMENT",
    "TARGETS", "EXTRA_SECTIONS",
    "round_trip", "round_trips", "fds_per_second", "scm_rights_limit", "machine_info",
    "profile_round_trip", "plot_round_trips", "plot_fds_per_second", "ratio_table",
    "register_section", "run",
]

MESSAGE_SIZE = sizeof(ngx_channel_t)            # 32
SCM_MAX_FD = 253                                # Linux: include/net/scm.h
ROUND_TRIP_VARIANTS = ("ngxlab", "raw", "c", "mp_pipe", "mp_queue", "os_pipe")
DESCRIPTOR_VARIANTS = ("ngxlab", "raw", "c", "mp_pipe")   # can carry a descriptor
FDS_PER_MESSAGE = (1, 16, SCM_MAX_FD)
PLACEMENTS = ("same", "split", "free")
ROUND_TRIP_PLACEMENT = "same"
FDS_PLACEMENT = "split"

_WHY_NO_FD = {
    "mp_queue": "multiprocessing.Queue cannot carry a descriptor",
    "os_pipe": "a pipe cannot carry a descriptor (SCM_RIGHTS needs a Unix socket)",
}

# How run() sizes things: full and quick.
_FULL = dict(n=20_000, batch=20, rounds=10, fd_seconds=2.0, fd_rounds=5, fd_interval=0.1)
_QUICK = dict(n=400, batch=10, rounds=4, fd_seconds=0.12, fd_rounds=2, fd_interval=0.02)


class BenchError(RuntimeError):
    """A benchmark could not run (a child failed, a message came back wrong)."""


# -- results -----------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile, linear between the closest ranks (numpy's default)."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass
class Samples:
    """The samples of one variant in one measurement, and its reference.

    ``values`` are all the samples, in the order taken (``unit``: ``"ns"``
    per round trip, or ``"fds/s"``). ``reference_values`` are the samples of
    the reference variant (``reference``) taken interleaved with these in
    the same run; ``ratio`` is ``median / reference_median``. ``skipped``
    says why a variant was not measured (then ``values`` is empty).
    ``params`` records how it was measured.
    """

    measure: str
    variant: str
    unit: str
    values: list[float] = field(default_factory=list)
    reference: str | None = None
    reference_values: list[float] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None

    @property
    def median(self) -> float | None:
        return _percentile(self.values, 50)

    @property
    def p10(self) -> float | None:
        return _percentile(self.values, 10)

    @property
    def p90(self) -> float | None:
        return _percentile(self.values, 90)

    @property
    def reference_median(self) -> float | None:
        return _percentile(self.reference_values, 50)

    @property
    def ratio(self) -> float | None:
        """``median / reference_median``; None when either is missing."""
        m, r = self.median, self.reference_median
        if m is None or not r:
            return None
        return m / r

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(median=self.median, p10=self.p10, p90=self.p90,
                 reference_median=self.reference_median, ratio=self.ratio)
        return d

    def __repr__(self) -> str:
        if self.skipped:
            return f"Samples({self.measure}: {self.variant} skipped: {self.skipped})"
        ratio = "" if self.ratio is None else f", {self.ratio:.3f} x {self.reference}"
        return (f"Samples({self.measure}: {self.variant} median {_fmt(self.median, self.unit)}"
                f" [p10 {_fmt(self.p10, self.unit)}, p90 {_fmt(self.p90, self.unit)}],"
                f" {len(self.values)} samples{ratio})")


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ns":
        return f"{value / 1000:.2f} µs"
    if unit == "fds/s":
        return f"{value / 1e6:.3f} M/s" if value >= 1e6 else f"{value / 1e3:.1f} k/s"
    return f"{value:g} {unit}"


# -- the machine ---------------------------------------------------------------


@dataclass
class MachineInfo:
    """What the numbers were measured on."""

    cpu_model: str
    cores: int
    usable_cores: int
    kernel: str
    python: str
    nginx: str | None
    compiler: str | None
    loadavg: tuple[float, float, float] | None
    date: str

    def line(self) -> str:
        """One line for a title or a table heading."""
        parts = [f"{self.cpu_model}, {self.usable_cores} of {self.cores} cores"
                 if self.usable_cores != self.cores else f"{self.cpu_model}, {self.cores} cores",
                 f"{platform.system()} {self.kernel}", f"Python {self.python}"]
        if self.nginx:
            parts.append(f"nginx {self.nginx}")
        if self.compiler:
            parts.append(self.compiler)
        if self.loadavg is not None:
            parts.append(f"load {self.loadavg[0]:.2f}")
        parts.append(self.date[:10])
        return ", ".join(parts)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "cpu model", "Hardware"):
                    return re.sub(r"\s+", " ", value.strip())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _nginx_version() -> str | None:
    for path in (shutil.which("nginx"), "/usr/sbin/nginx", "/usr/local/nginx/sbin/nginx"):
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            try:
                done = subprocess.run([path, "-v"], capture_output=True, text=True, timeout=10,
                                      stdin=subprocess.DEVNULL)
            except (OSError, subprocess.TimeoutExpired):
                continue
            m = re.search(r"nginx/(\S+)", done.stderr + done.stdout)
            if m:
                return m.group(1)
    return None


def _compiler_version() -> str | None:
    cc = _cbuild.compiler()
    if cc is None:
        return None
    try:
        done = subprocess.run([*cc, "--version"], capture_output=True, text=True, timeout=10,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = done.stdout
    first = text.splitlines()[0] if text else ""
    version = re.findall(r"\b(\d+\.\d+(?:\.\d+)?)\b", first)
    name = ("clang" if "clang" in text else
            "gcc" if "Free Software Foundation" in text or "gcc" in first else
            os.path.basename(cc[0]))
    return f"{name} {version[-1]}" if version else (first or None)


def _loadavg() -> tuple[float, float, float] | None:
    try:
        return tuple(round(x, 2) for x in os.getloadavg())
    except OSError:
        return None


def machine_info() -> MachineInfo:
    """Cores, CPU model, kernel, Python, nginx (``nginx -v``, if installed),
    the C compiler, the load average and the date (UTC)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    return MachineInfo(
        cpu_model=_cpu_model(), cores=os.cpu_count() or 1, usable_cores=usable,
        kernel=platform.release(),
        python=f"{platform.python_version()}"
               + ("" if platform.python_implementation() == "CPython"
                  else f" ({platform.python_implementation()})"),
        nginx=_nginx_version(), compiler=_compiler_version(), loadavg=_loadavg(),
        date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )


# -- progress ------------------------------------------------------------------


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_description_str(self, desc: str) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(total: int, desc: str, enabled: bool):
    """A tqdm bar that appears only after a second; a do-nothing bar when
    disabled or when tqdm is not installed."""
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()

    class _Bar(tqdm):
        monitor_interval = 0   # no monitor thread: the benchmark forks

    return _Bar(total=total, desc=desc, delay=1.0, leave=False, file=sys.stderr,
                dynamic_ncols=True)


@contextlib.contextmanager
def _progress(progress, total: int, desc: str):
    """``progress`` is a bool, or a bar made by the caller (run() shares one)."""
    if isinstance(progress, bool) or progress is None:
        bar = _bar(total, desc, bool(progress))
        try:
            yield bar
        finally:
            bar.close()
    else:
        progress.set_description_str(desc)
        yield progress


# -- children --------------------------------------------------------------------


def _child_main(parent: int, close: Iterable[int], cpu: int, target: Callable,
                args: tuple) -> None:
    set_parent_death_signal(signal.SIGKILL, expected_parent=parent)
    if cpu >= 0:
        os.sched_setaffinity(0, {cpu})
    # A kernel interrupt signals the whole group; the parent cleans up.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for fd in close:
        try:
            os.close(fd)
        except OSError:
            pass
    target(*args)


def _spawn(target: Callable, *args, close: Iterable[int] = (), cpu: int = -1) -> int:
    """Fork a child that runs ``target(*args)`` after closing ``close`` (on
    CPU ``cpu`` only, unless -1); it dies with its parent and always ends in
    ``os._exit``."""
    parent = os.getpid()
    close = tuple(close)
    pid = _forking.fork()
    if pid == 0:
        _forking.run_child(_child_main, parent, close, cpu, target, args)
    return pid


@dataclass(frozen=True)
class _Placement:
    kind: str                 # what was asked for: same, split or free
    parent_cpu: int           # -1: not pinned
    child_cpu: int
    note: str = ""

    def describe(self) -> str:
        if self.parent_cpu < 0:
            text = "free: the scheduler places parent and child"
        elif self.parent_cpu == self.child_cpu:
            text = f"same: parent and child pinned to CPU {self.parent_cpu}"
        else:
            text = f"split: parent pinned to CPU {self.parent_cpu}, child to CPU {self.child_cpu}"
        return text + (f" ({self.note})" if self.note else "")


def _placement(kind: str) -> _Placement:
    if kind not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, not {kind!r}")
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return _Placement(kind, -1, -1, "CPU affinity is not available here")
    if kind == "free":
        return _Placement(kind, -1, -1)
    if kind == "same":
        return _Placement(kind, cpus[0], cpus[0])
    if len(cpus) < 2:
        return _Placement(kind, cpus[0], cpus[0], "only one CPU: both on it")
    return _Placement(kind, cpus[0], cpus[1])


@contextlib.contextmanager
def _pinned(cpu: int):
    """Run the calling thread on ``cpu`` only, then restore its affinity."""
    if cpu < 0:
        yield
        return
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, saved)


def _finish(pid: int, grace: float = 2.0) -> int | None:
    """Wait up to ``grace`` seconds for the child to exit, then SIGKILL it;
    always reap it. Returns its exit status (None if killed)."""
    deadline = time.monotonic() + grace
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() >= deadline:
            break
        time.sleep(0.002)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    while True:
        try:
            os.waitpid(pid, 0)
            return None
        except ChildProcessError:
            return None
        except KeyboardInterrupt:
            continue


def _nonblocking(fd: int) -> None:
    # As ngx_nonblocking() on Linux: ioctl(FIONBIO).
    fcntl.ioctl(fd, termios.FIONBIO, b"\x01\x00\x00\x00")


def _rights(ancdata) -> list[int]:
    fds: list[int] = []
    for level, type_, data in ancdata:
        if level == socket.SOL_SOCKET and type_ == socket.SCM_RIGHTS:
            fds.extend(array.array("i", data[:len(data) - len(data) % 4]))
    return fds


def _message(with_fd: bool, devnull: int) -> ngx_channel_t:
    if with_fd:
        return ngx_channel_t(command=NGX_CMD_OPEN_CHANNEL, pid=os.getpid(), slot=0, fd=devnull)
    return ngx_channel_t(command=NGX_CMD_REOPEN, pid=os.getpid(), slot=0, fd=-1)


# -- round-trip variants ---------------------------------------------------------
#
# Each has start(with_fd, close) (fork its echo child, which first closes the
# descriptors in `close` and the parent's ends), check() (one round trip, its
# bytes compared), measure(batches, batch, warmup) -> ns per round trip for
# each batch, stop() (end and reap the child, close everything), and
# parent_fds(). round_trips() starts a fresh one for every round, as the C
# program forks a fresh child for every round: every variant has the same
# life cycle, and the parent never forks while multiprocessing.Queue's
# feeder thread runs (it is joined at stop).


class _PyVariant:
    name = ""

    def __init__(self):
        self.pid = -1
        self.with_fd = False
        self.devnull = -1

    def start(self, with_fd: bool, close: Iterable[int], child_cpu: int = -1) -> None:
        self.with_fd = with_fd
        self.devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._open()
        except BaseException:
            os.close(self.devnull)
            self.devnull = -1
            raise
        try:
            try:
                self.pid = _spawn(self._echo, close=(*close, *self.parent_fds()),
                                  cpu=child_cpu)
            finally:
                self._close_child_ends()
        except BaseException:
            with contextlib.suppress(Exception):
                self.stop()
            raise

    def measure(self, batches: int, batch: int, warmup: int) -> list[float]:
        if warmup:
            self._loop(warmup)
        return [self._loop(batch) / batch for _ in range(batches)]

    def stop(self) -> None:
        try:
            self._shutdown()
        finally:
            if self.pid > 0:
                status = _finish(self.pid)
                self.pid = -1
                if status not in (0, None):
                    raise BenchError(f"the {self.name} echo child exited with status {status}")
            if self.devnull != -1:
                os.close(self.devnull)
                self.devnull = -1

    def check(self) -> None:
        """One round trip outside the measurement, checked byte for byte."""
        got = self._one_checked()
        if got != self._expected():
            raise BenchError(f"{self.name}: the echo came back as {got!r}")

    def _expected(self) -> bytes:
        return bytes(_message(self.with_fd, self.devnull))


class _Ngxlab(_PyVariant):
    name = "ngxlab"

    def _open(self):
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.fd, self.child_fd = a.detach(), b.detach()
        _nonblocking(self.fd)
        _nonblocking(self.child_fd)
        self.log = ngx_log_t(log_level=NGX_LOG_ALERT)
        self.out = _message(self.with_fd, self.devnull)
        self.back = ngx_channel_t()
        self.poll = select.poll()
        self.poll.register(self.fd, select.POLLIN)

    def parent_fds(self):
        return [self.fd]

    def _close_child_ends(self):
        os.close(self.child_fd)

    def _echo(self):
        s = self.child_fd
        ch = ngx_channel_t()
        wait = select.poll()
        wait.register(s, select.POLLIN)
        log = self.log
        while True:
            wait.poll()
            n = ngx_read_channel(s, ch, MESSAGE_SIZE, log)
            if n == NGX_AGAIN:
                continue
            if n != MESSAGE_SIZE:
                return                      # EOF: the parent is done
            if ngx_write_channel(s, ch, MESSAGE_SIZE, log) != NGX_OK:
                raise BenchError("ngx_write_channel() failed in the child")
            if ch.fd != -1:
                os.close(ch.fd)

    def _loop(self, k: int) -> int:
        s, out, back, log, size = self.fd, self.out, self.back, self.log, MESSAGE_SIZE
        write, read, wait, close = ngx_write_channel, ngx_read_channel, self.poll.poll, os.close
        with_fd, again, ok, clock = self.with_fd, NGX_AGAIN, NGX_OK, time.perf_counter_ns
        t0 = clock()
        for _ in range(k):
            if write(s, out, size, log) != ok:
                raise BenchError("ngx_write_channel() failed")
            while True:
                wait()
                n = read(s, back, size, log)
                if n != again:
                    break
            if n != size:
                raise BenchError(f"ngx_read_channel() returned {n}")
            if with_fd:
                close(back.fd)
        return clock() - t0

    def _one_checked(self) -> bytes:
        self._loop(1)
        ch = self.back
        return bytes(ngx_channel_t(ch.command, ch.pid, ch.slot,
                                   self.devnull if self.with_fd else ch.fd))

    def _shutdown(self):
        if self.fd != -1:
            os.close(self.fd)
            self.fd = -1


class _Raw(_PyVariant):
    name = "raw"

    def _open(self):
        self.sock, self.child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.child_sock.setblocking(False)
        self.msg = bytes(_message(self.with_fd, self.devnull))
        self.anc = ([(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [self.devnull]))]
                    if self.with_fd else [])
        self.space = socket.CMSG_SPACE(4)
        self.poll = select.poll()
        self.poll.register(self.sock.fileno(), select.POLLIN)
        self.last = b""

    def parent_fds(self):
        return [self.sock.fileno()]

    def _close_child_ends(self):
        self.child_sock.close()

    def _echo(self):
        s = self.child_sock
        wait = select.poll()
        wait.register(s.fileno(), select.POLLIN)
        space = self.space
        while True:
            wait.poll()
            try:
                data, anc, flags, _ = s.recvmsg(MESSAGE_SIZE, space)
            except BlockingIOError:
                continue
            if not data:
                return
            fds = _rights(anc) if anc else []
            s.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                      if fds else [])
            for fd in fds:
                os.close(fd)

    def _loop(self, k: int) -> int:
        sendmsg, recvmsg = self.sock.sendmsg, self.sock.recvmsg
        msg, anc, space, wait, close = (self.msg,), self.anc, self.space, self.poll.poll, os.close
        size, clock = MESSAGE_SIZE, time.perf_counter_ns
        t0 = clock()
        for _ in range(k):
            sendmsg(msg, anc)
            while True:
                wait()
                try:
                    data, ancdata, flags, _ = recvmsg(size, space)
                    break
                except BlockingIOError:
                    continue
            if len(data) != size:
                raise BenchError(f"recvmsg() returned {len(data)} bytes")
            if ancdata:
                for fd in _rights(ancdata):
                    close(fd)
        t = clock() - t0
        self.last = data
        return t

    def _one_checked(self) -> bytes:
        self._loop(1)
        return self.last

    def _shutdown(self):
        self.sock.close()


class _MpPipe(_PyVariant):
    name = "mp_pipe"

    def _open(self):
        ctx = multiprocessing.get_context("fork")
        self.conn, self.child_conn = ctx.Pipe(duplex=True)
        self.msg = bytes(_message(self.with_fd, self.devnull))
        self.last = b""

    def parent_fds(self):
        return [self.conn.fileno()]

    def _close_child_ends(self):
        self.child_conn.close()

    def _echo(self):
        conn, with_fd, parent = self.child_conn, self.with_fd, os.getppid()
        send_handle = multiprocessing.reduction.send_handle
        recv_handle = multiprocessing.reduction.recv_handle
        while True:
            try:
                data = conn.recv_bytes()
            except EOFError:
                return
            if with_fd:
                fd = recv_handle(conn)
            conn.send_bytes(data)
            if with_fd:
                send_handle(conn, fd, parent)
                os.close(fd)

    def _loop(self, k: int) -> int:
        conn, msg, with_fd, pid = self.conn, self.msg, self.with_fd, self.pid
        send, recv = conn.send_bytes, conn.recv_bytes
        send_handle = multiprocessing.reduction.send_handle
        recv_handle = multiprocessing.reduction.recv_handle
        devnull, close, clock = self.devnull, os.close, time.perf_counter_ns
        t0 = clock()
        for _ in range(k):
            send(msg)
            if with_fd:
                send_handle(conn, devnull, pid)
            data = recv()
            if with_fd:
                close(recv_handle(conn))
        t = clock() - t0
        self.last = data
        return t

    def _one_checked(self) -> bytes:
        self._loop(1)
        return self.last

    def _shutdown(self):
        self.conn.close()


class _MpQueue(_PyVariant):
    name = "mp_queue"

    def _open(self):
        # The "fork" context: no resource-tracker process (its semaphore is
        # unlinked at once), whatever the default start method is.
        ctx = multiprocessing.get_context("fork")
        self.to_child, self.to_parent = ctx.Queue(), ctx.Queue()
        self.msg = bytes(_message(False, self.devnull))
        self.last = b""

    def parent_fds(self):
        return []   # stopped with a sentinel, not by EOF

    def _close_child_ends(self):
        pass

    def _echo(self):
        get, put = self.to_child.get, self.to_parent.put
        while True:
            item = get()
            if item is None:
                break
            put(item)
        self.to_parent.close()
        self.to_parent.join_thread()    # flush before os._exit

    def _loop(self, k: int) -> int:
        put, get, msg, clock = self.to_child.put, self.to_parent.get, self.msg, time.perf_counter_ns
        t0 = clock()
        for _ in range(k):
            put(msg)
            data = get()
        t = clock() - t0
        self.last = data
        return t

    def _one_checked(self) -> bytes:
        self._loop(1)
        return self.last

    def _shutdown(self):
        with contextlib.suppress(Exception):
            self.to_child.put(None)
        if self.pid > 0:
            _finish(self.pid)
            self.pid = -1
        for q in (self.to_child, self.to_parent):
            q.close()
            q.join_thread()


class _OsPipe(_PyVariant):
    name = "os_pipe"

    def _open(self):
        self.c_read, self.p_write = os.pipe()
        self.p_read, self.c_write = os.pipe()
        self.msg = bytes(_message(False, self.devnull))
        self.last = b""

    def parent_fds(self):
        return [self.p_write, self.p_read]

    def _close_child_ends(self):
        os.close(self.c_read)
        os.close(self.c_write)

    def _echo(self):
        r, w = self.c_read, self.c_write
        read, write = os.read, os.write
        while True:
            data = read(r, MESSAGE_SIZE)
            if not data:
                return
            write(w, data)

    def _loop(self, k: int) -> int:
        r, w, msg, size = self.p_read, self.p_write, self.msg, MESSAGE_SIZE
        read, write, clock = os.read, os.write, time.perf_counter_ns
        t0 = clock()
        for _ in range(k):
            write(w, msg)
            data = read(r, size)
        t = clock() - t0
        self.last = data
        return t

    def _one_checked(self) -> bytes:
        self._loop(1)
        return self.last

    def _shutdown(self):
        os.close(self.p_write)
        os.close(self.p_read)


class _C:
    """The C floor: runs ``floor rt`` once per round (its own fork inside)."""

    name = "c"

    def __init__(self):
        self.program: Path | None = None

    def start(self, with_fd: bool, close: Iterable[int], child_cpu: int = -1) -> None:
        self.with_fd = with_fd
        self.child_cpu = child_cpu
        self.program = _cbuild.build("floor")

    def measure(self, batches: int, batch: int, warmup: int) -> list[float]:
        # This thread's CPU (it is pinned for "same" and "split") for the C
        # parent too; -1 when free.
        parent_cpu = -1 if self.child_cpu < 0 else min(os.sched_getaffinity(0))
        out = _run_floor([self.program, "rt", batches * batch, batch, warmup, int(self.with_fd),
                          parent_cpu, self.child_cpu])
        return [float(x) for x in out["samples_ns"]]

    def check(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def parent_fds(self):
        return []


_VARIANTS: dict[str, type] = {
    "ngxlab": _Ngxlab, "raw": _Raw, "c": _C, "mp_pipe": _MpPipe, "mp_queue": _MpQueue,
    "os_pipe": _OsPipe,
}


def _run_floor(argv: list, timeout: float = 120.0) -> dict:
    argv = [str(a) for a in argv]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"{' '.join(argv)} did not finish in {timeout} s") from e
    if done.returncode != 0:
        raise BenchError(f"{' '.join(argv)} exited with status {done.returncode}: "
                         f"{done.stderr.strip()[-500:]}")
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as e:
        raise BenchError(f"{' '.join(argv)} printed no JSON line: {done.stdout[-500:]!r}") from e


def _c_skip_reason() -> str | None:
    """Why the C floor cannot run here, or None when it can."""
    try:
        _cbuild.build("floor")
    except _cbuild.CompilerNotFound as e:
        return f"not measured: {e}"
    except _cbuild.CBuildError as e:
        return f"not measured: the C floor did not compile: {e}"
    return None


def _one_round(name: str, with_fd: bool, batches: int, batch: int, child_cpu: int) -> list[float]:
    """Start the variant (fork its echo child, or run the C program), check
    one round trip, warm up with ``batch`` round trips, measure ``batches``
    batches, stop it."""
    v = _VARIANTS[name]()
    v.start(with_fd, (), child_cpu)
    try:
        v.check()
        got = v.measure(batches, batch, batch)
    except BaseException:
        with contextlib.suppress(Exception):
            v.stop()
        raise
    v.stop()
    return got


def _rotated(names: list[str], r: int) -> list[str]:
    if not names:
        return names
    r %= len(names)
    return names[r:] + names[:r]


def round_trips(variants: Iterable[str] = ROUND_TRIP_VARIANTS, *, n: int = 2000,
                with_fd: bool = False, batch: int = 20, rounds: int = 10,
                reference: str = "raw", placement: str = ROUND_TRIP_PLACEMENT,
                progress=False) -> dict[str, Samples]:
    """Round trips of one 32-byte message for several variants, interleaved.

    ``n`` round trips are measured per variant (rounded down to a whole
    number of batches per round, at least one), in ``rounds`` rounds; each
    round first runs ``batch`` unmeasured round trips per variant. Each
    variant's :class:`Samples` has ``reference`` (added to the run if not in
    ``variants``) as its reference. A variant that cannot run here (no C
    compiler; no way to carry a descriptor) is in the result with
    ``skipped`` set. Variants: :data:`ROUND_TRIP_VARIANTS`. ``placement``:
    ``"same"``, ``"split"`` or ``"free"`` (see the module's docstring).
    """
    names = list(dict.fromkeys(variants))
    if reference not in names:
        names.append(reference)
    unknown = [v for v in names if v not in _VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; expected some of {ROUND_TRIP_VARIANTS}")
    if batch < 1 or rounds < 1 or n < 1:
        raise ValueError("n, batch and rounds must be at least 1")
    per_round = max(1, n // (rounds * batch))
    where = _placement(placement)
    measure = "round trip, one descriptor" if with_fd else "round trip, no descriptor"
    params = dict(n=per_round * batch * rounds, batch=batch, rounds=rounds,
                  batches_per_round=per_round, warmup_per_round=batch, with_fd=with_fd,
                  message_bytes=MESSAGE_SIZE, placement=where.describe())

    skipped: dict[str, str] = {}
    for name in names:
        if with_fd and name in _WHY_NO_FD:
            skipped[name] = _WHY_NO_FD[name]
        elif name == "c":
            why = _c_skip_reason()
            if why:
                skipped[name] = why

    values: dict[str, list[float]] = {name: [] for name in names}
    with _progress(progress, rounds * len(names), measure) as bar, _pinned(where.parent_cpu):
        for r in range(rounds):
            for name in _rotated(names, r):
                if name not in skipped:
                    values[name].extend(_one_round(name, with_fd, per_round, batch,
                                                   where.child_cpu))
                bar.update(1)

    ref = values[reference]
    return {name: Samples(measure=measure, variant=name, unit="ns", values=values[name],
                          reference=reference, reference_values=list(ref),
                          params=dict(params), skipped=skipped.get(name))
            for name in names}


def round_trip(variant: str, *, n: int = 2000, with_fd: bool = False, reference: str = "raw",
               batch: int = 20, rounds: int = 10, placement: str = ROUND_TRIP_PLACEMENT,
               progress=False) -> Samples:
    """Round trips of one 32-byte message for ``variant``, measured
    interleaved with ``reference`` (see :func:`round_trips`)."""
    return round_trips([variant], n=n, with_fd=with_fd, batch=batch, rounds=rounds,
                       reference=reference, placement=placement, progress=progress)[variant]


# -- descriptors per second --------------------------------------------------------


def _window(per_message: int) -> tuple[int, int, int]:
    """(window in messages, acknowledge every, warm-up messages): the same
    numbers floor.c computes. The sender raises its soft RLIMIT_NOFILE to
    min(hard, 65536); at most min(16384, that / 2) descriptors are in flight."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    budget = min(16384, want // 2)
    window = max(2, budget // per_message)
    return window, max(1, window // 4), min(2 * window, 1000)


def _send_fds_forever(sock: socket.socket, per_message: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    window, ack_every, _ = _window(per_message)
    devnull = os.open(os.devnull, os.O_RDONLY)
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [devnull] * per_message))]
    msg = [bytes(ngx_channel_t(command=NGX_CMD_OPEN_CHANNEL, fd=devnull))]
    sendmsg, recv, nosignal = sock.sendmsg, sock.recv, int(socket.MSG_NOSIGNAL)
    sent = acked = 0
    while True:
        while sent - acked * ack_every >= window:
            try:
                acks = recv(64)
            except ConnectionResetError:    # the receiver closed with data unread
                return
            if not acks:
                return                       # the receiver is done
            acked += len(acks)
        try:
            sendmsg(msg, anc, nosignal)
        except (BrokenPipeError, ConnectionResetError):
            return
        sent += 1


def _receive_fds(sock: socket.socket, per_message: int, seconds: float,
                 interval: float) -> list[float]:
    window, ack_every, warmup = _window(per_message)
    recvmsg, send, close = sock.recvmsg, sock.send, os.close
    # int(): socket.MSG_CTRUNC is an IntFlag, and `flags & IntFlag` builds
    # an enum member, about 0.5 µs each time.
    space, size, clock, ctrunc = (socket.CMSG_SPACE(4 * per_message), MESSAGE_SIZE,
                                  time.perf_counter_ns, int(socket.MSG_CTRUNC))
    messages = 0

    def receive() -> int:
        data, anc, flags, _ = recvmsg(size, space)
        if not data:
            raise BenchError("the sender ended early")
        if flags & ctrunc:
            raise BenchError("recvmsg() truncated the descriptors (MSG_CTRUNC)")
        got = 0
        for _level, _type, cdata in anc:
            fds = array.array("i", cdata)
            for fd in fds:
                close(fd)
            got += len(fds)
        return got

    for messages in range(1, warmup + 1):
        receive()
        if messages % ack_every == 0:
            send(b"a")

    samples: list[float] = []
    step = int(interval * 1e9)
    start = last = clock()
    end = start + int(seconds * 1e9)
    total = in_interval = 0
    while True:
        # receive() inlined: this loop is what is measured
        data, anc, flags, _ = recvmsg(size, space)
        if not data:
            raise BenchError("the sender ended early")
        if flags & ctrunc:
            raise BenchError("recvmsg() truncated the descriptors (MSG_CTRUNC)")
        for _level, _type, cdata in anc:
            fds = array.array("i", cdata)
            for fd in fds:
                close(fd)
            in_interval += len(fds)
        messages += 1
        if messages % ack_every == 0:
            send(b"a")
        t = clock()
        if t - last >= step:
            samples.append(in_interval * 1e9 / (t - last))
            total += in_interval
            in_interval = 0
            last = t
        if t >= end:
            break
    if not samples:
        total += in_interval
        samples.append(total * 1e9 / (t - start))
    return samples


def _fds_python(per_message: int, seconds: float, interval: float, child_cpu: int) -> list[float]:
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        pid = _spawn(_send_fds_forever, child_sock, per_message, close=[parent_sock.fileno()],
                     cpu=child_cpu)
    except BaseException:
        parent_sock.close()
        child_sock.close()
        raise
    child_sock.close()
    try:
        return _receive_fds(parent_sock, per_message, seconds, interval)
    finally:
        parent_sock.close()
        _finish(pid)


def _fds_c(program: Path, per_message: int, seconds: float, interval: float,
           where: _Placement) -> list[float]:
    out = _run_floor([program, "fds", per_message, seconds, interval, where.parent_cpu,
                      where.child_cpu],
                     timeout=seconds * 5 + 60)
    return [float(x) for x in out["samples_per_s"]]


def fds_per_second(per_message: int, *, seconds: float = 1.0, rounds: int = 5,
                   interval: float = 0.1, placement: str = FDS_PLACEMENT,
                   progress=False) -> Samples:
    """Descriptors passed per second in one direction, ``per_message`` in
    each ``SCM_RIGHTS`` message (1 to :data:`SCM_MAX_FD` = 253; Linux fails
    ``sendmsg`` with 254 or more with ``EINVAL``), the receiver closing each
    one. Python (raw ``sendmsg``/``recvmsg``), with the C floor as the
    reference, interleaved: ``rounds`` rounds of ``seconds / rounds`` each per
    variant, one sample per ``interval`` seconds; ``placement`` as for
    :func:`round_trips` (receiver = parent, sender = child). The reference
    is empty, and the Samples notes why, where there is no C compiler.
    """
    if not 1 <= per_message <= SCM_MAX_FD:
        raise ValueError(f"per_message must be 1..{SCM_MAX_FD} (SCM_MAX_FD); "
                         f"Linux refuses more with EINVAL")
    if seconds <= 0 or rounds < 1 or interval <= 0:
        raise ValueError("seconds and interval must be > 0, rounds >= 1")
    slice_s = seconds / rounds
    interval = min(interval, slice_s)
    c_skip = _c_skip_reason()
    program = None if c_skip else _cbuild.build("floor")
    names = ["python", "c"]
    values: dict[str, list[float]] = {"python": [], "c": []}
    window, ack_every, warmup = _window(per_message)
    where = _placement(placement)
    with _progress(progress, rounds * 2, f"descriptors per second, {per_message} per message") \
            as bar, _pinned(where.parent_cpu):
        for r in range(rounds):
            for name in _rotated(names, r):
                if name == "python":
                    values["python"].extend(_fds_python(per_message, slice_s, interval,
                                                        where.child_cpu))
                elif program is not None:
                    values["c"].extend(_fds_c(program, per_message, slice_s, interval, where))
                bar.update(1)
    params = dict(per_message=per_message, seconds=seconds, rounds=rounds, interval=interval,
                  window_messages=window, ack_every=ack_every, warmup_messages=warmup,
                  message_bytes=MESSAGE_SIZE, placement=where.describe())
    if c_skip:
        params["reference_skipped"] = c_skip
    return Samples(measure=f"descriptors per second, {per_message} per message",
                   variant="python", unit="fds/s", values=values["python"],
                   reference="c", reference_values=values["c"], params=params)


def scm_rights_limit(counts: Iterable[int] = (SCM_MAX_FD, SCM_MAX_FD + 1)) -> dict[int, str]:
    """Try ``sendmsg`` with each number of descriptors in one ``SCM_RIGHTS``
    message on a fresh socketpair: ``{253: "ok", 254: "EINVAL"}`` on Linux.
    Received descriptors are closed."""
    result: dict[int, str] = {}
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        for k in counts:
            try:
                a.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                    array.array("i", [devnull] * k))])
            except OSError as e:
                result[k] = errno.errorcode.get(e.errno, str(e.errno))
                continue
            _, anc, _, _ = b.recvmsg(1, socket.CMSG_SPACE(4 * k))
            fds = _rights(anc)
            for fd in fds:
                os.close(fd)
            result[k] = "ok" if len(fds) == k else f"received {len(fds)}"
    finally:
        os.close(devnull)
        a.close()
        b.close()
    return result


# -- profiling -------------------------------------------------------------------


def profile_round_trip(variant: str = "ngxlab", *, n: int = 20_000, with_fd: bool = False,
                       placement: str = ROUND_TRIP_PLACEMENT, top: int = 15) -> str:
    """cProfile of the parent's side of ``n`` round trips of ``variant``
    (a Python variant): where the time goes, as text sorted by own time.
    Profiling slows everything down; use it for proportions, not speeds."""
    import cProfile
    import pstats

    if variant not in _VARIANTS or variant == "c":
        raise ValueError(f"profile a Python variant, not {variant!r}")
    where = _placement(placement)
    v = _VARIANTS[variant]()
    with _pinned(where.parent_cpu):
        v.start(with_fd, [], where.child_cpu)
        try:
            v.check()
            v._loop(min(n, 1000))           # warm-up
            prof = cProfile.Profile()
            prof.runcall(v._loop, n)
        finally:
            v.stop()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


# -- targets and ratios ----------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A ratio the book tracks: ``subject / reference`` (medians) ``op`` ``bound``."""

    measure: str
    subject: str
    reference: str
    op: str                         # "<=", "<" or ">="
    bound: float

    def met(self, ratio: float | None) -> bool | None:
        if ratio is None:
            return None
        return {"<=": ratio <= self.bound, "<": ratio < self.bound,
                ">=": ratio >= self.bound}[self.op]

    def text(self) -> str:
        return f"{self.op} {self.bound:g}"


TARGETS = (
    Target("round trip, no descriptor", "ngxlab", "raw", "<=", 1.15),
    Target("round trip, no descriptor", "ngxlab", "c", "<=", 1.5),
    Target("round trip, one descriptor", "ngxlab", "raw", "<=", 1.2),
    Target("round trip, no descriptor", "ngxlab", "mp_pipe", "<", 1.0),
    Target(f"descriptors per second, {SCM_MAX_FD} per message", "python", "c", ">=", 0.8),
)


def _row(measure: str, subject: str, reference: str, s_med, r_med, unit: str) -> dict:
    ratio = s_med / r_med if (s_med is not None and r_med) else None
    target = next((t for t in TARGETS if (t.measure, t.subject, t.reference)
                   == (measure, subject, reference)), None)
    return dict(measure=measure, subject=subject, reference=reference, unit=unit,
                subject_median=s_med, reference_median=r_med, ratio=ratio,
                target=target.text() if target else None,
                met=target.met(ratio) if target else None)


def ratio_table(round_trip_sets: Iterable[dict[str, Samples]],
                fds: Iterable[Samples]) -> list[dict]:
    """Every ratio :func:`run` reports: each round-trip variant against
    ``raw``, ``ngxlab`` and ``raw`` against ``c``, ``ngxlab`` against
    ``mp_pipe``, and Python against C for descriptors per second; with the
    target and whether it was met where the book has one (:data:`TARGETS`).
    Ratios come from medians measured in the same run."""
    rows = []
    for rts in round_trip_sets:
        med = {name: s.median for name, s in rts.items()}
        measure = next(iter(rts.values())).measure
        pairs = [(v, "raw") for v in rts if v != "raw"]
        pairs += [("ngxlab", "c"), ("raw", "c"), ("ngxlab", "mp_pipe")]
        for subject, reference in pairs:
            if subject in rts and rts[subject].skipped and subject in _WHY_NO_FD:
                continue                    # cannot carry a descriptor: no row
            if subject in med and reference in med:
                rows.append(_row(measure, subject, reference, med[subject], med[reference], "ns"))
    for s in fds:
        rows.append(_row(s.measure, s.variant, s.reference, s.median, s.reference_median,
                         s.unit))
    return rows


def _print_table(rows: list[dict], machine: MachineInfo, file=None) -> None:
    file = file or sys.stdout
    print(f"ngxlab bench on {machine.line()}", file=file)
    head = f"{'measure':<40} {'subject':>17} {'reference':>20} {'ratio':>7} {'target':>8}  met"
    print(head, file=file)
    print("-" * len(head), file=file)
    for r in rows:
        subject = f"{r['subject']} {_fmt(r['subject_median'], r['unit'])}"
        reference = f"{r['reference']} {_fmt(r['reference_median'], r['unit'])}"
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.3f}"
        met = {True: "yes", False: "NO", None: ""}[r["met"]]
        print(f"{r['measure']:<40} {subject:>17} {reference:>20} {ratio:>7} "
              f"{r['target'] or '':>8}  {met}", file=file)


# -- figures -----------------------------------------------------------------------

_COLORS = {"ngxlab": "#1f77b4", "raw": "#ff7f0e", "c": "#000000", "mp_pipe": "#2ca02c",
           "mp_queue": "#d62728", "os_pipe": "#9467bd", "python": "#1f77b4"}


def plot_round_trips(sets: Iterable[dict[str, Samples]], machine: MachineInfo | None = None):
    """A matplotlib Figure: the CDF of round-trip times per variant, one
    panel per set (no descriptor / one descriptor), the C floor's median
    marked. Drawn without pyplot, so it does not change a notebook's backend."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

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
            ax.step(xs, ys, where="post", color=_COLORS.get(name), label=f"{name} "
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
    from matplotlib.figure import Figure

    fds = list(fds)
    fig = Figure(figsize=(7.5, 4.6), layout="constrained")
    ax = fig.subplots()
    width = 0.38
    for i, s in enumerate(fds):
        for j, (name, values) in enumerate((("python", s.values), ("c", s.reference_values))):
            if not values:
                continue
            med = _percentile(values, 50) / 1e6
            lo, hi = _percentile(values, 10) / 1e6, _percentile(values, 90) / 1e6
            x = i + (j - 0.5) * width
            ax.bar(x, med, width, color=_COLORS[name], label=name if i == 0 else None,
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


# -- extra sections (the real-nginx measurements plug in here) -------------------


@dataclass
class Section:
    """A part of :func:`run` added from outside this module.

    ``run(out_dir=Path, quick=bool, progress=bool)`` returns a JSON-able dict,
    stored in ``results["sections"][name]``. Optional keys it may contain:
    ``"figures"`` (file names it wrote into ``out_dir``) and ``"ratios"``
    (rows like :func:`ratio_table`'s, added to the printed table).
    """

    name: str
    run: Callable[..., dict]
    description: str = ""


# Planned, needing the real-nginx runner (ngxlab.lab.nginx): "startup time to
# full mesh vs N", "QUIT to exit vs N", "descriptors per process vs N".
EXTRA_SECTIONS: list[Section] = []


def register_section(name: str, fn: Callable[..., dict], description: str = "") -> Section:
    """Add a section that :func:`run` runs after its own measurements
    (replacing one of the same name)."""
    section = Section(name, fn, description)
    EXTRA_SECTIONS[:] = [s for s in EXTRA_SECTIONS if s.name != name] + [section]
    return section


# -- everything --------------------------------------------------------------------


def run(out_dir, quick: bool = False, progress: bool = True) -> dict:
    """Run every benchmark, write ``results.json``, ``round_trip_cdf.png`` and
    ``fds_per_second.png`` into ``out_dir``, print the ratios against their
    references and targets with the machine, and return the results (the
    content of ``results.json``). ``quick``: a few seconds in all, for smoke
    tests; the numbers are then rough."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    p = _QUICK if quick else _FULL
    started = time.monotonic()
    machine = machine_info()

    rt_names = list(ROUND_TRIP_VARIANTS)
    steps = (p["rounds"] * len(rt_names) * 2 + p["fd_rounds"] * 2 * len(FDS_PER_MESSAGE))
    with _progress(progress, steps, "ngxlab bench") as bar:
        common = dict(n=p["n"], batch=p["batch"], rounds=p["rounds"], reference="raw",
                      placement=ROUND_TRIP_PLACEMENT, progress=bar)
        no_fd = round_trips(rt_names, with_fd=False, **common)
        one_fd = round_trips(rt_names, with_fd=True, **common)
        fds = [fds_per_second(k, seconds=p["fd_seconds"], rounds=p["fd_rounds"],
                              interval=p["fd_interval"], placement=FDS_PLACEMENT, progress=bar)
               for k in FDS_PER_MESSAGE]

    limit = scm_rights_limit()
    rows = ratio_table([no_fd, one_fd], fds)

    sections: dict[str, Any] = {}
    for section in list(EXTRA_SECTIONS):
        got = section.run(out_dir=out, quick=quick, progress=progress)
        sections[section.name] = got
        rows.extend(got.get("ratios", []) if isinstance(got, dict) else [])

    figures = []
    fig = plot_round_trips([no_fd, one_fd], machine)
    fig.savefig(out / "round_trip_cdf.png", dpi=110)
    figures.append("round_trip_cdf.png")
    fig = plot_fds_per_second(fds, machine)
    fig.savefig(out / "fds_per_second.png", dpi=110)
    figures.append("fds_per_second.png")
    for got in sections.values():
        if isinstance(got, dict):
            figures.extend(got.get("figures", []))

    results = {
        "machine": asdict(machine),
        "machine_line": machine.line(),
        "quick": quick,
        "params": dict(p),
        "round_trip": {"no_descriptor": {k: s.to_dict() for k, s in no_fd.items()},
                       "one_descriptor": {k: s.to_dict() for k, s in one_fd.items()}},
        "fds_per_second": {str(s.params["per_message"]): s.to_dict() for s in fds},
        "scm_rights_limit": {str(k): v for k, v in limit.items()},
        "ratios": rows,
        "targets": [asdict(t) for t in TARGETS],
        "sections": sections,
        "figures": figures,
        "duration_s": round(time.monotonic() - started, 3),
        "loadavg_end": _loadavg(),
    }
    with open(out / "results.json", "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")

    _print_table(rows, machine)
    print(f"round trips: {no_fd['raw'].params['placement']}; "
          f"descriptors per second: {fds[0].params['placement']}")
    print(f"SCM_RIGHTS: {', '.join(f'{k} descriptors {v}' for k, v in limit.items())}")
    print(f"took {results['duration_s']:.1f} s; results and figures in {out}")
    return results
