"""What every runner shares: one vocabulary for ``Master``, ``MasterProcess`` and ``Nginx``.

The model is CPython's ``multiprocessing.popen_fork.Popen`` and
``popen_spawn_posix.Popen``: the backends override how a process is
launched and nothing else, so every caller sees the same ``poll``, ``wait``,
``terminate``. Here :class:`Runner` owns

- the processes it started, known by pid *and* start time (``lab.proc.Proc``),
  so that a recycled pid is never signalled, and the clean-up that runs
  even when the object is garbage collected or the interpreter exits;
- the stop: QUIT, then TERM, then SIGKILL after deadlines (:data:`STOP`),
  SIGKILL for any worker still alive afterwards, then reaping;
- waiting: :meth:`Runner.wait_mesh` (every worker holds its full channel
  set), :meth:`Runner.wait_exit`, :meth:`Runner.wait_log`,
  :meth:`Runner.wait_for`;
- looking: ``slots``, ``workers``, ``master_pid``, :meth:`Runner.census`,
  the error log;
- acting: :meth:`Runner.signal` (the words of ``nginx -s``),
  :meth:`Runner.send_signal`, :meth:`Runner.kill_worker`;
- tracing: ``strace=True`` runs the program under ``strace -f``
  (:func:`strace_command`), read back with :meth:`Runner.strace_text`.

A runner says only how it launches (``_launch``) and how it learns its
slots (``_table``). The vocabulary, the same on all three and on
:class:`ngxlab.lab.census.Census`:

``slots``       ``{slot: worker pid}``, the master's process table
``workers``     ``[Worker(slot, pid, channel, ...)]`` in slot order
``worker_pids`` the workers' pids in slot order
``master_pid``  the master's pid (for ``Master``, this process)
``n``           how many workers were asked for
``wait_mesh(n=None, timeout=...)``  wait for the full mesh; returns the census
``kill_worker(slot, signum=SIGKILL)``  returns the victim's pid

Not a mirror of nginx: nothing here has an ``ngx_`` name.
"""

from __future__ import annotations

import os
import re
import shutil
import signal as _signal
import socket
import subprocess
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ngxlab.lab import proc
from ngxlab.lab.census import Census, CensusError, census_master
from ngxlab.lab.proc import Proc

__all__ = [
    "Runner", "RunnerError", "RunnerTimeout", "Worker", "SIGNALS", "STOP",
    "STRACE_SYSCALLS", "strace_command", "strace_available", "free_port", "ngxlab_env",
    "wait_gone",
]

SIGNALS = {  # the words of ``nginx -s`` and the signal each sends to the master
    "stop": _signal.SIGTERM,
    "quit": _signal.SIGQUIT,
    "reopen": _signal.SIGUSR1,
    "reload": _signal.SIGHUP,
}

# The stop: (signal, how long to wait for it); None takes the caller's deadline.
STOP = ((_signal.SIGQUIT, None), (_signal.SIGTERM, None), (_signal.SIGKILL, 2.0))

# Signals after which a worker is gone (and, unless it was asked to quit,
# respawned into its slot by its master).
_ENDS = {_signal.SIGKILL, _signal.SIGTERM, _signal.SIGINT, _signal.SIGQUIT,
         _signal.SIGABRT, _signal.SIGSEGV}

STRACE_SYSCALLS = ("socketpair", "sendmsg", "recvmsg", "fork", "vfork", "clone", "clone3",
                   "kill", "tgkill", "close", "ioctl", "fcntl")


class RunnerError(RuntimeError):
    """A runner could not do what was asked (the message ends with the log's tail)."""


class RunnerTimeout(RunnerError, TimeoutError):
    """A wait ran past its deadline."""


