"""The Python floor (ngxlab.lab.floor) and its runner: it builds the same
mesh as nginx (2N channel ends in the master, N in each worker, matched
by the census), reloads it (a new generation, the old one told to QUIT and
closed everywhere) and quits gracefully, leaves nothing behind, and
imports nothing of ngxlab's mirrors nor ctypes (it is the floor of a
pure-Python start-up)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from _tools import wait_for

from ngxlab.lab import proc
from ngxlab.lab.runner import ngxlab_env
from ngxlab.lab.run import FloorProcess
from ngxlab.lab.timing import calibrate

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("n", [1, 5])
def test_floor_builds_the_full_mesh_and_goes(n):
    r = FloorProcess(n)
    with r:
        c = r.census()
        assert c.is_full_mesh(n) and len(c.workers) == n
        assert c.master.channel_fds == 2 * n
        assert all(w.channel_fds == n for w in c.workers)
        assert sorted(r.slots) == list(range(n))
        master, workers = r.master_pid, list(r.worker_pids)
    assert r.returncode == 0                  # QUIT: it stopped its children and exited
    for pid in [master, *workers]:
        assert not proc.alive(pid)


def test_floor_reloads_twice_and_quits_leaving_nothing():
    """20 workers, two reloads (the second takes the first generation's
    slots again), then QUIT: each reload ends with N new children and the
    same descriptor counts as before it (the old generation's pairs closed
    in the master and, on CLOSE_CHANNEL, in every new worker), a full mesh
    by the census; QUIT reaps every child and the master exits 0."""
    n = 20
    r = FloorProcess(n, start_timeout=30)
    with r:
        master = r.master_pid
        seen = set(r.worker_pids)
        base_master = proc.fd_count(master)
        base_worker = {proc.fd_count(p) for p in seen}
        assert base_master == 2 * n + 3 and len(base_worker) == 1
        old = seen
        for _ in range(2):
            os.kill(master, signal.SIGHUP)

            def settled():
                kids = set(proc.children(master, zombies=True))
                return (len(kids) == n and not kids & seen
                        and proc.fd_count(master) == base_master
                        and {proc.fd_count(k) for k in kids} == base_worker and kids)

            new = wait_for(settled, 30, "the reload settled", interval=0.02)
            assert not any(proc.alive(p) for p in old)
            c = r.census()
            assert c.is_full_mesh(n) and len(c.workers) == n
            seen |= new
            old = new
        assert len(seen) == 3 * n
        os.kill(master, signal.SIGQUIT)
        assert r.wait_exit(30) == 0
        assert not (r.prefix / "logs" / "floor.pid").exists()
    for pid in [master, *seen]:
        assert not proc.alive(pid)


def test_floor_calibration():
    cal = calibrate("floor", refresh=True)
    # stdio, the epoll instance; in the master stdio only: nothing but the mesh
    assert cal.epoll_targets == 1 and cal.worker_sockets == 0
    assert cal.master_other == 3 and cal.worker_other == 4


def test_floor_imports_no_mirror_and_no_ctypes():
    code = ("import sys; before = set(sys.modules); import ngxlab.lab.floor; "
            "print(' '.join(sorted(set(sys.modules) - before)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30, env=ngxlab_env())
    assert done.returncode == 0, done.stderr
    new = done.stdout.split()
    assert [m for m in new if m.startswith("ngxlab")] == ["ngxlab", "ngxlab.lab",
                                                          "ngxlab.lab.floor"]
    assert "ctypes" not in new and "ngxlab.core" not in new


def test_floor_exits_when_its_starter_is_gone(tmp_path):
    # started by a process that exits at once: the floor and its children
    # notice within a second or two and exit
    (tmp_path / "logs").mkdir()
    starter = ("import os, subprocess, sys; p = subprocess.Popen([sys.executable, '-m', "
               "'ngxlab.lab.floor', '--workers', '2', '--prefix', sys.argv[1], '--parent', "
               "str(os.getpid())], stdin=subprocess.DEVNULL, start_new_session=True); "
               "print(p.pid)")
    done = subprocess.run([sys.executable, "-c", starter, str(tmp_path)], capture_output=True,
                          text=True, timeout=30, env=ngxlab_env())
    pid = int(done.stdout.strip())
    deadline = time.monotonic() + 10
    while proc.alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = proc.alive(pid)
    if alive:
        os.kill(pid, signal.SIGKILL)
    assert not alive
    assert not (tmp_path / "logs" / "floor.pid").exists()


def test_floor_under_strace(strace_bin):
    """Started under ``strace -f`` (the process this one starts is strace,
    the floor its child), it is found by its pid file, builds its mesh, and
    the trace shows the OPEN_CHANNEL descriptors travel."""
    r = FloorProcess(2, strace=True)
    with r:
        assert r.census().is_full_mesh(2)
        assert r.master_pid != r._guard.popen.pid
    text = r.strace_text()
    assert "SCM_RIGHTS" in text and "recvmsg(" in text


@pytest.mark.timeout(120)
def test_floor_master_never_blocks_on_a_child_that_does_not_read():
    """A child that reads nothing (stopped here; at scale, one that has
    exited and is not yet reaped, whose pair the master still holds) gets
    more messages in a QUIT than its channel's buffer holds: a CLOSE_CHANNEL
    for each of the other 299 children. The master drops what does not fit,
    as ngx_write_channel does, and does not wait: once the child runs again
    it reads its QUIT, exits, and the master reaps it and exits. (A floor
    writing with blocking sockets stays in sendto() for good.)"""
    n = 300
    r = FloorProcess(n, start_timeout=60)
    with r:
        master = r.master_pid
        kids = sorted(r.worker_pids)
        stopped = kids[0]
        os.kill(stopped, signal.SIGSTOP)
        proc.wait_state(stopped, "T")
        os.kill(master, signal.SIGQUIT)
        wait_for(lambda: set(proc.children(master)) == {stopped}, 60,
                 "every child but the stopped one gone")
        # the master has written all it will: a CLOSE_CHANNEL per reaped child,
        # the last of them dropped (the stopped child's buffer is full)
        wait_for(lambda: not proc.children(master, zombies=True)[1:], 30, "the others reaped")
        os.kill(stopped, signal.SIGCONT)
        assert r.wait_exit(30) == 0
    assert not proc.alive(stopped) and not proc.alive(master)
