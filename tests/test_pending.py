"""The master's write queue (``ngxlab._pending``), ngxlab's answer to nginx's
``TODO: NGX_AGAIN``: a worker that does not read (SIGSTOP) lets its channel
fill; every OPEN_CHANNEL and CLOSE_CHANNEL after that is kept and written in
order once it reads again, the master never waits for it, and with
``nginx_quirks`` the messages are lost exactly as nginx loses them.

Real workers, real full sockets, real signals; a stopped worker is always
resumed (``finally``) before its master stops it."""

from __future__ import annotations

import fcntl
import os
import resource
import signal
import socket
import termios
import time

import pytest
from _tools import fd_table, wait_for

from ngxlab import _pending
from ngxlab.channel import NGX_CMD_CLOSE_CHANNEL, NGX_CMD_OPEN_CHANNEL
from ngxlab.lab import fullchannel, proc
from ngxlab.lab.fork import forked
from ngxlab.lab.master import Master
from ngxlab.lab.trace import record_channel

CAPACITY = fullchannel.channel_capacity()
# respawns of the victim that overflow the stopped worker's channel (two
# messages each), with some to spare
OVERFLOW = CAPACITY // 2 + 12


def _stop(pid):
    os.kill(pid, signal.SIGSTOP)
    proc.wait_state(pid, "T")


def _about(m, receiver, slot):
    """(command, pid) of every OPEN/CLOSE_CHANNEL about ``slot`` that the
    worker in ``receiver`` reported reading, in order."""
    return [(r["message"][0], r["message"][1]) for r in m.worker_reports()
            if r["slot"] == receiver and r["message"][2] == slot
            and r["message"][0] in (NGX_CMD_OPEN_CHANNEL, NGX_CMD_CLOSE_CHANNEL)]


def _respawn_while_stopped(m, times):
    """SIGKILL slot 1 ``times`` times, each reaped and respawned by the
    master; returns the messages about slot 1 the master owes every other
    worker, in order, and the longest a respawn took."""
    owed, longest = [], 0.0
    for _ in range(times):
        old = m.slots[1]
        t = time.monotonic()
        assert m.kill_worker(1) == old
        new = m.slots[1]
        longest = max(longest, time.monotonic() - t)
        owed += [(NGX_CMD_CLOSE_CHANNEL, old), (NGX_CMD_OPEN_CHANNEL, new)]
    return owed, longest


@pytest.mark.timeout(90)
def test_order_and_completeness_under_a_stopped_worker():
    with Master(workers=3, report=True) as m:
        m.wait_mesh()
        first = m.slots[1]
        stopped = m.slots[0]
        _stop(stopped)
        try:
            owed, longest = _respawn_while_stopped(m, OVERFLOW)
            queued = _pending.depth(0), _pending.depth(2)
        finally:
            os.kill(stopped, signal.SIGCONT)
        # a respawn never waits for the stopped worker (nginx's does not either)
        assert longest < 0.5, f"a respawn took {longest:.2f} s"
        # slot 2 reads: nothing waits for it
        assert queued[0] > 0 and queued[1] == 0, queued
        m.wait_mesh(timeout=20)
        # slot 0 learnt of slot 1 by message; slot 2, forked after it, inherited its channel
        for receiver, want in ((0, [(NGX_CMD_OPEN_CHANNEL, first)] + owed), (2, owed)):
            got = wait_for(lambda: len(_about(m, receiver, 1)) >= len(want) and _about(m, receiver, 1),
                        10, f"slot {receiver} read every message about slot 1")
            assert got == want, f"slot {receiver}: not every message, or not in order"
        assert _pending.depth() == 0


@pytest.mark.timeout(90)
def test_a_reaped_slot_drops_its_queue_and_leaks_nothing():
    with Master(workers=3) as m:
        m.wait_mesh()
        settled = len(fd_table())
        stopped = m.slots[0]
        _stop(stopped)
        try:
            _respawn_while_stopped(m, OVERFLOW)
            queued = _pending.depth(0)
            assert queued > 0
            # the queued OPEN_CHANNELs hold duplicates of the descriptors they announce
            assert len(fd_table()) > settled
            m.kill_worker(0)                   # SIGKILL the stopped worker: reaped, respawned
            new = m.slots[0]
        finally:
            try:
                os.kill(stopped, signal.SIGCONT)
            except ProcessLookupError:
                pass
        assert new is not None and new != stopped
        assert _pending.depth() == 0
        m.wait_mesh()
        assert len(fd_table()) == settled, "the dropped queue left descriptors open"


@pytest.mark.timeout(120)
def test_the_master_answers_a_signal_while_a_channel_is_full():
    """``ngxlab run``: with a worker stopped and its channel full, a respawn
    is pending when SIGUSR1 arrives; the master logs "reopening logs" within
    300 ms (nginx: a few ms; ngxlab's earlier select() waited a second per
    message for a full channel). 300 ms leaves room for a loaded 2-core
    machine: the master itself needs a few ms."""
    run = fullchannel.run_one("ngxlab", workers=3, respawns=OVERFLOW)
    assert run.queued_messages == CAPACITY, run
    assert run.signal_ms < 300, run
    assert run.complete, run.table