@dataclass(frozen=True)
class Worker:
    """One live slot of a master's table. ``channel`` is the master's
    descriptor numbers of the pair (``channel[0]``, ``channel[1]``); the
    flags are those of ``ngx_process_t``. What a runner cannot know is None
    (nginx's table is inside the master: ``Nginx`` knows slot and pid)."""

    slot: int
    pid: int
    channel: tuple[int, int] | None = None
    respawn: bool | None = None
    just_spawn: bool | None = None
    exiting: bool | None = None


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def strace_command(output: str | os.PathLike, *, strace: str = "strace",
                   syscalls=STRACE_SYSCALLS) -> list[str]:
    """The one strace command line of ngxlab, to put before a program: follow
    forks, epoch timestamps, every byte in hex (so that each 32-byte channel
    message decodes), SCM_RIGHTS descriptors, signals and exits, only the
    channel's system calls."""
    return [strace, "-f", "-ttt", "-xx", "-s", "64", "-q", "--seccomp-bpf",
            "-e", "trace=" + ",".join(syscalls), "-o", str(output), "--"]


def strace_available() -> tuple[str | None, str | None]:
    """(path, None) when strace can trace a child here, else (None, the reason)."""
    path = shutil.which("strace")
    if path is None:
        return None, "strace is not installed (apt-get install strace)"
    try:
        done = subprocess.run([path, "-f", "-o", os.devnull, "true"], capture_output=True,
                              text=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"strace cannot run here: {e}"
    if done.returncode != 0:
        return None, f"strace cannot trace here: {(done.stderr or done.stdout).strip()[-200:]}"
    return path, None


def ngxlab_env() -> dict[str, str]:
    """This environment, with the directory that holds ``ngxlab`` first on
    PYTHONPATH: a program started with ``python -m ngxlab`` imports the same
    ngxlab as this process (a notebook may import it from a checkout that
    is not installed)."""
    root = str(Path(__file__).resolve().parent.parent.parent)
    env = dict(os.environ)
    rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    env["PYTHONPATH"] = os.pathsep.join([root] + rest)
    return env


def wait_gone(procs, timeout: float, reap: Callable[[], Any] | None = None) -> bool:
    """Wait until none of ``procs`` (:class:`~ngxlab.lab.proc.Proc`) is alive;
    ``reap()`` is called on every poll (to collect one's own children).
    Returns False at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        if reap is not None:
            reap()
        if not any(p.alive() for p in procs):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)


def _descendants(pid: int) -> list[Proc]:
    out, todo = [], [pid]
    while todo:
        for k in proc.children(todo.pop()) or []:
            ref = Proc.of(k)
            if ref is not None:
                out.append(ref)
                todo.append(k)
    return out


@dataclass
class _Guard:
    """Everything a runner must stop, kept apart from the runner so that
    ``weakref.finalize`` can run it after the runner is gone."""

    popen: subprocess.Popen | None = None        # what this process started (master, keeper, strace)
    helpers: list = field(default_factory=list)  # other Popen to end with it (a watchdog)
    masters: list = field(default_factory=list)  # Proc, in the order seen
    workers: set = field(default_factory=set)    # Proc of every child of a master ever seen
    master_title: str | None = None              # a child with this comm is a master (a new binary)
    tmpdir: tempfile.TemporaryDirectory | None = None

    def note(self, master: Proc | None = None) -> None:
        """Remember ``master`` and every child of every master seen."""
        if master is not None and master not in self.masters:
            self.masters.append(master)
        for m in self.masters:          # grows while we walk it
            if not m.alive():
                continue
            for k in proc.children(m.pid) or []:
                ref = Proc.of(k)
                if ref is None or ref in self.masters:
                    continue
                if self.master_title and proc.comm(k) == self.master_title:
                    self.workers.discard(ref)
                    self.masters.append(ref)
                else:
                    self.workers.add(ref)

    def _reap(self) -> None:
        if self.popen is not None:
            self.popen.poll()           # our own child: not left a zombie

    def shutdown(self, quit_timeout: float, term_timeout: float) -> None:
        """:data:`STOP` to each master by pid, newest first; then SIGKILL the
        workers still alive; reap. Safe to call twice."""
        self.note()
        for m in reversed(self.masters):
            for signum, timeout in STOP:
                timeout = timeout or (quit_timeout if signum == _signal.SIGQUIT else term_timeout)
                self.note()
                if not m.kill(signum) or wait_gone([m], timeout, self._reap):
                    break
        self.finish(grace=0.5)

    def kill_now(self) -> None:
        """The finalizer's path: no grace periods."""
        self.note()
        for m in self.masters:
            m.kill(_signal.SIGKILL)
        self.finish(grace=0.0)

    def finish(self, grace: float) -> None:
        # workers a dead master left behind (nginx's do not watch their master)
        left = [w for w in self.workers if w.alive()]
        if left and not wait_gone(left, grace):
            for w in left:
                w.kill(_signal.SIGKILL)
            wait_gone(left, 2.0)
        for w in self.workers:          # our own children (lab.Master) are reaped here
            try:
                os.waitpid(w.pid, os.WNOHANG)
            except ChildProcessError:
                pass
        self.workers = {w for w in self.workers if w.alive()}
        p = self.popen
        if p is not None and p.returncode is None:
            try:
                p.wait(timeout=5.0)     # a keeper or strace exits once what is below it has
            except subprocess.TimeoutExpired:
                stuck = _descendants(p.pid)
                for ref in stuck:
                    ref.kill(_signal.SIGKILL)
                wait_gone(stuck, 2.0)
                try:
                    p.wait(timeout=2.0)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=5.0)
        for h in self.helpers:
            if h.poll() is None:
                h.kill()
            h.wait(timeout=5.0)
        self.helpers = []
        if self.tmpdir is not None:
            self.tmpdir.cleanup()
            self.tmpdir = None


