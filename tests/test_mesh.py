"""The channel mesh: N workers spawned from this process with the mirrors
(lab.Master), checked with the descriptor census against nginx's topology,
and against a live nginx for N = 4."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import struct
import subprocess
import sys
import termios
import time

import pytest

from ngxlab import channel
from ngxlab.channel import NGX_CMD_CLOSE_CHANNEL, NGX_CMD_OPEN_CHANNEL
from ngxlab.core import sizeof
from ngxlab.lab import proc
from ngxlab.lab.master import Master, MasterError


def _queued(fd: int) -> int:
    """Bytes waiting to be read on socket ``fd`` (FIONREAD)."""
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]


def wait_until(pred, timeout=5.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("n", [1, 2, 4, 8, 16, 32])
def test_topology_equals_nginx(n):
    sent = []
    channel._observers.append(lambda s, ch, size: sent.append(
        (ch.command, ch.slot, ch.fd)))
    try:
        with Master(workers=n) as m:
            c = m.wait_mesh(timeout=20)
            master = c.master
            assert master.pid == os.getpid()
            assert master.channel_fds == 2 * n
            assert len(c.workers) == n
            assert len(c.pairs) == n
            for w in c.workers:
                assert w.channel_fds == n
                # its own read end, and the write end of every other slot
                assert sorted(w.channel_ends) == sorted(
                    [f"{w.slot}:1"] + [f"{s}:0" for s in range(n)
                                       if s != w.slot])
            assert sorted(master.channel_ends) == sorted(
                f"{s}:{e}" for s in range(n) for e in (0, 1))
            assert c.channel_fds == n * n + 2 * n
            assert c.is_full_mesh(n)
            # every OPEN_CHANNEL went to an earlier worker: N(N-1)/2
            opens = [x for x in sent if x[0] == NGX_CMD_OPEN_CHANNEL]
            assert len(opens) == n * (n - 1) // 2
    finally:
        channel._observers.clear()


def test_without_the_closing_in_worker_init_descriptors_pile_up():
    n = 6
    with Master(workers=n, close_inherited=False) as m:
        def settled():
            c = m.census()
            return all(w.channel_fds == n + w.slot + 1 for w in c.workers)
        # worker k keeps both ends of slots 0..k (inherited) and receives
        # channel[0] of k+1..n-1: n + k + 1 channel descriptors
        wait_until(settled, 10, "the unclosed mesh")
        total = sum(w.channel_fds for w in m.census().workers)
        assert total == n * n + n * (n + 1) // 2 > n * n


CLEAN_PROCESS = """
import json, time
from ngxlab.lab.master import Master
with Master(workers=2, report=True) as m:
    m.wait_mesh()
    own = m.workers[0].channel[0]
    deadline = time.monotonic() + 10
    while not any(r["slot"] == 0 for r in m.worker_reports()):
        assert time.monotonic() < deadline, "no report from worker 0"
        time.sleep(0.01)
    rep = [r for r in m.worker_reports() if r["slot"] == 0][-1]
    print(json.dumps({"own": own, "received": rep["message"][3],
                      "table": {s: fd for s, pid, fd in rep["table"]}}))
