"""The failure paths of spawning and respawning, live: what a failed
``socketpair()`` or ``fork()`` leaves behind, in ngxlab (its safe default and
``nginx_quirks``) and in a real nginx.

Every failure here is real: the descriptor limit is lowered until the next
``socketpair()`` cannot be made, or the process limit of an unprivileged
user (root is exempt from it) until ``fork()`` fails. The ngxlab runs happen
in a forked child (:func:`ngxlab.lab.fork.run_in_child`) that is nginx's
master (``lab.Master``), so the limits never touch the caller; the nginx runs
start nginx under ``prlimit`` or as the user ``nobody``, in a private prefix,
and are stopped by pid.

:func:`socketpair_failure`
    Three workers; then the master's descriptors run out and
    ``ngx_start_worker_processes`` tries two more. nginx announces
    ``ngx_process_slot`` after each failure, which still names the last worker
    spawned: every earlier worker receives its ``channel[0]`` again and keeps
    the copy it had (the table entry is overwritten, the descriptor never
    closed).
:func:`fork_failure`
    Two workers; the respawn of slot 1 fails in ``fork()``; then a new worker
    is started, whose ``socketpair()`` gets the numbers the failed respawn
    closed, and the master reaps again. nginx left those numbers in slot 1:
    the new worker closes its own ``channel[1]`` through slot 1's stale entry
    (its ``epoll_ctl()`` then fails and it exits with code 2), and the next
    reap closes the same numbers once more in the master.
:func:`nginx_socketpair_failure`
    nginx with ``worker_processes`` workers under ``prlimit --nofile=N``, N
    chosen so that some socketpairs succeed and the rest fail: the census of
    what its workers hold.
:func:`without_workers`
    A master none of whose forks succeeds (an unprivileged user with a
    process limit of 1), then QUIT and TERM: does it exit?
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SpawnFailure", "NoWorkers", "socketpair_failure", "fork_failure",
           "nginx_socketpair_failure", "without_workers", "limit_leaving"]

NOBODY = 65534


@dataclass(frozen=True)
class SpawnFailure:
    """What a run left: the channel ends each worker holds (``slot:end``
    labels, ``{slot: (...)}``), the census table, the master's and workers'
    log lines (without their date), and notes particular to the run."""

    system: str
    what: str
    ends: dict
    table: str
    log: list
    notes: dict = field(default_factory=dict)

    def duplicates(self) -> dict:
        """``{slot: n}``: how many channel ends each worker holds twice or
        more (the leaked copies), where it holds any."""
        out = {}
        for slot, ends in self.ends.items():
            extra = len(ends) - len(set(ends))
            if extra:
                out[slot] = extra
        return out


@dataclass(frozen=True)
class NoWorkers:
    """A master without workers, asked to QUIT (then TERM)."""

    system: str
    fork_failures: int
    exited_on_quit: bool
    exited_on_term: bool
    quit_s: float | None          # QUIT to exit, when it exited
    log: list


def limit_leaving(free: int) -> int:
    """The ``RLIMIT_NOFILE`` value under which this process can open exactly
    ``free`` more descriptors (the limit bounds descriptor numbers: every
    free number below it counts, holes in the table included)."""
    import fcntl
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            fcntl.fcntl(int(name), fcntl.F_GETFD)      # not the listing's own, closed by now
            fds.add(int(name))
        except OSError:
            pass
    limit = 0
    while limit - sum(1 for f in fds if f < limit) < free:
        limit += 1
    return limit


def _undated(lines):
    """Log lines without their date and time ("[alert] 123#0: ...")."""
    return [line.split(" ", 2)[2] if line.count(" ") >= 2 else line for line in lines]


def _become_nobody():
    """In a child: the unprivileged user nobody (RLIMIT_NPROC binds it; root
    is exempt), still allowed to read its own children's /proc entries."""
    if os.getuid() == 0:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)          # PR_SET_DUMPABLE, 1


# -- ngxlab, in a forked child ---------------------------------------------