class Runner:
    """A master and its workers that this process started. A context manager.

    ``n``: how many workers (1 to 1024). ``prefix``: the directory for the
    configuration and the logs (a temporary one, removed by :meth:`stop`,
    when None). ``strace``: True, or a path, to run the program under
    ``strace -f`` (:func:`strace_command`). ``start_timeout``: how long
    :meth:`start` waits for the full mesh.
    """

    Error: type = RunnerError
    Timeout: type = RunnerTimeout
    _tmp_prefix = "ngxlab-"

    def __init__(self, n: int = 4, *, prefix: str | os.PathLike | None = None,
                 strace: bool | str | os.PathLike | None = None, start_timeout: float = 15.0):
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 1024:
            raise ValueError(f"workers must be an int from 1 to 1024, not {n!r}")
        self.n = n
        self.start_timeout = float(start_timeout)
        self._guard = _Guard()
        self._finalizer = weakref.finalize(self, self._guard.kill_now)
        self._prefix_arg = prefix
        self._prefix: Path | None = None
        self._strace = strace
        self._strace_bin = None
        if strace:
            self._strace_bin, why = strace_available()
            if self._strace_bin is None:
                raise self._not_found(why)
        self._strace_saved: str | None = None
        self._master: Proc | None = None
        self.launched_at: float | None = None   # time.perf_counter() just before the program started
        self._retired: set[int] = set()     # workers a reload or kill_worker replaced
        self._started = False
        self._stopped = False
        self.returncode: int | None = None

    # -- what each runner says -------------------------------------------------

    def _launch(self) -> None:
        """Start the program; set ``self._master`` (and ``self._guard``)."""
        raise NotImplementedError

    def _table(self) -> list[Worker]:
        """The master's table as this runner knows it, in slot order."""
        raise NotImplementedError

    @property
    def log_path(self) -> Path:
        """The error log, shared by the master and its workers."""
        raise NotImplementedError

    def _not_found(self, why: str) -> Exception:
        return self.Error(why)

    # -- names -----------------------------------------------------------------

    @property
    def prefix(self) -> Path:
        if self._prefix is None:
            if self._prefix_arg is None:
                self._guard.tmpdir = tempfile.TemporaryDirectory(prefix=self._tmp_prefix)
                self._prefix = Path(self._guard.tmpdir.name)
            else:
                self._prefix = Path(self._prefix_arg).resolve()
                self._prefix.mkdir(parents=True, exist_ok=True)
        return self._prefix

    @property
    def master_pid(self) -> int:
        if self._master is None:
            raise self.Error("the master has not been started")
        return self._master.pid

    @property
    def running(self) -> bool:
        return self._master is not None and self._master.alive()

    @property
    def workers(self) -> list[Worker]:
        """The live slots of the master's table, in slot order."""
        return self._table()

    @property
    def slots(self) -> dict[int, int]:
        """``{slot: worker pid}``, the master's table now."""
        return {w.slot: w.pid for w in self._table()}

    @property
    def worker_pids(self) -> tuple[int, ...]:
        """The workers' pids, in slot order."""
        return tuple(w.pid for w in self._table())

    @property
    def strace_path(self) -> Path | None:
        """Where strace writes (None without ``strace``)."""
        if not self._strace:
            return None
        return (self.prefix / "strace.txt" if self._strace is True
                else Path(self._strace).resolve())

    def _command_prefix(self) -> list[str]:
        """strace's command line before the program's, when tracing."""
        if not self._strace:
            return []
        return strace_command(self.strace_path, strace=self._strace_bin)

    def __repr__(self) -> str:
        state = ("not started" if not self._started else "stopped" if self._stopped
                 else f"running, master {self._master.pid}" if self.running
                 else "starting" if self._master is None else "master gone")
        return f"<{type(self).__name__} n={self.n} {state}>"

    # -- life ------------------------------------------------------------------

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def launch(self):
        """Start the program and return as soon as its master is known (its
        pid file written), without waiting for the workers: what a
        measurement of the start-up needs (``launched_at`` is when the
        program was started). :meth:`start` is this, then :meth:`wait_mesh`."""
        if self._started:
            raise self.Error(f"this {type(self).__name__} was already started; make a new one")
        self._started = True
        try:
            self._launch()
        except BaseException:
            self.stop(quit_timeout=1.0, term_timeout=1.0)
            raise
        return self

    def start(self):
        """Launch, then wait until every worker holds its full channel set.
        Raises (with the log's tail), after stopping whatever was started,
        when that does not happen within ``start_timeout``."""
        self.launch()
        try:
            self.wait_mesh(self.n, timeout=self.start_timeout)
        except BaseException:
            self.stop(quit_timeout=1.0, term_timeout=1.0)
            raise
        return self

    def stop(self, *, quit_timeout: float = 5.0, term_timeout: float = 3.0) -> int | None:
        """QUIT, then TERM, then SIGKILL (by pid, after the deadlines) every
        master seen; SIGKILL any worker still alive; reap; keep the strace
        output; remove a temporary prefix. Returns the master's exit status
        when it is this process's child, else None. Idempotent."""
        if self._stopped:
            return self.returncode
        self._stopped = True
        try:
            self._shutdown(quit_timeout, term_timeout)
        finally:
            self._finalizer.detach()
            if self._strace and self._strace_saved is None:
                try:
                    self._strace_saved = self.strace_path.read_text()
                except OSError:
                    pass
            tmp, self._guard.tmpdir = self._guard.tmpdir, None
            if tmp is not None:
                tmp.cleanup()
        return self.returncode

    def _shutdown(self, quit_timeout: float, term_timeout: float) -> None:
        tmp, self._guard.tmpdir = self._guard.tmpdir, None      # removed by stop()
        self._guard.shutdown(quit_timeout, term_timeout)
        self._guard.tmpdir = tmp
        p = self._guard.popen
        if p is not None and self._master is not None and p.pid == self._master.pid:
            self.returncode = p.returncode

    def wait_exit(self, timeout: float = 10.0) -> int | None:
        """Wait until the master has exited (after quit or stop), and reap it.
        Returns its exit status when it is this process's child, else None."""
        self._guard.note()
        m = self._master
        if m is None:
            raise self.Error("the master has not been started")
        if not wait_gone([m], timeout, self._guard._reap):
            raise self.Timeout(f"master {m.pid} still running after {timeout} s" + self._hint())
        p = self._guard.popen
        if p is not None and p.pid == m.pid:
            self.returncode = p.wait(timeout=timeout)
            return self.returncode
        return None

    # -- acting ----------------------------------------------------------------

    def signal(self, name: str):
        """Send the master what ``nginx -s NAME`` sends: stop (TERM), quit
        (QUIT), reopen (USR1), reload (HUP)."""
        try:
            signum = SIGNALS[name]
        except KeyError:
            raise ValueError(f"unknown signal name {name!r}; use one of {sorted(SIGNALS)}") from None
        self.send_signal(signum)

    def send_signal(self, signum: int) -> None:
        """``kill(master, signum)``: any signal (USR2, WINCH, SIGKILL, ...)."""
        self._guard.note()
        if self._master is None or not self._master.alive():
            raise self.Error("the master is not running" + self._hint())
        self._note_signal(signum)
        if not self._master.kill(signum):
            raise self.Error("the master is not running" + self._hint())

    def _note_signal(self, signum: int) -> None:
        """Before ``signum`` goes to the master: a reload retires every worker."""
        if signum == _signal.SIGHUP:
            self._retired |= set(self.slots.values())

    def kill_worker(self, slot: int, signum: int = _signal.SIGKILL) -> int:
        """Send ``signum`` (SIGKILL by default) to the worker in ``slot``;
        returns its pid (the victim's). Its master respawns a worker that
        dies without being asked to, into the same slot: :meth:`wait_mesh`
        waits for that."""
        self._guard.note()
        slots = self.slots
        if slot not in slots:
            raise KeyError(f"no worker in slot {slot} (slots: {slots})")
        ref = Proc.of(slots[slot])
        if signum in _ENDS:
            self._retired.add(slots[slot])
        if ref is None or not ref.kill(signum):
            raise self.Error(f"the worker in slot {slot} is not running")
        return ref.pid

    # -- looking ---------------------------------------------------------------

    def census(self) -> Census:
        """The descriptor census of the master and its children, labelled
        with the master's slots."""
        master = self._master
        if master is None:
            raise self.Error("the master has not been started")
        self._guard.note()
        for _attempt in range(5):
            c = census_master(master.pid, slots=self.slots)
            if all(w.slot is not None for w in c.workers):
                return c
            # a child was forked between the table's look and the census: look again
        return c

    def wait_mesh(self, n: int | None = None, timeout: float = 10.0) -> Census:
        """Wait until the master's table holds exactly ``n`` workers (default:
        as many as started), none exiting, none that a reload or
        :meth:`kill_worker` retired, every child of the master one of them,
        and the census shows the full channel mesh (2n ends in the master,
        n in each worker), twice in a row with the same descriptors in every
        process (a worker still in its init, between its fork and its
        ``ngx_worker_process_init``, can already hold a full mesh's channel
        ends). Returns that census."""
        n = self.n if n is None else int(n)
        deadline = time.monotonic() + timeout
        last = "no table yet"
        previous = None
        while True:
            if not self.running:
                raise self.Error("the master is not running" + self._hint())
            ws = self._table()
            pids = {w.pid for w in ws}
            if len(ws) == n and not any(w.exiting for w in ws) and not pids & self._retired:
                try:
                    c = self.census()
                except CensusError as e:
                    c, last = None, str(e)
                if c is not None:
                    last = c.summary()
                    children = {p.pid for p in c.processes if p.role != "master"}
                    if c.is_full_mesh(n) and set(c.worker_pids) == pids \
                            and not children & self._retired:
                        seen = _descriptors(c)
                        if seen == previous:
                            self._retired.clear()
                            return c
                        previous = seen     # once more, soon: settled?
                    else:
                        previous = None
            elif ws:
                last = f"table: {sorted((w.slot, w.pid) for w in ws)}"
            if time.monotonic() >= deadline:
                raise self.Timeout(f"no full mesh of {n} workers within {timeout} s ({last})"
                                   + self._hint())
            time.sleep(0.01)

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0, *,
                 interval: float = 0.01, what: str | None = None) -> Any:
        """Call ``predicate()`` until it returns something true; return that.
        Raises the runner's timeout error (with the log's tail) after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise self.Timeout(f"{what or getattr(predicate, '__name__', 'condition')}"
                                   f" not true after {timeout} s" + self._hint())
            time.sleep(interval)

    # -- the error log ---------------------------------------------------------

    def log_lines(self, since: int = 0) -> list[str]:
        """The error log's lines (from byte ``since``)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(since)
                return f.read().decode(errors="replace").splitlines()
        except OSError:
            return []

    def log_offset(self) -> int:
        """The error log's size now, to pass as ``since``."""
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def wait_log(self, pattern: str, count: int = 1, *, since: int = 0,
                 timeout: float = 5.0) -> list[str]:
        """Wait until the error log, from byte ``since``, has ``count`` lines
        matching the regular expression ``pattern``; return them."""
        rx = re.compile(pattern)

        def hits():
            found = [line for line in self.log_lines(since) if rx.search(line)]
            return found if len(found) >= count else None

        return self.wait_for(hits, timeout, interval=0.005,
                             what=f"{count} log line(s) matching {pattern!r}")

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the error log and of the program's stderr."""
        text = self.log_lines()
        if self._prefix is not None:
            try:
                text += (self._prefix / self._stderr_name).read_text(
                    errors="replace").splitlines()
            except OSError:
                pass
        return "\n".join(text[-lines:])

    _stderr_name = "stderr.log"

    def read_pid(self, path: str | os.PathLike | None = None) -> int | None:
        """The pid in the pid file (or ``path``), or None (no file, no number)."""
        try:
            text = Path(path or self.pid_path).read_text().strip()
        except OSError:
            return None
        return int(text) if text.isascii() and text.isdigit() else None

    def follow(self, pid: int | None = None) -> int:
        """Follow another master from now on: ``pid``, or the one the pid
        file names (after a binary upgrade, USR2, the new one). The old one
        is still stopped by ``stop()``. Returns the pid."""
        if pid is None:
            pid = self.read_pid()
            if pid is None:
                raise self.Error(f"no pid in {self.pid_path}" + self._hint())
        ref = Proc.of(pid)
        if ref is None:
            raise self.Error(f"master {pid} is not running" + self._hint())
        self._guard.workers.discard(ref)     # seen as a child of the old master until now
        self._master = ref
        self._guard.note(ref)
        self._followed()
        return pid

    def _followed(self) -> None:
        """What a runner forgets when it follows a new master (nothing here)."""

    def _hint(self) -> str:
        tail = self.log_tail(12)
        return f"\n--- error log tail ---\n{tail}" if tail else ""

    # -- strace ----------------------------------------------------------------

    def use_strace(self, output: bool | str | os.PathLike = True) -> None:
        """Run the program under strace (before :meth:`start`); ``output``:
        True for ``strace.txt`` in the prefix, or a path."""
        if self._started:
            raise self.Error("strace must be asked for before start()")
        if not self._strace:
            self._strace_bin, why = strace_available()
            if self._strace_bin is None:
                raise self._not_found(why)
            self._strace = output

    def strace_text(self) -> str:
        """The strace output (also after :meth:`stop`, when the prefix was temporary)."""
        if not self._strace:
            raise self.Error(f"this {type(self).__name__} was not started with strace")
        if self._strace_saved is not None:
            return self._strace_saved
        return self.strace_path.read_text()


def _descriptors(c: Census) -> tuple:
    """What a census says each process holds: pid, descriptor, kind, inode."""
    return tuple(sorted((p.pid, tuple((f.fd, f.kind, f.inode) for f in p.fds))
                        for p in c.processes))
