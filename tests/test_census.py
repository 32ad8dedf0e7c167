"""The descriptor census: real socketpairs, real forks, a real nginx, checked against ``ss -xp``."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import time

import pytest

from _tools import fd_table, require_tool
from ngxlab.lab._netlink import inet_sockets, unix_sockets
from ngxlab.lab import proc
from ngxlab.lab.census import (Census, CensusError, CensusPermissionError, census, census_master,
                               children_of)
from ngxlab.lab.nginx import Nginx


def _fork_holding(keep_fd: int, close_fds: tuple[int, ...], hold_r: int) -> int:
    """Fork a child that closes ``close_fds``, keeps ``keep_fd``, and blocks until ``hold_r`` reads EOF."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            for fd in close_fds:
                os.close(fd)
            os.read(hold_r, 1)
        finally:
            os._exit(0)
    return pid


def _reap(pid: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, _status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


@pytest.mark.timeout(30)
def test_socketpair_across_fork_is_a_channel_pair():
    a, b = socket.socketpair()
    r, w = os.pipe()
    child = _fork_holding(b.fileno(), (a.fileno(), w), r)
    try:
        ino_a, ino_b = os.fstat(a.fileno()).st_ino, os.fstat(b.fileno()).st_ino
        # asleep in its read, the child has closed both a and w (a census
        # taken between the two closes counted w, which the listdir below
        # no longer saw)
        proc.wait_state(child, "S")
        # the child has closed its copy of a once the census shows it holding only b
        deadline = time.monotonic() + 5
        while True:
            c = census([os.getpid(), child])
            if c.process(child).fds and all(f.inode != ino_a for f in c.process(child).fds):
                break
            assert time.monotonic() < deadline, "the child did not close its copy of a"
            time.sleep(0.01)

        assert c.master_pid == os.getpid()
        assert c.process(os.getpid()).role == "master"
        assert c.process(child).role == "worker"
        assert len(c.pairs) == 1
        pair = c.pairs[0]
        assert pair.inodes == (ino_a, ino_b)          # channel[0] is the end only the master has
        assert pair.master_fds == (a.fileno(), b.fileno())
        assert pair.worker_pid == child
        assert pair.slot == 0 and pair.slot_inferred and c.slots_inferred
        assert pair.holders_of(0) == (os.getpid(),)
        assert pair.holders_of(1) == tuple(sorted((os.getpid(), child)))

        master = c.process(os.getpid())
        assert master.fd(a.fileno()).label == "0:0"
        assert master.fd(b.fileno()).label == "0:1"
        assert master.fd(a.fileno()).peer_inode == ino_b
        theirs = c.process(child).fd(b.fileno())
        assert theirs.kind == "unix" and theirs.label == "0:1" and theirs.peer_inode == ino_a
        assert c.process(child).channel_fds == 1 and master.channel_fds == 2
        assert c.is_full_mesh(1)
        assert c.counts_by_role()["master"]["channel"] == 2
        # the child's whole table, counted by the kernel's listing, not by the census
        assert c.counts_by_role()["worker"][0] == {"pid": child, "slot": 0, "channel": 1,
                                                    "total": len(os.listdir(f"/proc/{child}/fd"))}

        table = str(c)
        assert re.search(rf"^\s*{child}\s+worker\s+0\*\s+1\s+\d+\s+0:1$", table, re.M), table
        assert "slot inferred from spawn order" in table
        data = json.loads(c.to_json())
        assert data["pairs"][0]["worker_pid"] == child

        given = census([os.getpid(), child], slots={7: child})
        assert given.pairs[0].slot == 7 and not given.slots_inferred
        assert given.process(child).channel_ends == ("7:1",)
    finally:
        os.close(w)
        _reap(child)
        os.close(r)
        a.close()
        b.close()


@pytest.mark.timeout(30)
def test_census_right_after_a_fork():
    """The moment after a fork: the worker holds only its channel[1], and a child
    forked after it still holds both ends it inherited. The census must name the
    earlier child as the owner and orient the pair by who holds what, not by who
    holds more: here channel[0] is the master's higher descriptor number, so the
    socketpair(2) numbering rule alone would get it backwards."""
    ch1, ch0 = socket.socketpair()             # ch1 has the lower number
    r, w = os.pipe()
    assert ch1.fileno() < ch0.fileno()
    owner = later = None
    try:
        owner = _fork_holding(ch1.fileno(), (ch0.fileno(), w), r)
        deadline = time.monotonic() + 5
        ino0, ino1 = os.fstat(ch0.fileno()).st_ino, os.fstat(ch1.fileno()).st_ino
        while any(f.inode == ino0 for f in census([owner]).process(owner).fds):
            assert time.monotonic() < deadline, "the owner did not close its channel[0]"
            time.sleep(0.01)
        time.sleep(0.03)                        # a later start time, in clock ticks
        later = _fork_holding(-1, (w,), r)      # keeps both ends, as if not initialised yet
        c = census([os.getpid(), owner, later])
        (pair,) = c.pairs
        assert pair.inodes == (ino0, ino1)
        assert pair.master_fds == (ch0.fileno(), ch1.fileno())
        assert pair.worker_pid == owner
        assert pair.holders_of(1) == tuple(sorted((os.getpid(), owner, later)))
        assert pair.holders_of(0) == tuple(sorted((os.getpid(), later)))
        assert c.process(owner).role == "worker" and c.process(owner).channel_ends == ("0:1",)
        assert c.process(later).role == "other"
        assert sorted(c.process(later).channel_ends) == ["0:0", "0:1"]
    finally:
        os.close(w)
        for pid in (owner, later):
            if pid is not None:
                _reap(pid)
        os.close(r)
        ch0.close()
        ch1.close()


@pytest.mark.timeout(30)
def test_private_socketpair_is_not_a_channel():
    a, b = socket.socketpair()
    try:
        c = census([os.getpid()])
        assert c.pairs == ()
        fds = {f.fd: f for f in c.process(os.getpid()).fds}
        assert fds[a.fileno()].kind == "unix" and fds[a.fileno()].peer_inode == os.fstat(b.fileno()).st_ino
        assert not fds[a.fileno()].is_channel
    finally:
        a.close()
        b.close()


@pytest.mark.timeout(30)
def test_descriptor_kinds():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    r, w = os.pipe()
    ep = select.epoll()
    ep.register(r, select.EPOLLIN)
    pidfd = os.pidfd_open(os.getpid())
    null = os.open(os.devnull, os.O_RDONLY)
    regular = open(__file__, "rb")
    try:
        me = census([os.getpid()]).process(os.getpid())
        by_fd = {f.fd: f for f in me.fds}
        port = listener.getsockname()[1]
        assert by_fd[listener.fileno()].kind == "tcp"
        assert by_fd[listener.fileno()].detail == f"127.0.0.1:{port} LISTEN"
        assert by_fd[udp.fileno()].kind == "udp"
        assert by_fd[udp.fileno()].detail == f"127.0.0.1:{udp.getsockname()[1]}"
        assert by_fd[r].kind == by_fd[w].kind == "pipe" and by_fd[r].inode == by_fd[w].inode
        assert by_fd[ep.fileno()].kind == "eventpoll" and by_fd[ep.fileno()].epoll_targets == (r,)
        assert by_fd[pidfd].kind == "pidfd"
        assert by_fd[null].kind == "devnull"
        assert by_fd[regular.fileno()].kind == "file"
        assert by_fd[regular.fileno()].detail == os.path.realpath(__file__)
        mine = fd_table()       # this process's descriptors, read apart from the census
        assert {f.fd for f in me.fds} == set(mine) and me.total_fds == len(mine)
        assert me.role == "other" and me.slot is None
        assert me.name  # from the command line
    finally:
        for fd in (r, w, pidfd, null):
            os.close(fd)
        for obj in (listener, udp, ep, regular):
            obj.close()


@pytest.mark.timeout(30)
def test_census_error_on_dead_and_zombie_pids():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    # exited but not reaped: a zombie has no descriptors to count
    deadline = time.monotonic() + 5
    while True:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with pytest.raises(CensusError, match=rf"pid {pid}: .*zombie"):
        census([pid])
    os.waitpid(pid, 0)
    with pytest.raises(CensusError, match=rf"pid {pid}: no such process") as info:
        census([os.getpid(), pid])
    assert isinstance(info.value, ProcessLookupError) and info.value.pid == pid
    with pytest.raises(CensusError):
        census_master(pid)
    assert proc.start_time(pid) is None and proc.stat(pid) is None
    with pytest.raises(CensusError):
        census([0])
    with pytest.raises(ValueError):
        census([])
    assert issubclass(CensusPermissionError, PermissionError)
    assert issubclass(CensusPermissionError, ProcessLookupError)


@pytest.mark.timeout(30)
def test_proc_readers_treat_a_process_reaped_after_open_as_gone(monkeypatch):
    # The kernel's own race: /proc/PID/stat opened while the process lives,
    # read after it is reaped, fails with ESRCH. The process is reaped
    # between the readers' open() and read() (the only way to hit the
    # window every time); the failure itself is the kernel's.
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)   # a zombie, still there
    real_open = open

    def open_then_reap(path, *args, **kwargs):
        f = real_open(path, *args, **kwargs)
        if str(path).startswith(f"/proc/{pid}/"):
            os.waitpid(pid, 0)
        return f

    with real_open(f"/proc/{pid}/stat") as f:
        os.waitpid(pid, 0)
        with pytest.raises(ProcessLookupError):
            f.read()                        # the failure is real
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    monkeypatch.setattr("builtins.open", open_then_reap)
    assert proc.state(pid) is None and not proc.alive(pid)