def _socketpair_failure(quirks: bool, workers: int, more: int) -> SpawnFailure:
    from ngxlab import process, process_cycle as pc
    from ngxlab.lab.master import Master
    with Master(workers=workers, nginx_quirks=quirks) as m:
        m.wait_mesh()
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit_leaving(1), hard))
        try:
            pc.ngx_start_worker_processes(m.cycle, more, process.NGX_PROCESS_RESPAWN)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        time.sleep(0.3)                 # let the workers read what was sent
        c = m.census()
        result = SpawnFailure(
            system="ngxlab --nginx-quirks" if quirks else "ngxlab", what="socketpair",
            ends={w.slot: w.channel_ends for w in c.workers}, table=c.table(),
            log=_undated(m.log_lines()))
    m.cleanup()
    return result


def socketpair_failure(quirks: bool = False, workers: int = 3, more: int = 2) -> SpawnFailure:
    """``workers`` workers, then ``more`` spawns with no descriptor left for
    their ``socketpair()`` (see the module's docstring)."""
    from ngxlab.lab.fork import run_in_child
    return run_in_child(_socketpair_failure, quirks, workers, more, timeout=60).check().value


def _fork_failure(quirks: bool) -> SpawnFailure:
    from ngxlab import process
    from ngxlab.lab.master import Master
    _become_nobody()
    with Master(workers=2, nginx_quirks=quirks) as m:
        m.wait_mesh()
        soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
        resource.setrlimit(resource.RLIMIT_NPROC, (1, hard))
        try:
            m.kill_worker(1)            # reaped; the respawn's fork() fails
        finally:
            resource.setrlimit(resource.RLIMIT_NPROC, (soft, hard))
        stale = list(process.ngx_processes[1].channel)
        m.spawn(1)                      # a new worker, in slot 2
        new = list(process.ngx_processes[2].channel)
        time.sleep(0.5)
        m.reap()                        # the failed respawn is retried
        time.sleep(0.5)
        m.reap()
        try:
            c = m.wait_mesh(timeout=5)
        except Exception:
            c = m.census()
        result = SpawnFailure(
            system="ngxlab --nginx-quirks" if quirks else "ngxlab", what="fork",
            ends={w.slot: w.channel_ends for w in c.workers}, table=c.table(),
            log=_undated(m.log_lines()),
            notes={"stale": stale, "new_pair": new,
                   "slots": sorted(w.slot for w in m.workers),
                   "full mesh": c.is_full_mesh(len(m.workers))})
    m.cleanup()
    return result


def fork_failure(quirks: bool = False) -> SpawnFailure:
    """A respawn whose ``fork()`` fails, then a new worker and another reap
    (see the module's docstring). Runs in a child that becomes ``nobody``."""
    from ngxlab.lab.fork import run_in_child
    return run_in_child(_fork_failure, quirks, timeout=60).check().value


# -- nginx, under a limit ------------------------------------------------------


def _nginx_files(workers: int, extra_conf: str = ""):
    """A private prefix with lab.Nginx's configuration for ``workers``
    workers; returns (prefix, command, tmpdir)."""
    from ngxlab.lab.runner import free_port
    from ngxlab.lab.nginx import Nginx
    tmp = tempfile.TemporaryDirectory(prefix="ngxlab-failpaths-")
    prefix = Path(tmp.name)
    n = Nginx(workers=workers, prefix=prefix, port=free_port())
    (prefix / "temp").mkdir(exist_ok=True)
    text = n.config_text()
    if extra_conf:
        text = text.replace("master_process on;\n", "master_process on;\n" + extra_conf)
    (prefix / "nginx.conf").write_text(text)
    return prefix, n.command(), tmp


