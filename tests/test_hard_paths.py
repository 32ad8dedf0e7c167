"""The hard paths of the master and its workers: exhausted descriptors,
failed spawns and respawns, hostile channel input. Each case is produced for
real (resource limits set in the test's own child, or on a running master
with prlimit; a process limit needs an unprivileged user, root is exempt),
and checked twice where nginx shares the fault: ngxlab's safe default, and
``nginx_quirks``, which keeps nginx's behaviour."""

from __future__ import annotations

import ctypes
import fcntl
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from ngxlab import process, process_cycle as pc
from ngxlab.channel import NGX_CMD_CLOSE_CHANNEL, NGX_CMD_OPEN_CHANNEL
from ngxlab.lab.fork import run_in_child
from ngxlab.lab.master import Master
from ngxlab.lab.run import MasterProcess

NOBODY = 65534


def _wait(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s: {what}"
        time.sleep(0.01)


def _nfds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def _limit_leaving(free):
    """The RLIMIT_NOFILE value under which this process can open exactly
    ``free`` more descriptors (the limit bounds descriptor numbers: every
    free number below it counts, holes included)."""
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            fcntl.fcntl(int(name), fcntl.F_GETFD)   # not the listing's own, closed by now
            fds.add(int(name))
        except OSError:
            pass
    limit = 0
    while limit - len([f for f in fds if f < limit]) < free:
        limit += 1
    return limit


def _become_nobody():
    """In a child: an unprivileged user (RLIMIT_NPROC binds it), still
    allowed to read its own children's /proc entries."""
    if os.getuid() == 0:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)          # PR_SET_DUMPABLE


# -- 3: a worker whose init fails exits with nginx's fatal code 2 ------------