def _quirks_run(quirks):
    """lab.Master with ``nginx_quirks``: the messages about slot 1 the
    stopped worker (slot 0) was owed, those written into its channel, those
    it read once resumed, and how many were queued at the most."""
    with Master(workers=3, report=True, nginx_quirks=quirks) as m:
        m.wait_mesh()
        stopped = m.slots[0]
        _stop(stopped)
        try:
            with record_channel() as sent:
                owed, _ = _respawn_while_stopped(m, OVERFLOW)
                queued = _pending.depth()
        finally:
            os.kill(stopped, signal.SIGCONT)
        written = [(s.command, s.pid) for s in sent if s.target_slot == 0]
        expect = len(written) if quirks else len(owed)

        def done():
            m.reap()                    # a pass of this master's "loop": flushes the queue
            return len(_about(m, 0, 1)) >= 1 + expect

        wait_for(done, 10, "the resumed worker read its channel")
        time.sleep(0.3)                 # anything more would arrive now
        m.reap()
        return owed, written, _about(m, 0, 1)[1:], queued


@pytest.mark.timeout(90)
def test_nginx_quirks_lose_exactly_what_meets_a_full_channel():
    owed, written, read, queued = _quirks_run(True)
    # nothing is queued; what was written is exactly the first CAPACITY
    # messages owed, and that is all the worker ever reads
    assert queued == 0
    assert written == owed[:CAPACITY]
    assert read == written
    # the default: the same respawns, nothing lost
    owed, _written, read, queued = _quirks_run(False)
    assert queued > 0
    assert read == owed


@pytest.mark.timeout(120)
def test_nginx_quirks_end_as_a_real_nginx_does(nginx_bin):
    ng = fullchannel.run_one("nginx", respawns=OVERFLOW)
    q = fullchannel.run_one("ngxlab --nginx-quirks", respawns=OVERFLOW)
    assert ng.queued_messages == q.queued_messages == CAPACITY
    assert not ng.complete and not q.complete
    assert (ng.missing, ng.stale) == (q.missing, q.stale)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("quirks", [False, True])
def test_quit_reopen_terminate_still_reach_a_full_channel_by_kill(quirks):
    """nginx's fallback, in both modes: a command that cannot go by channel
    (nginx: the write failed; ngxlab: messages are queued before it) is sent
    as a signal."""
    with Master(workers=3, nginx_quirks=quirks) as m:
        m.wait_mesh()
        stopped = m.slots[0]
        _stop(stopped)
        since = len(m.log_lines())
        try:
            _respawn_while_stopped(m, OVERFLOW)
            m.signal("reopen")
        finally:
            os.kill(stopped, signal.SIGCONT)
        wait_for(lambda: any(f"{stopped}#0: signal 10 (SIGUSR1) received" in line
                          for line in m.log_lines()[since:]), 10,
              "the stopped worker got SIGUSR1")


def test_the_kernel_wakes_the_owner_of_a_full_channel_with_sigio():
    """What the master's wait relies on (Linux, af_unix unix_write_space):
    FIOASYNC + F_SETOWN on channel[0], a write that met EAGAIN, then the
    reader frees room: SIGIO to the owner. No SIGIO without the EAGAIN."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGIO])
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        a.setblocking(False)
        fcntl.ioctl(a.fileno(), termios.FIOASYNC, b"\x01\x00\x00\x00")
        fcntl.fcntl(a.fileno(), fcntl.F_SETOWN, os.getpid())
        a.send(bytes(32))
        b.recv(32)
        assert signal.sigtimedwait([signal.SIGIO], 0.2) is None
        n = 0
        with pytest.raises(BlockingIOError):
            while True:
                a.send(bytes(32))
                n += 1
        assert signal.sigtimedwait([signal.SIGIO], 0) is None   # full: no signal yet
        for _ in range(n):
            b.recv(32)
        info = signal.sigtimedwait([signal.SIGIO], 5)
        assert info is not None and info.si_signo == signal.SIGIO
    finally:
        a.close()
        b.close()
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _master_above_1023():
    """In a child: push descriptor numbers above 1023 with dummy
    descriptors, then run a master whose channels have those numbers
    through a stopped worker's full channel."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4096), max(hard, 4096)))
    dummies = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    with Master(workers=3) as m:
        m.wait_mesh()
        lowest = min(fd for w in m.workers for fd in w.channel)
        stopped = m.slots[0]
        _stop(stopped)
        try:
            _respawn_while_stopped(m, OVERFLOW)
            queued = _pending.depth(0)
        finally:
            os.kill(stopped, signal.SIGCONT)
        full = m.wait_mesh(timeout=20).is_full_mesh(3)
    for fd in dummies:
        os.close(fd)
    return lowest, queued, full


@pytest.mark.timeout(120)
def test_a_master_with_channel_descriptors_above_1023():
    lowest, queued, full = forked(_master_above_1023, timeout=100)
    assert lowest > 1023
    assert queued > 0
    assert full
