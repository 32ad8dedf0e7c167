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
        m.kill_worker(1)           # SIGKILL; the slot is respawned
        m.signal("reopen")         # REOPEN to every worker

It is a :class:`ngxlab.lab.runner.Runner`, with the vocabulary of
``MasterProcess`` and ``Nginx``. The master is this process, so a signal
"to the master" is carried out at once, as the master's cycle would carry
it out (:meth:`Master.send_signal`), and the stop sends QUIT, TERM and
SIGKILL to the workers over their channels instead of to a master.

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

import json
import os
import signal
import time

from ngxlab import (
    _pending, channel, connection, cycle as cy, process,
    process_cycle as pc,
)
from ngxlab.core import NGX_LOG_ALERT, NGX_LOG_NOTICE, NGX_OK, ngx_log_error, ngx_log_t, sizeof
from ngxlab.lab.census import Census, census
from ngxlab.lab.proc import Proc
from ngxlab.lab.runner import _ENDS, STOP, Runner, RunnerError, RunnerTimeout, Worker

__all__ = ["Master", "Worker", "MasterError", "MasterTimeout"]

_active = None


class MasterError(RunnerError):
    """A Master could not do what it was asked (and says why)."""


class MasterTimeout(MasterError, RunnerTimeout):
    """A wait on the workers ran past its deadline."""


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
    pc._reset()                 # the flags, the process type, the observers


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