@pytest.mark.timeout(60)
def test_a_worker_whose_init_runs_out_of_descriptors_exits_2_and_is_not_respawned():
    """Descriptors run out after the channel: the respawned worker's
    epoll_create(), pipe2() or pidfd_open() fails. nginx: emerg, exit(2),
    "exited with fatal code 2 and cannot be respawned". (epoll and pipe2
    used to raise: exit 1, respawned in a loop, a traceback each time.)"""
    with MasterProcess(workers=1) as m:
        master = m.pid
        # the reap frees the dead worker's pair and the respawn's socketpair
        # takes it again; one descriptor more: the worker inherits the limit
        # and the master's table, and its pipe2() finds no room
        used = _nfds(master)
        resource.prlimit(master, resource.RLIMIT_NOFILE,
                         (used + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        since = m.log_offset()
        m.kill_worker(0)
        m.wait_log(r"exited with fatal code 2 and cannot be respawned", since=since, timeout=10)
        time.sleep(0.5)
        lines = m.log_lines(since)
        assert any(re.search(r"\] \d+#0: (epoll_create|pipe2|pidfd_open)\(\d*\) failed \(24: ", l)
                   for l in lines), lines
        assert sum("start worker process" in l for l in lines) == 1, lines      # no respawn storm
        assert not any("Traceback" in l for l in lines)
        assert m.slots() == {}


# -- 4: a master with no workers can be stopped -------------------------------


def _no_workers_master(prefix, quirks):
    """In a forked child: an unprivileged user whose process limit is 1 runs
    ``ngxlab run``'s main: every fork() fails, the master has no worker."""
    _become_nobody()
    resource.setrlimit(resource.RLIMIT_NPROC, (1, 1))
    pc.nginx_quirks = quirks
    from ngxlab import nginx
    nginx.main([sys.executable, "-m", "ngxlab", "run"], prefix, 2, die_with_parent=True,
               nginx_quirks=quirks)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("quirks", [False, True])
def test_a_master_without_workers_exits_on_quit(quirks):
    from ngxlab import _forking, nginx
    tmp = tempfile.mkdtemp(prefix="ngxlab-noworkers-")
    nginx.prepare_prefix(tmp)
    for d in (tmp, os.path.join(tmp, "logs"), os.path.join(tmp, "conf")):
        os.chmod(d, 0o777)
    log = os.path.join(tmp, "logs", "error.log")
    pid = _forking.fork()
    if pid == 0:
        _forking.run_child(_no_workers_master, tmp, quirks)
    try:
        def forks_failed():
            try:
                with open(log) as f:
                    return f.read().count("fork() failed") >= 2
            except OSError:
                return False
        _wait(forks_failed, 20, "both forks failed")
        time.sleep(0.2)
        os.kill(pid, signal.SIGQUIT)

        def exited(timeout):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    return status
                time.sleep(0.01)
            return None

        status = exited(5)
        if quirks:
            # nginx's live stays 1 without a SIGCHLD: QUIT (and TERM) change nothing
            assert status is None
            os.kill(pid, signal.SIGTERM)
            assert exited(2) is None
        else:
            assert status is not None and os.waitstatus_to_exitcode(status) == 0
            with open(log) as f:
                assert re.search(r"\[notice\] \d+#0: exit$", f.read(), re.M)
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        subprocess.run(["rm", "-rf", tmp])


# -- 5: the failure paths of spawning and respawning --------------------------


def _socketpair_failure(quirks):
    """In a child: three workers, then the master's descriptors run out and
    ngx_start_worker_processes tries two more. The workers' channel
    descriptors, per slot, afterwards."""
    with Master(workers=3, nginx_quirks=quirks) as m:
        m.wait_mesh()
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (_limit_leaving(1), hard))
        try:
            pc.ngx_start_worker_processes(m.cycle, 2, process.NGX_PROCESS_RESPAWN)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        time.sleep(0.3)
        c = m.census()
        return {w.slot: w.channel_ends for w in c.workers}, m.log_lines()


@pytest.mark.timeout(60)
def test_a_failed_socketpair_announces_nothing():
    ends, log = run_in_child(_socketpair_failure, False, timeout=50).check().value
    assert sum("socketpair() failed" in line for line in log) == 2
    assert ends == {0: ("0:1", "1:0", "2:0"), 1: ("0:0", "1:1", "2:0"), 2: ("0:0", "1:0", "2:1")}


@pytest.mark.timeout(60)
def test_a_failed_socketpair_with_nginx_quirks_leaks_as_nginx_does():
    # nginx announces ngx_process_slot, still the last worker spawned, once
    # per failure: slots 0 and 1 get its channel[0] twice more, and keep them
    ends, _log = run_in_child(_socketpair_failure, True, timeout=50).check().value
    assert ends[0] == ("0:1", "1:0", "2:0", "2:0", "2:0")
    assert ends[1] == ("0:0", "1:1", "2:0", "2:0", "2:0")
    assert ends[2] == ("0:0", "1:0", "2:1")


def _fork_failure(quirks):
    """In an unprivileged child: two workers; the respawn of slot 1 fails in
    fork(); then a new worker is started (its socketpair gets the numbers the
    failed respawn freed), and the master reaps again."""
    _become_nobody()
    with Master(workers=2, nginx_quirks=quirks) as m:
        m.wait_mesh()
        stale = None
        soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
        resource.setrlimit(resource.RLIMIT_NPROC, (1, hard))
        try:
            m.kill(1)                       # reaped; the respawn's fork() fails
        finally:
            resource.setrlimit(resource.RLIMIT_NPROC, (soft, hard))
        stale = list(process.ngx_processes[1].channel)
        m.start(1)                          # a new worker, slot 2
        new_pair = list(process.ngx_processes[2].channel)
        time.sleep(0.5)
        m.reap()                            # the failed respawn is retried
        time.sleep(0.5)
        m.reap()
        try:
            mesh = m.wait_mesh(timeout=5).is_full_mesh(len(m.workers))
        except Exception:
            mesh = False
        return {"stale": stale, "new": new_pair, "log": m.log_lines(),
                "slots": sorted(w.slot for w in m.workers), "mesh": mesh}


@pytest.mark.timeout(60)
def test_a_failed_fork_leaves_no_stale_numbers():
    r = run_in_child(_fork_failure, False, timeout=50).check().value
    assert any("fork() failed while spawning" in line for line in r["log"])
    assert any("could not respawn worker process" in line for line in r["log"])
    assert r["stale"] == [-1, -1]
    assert not any("fatal code 2" in line for line in r["log"]), r["log"]
    assert r["slots"] == [0, 1, 2] and r["mesh"]


@pytest.mark.timeout(60)
def test_a_failed_fork_with_nginx_quirks_closes_through_stale_numbers():
    # nginx leaves the closed numbers in the slot; the next socketpair()
    # gets them, and the new worker closes its own channel[1] through slot
    # 1's stale entry: epoll_ctl() fails, exit code 2, one worker short
    r = run_in_child(_fork_failure, True, timeout=50).check().value
    assert r["stale"] == r["new"], r
    assert any(re.search(r"epoll_ctl\(1, \d+\) failed \(9: Bad file descriptor\)", line)
               for line in r["log"]), r["log"]
    assert any("exited with fatal code 2 and cannot be respawned" in line for line in r["log"])
    assert 2 not in r["slots"]


# -- 6: hostile or odd input ------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("quirks", [False, True])
def test_a_channel_message_with_an_impossible_slot(quirks):
    with Master(workers=1, report=True, nginx_quirks=quirks) as m:
        m.wait_mesh()
        pid = m.pid(0)
        before = _nfds(pid)
        for slot in (5000, 2 ** 62, -1, 1024):
            m.send(0, NGX_CMD_CLOSE_CHANNEL, pid=1, about_slot=slot)
        r, w = os.pipe()
        try:
            m.send(0, NGX_CMD_OPEN_CHANNEL, pid=1, about_slot=-1, fd=r)
            m.send(0, NGX_CMD_OPEN_CHANNEL, pid=1, about_slot=5000, fd=r)
        finally:
            os.close(r)
            os.close(w)
        m.reopen()
        _wait(lambda: sum("invalid slot" in l for l in m.log_lines()) == 6, 5, "six alerts")
        _wait(lambda: any(f"{pid}#0: reopening logs" in l for l in m.log_lines()), 5,
              "the worker still reads its channel")
        assert not any("Traceback" in l or "IndexError" in l for l in m.log_lines())
        assert m.pid(0) == pid
        # nothing written into the table (entry 1023 is where slot -1 lands in Python)
        assert all(e[0] != 1023 for r_ in m.worker_reports() for e in r_["table"])
        # the descriptors of the two refused OPEN_CHANNELs: closed, or left as nginx leaves them
        assert _nfds(pid) == before + (2 if quirks else 0)


@pytest.mark.timeout(60)
def test_a_default_socket_timeout_does_not_deafen_a_worker():
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(2)
    try:
        with Master(workers=2) as m:
            m.wait_mesh()
            m.reopen()
            time.sleep(2.5)           # a 2 s timeout would have turned EAGAIN into an error by now
            m.reopen()
            for w in m.workers:
                _wait(lambda: sum(f"{w.pid}#0: reopening logs" in l for l in m.log_lines()) == 2,
                      5, f"worker {w.pid} reopened twice")
            assert not any("recvmsg() failed" in l for l in m.log_lines())
    finally:
        socket.setdefaulttimeout(old)