@pytest.mark.timeout(30)
def test_netlink_socket_is_closed():
    before = fd_table()
    for _ in range(20):
        table = unix_sockets()
    assert fd_table() == before
    assert all(info.inode == ino for ino, info in table.items())


def _proc_net(kind: str) -> dict[int, str]:
    """inode -> local "addr:port" (hex, as the kernel prints it) from /proc/net/KIND."""
    with open(f"/proc/net/{kind}") as f:
        rows = [line.split() for line in f.read().splitlines()[1:]]
    return {int(r[9]): r[1] for r in rows if len(r) >= 10 and r[9] != "0"}


@pytest.mark.timeout(30)
def test_inet_sockets_agree_with_proc_net():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    client = socket.create_connection(listener.getsockname())
    server, _addr = listener.accept()
    udp6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    udp6.bind(("::1", 0))
    ino = {name: os.fstat(s.fileno()).st_ino
           for name, s in (("listener", listener), ("client", client),
                           ("server", server), ("udp6", udp6))}
    before = fd_table()
    try:
        listening = inet_sockets(listening_only=True)
        everything = inet_sockets()
        port = listener.getsockname()[1]
        assert listening[ino["listener"]] == ("tcp", f"127.0.0.1:{port} LISTEN")
        assert ino["client"] not in listening and ino["server"] not in listening
        assert everything[ino["client"]] == (
            "tcp", f"127.0.0.1:{client.getsockname()[1]} ESTABLISHED")
        assert everything[ino["server"]] == ("tcp", f"127.0.0.1:{port} ESTABLISHED")
        assert everything[ino["udp6"]] == ("udp6", f"[::1]:{udp6.getsockname()[1]}")
        # the same sockets, the same local ports, as /proc/net lists them
        for kind, names in (("tcp", ("listener", "client", "server")), ("udp6", ("udp6",))):
            table = _proc_net(kind)
            for name in names:
                assert int(table[ino[name]].split(":")[1], 16) == \
                    int(everything[ino[name]][1].split(":")[-1].split()[0])
        # the census finds the connection too (it asks for every socket
        # only when the listeners do not name an inode)
        me = {f.fd: f for f in census([os.getpid()]).process(os.getpid()).fds}
        assert me[server.fileno()].detail == f"127.0.0.1:{port} ESTABLISHED"
        assert me[listener.fileno()].detail == f"127.0.0.1:{port} LISTEN"
        assert fd_table() == before
    finally:
        for s in (listener, client, server, udp6):
            s.close()


