"""What ngxlab's channel costs, measured beside what it is built from.

Measurements, not tests: nothing here asserts a speed. Each function returns
:class:`~ngxlab.lab.compare.Samples` (every sample kept, with the median,
p10, p90, and the ratio of its median to a reference's median measured **in
the same run**); :func:`ngxlab.lab.bench.run` runs them all with the
start-up measurements, writes ``results.json`` and prints the ratios beside
the targets the book tracks (:data:`TARGETS`).

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
    ``raw_fields``
        ``raw``, plus what any Python mirror of the channel must add: each
        message packed from an ``ngx_channel_t``'s four fields before
        ``sendmsg`` and unpacked into them after ``recvmsg`` (``raw`` sends
        and echoes the same bytes untouched; C reads the struct in place).
        ``ngxlab / raw_fields`` is then the mirror's own share (nginx's
        checks, the calls, the socket table), and ``raw_fields / raw`` the
        share of turning 32 bytes into fields and back.
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

Fairness. Every comparison runs its variants interleaved, in rounds (A B C,
then B C A, ...), so that noise from the rest of the machine falls on all of
them alike, and ratios are taken between medians of one run. In every round
each variant starts afresh (a new child, or a new run of the C program, which
forks its own), warms up with one batch, then is measured: Python and C
variants have the same life cycle, and the scheduler places each new pair of
processes anew. Absolute times differ from machine to machine and with the
machine's load (:func:`ngxlab.lab.report.machine_info` records the load average); the ratios
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

Forks per second: :func:`fork_rate`
    How long ``ngxlab._forking.fork()`` (the fork every instrument and mirror
    uses: flush, then ``os.fork()``) takes until the child has exited and
    been reaped, against the same fork made from C, interleaved.

A copied page: :func:`page_copy_cost`
    What a write to a page shared with a child costs beyond a write to a
    page this process owns: the kernel's copy-on-write copy, per page.

Not a mirror of nginx: nothing here has an ``ngx_`` name.
"""


from __future__ import annotations

import array
import contextlib
import cProfile
import io
import mmap
import multiprocessing
import multiprocessing.reduction
import os
import pstats
import select
import socket
import time
from pathlib import Path
from typing import Iterable

from ngxlab import _forking
from ngxlab.channel import ngx_channel_t, ngx_read_channel, ngx_write_channel
from ngxlab.core import NGX_AGAIN, NGX_LOG_ALERT, NGX_OK, ngx_log_t
from ngxlab.lab import _cbuild
from ngxlab.lab._children import (
    MESSAGE_SIZE, PLACEMENTS, BenchError, c_skip_reason, finish, message, nonblocking, pinned,
    place, rights, run_floor, spawn,
)
from ngxlab.lab.compare import Samples, Target, rotated, row
from ngxlab.lab.fdpass import SCM_MAX_FD
from ngxlab.lab.report import progress_bar

__all__ = [
    "BenchError", "ROUND_TRIP_VARIANTS", "DESCRIPTOR_VARIANTS", "PLACEMENTS",
    "ROUND_TRIP_PLACEMENT", "TARGETS", "round_trip", "round_trips", "fork_rate",
    "page_copy_cost", "profile_round_trip", "ratio_table",
]


PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_LAYOUT = ngx_channel_t._layout                 # the message's 32-byte struct

ROUND_TRIP_VARIANTS = ("ngxlab", "raw", "raw_fields", "c", "mp_pipe", "mp_queue", "os_pipe")
DESCRIPTOR_VARIANTS = ("ngxlab", "raw", "raw_fields", "c", "mp_pipe")   # can carry a descriptor
ROUND_TRIP_PLACEMENT = "same"

