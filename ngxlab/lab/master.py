"""Be nginx's master from a notebook cell or a script.

``Master`` spawns workers with the mirrors (``ngx_spawn_process`` then
``ngx_pass_open_channel`` for each, as ``ngx_start_worker_processes`` does),
so the calling process holds both ends of every channel, exactly as nginx's
master does, and the workers run ``ngx_worker_process_cycle``. It lets you
look at the mesh, write commands into channels, kill and respawn workers,
and it always tears everything down::

    from ngxlab.lab import Master

    with Master(workers=4) as m:
        print(m.census())          # 2N channel ends here, N in each worker
        m.kill(1)                  # SIGKILL; the slot is respawned
        m.reopen()                 # REOPEN to every worker

What differs from ``ngxlab run``: this process does not run the master
cycle (it does not take over your signals); the workers install nginx's
signal handlers themselves, so an interrupt in a notebook (SIGINT to the
process group) makes them exit quietly, and they watch this process with a
pidfd, so they exit when it dies. And a worker first closes every descriptor
it inherited that nginx's worker would not have (a notebook kernel holds
some sixty: ZMQ sockets, pipes, an epoll), so that the census of a worker
forked from a notebook shows what nginx's shows.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import tempfile
import time

from ngxlab import (
    _pending, channel as ngx_channel, connection, cycle as ngx_cycle, process,
    process_cycle as pc,
)
from ngxlab.core import NGX_OK, ngx_log_t

__all__ = ["Master", "Worker", "MasterError"]

_active = None


class MasterError(RuntimeError):
    """A Master could not do what it was asked (and says why)."""


@dataclasses.dataclass(frozen=True)
class Worker:
    """One live slot of the master's table."""
    slot: int
    pid: int
    channel: tuple[int, int]
    respawn: bool
    just_spawn: bool
    exiting: bool


def _reset_tables():
    """Put the process table and the flags back as at import, in place."""
    _pending.reset()            # the write queue's duplicated descriptors
    for p in process.ngx_processes:
        p.__init__()
    process.ngx_last_process = 0
    process.ngx_process_slot = 0
    process.ngx_channel = -1
    process.ngx_pid = os.getpid()
    process.ngx_parent = os.getppid()
    for flag in ("ngx_reap", "ngx_sigio", "ngx_sigalrm", "ngx_terminate",
                 "ngx_quit", "ngx_debug_quit", "ngx_exiting",
                 "ngx_reconfigure", "ngx_reopen", "ngx_change_binary",
                 "ngx_new_binary", "ngx_inherited", "ngx_daemonized",
                 "ngx_noaccept", "ngx_noaccepting", "ngx_restart"):
        setattr(pc, flag, 0)
    pc.ngx_process = pc.NGX_PROCESS_SINGLE
    pc.keep_inherited_channels = False
    pc.nginx_quirks = False
    del pc._received[:]
    del pc._table_observers[:]


def _close_foreign_descriptors(cycle):
    """Close what this process inherited that nginx's worker would not have:
    a notebook kernel has some sixty descriptors (ZMQ sockets, pipes,
    epoll), a test runner its own; nginx's master has only its log, its
    listening sockets and its channels."""
    keep = {0, 1, 2, cycle.log.fileno()}
    keep.update(ls.fd for ls in cycle.listening)
    for p in process.ngx_processes[:process.ngx_last_process]:
        if p.pid != -1:
            keep.update(p.channel)
    # this worker's own pair: its slot may be the one being appended
    keep.update(process.ngx_processes[process.ngx_process_slot].channel)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass        # the descriptor listdir itself used


def _lab_worker_process_cycle(cycle, data):
    _close_foreign_descriptors(cycle)
    # nginx's workers inherit the handlers main() installed; this process
    # installed none, so the worker does it before its cycle.
    process.ngx_init_signals(cycle.log)
    report = getattr(cycle, "_lab_report", None)
    if report is not None:
        pc._received.append(lambda ch: _report(report, ch))
    pc.ngx_worker_process_cycle(cycle, data)