"""


def test_received_descriptor_lands_on_a_freed_number():
    """Worker 0 closed its own channel[0]; the next descriptor it receives
    takes the lowest free number. In a process whose descriptor table has no
    holes, as nginx's master has none, that is the number it closed, so its
    (never updated) table names the same number for two slots, as observed
    in nginx. (This pytest process has holes, and a worker closes more of
    its descriptors: here the lowest free number is computed from the
    worker's table.)"""
    done = subprocess.run([sys.executable, "-c", CLEAN_PROCESS], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-2000:]
    clean = json.loads(done.stdout.splitlines()[-1])
    assert clean["received"] == clean["own"] == clean["table"]["1"]

    with Master(workers=2, report=True) as m:
        m.wait_mesh()
        wait_until(lambda: any(r["slot"] == 0 for r in m.worker_reports()))
        rep = [r for r in m.worker_reports() if r["slot"] == 0][-1]
        assert rep["message"][0] == NGX_CMD_OPEN_CHANNEL
        received = rep["message"][3]
        table = {s: fd for s, pid, fd in rep["table"]}
        assert table[1] == received
        c = m.census()
        w0 = c.process(m.workers[0].pid)
        assert w0.fd(received).end == 0 and w0.fd(received).slot == 1
        # the lowest number that was free in worker 0 when it arrived
        before = {f.fd for f in w0.fds} - {received}
        assert received == min(set(range(max(before) + 2)) - before)
        assert m.workers[0].channel[0] not in before       # worker 0 closed it


def test_respawn_same_slot_and_every_table_follows():
    with Master(workers=4, report=True) as m:
        m.wait_mesh()
        old = m.slots[1]
        assert m.kill_worker(1) == old
        new = m.slots[1]
        assert new and new != old
        assert m.slots[1] == new
        c = m.wait_mesh()
        assert c.slots[1] == new
        # each survivor read CLOSE_CHANNEL for slot 1, then OPEN_CHANNEL
        def seen():
            per = {}
            for r in m.worker_reports():
                if r["message"][2] == 1 and r["message"][0] in (
                        NGX_CMD_CLOSE_CHANNEL, NGX_CMD_OPEN_CHANNEL) \
                        and r["time"] > 0:
                    per.setdefault(r["pid"], []).append(r["message"][0])
            return per
        survivors = [w.pid for w in m.workers if w.slot != 1]
        wait_until(lambda: all(p in seen() for p in survivors))
        for pid in survivors:
            msgs = seen()[pid]
            assert msgs[-2:] == [NGX_CMD_CLOSE_CHANNEL, NGX_CMD_OPEN_CHANNEL]
        # the survivors' tables now name the new pid for slot 1
        for pid in survivors:
            rep = [r for r in m.worker_reports() if r["pid"] == pid][-1]
            assert dict((s, p) for s, p, fd in rep["table"])[1] == new


def test_reopen_reaches_every_worker():
    with Master(workers=3) as m:
        m.wait_mesh()
        m.signal("reopen")
        pids = {w.pid for w in m.workers}
        wait_until(lambda: {int(line.split()[3].split("#")[0])
                            for line in m.log_lines()
                            if line.endswith("reopening logs")} >= pids)
        assert not any(w.exiting for w in m.workers)


def test_quit_over_the_channel():
    with Master(workers=3) as m:
        m.wait_mesh()
        m.signal("quit")
        assert m.workers == []
        assert sum("exited with code 0" in line for line in m.log_lines()) == 3


@pytest.mark.parametrize("quirks", [False, True])
def test_unknown_command_with_a_descriptor(quirks):
    with Master(workers=1, nginx_quirks=quirks) as m:
        c = m.wait_mesh()
        w = m.workers[0].pid
        before = c.process(w).total_fds
        fd = os.open(os.devnull, os.O_RDONLY)
        try:
            assert m.send(0, 99, fd=fd) == 0
        finally:
            os.close(fd)
        if quirks:
            # nginx's leak: the worker keeps a descriptor nobody will close
            wait_until(lambda: m.census().process(w).total_fds == before + 1)
        else:
            wait_until(lambda: any("unexpected descriptor" in line
                                   for line in m.log_lines()))
            # the stray descriptor was closed; and, as after any channel
            # error in nginx, the worker closed its channel for good
            wait_until(lambda: m.census().process(w).total_fds == before - 1)
            assert m.census().process(w).channel_fds == 0


def test_a_short_message_deafens_the_worker_but_the_master_cannot_tell():
    """nginx's quirk 5: after a short read the worker closes its channel for
    good; the master still holds channel[1], so its next write succeeds."""
    with Master(workers=1) as m:
        m.wait_mesh()
        assert m.send(0, channel.NGX_CMD_QUIT, size=8) == 0
        wait_until(lambda: any("not enough data: 8" in line
                               for line in m.log_lines()))
        pid = m.workers[0].pid
        wait_until(lambda: m.census().process(pid).channel_fds == 0, what="the channel closed")
        assert m.send(0, channel.NGX_CMD_QUIT) == 0     # "delivered"
        # into channel[1]'s buffer, which only the master holds now: nobody reads it
        assert _queued(m.workers[0].channel[1]) == sizeof(channel.ngx_channel_t)
        os.kill(pid, 0)                                     # still alive
    # close() fell back to SIGKILL; the leak guard checks nothing is left


def test_one_master_per_process():
    with Master(workers=1) as m:
        with pytest.raises(MasterError):
            with Master(workers=1):
                pass
        m.wait_mesh()


def test_bad_arguments():
    for bad in (0, -1, 1025, "4"):
        with pytest.raises(ValueError):
            Master(workers=bad)
    with pytest.raises(ValueError):
        Master(workers=1, listen=("0.0.0.0", 0))
    with pytest.raises(MasterError):
        Master(workers=1).send(0, 3)


def test_workers_exit_when_this_process_dies(tmp_path):
    """A master (here, a forked child acting as one) killed by SIGKILL: its
    workers notice through their pidfd and exit within a second."""
    r, w = os.pipe()

    def be_master():
        os.close(r)
        with Master(workers=3, log_path=tmp_path / "error.log") as m:
            m.wait_mesh()
            os.write(w, (" ".join(str(x.pid) for x in m.workers)).encode())
            time.sleep(60)

    from ngxlab import _forking
    pid = _forking.fork()
    if pid == 0:
        _forking.run_child(be_master)
    os.close(w)
    workers = [int(x) for x in os.read(r, 4096).split()]
    os.close(r)
    assert len(workers) == 3
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    t0 = time.monotonic()
    wait_until(lambda: not any(proc.alive(p) for p in workers), 1.0, "workers to exit")
    assert time.monotonic() - t0 < 1.0


def test_same_counts_per_role_as_live_nginx(nginx_bin):
    from ngxlab.lab.nginx import Nginx
    with Nginx(workers=4, binary=nginx_bin) as ngx:
        theirs = ngx.census()
    with Master(workers=4) as m:
        ours = m.wait_mesh()
    assert theirs.master.channel_fds == ours.master.channel_fds == 8
    assert sorted(w.channel_fds for w in theirs.workers) == \
        sorted(w.channel_fds for w in ours.workers) == [4, 4, 4, 4]
    assert len(theirs.pairs) == len(ours.pairs) == 4
    assert theirs.channel_fds == ours.channel_fds == 24