class Master(Runner):
    """nginx's master, in this process. A context manager.

    ``workers``: how many to start (1 to 1024). ``listen``: ``None`` (no
    listening socket) or ``("127.0.0.1", port)``, port 0 for a free one; the
    workers then answer HTTP with their slot. ``log_path``: the shared error
    log (a temporary file by default). ``watch_master``: workers exit when
    this process dies (nginx's don't). ``close_inherited``: ``False`` skips
    the closing in ``ngx_worker_process_init``, to measure what it saves.
    ``nginx_quirks``: workers read their channel as nginx does, leaks
    included. ``report``: every worker appends its view of the process
    table to a file after each message it reads (``worker_reports()``).
    ``start``: spawn the workers on entry (else call :meth:`spawn`).
    """

    Error = MasterError
    Timeout = MasterTimeout

    def __init__(self, workers=4, *, listen=None, log_path=None,
                 log_level="notice", watch_master=True, close_inherited=True,
                 nginx_quirks=False, report=False, start=True):
        if listen is not None and listen[0] != "127.0.0.1":
            raise ValueError("ngxlab listens on 127.0.0.1 only")
        super().__init__(workers, prefix=None if log_path is None
                         else os.path.dirname(os.fspath(log_path)) or ".")
        self._listen = listen
        self._log_path = (self.prefix / "error.log" if log_path is None
                          else os.path.abspath(os.fspath(log_path)))
        self._log_level = log_level
        self._watch = watch_master
        self._close_inherited = close_inherited
        self._quirks = nginx_quirks
        self.report_path = (os.path.join(os.path.dirname(self._log_path),
                                         "workers.jsonl") if report else None)
        self._spawn_on_start = start
        self.cycle = None
        self._old_sigio = None
        self._entered = False

    @property
    def log_path(self):
        return self._log_path

    # -- how it launches: this process becomes the master -----------------

    def start(self):
        """Become the master and spawn the workers (unless ``start=False``).
        Unlike the other runners it returns as soon as they are forked, so
        that a chapter can look at a mesh that is still growing (or, with
        ``close_inherited=False``, never becomes the full mesh):
        :meth:`Master.wait_mesh` waits for it."""
        return self.launch()

    def _launch(self):
        global _active
        if _active is not None:
            raise MasterError("another Master is active in this process; "
                              "close it first (one process table per process)")
        _active = self
        self._entered = True
        self._master = Proc.of(os.getpid())
        _reset_tables()
        pc.keep_inherited_channels = not self._close_inherited
        pc.nginx_quirks = self._quirks
        # channel[0] gets FIOASYNC + F_SETOWN(this pid): SIGIO's default
        # action would end this process.
        self._old_sigio = signal.signal(signal.SIGIO, signal.SIG_IGN)
        log = ngx_log_t(os.fspath(self.log_path), self._log_level)
        ccf = cy.ngx_core_conf_t(
            worker_processes=self.n, listen=self._listen,
            watch_master=int(self._watch))
        self.cycle = cy.ngx_cycle_t(prefix=os.path.dirname(
            os.fspath(self.log_path)), log=log, conf=ccf)
        self.cycle._lab_report = self.report_path
        cy.ngx_cycle = self.cycle
        if self._listen is not None:
            connection.ngx_create_listening(self.cycle, self._listen)
            if connection.ngx_open_listening_sockets(self.cycle) != NGX_OK:
                raise MasterError(f"cannot listen on "
                                  f"{self._listen[0]}:{self._listen[1]}: "
                                  f"{self.log_lines()[-1:]}")
        if self._spawn_on_start:
            self.spawn(self.n)

    def spawn(self, n=None, respawn=process.NGX_PROCESS_RESPAWN):
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
            self._guard.workers.add(Proc.of(pid) or Proc(pid, -1))

    def _shutdown(self, quit_timeout, term_timeout):
        """:data:`~ngxlab.lab.runner.STOP` to the workers, over their channels
        (QUIT, TERMINATE) and then by ``kill()``; reap them all, close this
        side's channel ends and listening sockets, and restore the tables
        and SIGIO."""
        global _active
        if not self._entered:
            return
        try:
            for signum, timeout in STOP:
                timeout = timeout or (quit_timeout if signum == signal.SIGQUIT
                                      else term_timeout)
                live = [p.pid for p in self._slots() if p.pid > 0]
                if not live or self.cycle is None:
                    break
                self._act(signum)
                if self._wait_gone(live, timeout):
                    break
            for p in self._slots():
                if p.channel[0] > 2 and not p.detached:
                    channel.ngx_close_channel(p.channel, None)
                    p.channel[0] = p.channel[1] = -1
            if self.cycle is not None:
                connection.ngx_close_listening_sockets(self.cycle)
                self.cycle.log.close()
        finally:
            if self._old_sigio is not None:
                signal.signal(signal.SIGIO, self._old_sigio)
                self._old_sigio = None
            _reset_tables()
            cy.ngx_cycle = None
            self._entered = False
            self._guard.workers = set()
            if _active is self:
                _active = None

    def close(self, timeout=3.0):
        """Stop (QUIT, TERM, SIGKILL with ``timeout`` each) and restore."""
        self.stop(quit_timeout=timeout, term_timeout=timeout)

    def cleanup(self):
        """Remove the temporary directory holding the log (after close)."""
        tmp, self._guard.tmpdir = self._guard.tmpdir, None
        if tmp is not None:
            tmp.cleanup()

    def stop(self, *, quit_timeout=5.0, term_timeout=3.0):
        # the log stays readable after the stop, until cleanup()
        tmp, self._guard.tmpdir = self._guard.tmpdir, None
        try:
            return super().stop(quit_timeout=quit_timeout, term_timeout=term_timeout)
        finally:
            self._guard.tmpdir = tmp

    stop.__doc__ = Runner.stop.__doc__

    # -- how it learns its slots: its own table ---------------------------

    def _require(self):
        if not self._entered:
            raise MasterError("this Master is not running (use it in a "
                              "`with` block)")

    @property
    def running(self):
        return self._entered

    def _slots(self):
        return [p for p in process.ngx_processes[:process.ngx_last_process]
                if p.pid != -1]

    def _table(self):
        return [Worker(i, p.pid, tuple(p.channel), bool(p.respawn),
                       bool(p.just_spawn), bool(p.exiting))
                for i, p in enumerate(process.ngx_processes[
                    :process.ngx_last_process]) if p.pid > 0]

    def census(self) -> Census:
        """The descriptor census of this process and its workers (only
        them: a notebook's or a test's other children are not censused)."""
        _collect()          # a worker that exited is not censused as a zombie
        ws = [w for w in self.workers if not _exited(w.pid)]
        return census([os.getpid()] + [w.pid for w in ws],
                      slots={w.slot: w.pid for w in ws},
                      channels={w.slot: w.channel for w in ws})

    def wait_mesh(self, n=None, timeout=5.0) -> Census:
        """As :meth:`ngxlab.lab.runner.Runner.wait_mesh`; ``n`` defaults to
        the workers the table holds now (this master's table changes only
        when this process spawns, kills or reaps)."""
        return super().wait_mesh(len(self.workers) if n is None else n, timeout)

    def worker_reports(self) -> list[dict]:
        """What the workers reported after each message (``report=True``)."""
        if self.report_path is None:
            raise MasterError("start the Master with report=True")
        try:
            with open(self.report_path) as f:
                # a worker may be writing its report as we read: a line
                # without its newline yet is not a report yet
                return [json.loads(line) for line in f
                        if line.endswith("\n") and line.strip()]
        except FileNotFoundError:
            return []

    # -- acting: this process is the master -------------------------------

    def send(self, slot, command, *, pid=0, about_slot=0, fd=-1,
             size=None) -> int:
        """Write one message into slot ``slot``'s ``channel[0]``; returns
        ``ngx_write_channel``'s code."""
        self._require()
        ch = channel.ngx_channel_t(command, pid, about_slot, fd)
        return channel.ngx_write_channel(
            process.ngx_processes[slot].channel[0], ch,
            sizeof(channel.ngx_channel_t) if size is None else size,
            self.cycle.log)

    def signal_workers(self, signo):
        """``ngx_signal_worker_processes``: channel first, ``kill()`` after."""
        self._require()
        pc.ngx_signal_worker_processes(self.cycle, signo)

    def send_signal(self, signum):
        """Act on ``signum`` as the master's cycle does, at once: USR1
        reopens (REOPEN to every worker), QUIT and TERM end the workers over
        their channels and reap them (no respawn), SIGKILL kills them.
        Others (HUP: there is no configuration to read again) raise
        :class:`MasterError`: use ``MasterProcess`` for them."""
        self._require()
        if signum not in (signal.SIGUSR1, signal.SIGQUIT, signal.SIGTERM, signal.SIGKILL):
            raise MasterError(f"an in-process Master does not act on "
                              f"{signal.Signals(signum).name}: run the master as "
                              f"its own process (MasterProcess)")
        if signum == signal.SIGUSR1:
            self.signal_workers(signal.SIGUSR1)
            return
        pids = [w.pid for w in self.workers]
        self._act(signum)
        if not self._wait_gone(pids, 5.0):
            raise MasterTimeout(f"workers still running 5 s after {signal.Signals(signum).name}"
                                + self._hint())
        pc.ngx_reap_children(self.cycle)
        pc.ngx_quit = pc.ngx_terminate = 0

    def _act(self, signum):
        if signum == signal.SIGKILL:
            for p in self._slots():
                if p.pid > 0:
                    try:
                        os.kill(p.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            return
        if signum == signal.SIGQUIT:
            pc.ngx_quit = 1
        else:
            pc.ngx_terminate = 1
        pc.ngx_signal_worker_processes(self.cycle, signum)

    def kill_worker(self, slot, signum=signal.SIGKILL, *, respawn=True, timeout=5.0):
        """Send ``signum`` to the worker in ``slot``; returns its pid (the
        victim's). A signal that ends it is followed, once it is dead, by
        what the master does on SIGCHLD: reap it, CLOSE_CHANNEL to the
        others, respawn into the same slot (unless ``respawn=False``),
        OPEN_CHANNEL; ``slots[slot]`` is then the new worker."""
        self._require()
        p = process.ngx_processes[slot] if 0 <= slot < process.ngx_last_process else None
        if p is None or p.pid <= 0:
            raise KeyError(f"no worker in slot {slot} (slots: {self.slots})")
        old = p.pid
        os.kill(old, signum)
        if signum in _ENDS:
            if not self._wait_gone([old], timeout):
                raise MasterTimeout(f"worker {old} still running {timeout} s after "
                                    f"{signal.Signals(signum).name}" + self._hint())
            if not respawn:
                p.respawn = 0
            pc.ngx_reap_children(self.cycle)
            for q in self._slots():
                if q.pid > 0:
                    self._guard.workers.add(Proc.of(q.pid) or Proc(q.pid, -1))
        return old

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

    def wait_exit(self, timeout=10.0):
        """Wait until every worker has exited (after ``signal("quit")``) and reap them."""
        if not self._wait_gone([w.pid for w in self.workers], timeout):
            raise MasterTimeout(f"workers still running after {timeout} s" + self._hint())
        if self._entered:
            pc.ngx_reap_children(self.cycle)


def _collect():
    """``ngx_process_get_status`` for our own workers only: waitpid() each
    pid of the table instead of ``waitpid(-1)``, so that a notebook's or a
    test's other children are left to their owners."""
    log = cy.ngx_cycle.log if cy.ngx_cycle else None
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
