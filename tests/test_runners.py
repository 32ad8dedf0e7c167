"""The three runners speak one vocabulary, and the census speaks it too.

For Master (this process), MasterProcess (ngxlab run) and Nginx (the real
nginx): ``slots`` is ``{slot: pid}`` and equals the census's, ``master_pid``
is the process the census calls master, ``wait_mesh()`` returns a full
mesh of ``n`` workers, and ``kill_worker(slot)`` returns the victim's pid,
after which ``wait_mesh()`` returns the census with a new worker in the same
slot and the victim gone."""

from __future__ import annotations

import os

import pytest

from ngxlab.lab import Master, MasterProcess, Nginx, Runner
from ngxlab.lab import proc
from ngxlab.lab.census import Census

N = 3


def _runner(kind, nginx_bin):
    if kind == "Master":
        return Master(workers=N)
    if kind == "MasterProcess":
        return MasterProcess(workers=N)
    return Nginx(workers=N, binary=nginx_bin())


@pytest.fixture
def make_nginx_bin(request):
    return lambda: request.getfixturevalue("nginx_bin")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["Master", "MasterProcess", "Nginx"])
def test_one_vocabulary(kind, make_nginx_bin):
    r = _runner(kind, make_nginx_bin)
    assert isinstance(r, Runner) and r.n == N
    try:
        r.start()
        c = r.wait_mesh()
        assert isinstance(c, Census) and c.is_full_mesh(N)
        # master_pid: the master, for the runner and for the census
        assert r.master_pid == c.master_pid == c.master.pid
        assert r.master_pid == (os.getpid() if kind == "Master" else r.master_pid)
        # slots: {slot: pid}, the same on the runner and the census
        assert r.slots == c.slots and sorted(r.slots) == list(range(N))
        assert all(proc.ppid(pid) == r.master_pid for pid in r.slots.values())
        assert r.worker_pids == tuple(r.slots[s] for s in sorted(r.slots))
        assert [(w.slot, w.pid) for w in r.workers] == sorted(r.slots.items())
        # kill_worker: returns the victim; wait_mesh: the respawned mesh
        before = dict(r.slots)
        victim = r.kill_worker(1)
        assert victim == before[1]
        c = r.wait_mesh()
        assert c.is_full_mesh(N) and c.slots == r.slots
        assert r.slots[1] not in (victim, None) and not proc.alive(victim)
        assert {s: p for s, p in r.slots.items() if s != 1} == \
            {s: p for s, p in before.items() if s != 1}
        with pytest.raises(KeyError):
            r.kill_worker(N + 5)
        with pytest.raises(ValueError):
            r.signal("restart")
    finally:
        r.stop()
        if kind == "Master":
            r.cleanup()
    assert not r.running


@pytest.mark.timeout(60)
def test_a_workers_pidfd_of_its_master_is_close_on_exec():
    # pidfd_open() sets FD_CLOEXEC itself: a program a worker executed would
    # not inherit the watch on its master (ngxlab sets nothing after it)
    r = MasterProcess(workers=1)
    try:
        r.start()
        c = r.wait_mesh()
        (w,) = c.workers
        (pidfd,) = [f.fd for f in w.fds if f.kind == "pidfd"]
        with open(f"/proc/{w.pid}/fdinfo/{pidfd}") as f:
            flags = int(next(line for line in f if line.startswith("flags:")).split()[1], 8)
        assert flags & os.O_CLOEXEC
        with open(f"/proc/{w.pid}/fdinfo/{pidfd}") as f:
            assert f"Pid:\t{r.master_pid}\n" in f.read()
    finally:
        r.stop()
    assert not r.running
