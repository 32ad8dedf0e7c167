"""ngx_spawn_process and the process table, with real forks.

Every test resets the table before and after, kills and reaps by pid what
it spawned, and is checked by the leak guard (no descriptor, no child).
"""

from __future__ import annotations

import fcntl
import io
import json
import re
import os
import resource
import signal
import time

import pytest
from _tools import fd_table, require

from ngxlab import _forking, cycle as cy, process
from ngxlab.core import NGX_LOG_DEBUG, ngx_log_t
from ngxlab.lab.master import _reset_tables
from ngxlab.process import (
    NGX_INVALID_PID, NGX_MAX_PROCESSES, NGX_PROCESS_DETACHED,
    NGX_PROCESS_JUST_RESPAWN, NGX_PROCESS_JUST_SPAWN, NGX_PROCESS_NORESPAWN,
    NGX_PROCESS_RESPAWN, ngx_processes, ngx_spawn_process,
)


def fds():
    """This process's open descriptors."""
    return set(fd_table())


@pytest.fixture
def cycle():
    _reset_tables()
    buf = io.StringIO()
    c = cy.ngx_cycle_t(log=ngx_log_t(buf, NGX_LOG_DEBUG))
    c.buf = buf
    cy.ngx_cycle = c
    yield c
    # kill, reap and close what the test spawned
    for p in ngx_processes[:process.ngx_last_process]:
        if p.pid > 0:
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                os.waitpid(p.pid, 0)
            except ChildProcessError:
                pass
        for fd in p.channel:
            if fd > 2:
                try:
                    os.close(fd)
                except OSError:
                    pass
    _reset_tables()
    cy.ngx_cycle = None


def sleeper(cycle, data):
    time.sleep(60)


def quick_exit(cycle, data):
    pass


