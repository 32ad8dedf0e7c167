"""Descriptors passed per second, and the kernel's limit per message.

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
    checks that on the running kernel and :func:`ngxlab.lab.bench.run` records it.

Not a mirror of nginx: nothing here has an ``ngx_`` name.
"""

from __future__ import annotations

import array
import errno
import os
import resource
import socket
import time
from pathlib import Path
from typing import Iterable

from ngxlab.channel import NGX_CMD_OPEN_CHANNEL, ngx_channel_t
from ngxlab.lab import _cbuild
from ngxlab.lab._children import (
    MESSAGE_SIZE, BenchError, Placement, c_skip_reason, finish, pinned, place, rights,
    run_floor, spawn,
)
from ngxlab.lab.compare import Samples, rotated
from ngxlab.lab.report import progress_bar

__all__ = ["SCM_MAX_FD", "FDS_PER_MESSAGE", "FDS_PLACEMENT", "fds_per_second",
           "scm_rights_limit"]

SCM_MAX_FD = 253                                # Linux: include/net/scm.h
FDS_PER_MESSAGE = (1, 16, SCM_MAX_FD)
FDS_PLACEMENT = "split"


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
        pid = spawn(_send_fds_forever, child_sock, per_message, close=[parent_sock.fileno()],
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
        finish(pid)


def _fds_c(program: Path, per_message: int, seconds: float, interval: float,
           where: Placement) -> list[float]:
    out = run_floor([program, "fds", per_message, seconds, interval, where.parent_cpu,
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
    :func:`ngxlab.lab.cost.round_trips` (receiver = parent, sender = child). The reference
    is empty, and the Samples notes why, where there is no C compiler.
    """
    if not 1 <= per_message <= SCM_MAX_FD:
        raise ValueError(f"per_message must be 1..{SCM_MAX_FD} (SCM_MAX_FD); "
                         f"Linux refuses more with EINVAL")
    if seconds <= 0 or rounds < 1 or interval <= 0:
        raise ValueError("seconds and interval must be > 0, rounds >= 1")
    slice_s = seconds / rounds
    interval = min(interval, slice_s)
    c_skip = c_skip_reason()
    program = None if c_skip else _cbuild.build("floor")
    names = ["python", "c"]
    values: dict[str, list[float]] = {"python": [], "c": []}
    window, ack_every, warmup = _window(per_message)
    where = place(placement)
    with progress_bar(progress, rounds * 2, f"descriptors per second, {per_message} per message") \
            as bar, pinned(where.parent_cpu):
        for r in range(rounds):
            for name in rotated(names, r):
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
            fds = rights(anc)
            for fd in fds:
                os.close(fd)
            result[k] = "ok" if len(fds) == k else f"received {len(fds)}"
    finally:
        os.close(devnull)
        a.close()
        b.close()
    return result