def _stop(p: subprocess.Popen, master: int | None) -> None:
    """QUIT, TERM, SIGKILL the master, then SIGKILL whatever children are
    left (nginx's workers outlive a killed master), and reap."""
    from ngxlab.lab.census import CensusError, children_of
    kids = []
    if master is not None:
        try:
            kids = children_of(master)
        except CensusError:
            pass
    for signum in (signal.SIGQUIT, signal.SIGTERM, signal.SIGKILL):
        if p.poll() is not None:
            break
        try:
            p.send_signal(signum)
            p.wait(3)
        except subprocess.TimeoutExpired:
            continue
    for k in kids:
        try:
            os.kill(k, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if p.poll() is None:
        p.kill()
    p.wait()


def nginx_socketpair_failure(workers: int = 6, nofile: int = 14,
                             settle: float = 1.0) -> SpawnFailure:
    """A real nginx with ``worker_processes workers`` under ``prlimit
    --nofile=NOFILE``: the master's socketpairs fail once its descriptors are
    used up. Returns the census of what its workers hold, and its log."""
    from ngxlab.lab.census import census_master
    prefix, command, tmp = _nginx_files(workers)
    with tmp:
        p = subprocess.Popen(["prlimit", f"--nofile={nofile}", "--", *command],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        try:
            time.sleep(settle)
            c = census_master(p.pid)
            log = (prefix / "error.log").read_text(errors="replace").splitlines()
            result = SpawnFailure(
                system="nginx", what="socketpair",
                ends={w.slot: w.channel_ends for w in c.workers}, table=c.table(),
                log=_undated(log), notes={"nofile": nofile, "worker_processes": workers})
        finally:
            _stop(p, p.pid)
    return result


def _ngxlab_without_workers(prefix: str, quirks: bool) -> None:
    from ngxlab import nginx
    # The master imports json once it has forked (for its slots file), and
    # this one becomes nobody after it started: import it while the
    # standard library can still be read (nobody may not, as when Python
    # lives in root's home)
    import json  # noqa: F401
    _become_nobody()
    resource.setrlimit(resource.RLIMIT_NPROC, (1, 1))
    nginx.main([sys.executable, "-m", "ngxlab", "run"], prefix, 2, die_with_parent=True,
               nginx_quirks=quirks)


def without_workers(system: str = "ngxlab", *, wait: float = 3.0) -> NoWorkers:
    """``system`` ("ngxlab", "ngxlab --nginx-quirks" or "nginx") started by
    an unprivileged user whose process limit is 1, so that every fork()
    fails; then QUIT, and TERM if it is still running after ``wait``
    seconds. Root is needed to switch users (and is exempt from the limit
    itself)."""
    if system not in ("ngxlab", "ngxlab --nginx-quirks", "nginx"):
        raise ValueError(f"unknown system {system!r}")
    if os.getuid() != 0:
        raise PermissionError("without_workers() switches to the user nobody: run it as root")
    tmp = tempfile.TemporaryDirectory(prefix="ngxlab-noworkers-")
    with tmp:
        prefix = Path(tmp.name)
        if system == "nginx":
            prefix, command, inner = _nginx_files(2)
            os.chmod(prefix, 0o777)
            os.chmod(prefix / "temp", 0o777)
            for line in ("user root;\n",):
                conf = prefix / "nginx.conf"
                conf.write_text(conf.read_text().replace(line, ""))
            log_path = prefix / "error.log"

            def limit():
                resource.setrlimit(resource.RLIMIT_NPROC, (1, 1))

            p = subprocess.Popen(command, user=NOBODY, group=NOBODY, extra_groups=[],
                                 preexec_fn=limit, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            pid, waiter = p.pid, p
        else:
            from ngxlab import _forking, nginx
            inner = None
            nginx.prepare_prefix(str(prefix))
            for d in (prefix, prefix / "logs", prefix / "conf"):
                os.chmod(d, 0o777)
            log_path = prefix / "logs" / "error.log"
            pid = _forking.fork()
            if pid == 0:
                _forking.run_child(_ngxlab_without_workers, str(prefix),
                                   system.endswith("--nginx-quirks"))
            waiter = None

        def exited(timeout):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if waiter is not None:
                    if waiter.poll() is not None:
                        return True
                elif os.waitpid(pid, os.WNOHANG)[0]:
                    return True
                time.sleep(0.01)
            return False

        def log():
            try:
                return log_path.read_text(errors="replace")
            except OSError:
                return ""

        try:
            deadline = time.monotonic() + 20
            while log().count("fork() failed") < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.2)
            t0 = time.perf_counter()
            os.kill(pid, signal.SIGQUIT)
            on_quit = exited(wait)
            quit_s = time.perf_counter() - t0 if on_quit else None
            on_term = False
            if not on_quit:
                os.kill(pid, signal.SIGTERM)
                on_term = exited(wait)
            text = log()
        finally:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if waiter is not None:
                waiter.wait()
            else:
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
            if inner is not None:
                inner.cleanup()
        return NoWorkers(system=system, fork_failures=text.count("fork() failed"),
                         exited_on_quit=on_quit, exited_on_term=on_term,
                         quit_s=None if quit_s is None else round(quit_s, 3),
                         log=_undated(text.splitlines()))