def reap(pid, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got, status = os.waitpid(pid, os.WNOHANG)
        if got:
            return status
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    return os.waitpid(pid, 0)[1]


def test_first_spawn_fills_slot_0_like_nginx(cycle):
    pid = ngx_spawn_process(cycle, sleeper, 7, "worker process",
                            NGX_PROCESS_RESPAWN)
    assert pid > 0
    p = ngx_processes[0]
    assert (p.pid, p.proc, p.data, p.name) == (pid, sleeper, 7,
                                               "worker process")
    assert (p.respawn, p.just_spawn, p.detached, p.exiting, p.exited) == \
        (1, 0, 0, 0, 0)
    assert process.ngx_last_process == 1
    assert process.ngx_process_slot == 0
    c0, c1 = p.channel
    assert process.ngx_channel == c1
    # both ends non-blocking and close-on-exec; channel[0] async, owned by us
    for fd in (c0, c1):
        assert fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    assert fcntl.fcntl(c0, fcntl.F_GETFL) & os.O_ASYNC
    assert not fcntl.fcntl(c1, fcntl.F_GETFL) & os.O_ASYNC
    assert fcntl.fcntl(c0, fcntl.F_GETOWN) == os.getpid()
    assert "channel %d:%d" % (c0, c1) in cycle.buf.getvalue()
    assert "[notice] %d#0: start worker process %d" % (os.getpid(), pid) \
        in cycle.buf.getvalue()


@pytest.mark.parametrize("mode,flags", [
    (NGX_PROCESS_NORESPAWN, (0, 0, 0)),
    (NGX_PROCESS_JUST_SPAWN, (0, 1, 0)),
    (NGX_PROCESS_RESPAWN, (1, 0, 0)),
    (NGX_PROCESS_JUST_RESPAWN, (1, 1, 0)),
    (NGX_PROCESS_DETACHED, (0, 0, 1)),
])
def test_spawn_modes(cycle, mode, flags):
    assert (NGX_PROCESS_NORESPAWN, NGX_PROCESS_JUST_SPAWN, NGX_PROCESS_RESPAWN,
            NGX_PROCESS_JUST_RESPAWN, NGX_PROCESS_DETACHED) == (-1, -2, -3, -4,
                                                                -5)
    before = fds()
    pid = ngx_spawn_process(cycle, sleeper, None, "p", mode)
    p = ngx_processes[0]
    assert (p.respawn, p.just_spawn, p.detached) == flags
    if mode == NGX_PROCESS_DETACHED:
        assert p.channel == [-1, -1]
        assert fds() == before
    else:
        assert len(fds() - before) == 2
    assert p.pid == pid


def test_free_slot_is_reused_and_respawn_keeps_the_slot(cycle):
    pids = [ngx_spawn_process(cycle, sleeper, i, "worker process",
                              NGX_PROCESS_RESPAWN) for i in range(3)]
    assert process.ngx_last_process == 3
    # free slot 1 as ngx_reap_children does
    os.kill(pids[1], signal.SIGKILL)
    reap(pids[1])
    for fd in ngx_processes[1].channel:
        os.close(fd)
    ngx_processes[1].pid = -1
    new = ngx_spawn_process(cycle, quick_exit, "x", "other", NGX_PROCESS_NORESPAWN)
    assert process.ngx_process_slot == 1 and ngx_processes[1].pid == new
    assert process.ngx_last_process == 3
    assert ngx_processes[1].name == "other"
    reap(new)
    for fd in ngx_processes[1].channel:
        os.close(fd)
    # respawn into slot 2 keeps proc, data, name and flags
    os.kill(pids[2], signal.SIGKILL)
    reap(pids[2])
    for fd in ngx_processes[2].channel:
        os.close(fd)
    again = ngx_spawn_process(cycle, quick_exit, "ignored", "ignored", 2)
    p = ngx_processes[2]
    assert (p.pid, p.proc, p.data, p.name, p.respawn) == (
        again, sleeper, 2, "worker process", 1)


def test_child_never_returns_into_the_caller(cycle):
    r, w = os.pipe()
    pid = ngx_spawn_process(cycle, quick_exit, None, "p", NGX_PROCESS_NORESPAWN)
    # only the parent gets here; a child that returned would write too
    os.write(w, b"%d\n" % os.getpid())
    status = reap(pid)
    os.close(w)
    lines = os.read(r, 4096).split()
    os.close(r)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert lines == [b"%d" % os.getpid()]


def test_child_sees_its_own_pid_and_parent(cycle):
    r, w = os.pipe()

    def proc(cycle, data):
        os.write(data, json.dumps([process.ngx_pid, process.ngx_parent,
                                   process.ngx_process_slot,
                                   process.ngx_channel]).encode())

    pid = ngx_spawn_process(cycle, proc, w, "p", NGX_PROCESS_NORESPAWN)
    reap(pid)
    os.close(w)
    got = json.loads(os.read(r, 4096))
    os.close(r)
    assert got == [pid, os.getpid(), 0, ngx_processes[0].channel[1]]


@pytest.mark.parametrize("how,code", [("return", 0), ("exit2", 2),
                                      ("raise", 1)])
def test_child_exit_status(cycle, capfd, how, code):
    def proc(cycle, data):
        if how == "exit2":
            raise SystemExit(2)
        if how == "raise":
            raise RuntimeError("boom in the child")

    pid = ngx_spawn_process(cycle, proc, None, "p", NGX_PROCESS_NORESPAWN)
    status = reap(pid)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == code
    if how == "raise":
        err = capfd.readouterr().err
        assert "Traceback (most recent call last)" in err
        assert "RuntimeError: boom in the child" in err


def test_1025th_spawn_fails_with_nginx_alert(cycle):
    # The first 1,023 slots are taken by writing a pid into them: the scan
    # for a free slot reads only p.pid, and 1,023 forks of this (large)
    # process took 20 s. The 1,024th spawn is real and lands in the last
    # slot; the 1,025th finds none.
    me = os.getpid()
    try:
        for i in range(NGX_MAX_PROCESSES - 1):
            ngx_processes[i].pid = me
        process.ngx_last_process = NGX_MAX_PROCESSES - 1
        pid = ngx_spawn_process(cycle, quick_exit, NGX_MAX_PROCESSES - 1, "worker process",
                                NGX_PROCESS_NORESPAWN)
        assert pid > 0, cycle.buf.getvalue()[-300:]
        assert process.ngx_process_slot == NGX_MAX_PROCESSES - 1
        reap(pid)
        for fd in ngx_processes[NGX_MAX_PROCESSES - 1].channel:
            os.close(fd)
        ngx_processes[NGX_MAX_PROCESSES - 1].channel = [-1, -1]
        assert process.ngx_last_process == NGX_MAX_PROCESSES
        before = fds()
        assert ngx_spawn_process(cycle, quick_exit, None, "worker process",
                                 NGX_PROCESS_NORESPAWN) == NGX_INVALID_PID
        assert fds() == before
        assert "[alert] %d#0: no more than 1024 processes can be spawned" % (
            os.getpid()) in cycle.buf.getvalue()
    finally:
        for p in ngx_processes:
            p.pid = -1


def test_socketpair_failure(cycle):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowest_free = os.dup(0)
    os.close(lowest_free)
    before = fds()
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
    try:
        rc = ngx_spawn_process(cycle, sleeper, None, "worker process",
                               NGX_PROCESS_RESPAWN)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert rc == NGX_INVALID_PID
    assert fds() == before
    assert process.ngx_last_process == 0
    assert "[alert] %d#0: socketpair() failed while spawning \"worker " \
        "process\" (24: Too many open files)" % os.getpid() \
        in cycle.buf.getvalue()


_CHANNEL_CALLS = ("ioctl(FIONBIO)", "ioctl(FIONBIO)", "ioctl(FIOASYNC)", "fcntl(F_SETOWN)",
                  "fcntl(FD_CLOEXEC)", "fcntl(FD_CLOEXEC)")


@pytest.mark.parametrize("k", range(len(_CHANNEL_CALLS)))
def test_each_channel_call_failure_is_named_and_closes_the_pair(cycle, monkeypatch, k):
    """The six calls after socketpair() (nginx's six ``if`` blocks), in
    nginx's order: when the k-th fails, the alert names it, both ends are
    closed, the slot forgets them, and nothing is forked."""
    made = []
    real = {"ioctl": fcntl.ioctl, "fcntl": fcntl.fcntl}

    def failing(name):
        def call(fd, op, arg=0):
            made.append((name, op))
            if len(made) == k + 1:
                raise OSError(9, os.strerror(9))
            return real[name](fd, op, arg)
        return call

    before = fds()
    monkeypatch.setattr(fcntl, "ioctl", failing("ioctl"))
    monkeypatch.setattr(fcntl, "fcntl", failing("fcntl"))
    rc = ngx_spawn_process(cycle, sleeper, None, "worker process", NGX_PROCESS_RESPAWN)
    monkeypatch.undo()
    assert rc == NGX_INVALID_PID
    assert len(made) == k + 1
    assert fds() == before
    assert process.ngx_last_process == 0
    assert list(process.ngx_processes[0].channel) == [-1, -1]
    assert ("[alert] %d#0: %s failed while spawning \"worker process\" (9: Bad file "
            "descriptor)" % (os.getpid(), _CHANNEL_CALLS[k])) in cycle.buf.getvalue()


def test_fork_failure(cycle):
    """RLIMIT_NPROC 0 makes fork() fail for real; root is exempt, so the
    check runs in a child that first becomes an unprivileged user."""
    r, w = os.pipe()

    def check():
        os.close(r)
        if os.getuid() == 0:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
        resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
        _reset_tables()
        buf = io.StringIO()
        c = cy.ngx_cycle_t(log=ngx_log_t(buf, "notice"))
        before = fds()
        rc = ngx_spawn_process(c, sleeper, None, "worker process",
                               NGX_PROCESS_RESPAWN)
        os.write(w, json.dumps({"rc": rc, "leaked": sorted(fds() - before),
                                "log": buf.getvalue(),
                                "last": process.ngx_last_process}).encode())

    pid = _forking.fork()
    if pid == 0:
        _forking.run_child(check)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    status = reap(pid)
    assert os.WEXITSTATUS(status) == 0
    got = json.loads(data)
    assert got["rc"] == NGX_INVALID_PID
    assert got["leaked"] == []
    assert got["last"] == 0
    assert "fork() failed while spawning \"worker process\" (11: Resource " \
        "temporarily unavailable)" in got["log"]


@pytest.mark.parametrize("level", ["debug", "notice"])
def test_master_loops_log_debug_lines_only_at_debug(cycle, level):
    """ngx_pass_open_channel and ngx_signal_worker_processes test the log's
    level once per call (nginx's macros test it before each line): at debug
    level every receiver's line is there, at notice none is."""
    from ngxlab import process_cycle as pc
    cycle.log.log_level = NGX_LOG_DEBUG if level == "debug" else 6
    pids = [ngx_spawn_process(cycle, sleeper, i, "worker process",
                              NGX_PROCESS_RESPAWN) for i in range(3)]
    assert all(pid > 0 for pid in pids)
    mark = len(cycle.buf.getvalue())
    pc.ngx_pass_open_channel(cycle)                 # slot 2, to slots 0 and 1
    pc.ngx_signal_worker_processes(cycle, signal.SIGUSR1)   # REOPEN to all three
    text = cycle.buf.getvalue()[mark:]
    passed = re.findall(r"pass channel s:2 pid:(\d+) fd:\d+ to s:(\d) pid:(\d+)", text)
    children = re.findall(r"child: (\d) (\d+) e:0 t:0 d:0 r:1 j:0", text)
    if level == "debug":
        assert passed == [(str(pids[2]), "0", str(pids[0])),
                          (str(pids[2]), "1", str(pids[1]))]
        assert children == [(str(i), str(pid)) for i, pid in enumerate(pids)]
    else:
        assert passed == [] and children == [] and text == ""