# -- a live nginx -----------------------------------------------------------------


_SS_LINE = re.compile(r"^(\S+)\s+(\S+)\s+\d+\s+\d+\s+(\S+)\s+(\d+)\s+(\S+)\s+(\d+)\s*(.*)$")


def _ss_unix(ss: str) -> dict[int, tuple[int, set[tuple[int, int]]]]:
    """inode -> (peer inode, {(pid, fd) holding it}) from ``ss -xpn``."""
    out = subprocess.run([ss, "-xpn"], capture_output=True, text=True, timeout=30, check=True).stdout
    table = {}
    for line in out.splitlines()[1:]:
        m = _SS_LINE.match(line)
        if not m:
            continue
        users = {(int(p), int(f)) for p, f in re.findall(r"pid=(\d+),fd=(\d+)", m.group(7))}
        table[int(m.group(4))] = (int(m.group(6)), users)
    return table


@pytest.mark.nginx
@pytest.mark.timeout(60)
@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_census_of_nginx(nginx_bin, n):
    ss = require_tool("ss", package="iproute2", probe=["-V"])
    with Nginx(workers=n, binary=nginx_bin) as ngx:
        c = ngx.census()
        assert isinstance(c, Census) and c.master_pid == ngx.master_pid
        counts = c.counts_by_role()
        assert counts["master"]["channel"] == 2 * n
        assert [w["channel"] for w in counts["worker"]] == [n] * n
        assert counts["other"] == []
        assert len(c.pairs) == n
        assert c.channel_fds == n * n + 2 * n
        assert c.is_full_mesh(n)

        # each worker: its own channel[1], every other slot's channel[0]
        assert sorted(c.slots) == list(range(n))
        for w in c.workers:
            expected = sorted(f"{s}:{1 if s == w.slot else 0}" for s in range(n))
            assert sorted(w.channel_ends) == expected
            assert c.pair(w.slot).worker_pid == w.pid
            assert w.name.startswith("nginx: worker process")
        assert c.master.name.startswith("nginx: master process")
        # the census's own spawn-order inference agrees with the runner's model at startup
        inferred = census_master(ngx.master_pid)
        assert inferred.slots_inferred and inferred.slots == c.slots
        assert set(children_of(ngx.master_pid)) == set(c.worker_pids)

        # in the master, channel[0] was created first: the lower descriptor number
        for pair in c.pairs:
            assert pair.master_fds[0] < pair.master_fds[1]

        # the pairing agrees with ss -xp for every Unix socket of every process
        table = _ss_unix(ss)
        checked = 0
        for proc in c.processes:
            for f in proc.fds:
                if f.kind != "unix":
                    continue
                peer, users = table[f.inode]
                assert (f.peer_inode or 0) == peer, (proc.pid, f)
                assert (proc.pid, f.fd) in users, (proc.pid, f, users)
                checked += 1
        assert checked == c.channel_fds  # nginx holds no other Unix sockets here
        # only loopback listeners
        for proc in c.processes:
            for f in proc.fds:
                if f.kind.startswith(("tcp", "udp")):
                    assert f.detail.startswith("127.0.0.1:"), f
