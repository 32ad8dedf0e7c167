"""The hard paths of the master and its workers: exhausted descriptors,
failed spawns and respawns, hostile channel input. Each case is produced for
real (resource limits set in the test's own child, or on a running master
with prlimit; a process limit needs an unprivileged user, root is exempt),
and checked twice where nginx shares the fault: ngxlab's safe default, and
``nginx_quirks``, which keeps nginx's behaviour."""

from __future__ import annotations

import os
import re
import resource
import socket
import time

import pytest
from _tools import wait_for

from ngxlab.channel import NGX_CMD_CLOSE_CHANNEL, NGX_CMD_OPEN_CHANNEL
from ngxlab.lab import failpaths
from ngxlab.lab.master import Master
from ngxlab.lab.run import MasterProcess

def _nfds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


# -- 3: a worker whose init fails exits with nginx's fatal code 2 ------------


@pytest.mark.timeout(60)
def test_a_worker_whose_init_runs_out_of_descriptors_exits_2_and_is_not_respawned():
    """Descriptors run out after the channel: the respawned worker's
    epoll_create(), pipe2() or pidfd_open() fails. nginx: emerg, exit(2),
    "exited with fatal code 2 and cannot be respawned". (epoll and pipe2
    used to raise: exit 1, respawned in a loop, a traceback each time.)"""
    with MasterProcess(workers=1) as m:
        master = m.master_pid
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
        assert m.slots == {}


# -- 4: a master with no workers can be stopped -------------------------------


@pytest.mark.timeout(60)
def test_a_master_without_workers_exits_on_quit():
    r = failpaths.without_workers("ngxlab")
    assert r.fork_failures == 2
    assert r.exited_on_quit, r.log[-5:]
    assert any(re.match(r"\[notice\] \d+#0: exit$", line) for line in r.log)


@pytest.mark.timeout(60)
def test_a_master_without_workers_with_nginx_quirks_waits_as_nginx_does():
    # nginx's live stays 1 until a SIGCHLD that never comes: QUIT and TERM change nothing
    r = failpaths.without_workers("ngxlab --nginx-quirks", wait=2.0)
    assert r.fork_failures == 2
    assert not r.exited_on_quit and not r.exited_on_term


# The master imports json only once it has forked (for its slots file), and
# without_workers() makes it the user nobody after it started. From a process
# that had not imported json (a script, not a notebook's kernel), where nobody
# cannot read the standard library (Python in root's home, as on the machines
# CI runs on), the master died of ModuleNotFoundError after its failed forks,
# and the quirks master looked as if it had exited on QUIT.
_WITHOUT_WORKERS_FRESH = r"""
import sys
from ngxlab.lab import failpaths
assert "json" not in sys.modules
r = failpaths.without_workers("ngxlab --nginx-quirks", wait=1.0)
print(repr((r.exited_on_quit, r.exited_on_term, r.log)))
"""


@pytest.mark.timeout(60)
def test_without_workers_from_a_fresh_interpreter_measures_the_master_not_an_import():
    import ast
    first, _ = _fresh(_WITHOUT_WORKERS_FRESH)
    on_quit, on_term, log = ast.literal_eval(first)
    assert not any("master process failed" in line for line in log), log
    assert not on_quit and not on_term, log[-3:]


@pytest.mark.timeout(60)
def test_a_real_nginx_without_workers_cannot_be_stopped(nginx_bin):
    r = failpaths.without_workers("nginx", wait=2.0)
    assert r.fork_failures == 2, r.log
    assert not r.exited_on_quit and not r.exited_on_term


# -- 5: the failure paths of spawning and respawning --------------------------


@pytest.mark.timeout(90)
def test_a_failed_socketpair_announces_nothing():
    r = failpaths.socketpair_failure(False)
    assert sum("socketpair() failed" in line for line in r.log) == 2
    assert r.ends == {0: ("0:1", "1:0", "2:0"), 1: ("0:0", "1:1", "2:0"), 2: ("0:0", "1:0", "2:1")}
    assert r.duplicates() == {}


@pytest.mark.timeout(90)
def test_a_failed_socketpair_with_nginx_quirks_leaks_as_nginx_does():
    # nginx announces ngx_process_slot, still the last worker spawned, once
    # per failure: slots 0 and 1 get its channel[0] twice more, and keep them
    r = failpaths.socketpair_failure(True)
    assert r.ends[0] == ("0:1", "1:0", "2:0", "2:0", "2:0")
    assert r.ends[1] == ("0:0", "1:1", "2:0", "2:0", "2:0")
    assert r.ends[2] == ("0:0", "1:0", "2:1")
    assert r.duplicates() == {0: 2, 1: 2}


@pytest.mark.timeout(90)
def test_a_real_nginx_leaks_after_a_failed_socketpair(nginx_bin):
    r = failpaths.nginx_socketpair_failure()
    assert any("socketpair() failed" in line for line in r.log)
    assert r.duplicates(), r.table


@pytest.mark.timeout(90)
def test_a_failed_fork_leaves_no_stale_numbers():
    r = failpaths.fork_failure(False)
    assert any("fork() failed while spawning" in line for line in r.log)
    assert any("could not respawn worker process" in line for line in r.log)
    assert r.notes["stale"] == [-1, -1]
    assert not any("fatal code 2" in line for line in r.log), r.log
    assert r.notes["slots"] == [0, 1, 2] and r.notes["full mesh"]