def _report(path, ch):
    table = [[i, p.pid, p.channel[0]] for i, p in
             enumerate(process.ngx_processes) if p.pid not in (0, -1)]
    line = json.dumps({"pid": os.getpid(), "slot": process.ngx_process_slot,
                       "time": time.time(),
                       "message": [ch.command, ch.pid, ch.slot, ch.fd],
                       "table": table}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


class Master:
    """nginx's master, in this process. A context manager.

    ``workers``: how many to start (1 to 1024). ``listen``: ``None`` (no
    listening socket) or ``("127.0.0.1", port)``, port 0 for a free one; the
    workers then answer HTTP with their slot. ``log_path``: the shared error
    log (a temporary file by default; ``log_lines()`` reads it).
    ``watch_master``: workers exit when this process dies (nginx's don't).
    ``close_inherited``: ``False`` skips the closing in
    ``ngx_worker_process_init``, to measure what it saves. ``nginx_quirks``:
    workers read their channel as nginx does, leaks included. ``report``:
    every worker appends its view of the process table to a file after each
    message it reads (``worker_reports()``).
    """

    def __init__(self, workers=4, *, listen=None, log_path=None,
                 log_level="notice", watch_master=True, close_inherited=True,
                 nginx_quirks=False, report=False, start=True):
        if not isinstance(workers, int) or not 1 <= workers <= \
                process.NGX_MAX_PROCESSES:
            raise ValueError(f"workers must be an int from 1 to "
                             f"{process.NGX_MAX_PROCESSES}, not {workers!r}")
        if listen is not None and listen[0] != "127.0.0.1":
            raise ValueError("ngxlab listens on 127.0.0.1 only")
        self.n = workers
        self._listen = listen
        self._tmp = None
        if log_path is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="ngxlab-")
            log_path = os.path.join(self._tmp.name, "error.log")
        self.log_path = os.fspath(log_path)
        self._log_level = log_level
        self._watch = watch_master
        self._close_inherited = close_inherited
        self._quirks = nginx_quirks
        self.report_path = (os.path.join(os.path.dirname(self.log_path),
                                         "workers.jsonl") if report else None)
        self._start = start
        self.cycle = None
        self._old_sigio = None
        self._entered = False

    # -- life -------------------------------------------------------------

    def __enter__(self):
        global _active
        if _active is not None:
            raise MasterError("another Master is active in this process; "
                              "close it first (one process table per process)")
        _active = self
        self._entered = True
        try:
            _reset_tables()
            pc.keep_inherited_channels = not self._close_inherited
            pc.nginx_quirks = self._quirks
            # channel[0] gets FIOASYNC + F_SETOWN(this pid): SIGIO's default
            # action would end this process.
            self._old_sigio = signal.signal(signal.SIGIO, signal.SIG_IGN)
            log = ngx_log_t(self.log_path, self._log_level)
            ccf = ngx_cycle.ngx_core_conf_t(
                worker_processes=self.n, listen=self._listen,
                watch_master=int(self._watch))
            self.cycle = ngx_cycle.ngx_cycle_t(prefix=os.path.dirname(
                self.log_path), log=log, conf=ccf)
            self.cycle._lab_report = self.report_path
            ngx_cycle.ngx_cycle = self.cycle
            if self._listen is not None:
                connection.ngx_create_listening(self.cycle, self._listen)
                if connection.ngx_open_listening_sockets(self.cycle) != NGX_OK:
                    raise MasterError(f"cannot listen on "
                                      f"{self._listen[0]}:{self._listen[1]}: "
                                      f"{self.log_lines()[-1:]}")
            if self._start:
                self.start(self.n)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def start(self, n=None, respawn=process.NGX_PROCESS_RESPAWN):
        """Spawn ``n`` more workers, as ``ngx_start_worker_processes``."""
        self._require()
        for i in range(self.n if n is None else n):
            pid = process.ngx_spawn_process(
                self.cycle, _lab_worker_process_cycle, i, "worker process",
                respawn)
            if pid == process.NGX_INVALID_PID:
                raise MasterError("ngx_spawn_process failed: "
                                  + (self.log_lines()[-1:] or ["?"])[0])
            pc.ngx_pass_open_channel(self.cycle)

    def close(self, timeout=3.0):
        """TERMINATE every worker over its channel, SIGKILL what is left
        after ``timeout``, reap them all, close this side's channel ends and
        listening sockets, and restore the tables and SIGIO."""
        global _active
        if not self._entered:
            return
        try:
            live = [p for p in self._slots() if p.pid > 0]
            if live and self.cycle is not None:
                pc.ngx_terminate = 1
                pc.ngx_signal_worker_processes(self.cycle, signal.SIGTERM)
                self._wait_gone([p.pid for p in live], timeout)
                for p in live:
                    try:
                        os.kill(p.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                self._wait_gone([p.pid for p in live], timeout)
            for p in self._slots():
                if p.channel[0] > 2 and not p.detached:
                    ngx_channel.ngx_close_channel(p.channel, None)
                    p.channel[0] = p.channel[1] = -1
            if self.cycle is not None:
                connection.ngx_close_listening_sockets(self.cycle)
                self.cycle.log.close()
        finally:
            if self._old_sigio is not None:
                signal.signal(signal.SIGIO, self._old_sigio)
                self._old_sigio = None
            _reset_tables()
            ngx_cycle.ngx_cycle = None
            self._entered = False
            if _active is self:
                _active = None

    def cleanup(self):
        """Remove the temporary directory holding the log (after close)."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # -- looking ----------------------------------------------------------

    def _require(self):
        if not self._entered:
            raise MasterError("this Master is not running (use it in a "
                              "`with` block)")

    def _slots(self):
        return [p for p in process.ngx_processes[:process.ngx_last_process]
                if p.pid != -1]

    @property
    def workers(self) -> list[Worker]:
        """The live slots of the table, in slot order."""
        return [Worker(i, p.pid, tuple(p.channel), bool(p.respawn),
                       bool(p.just_spawn), bool(p.exiting))
                for i, p in enumerate(process.ngx_processes[
                    :process.ngx_last_process]) if p.pid > 0]

    def slots(self) -> dict[int, int]:
        """``{pid: slot}`` of the live workers (for the census)."""
        return {w.pid: w.slot for w in self.workers}

    def pid(self, slot) -> int:
        p = process.ngx_processes[slot]
        if p.pid <= 0:
            raise MasterError(f"slot {slot} is free")
        return p.pid

    def census(self):
        """The descriptor census of this process and its workers."""
        from ngxlab.lab.census import census
        _collect()          # a worker that exited is not censused as a zombie
        return census([os.getpid()] + [w.pid for w in self.workers
                                        if not _exited(w.pid)],
                      slots=self.slots(), channels=self.channels())

    def channels(self) -> dict[int, tuple[int, int]]:
        """``{slot: (channel[0], channel[1])}``, this process's descriptor
        numbers for each live worker's pair (orients the census)."""
        return {w.slot: w.channel for w in self.workers}

    def wait_mesh(self, timeout=5.0):
        """Wait until every worker holds its full channel set (N channel
        ends each, 2N here); return the census. Raises ``MasterError``."""
        deadline = time.monotonic() + timeout
        while True:
            c = self.census()
            if c.is_full_mesh(len(self.workers)):
                return c
            if time.monotonic() > deadline:
                raise MasterError(f"the mesh did not complete in {timeout} s:"
                                  f"\n{c}")
            time.sleep(0.01)

    def log_lines(self) -> list[str]:
        try:
            with open(self.log_path) as f:
                return f.read().splitlines()
        except OSError:
            return []

    def worker_reports(self) -> list[dict]:
        """What the workers reported after each message (``report=True``)."""
        if self.report_path is None:
            raise MasterError("start the Master with report=True")
        try:
            with open(self.report_path) as f:
                return [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            return []

    # -- acting -----------------------------------------------------------

    def send(self, slot, command, *, pid=0, about_slot=0, fd=-1,
             size=None) -> int:
        """Write one message into slot ``slot``'s ``channel[0]``; returns
        ``ngx_write_channel``'s code."""
        self._require()
        ch = ngx_channel.ngx_channel_t(command, pid, about_slot, fd)
        from ngxlab.core import sizeof
        return ngx_channel.ngx_write_channel(
            process.ngx_processes[slot].channel[0], ch,
            sizeof(ngx_channel.ngx_channel_t) if size is None else size,
            self.cycle.log)

    def signal_workers(self, signo):
        """``ngx_signal_worker_processes``: channel first, ``kill()`` after."""
        self._require()
        pc.ngx_signal_worker_processes(self.cycle, signo)

    def reopen(self):
        self.signal_workers(signal.SIGUSR1)

    def kill(self, slot, signo=signal.SIGKILL, *, respawn=True, timeout=5.0):
        """Send ``signo`` to the worker in ``slot`` and, once it is dead,
        reap it as the master does (CLOSE_CHANNEL to the others, respawn into
        the same slot, OPEN_CHANNEL). Returns the new pid (or None)."""
        self._require()
        old = self.pid(slot)
        os.kill(old, signo)
        self._wait_gone([old], timeout)
        if not respawn:
            process.ngx_processes[slot].respawn = 0
        pc.ngx_reap_children(self.cycle)
        p = process.ngx_processes[slot]
        return p.pid if p.pid > 0 and p.pid != old else None

    def quit(self, timeout=5.0):
        """QUIT every worker over its channel and reap them (no respawn)."""
        self._require()
        pids = [w.pid for w in self.workers]
        pc.ngx_quit = 1
        pc.ngx_signal_worker_processes(self.cycle, signal.SIGQUIT)
        self._wait_gone(pids, timeout)
        pc.ngx_reap_children(self.cycle)
        pc.ngx_quit = 0

    def reap(self) -> bool:
        """Collect exited workers and run ``ngx_reap_children``; returns
        whether any child is alive."""
        self._require()
        _collect()
        return bool(pc.ngx_reap_children(self.cycle))

    def _wait_gone(self, pids, timeout):
        deadline = time.monotonic() + timeout
        pending = set(pids)
        while pending and time.monotonic() < deadline:
            _collect()
            pending = {pid for pid in pending if _alive_child(pid)}
            if pending:
                time.sleep(0.005)
        return not pending


def _collect():
    """``ngx_process_get_status`` for our own workers only: waitpid() each
    pid of the table instead of ``waitpid(-1)``, so that a notebook's or a
    test's other children are left to their owners."""
    from ngxlab.core import NGX_LOG_ALERT, NGX_LOG_NOTICE, ngx_log_error
    log = ngx_cycle.ngx_cycle.log if ngx_cycle.ngx_cycle else None
    _pending.flush(log)     # what a master's loop does on every pass
    for p in process.ngx_processes[:process.ngx_last_process]:
        if p.pid <= 0 or p.exited or p.detached:
            continue
        try:
            pid, status = os.waitpid(p.pid, os.WNOHANG)
        except ChildProcessError:
            continue
        if pid == 0:
            continue
        p.status = status
        p.exited = 1
        if os.WIFSIGNALED(status):
            ngx_log_error(NGX_LOG_ALERT, log, 0, "%s %d exited on signal %d",
                          p.name, pid, os.WTERMSIG(status))
        else:
            ngx_log_error(NGX_LOG_NOTICE, log, 0, "%s %d exited with code %d",
                          p.name, pid, os.WEXITSTATUS(status))
            if os.WEXITSTATUS(status) == 2 and p.respawn:
                ngx_log_error(NGX_LOG_ALERT, log, 0,
                              "%s %d exited with fatal code 2 and cannot be "
                              "respawned", p.name, pid)
                p.respawn = 0


def _exited(pid):
    return any(p.pid == pid and p.exited for p in
               process.ngx_processes[:process.ngx_last_process])


def _alive_child(pid):
    for p in process.ngx_processes[:process.ngx_last_process]:
        if p.pid == pid:
            return not p.exited
    return False