_WHY_NO_FD = {
    "mp_queue": "multiprocessing.Queue cannot carry a descriptor",
    "os_pipe": "a pipe cannot carry a descriptor (SCM_RIGHTS needs a Unix socket)",
}


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
        self.before: set[str] = set()

    def start(self, with_fd: bool, close: Iterable[int], child_cpu: int = -1) -> None:
        self.with_fd = with_fd
        self.before = set(os.listdir("/proc/self/fd"))
        self.devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._open()
        except BaseException:
            os.close(self.devnull)
            self.devnull = -1
            raise
        try:
            try:
                self.pid = spawn(self._echo, close=(*close, *self.parent_fds()),
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
        status = None
        try:
            self._shutdown()
        finally:
            pid, self.pid = self.pid, -1
            if pid > 0:
                status = finish(pid)
            if self.devnull != -1:          # closed before any error is raised
                os.close(self.devnull)
                self.devnull = -1
            self._close_received()
        if status not in (0, None):
            raise BenchError(f"the {self.name} echo child exited with status {status}")

    def _close_received(self) -> None:
        """An interrupt (KeyboardInterrupt) between receiving a copy of the
        descriptor and closing it leaves the copy open: close every
        ``/dev/null`` descriptor opened since :meth:`start`, once the echo
        child is gone (nothing else opens ``/dev/null`` during a run)."""
        for name in set(os.listdir("/proc/self/fd")) - self.before:
            try:
                if os.readlink(f"/proc/self/fd/{name}") == os.devnull:
                    os.close(int(name))
            except OSError:
                pass                        # the listing's own descriptor, gone

    def check(self) -> None:
        """One round trip outside the measurement, checked byte for byte."""
        got = self._one_checked()
        if got != self._expected():
            raise BenchError(f"{self.name}: the echo came back as {got!r}")

    def _one_checked(self) -> bytes:
        """One round trip; the bytes that came back (``_loop`` keeps them)."""
        self._loop(1)
        return self.last

    def _expected(self) -> bytes:
        return bytes(message(self.with_fd, self.devnull))


class _Ngxlab(_PyVariant):
    name = "ngxlab"

    def _open(self):
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.fd, self.child_fd = a.detach(), b.detach()
        nonblocking(self.fd)
        nonblocking(self.child_fd)
        self.log = ngx_log_t(log_level=NGX_LOG_ALERT)
        self.out = message(self.with_fd, self.devnull)
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
        self.msg = bytes(message(self.with_fd, self.devnull))
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
            fds = rights(anc) if anc else []
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
                for fd in rights(ancdata):
                    close(fd)
        t = clock() - t0
        self.last = data
        return t

    def _shutdown(self):
        self.sock.close()


class _RawFields(_Raw):
    """``raw`` with the message packed from, and unpacked into, an
    ``ngx_channel_t``'s four fields on both sides, and nothing else. Its two
    loops repeat ``raw``'s line for line around that step instead of sharing
    them through a flag: a test in ``raw``'s measured loop would be on raw's
    clock too, and raw is every Python variant's reference."""
    name = "raw_fields"

    def _echo(self):
        s = self.child_sock
        wait = select.poll()
        wait.register(s.fileno(), select.POLLIN)
        space, ch = self.space, ngx_channel_t()
        pack, unpack = _LAYOUT.pack, _LAYOUT.unpack_from
        while True:
            wait.poll()
            try:
                data, anc, flags, _ = s.recvmsg(MESSAGE_SIZE, space)
            except BlockingIOError:
                continue
            if not data:
                return
            ch.command, ch.pid, ch.slot, ch.fd = unpack(data)
            fds = rights(anc) if anc else []
            s.sendmsg([pack(ch.command, ch.pid, ch.slot, ch.fd)],
                      [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                      if fds else [])
            for fd in fds:
                os.close(fd)

    def _loop(self, k: int) -> int:
        sendmsg, recvmsg = self.sock.sendmsg, self.sock.recvmsg
        out, back = message(self.with_fd, self.devnull), ngx_channel_t()
        pack, unpack = _LAYOUT.pack, _LAYOUT.unpack_from
        anc, space, wait, close = self.anc, self.space, self.poll.poll, os.close
        size, clock = MESSAGE_SIZE, time.perf_counter_ns
        t0 = clock()
        for _ in range(k):
            sendmsg((pack(out.command, out.pid, out.slot, out.fd),), anc)
            while True:
                wait()
                try:
                    data, ancdata, flags, _ = recvmsg(size, space)
                    break
                except BlockingIOError:
                    continue
            if len(data) != size:
                raise BenchError(f"recvmsg() returned {len(data)} bytes")
            back.command, back.pid, back.slot, back.fd = unpack(data)
            if ancdata:
                for fd in rights(ancdata):
                    close(fd)
        t = clock() - t0
        self.last = bytes(back)
        return t


class _MpPipe(_PyVariant):
    name = "mp_pipe"

    def _open(self):
        ctx = multiprocessing.get_context("fork")
        self.conn, self.child_conn = ctx.Pipe(duplex=True)
        self.msg = bytes(message(self.with_fd, self.devnull))
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

    def _shutdown(self):
        self.conn.close()


class _MpQueue(_PyVariant):
    name = "mp_queue"

    def _open(self):
        # The "fork" context: no resource-tracker process (its semaphore is
        # unlinked at once), whatever the default start method is.
        ctx = multiprocessing.get_context("fork")
        self.to_child, self.to_parent = ctx.Queue(), ctx.Queue()
        self.msg = bytes(message(False, self.devnull))
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

    def _shutdown(self):
        with contextlib.suppress(Exception):
            self.to_child.put(None)
        if self.pid > 0:
            finish(self.pid)
            self.pid = -1
        for q in (self.to_child, self.to_parent):
            q.close()
            q.join_thread()


class _OsPipe(_PyVariant):
    name = "os_pipe"

    def _open(self):
        self.c_read, self.p_write = os.pipe()
        self.p_read, self.c_write = os.pipe()
        self.msg = bytes(message(False, self.devnull))
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
        out = run_floor([self.program, "rt", batches * batch, batch, warmup, int(self.with_fd),
                          parent_cpu, self.child_cpu])
        return [float(x) for x in out["samples_ns"]]

    def check(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def parent_fds(self):
        return []


_VARIANTS: dict[str, type] = {
    "ngxlab": _Ngxlab, "raw": _Raw, "raw_fields": _RawFields, "c": _C, "mp_pipe": _MpPipe, "mp_queue": _MpQueue,
    "os_pipe": _OsPipe,
}


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


def round_trips(variants: Iterable[str] = ROUND_TRIP_VARIANTS, *, n: int = 2000,
                with_fd: bool = False, batch: int = 20, rounds: int = 10,
                reference: str = "raw", placement: str = ROUND_TRIP_PLACEMENT,
                progress=False) -> dict[str, Samples]:
    """Round trips of one 32-byte message for several variants, interleaved.

    ``n`` round trips are measured per variant (rounded down to a whole
    number of batches per round, at least one), in ``rounds`` rounds; each
    round first runs ``batch`` unmeasured round trips per variant. Each
    variant's :class:`~ngxlab.lab.compare.Samples` has ``reference`` (added to the run if not in
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
    where = place(placement)
    measure = "round trip, one descriptor" if with_fd else "round trip, no descriptor"
    params = dict(n=per_round * batch * rounds, batch=batch, rounds=rounds,
                  batches_per_round=per_round, warmup_per_round=batch, with_fd=with_fd,
                  message_bytes=MESSAGE_SIZE, placement=where.describe())

    skipped: dict[str, str] = {}
    for name in names:
        if with_fd and name in _WHY_NO_FD:
            skipped[name] = _WHY_NO_FD[name]
        elif name == "c":
            why = c_skip_reason()
            if why:
                skipped[name] = why

    values: dict[str, list[float]] = {name: [] for name in names}
    with progress_bar(progress, rounds * len(names), measure) as bar, pinned(where.parent_cpu):
        for r in range(rounds):
            for name in rotated(names, r):
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



# -- profiling -------------------------------------------------------------------


def profile_round_trip(variant: str = "ngxlab", *, n: int = 20_000, with_fd: bool = False,
                       placement: str = ROUND_TRIP_PLACEMENT, top: int = 15) -> str:
    """cProfile of the parent's side of ``n`` round trips of ``variant``
    (a Python variant): where the time goes, as text sorted by own time.
    Profiling slows everything down; use it for proportions, not speeds."""
    if variant not in _VARIANTS or variant == "c":
        raise ValueError(f"profile a Python variant, not {variant!r}")
    where = place(placement)
    v = _VARIANTS[variant]()
    with pinned(where.parent_cpu):
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



# -- forks ----------------------------------------------------------------------


def _fork_once() -> float:
    t0 = time.perf_counter_ns()
    pid = _forking.fork()
    if pid == 0:
        _forking.exit(0)
    os.waitpid(pid, 0)
    return time.perf_counter_ns() - t0


def fork_rate(*, forks: int = 50, rounds: int = 5, progress=False) -> Samples:
    """Time of one fork of this process until the child has exited and been
    reaped (ns), through ``ngxlab._forking.fork()`` (what ``lab.fork``, the
    benchmarks and the mirrors use), against the C floor's ``fork()`` /
    ``_exit()`` / ``waitpid()``, interleaved in ``rounds`` rounds of
    ``forks`` forks each; each sample is one round's mean. The Python side
    forks this interpreter, so its time grows with this process's memory:
    a notebook kernel forks slower than a small script."""
    c_skip = c_skip_reason()
    program = None if c_skip else _cbuild.build("floor")
    values: dict[str, list[float]] = {"python": [], "c": []}
    with progress_bar(progress, rounds * 2, "forks") as bar:
        for r in range(rounds):
            for name in rotated(["python", "c"], r):
                if name == "python":
                    _fork_once()                                    # warm-up
                    values["python"].append(sum(_fork_once() for _ in range(forks)) / forks)
                elif program is not None:
                    out = run_floor([program, "fork", forks])
                    values["c"].append(float(out["mean_ns"]))
                bar.update(1)
    params = dict(forks=forks, rounds=rounds, rss_kib=_rss_kib())
    if c_skip:
        params["reference_skipped"] = c_skip
    return Samples(measure="fork, exit and reap", variant="python", unit="ns",
                   values=values["python"], reference="c", reference_values=values["c"],
                   params=params)


def _write_pages(buf, pages: int, value: int) -> int:
    """One byte written into each of ``pages`` pages of ``buf``; the ns taken."""
    t0 = time.perf_counter_ns()
    for i in range(0, pages * PAGE_SIZE, PAGE_SIZE):
        buf[i] = value
    return time.perf_counter_ns() - t0


def page_copy_cost(*, pages: int = 2048, rounds: int = 5) -> Samples:
    """What one copy-on-write copy costs this process, per page (ns).

    A fork shares every page of the parent with the child; the first of the
    two to write a page then waits while the kernel copies it. In each round
    this process fills ``pages`` private anonymous pages, forks a child that
    only waits (so every page is shared), writes one byte into each page
    (each write copies a page: ``values``), then writes them all again, now
    its own (``reference_values``, the same Python loop without the copy).
    The child exits when told, and is reaped. ``median - reference_median``
    is the price of one copied page, which turns the page faults that
    :mod:`ngxlab.lab.timing` counts into time. No huge pages (``madvise``),
    so that each write copies one page of ``PAGE_SIZE`` bytes."""
    if pages < 1 or rounds < 1:
        raise ValueError("pages and rounds: 1 or more")
    copied: list[float] = []
    owned: list[float] = []
    buf = mmap.mmap(-1, pages * PAGE_SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        if hasattr(mmap, "MADV_NOHUGEPAGE"):
            buf.madvise(mmap.MADV_NOHUGEPAGE)
        _write_pages(buf, pages, 1)                 # every page present, and this process's
        for _ in range(rounds):
            rfd, wfd = os.pipe()
            try:
                pid = spawn(os.read, rfd, 1, close=[wfd])     # waits until told
            except BaseException:
                os.close(wfd)
                raise
            finally:
                os.close(rfd)
            try:
                copied.append(_write_pages(buf, pages, 2) / pages)
                owned.append(_write_pages(buf, pages, 1) / pages)
            finally:
                os.close(wfd)                       # the child's read returns: it exits
                finish(pid)
    finally:
        buf.close()
    return Samples(measure="a write to a page shared with a child", variant="copied",
                   unit="ns", values=copied, reference="owned", reference_values=owned,
                   params=dict(pages=pages, rounds=rounds, page_size=PAGE_SIZE))


def _rss_kib() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None



# -- targets ---------------------------------------------------------------------


TARGETS = (
    Target("round trip, no descriptor", "ngxlab", "raw", "<=", 1.10),
    Target("round trip, no descriptor", "ngxlab", "c", "<=", 1.5),
    Target("round trip, one descriptor", "ngxlab", "raw", "<=", 1.15),
    Target("round trip, no descriptor", "ngxlab", "mp_pipe", "<", 1.0),
    Target(f"descriptors per second, {SCM_MAX_FD} per message", "python", "c", ">=", 0.8),
)


def ratio_table(round_trip_sets: Iterable[dict[str, Samples]],
                fds: Iterable[Samples]) -> list[dict]:
    """Every ratio of the channel's cost that ``ngxlab bench`` reports: each round-trip variant against
    ``raw``, ``ngxlab`` against ``raw_fields``, ``ngxlab`` and ``raw`` against ``c``,
    ``ngxlab`` against ``mp_pipe``, and Python against C for descriptors per second; with the
    target and whether it was met where the book has one (:data:`TARGETS`).
    Ratios come from medians measured in the same run."""
    rows = []
    for rts in round_trip_sets:
        med = {name: s.median for name, s in rts.items()}
        measure = next(iter(rts.values())).measure
        pairs = [(v, "raw") for v in rts if v != "raw"]
        pairs += [("ngxlab", "raw_fields"), ("ngxlab", "c"), ("raw", "c"), ("ngxlab", "mp_pipe")]
        for subject, reference in pairs:
            if subject in rts and rts[subject].skipped and subject in _WHY_NO_FD:
                continue                    # cannot carry a descriptor: no row
            if subject in med and reference in med:
                rows.append(row(measure, subject, reference, med[subject], med[reference], "ns",
                                TARGETS))
    for s in fds:
        rows.append(row(s.measure, s.variant, s.reference, s.median, s.reference_median,
                        s.unit, TARGETS))
    return rows