@pytest.mark.timeout(90)
def test_a_failed_fork_with_nginx_quirks_closes_through_stale_numbers():
    # nginx leaves the closed numbers in the slot; the next socketpair()
    # gets them, and the new worker closes its own channel[1] through slot
    # 1's stale entry: epoll_ctl() fails, exit code 2, one worker short
    r = failpaths.fork_failure(True)
    assert r.notes["stale"] == r.notes["new_pair"]
    assert any(re.search(r"epoll_ctl\(1, \d+\) failed \(9: Bad file descriptor\)", line)
               for line in r.log), r.log
    assert any("exited with fatal code 2 and cannot be respawned" in line for line in r.log)
    assert 2 not in r.notes["slots"]


# -- 6: hostile or odd input ------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("quirks", [False, True])
def test_a_channel_message_with_an_impossible_slot(quirks):
    with Master(workers=1, report=True, nginx_quirks=quirks) as m:
        m.wait_mesh()
        pid = m.slots[0]
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
        m.signal("reopen")
        wait_for(lambda: sum("invalid slot" in l for l in m.log_lines()) == 6, 5, "six alerts")
        wait_for(lambda: any(f"{pid}#0: reopening logs" in l for l in m.log_lines()), 5,
              "the worker still reads its channel")
        assert not any("Traceback" in l or "IndexError" in l for l in m.log_lines())
        assert m.slots[0] == pid
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
            m.signal("reopen")
            time.sleep(2.5)           # a 2 s timeout would have turned EAGAIN into an error by now
            m.signal("reopen")
            for w in m.workers:
                wait_for(lambda: sum(f"{w.pid}#0: reopening logs" in l for l in m.log_lines()) == 2,
                      5, f"worker {w.pid} reopened twice")
            assert not any("recvmsg() failed" in l for l in m.log_lines())
    finally:
        socket.setdefaulttimeout(old)


# How the two scripts below start, each in a fresh interpreter: a cycle that
# logs into a buffer, and every descriptor taken (a real EMFILE) on demand.
_PRELUDE = r"""
import io, os, resource, sys
from ngxlab import cycle as cy
from ngxlab.core import ngx_log_t
buf = io.StringIO()
cycle = cy.ngx_cycle_t(log=ngx_log_t(buf))

def take_every_descriptor():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
    taken = []
    try:
        while True:
            taken.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        return taken
"""

# Where ctypes has not been imported: every descriptor taken, then what the
# master's loop and a process title do that loads ctypes (the first by
# --die-with-parent on the loop's first pass, the second when
# /proc/self/comm cannot be opened). A master whose spawns had failed for
# want of descriptors died of the import's EMFILE.
_NO_DESCRIPTOR_LEFT = _PRELUDE + r"""
from ngxlab.nginx import _DieWithParent
from ngxlab.setproctitle import ngx_setproctitle
assert "ctypes" not in sys.modules
hook = _DieWithParent(os.getppid())
taken = take_every_descriptor()
hook(cycle)
hook(cycle)                          # tried again, said once
ngx_setproctitle("worker process")   # the old name stays
alive_without = not hook.done
for fd in taken:
    os.close(fd)
hook(cycle)
print(alive_without, hook.done, "ctypes" in sys.modules)
print(buf.getvalue(), end="")
"""


# The slots file's json, imported by the master once it has forked: the
# standard library taken from under it (sys.path without it, as when its
# Python is replaced while it runs) gives a real ModuleNotFoundError, and no
# descriptor left a real EMFILE. The master used to die of the first.
_NO_JSON = _PRELUDE + r"""
import tempfile
from ngxlab import nginx
assert "json" not in sys.modules
d = tempfile.mkdtemp()
path = os.path.join(d, "ngxlab.slots")
stdlib, sys.path[:] = list(sys.path), [d]
sys.path_importer_cache.clear()
nginx.write_slots(cycle, path)
nginx.write_slots(cycle, path)          # tried again, said once
none = not os.listdir(d)
sys.path[:] = stdlib
taken = take_every_descriptor()
nginx.write_slots(cycle, path)
for fd in taken:
    os.close(fd)
none = none and not os.listdir(d)
nginx.write_slots(cycle, path)
print(none, os.listdir(d) == ["ngxlab.slots"], "json" in sys.modules)
print(buf.getvalue(), end="")
"""


def _fresh(script):
    """Run ``script`` in a fresh interpreter; its first line of output, and
    the log lines after it."""
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-c", script], capture_output=True,
                          text=True, timeout=50, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    first, *log = done.stdout.splitlines()
    return first, log


def test_a_master_that_cannot_import_json_lives_without_its_slots_file():
    first, log = _fresh(_NO_JSON)
    assert first == "True True True"
    assert [line.split("#0: ", 1)[1] for line in log] == [
        "import json failed (No module named 'json')",
        "import json failed (24: Too many open files)",
        "ngxlab.slots written again"], log
    assert [line.split("] ")[0].split()[-1] for line in log] == ["[alert", "[alert", "[notice"]


def test_a_master_with_no_descriptor_left_loads_ctypes_later_and_lives():
    first, log = _fresh(_NO_DESCRIPTOR_LEFT)
    assert first == "True True True"
    assert len(log) == 1 and log[0].endswith(
        "[alert] %s#0: loading ctypes for prctl(PR_SET_PDEATHSIG) failed "
        "(24: Too many open files)" % log[0].split("] ")[1].split("#")[0]), log
