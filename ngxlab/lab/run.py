"""Run ``ngxlab run`` as its own process and poke it like an operator pokes nginx.

``MasterProcess`` starts ``python -m ngxlab run ...`` (this interpreter), waits
until the master and all its workers are up *and* every worker holds its full
channel set, and then lets a notebook or a test do what one does to a running
nginx: send it signals (``signal("reload")`` runs ``ngxlab signal``, the
``nginx -s`` of ngxlab; ``send_signal()`` is ``kill``), look at its process
table (``slots()``), count its descriptors (``census()``), read its error log,
and send it HTTP requests (``get()``: each worker answers with its slot, pid
and configuration generation)::

    from ngxlab.lab import MasterProcess

    with MasterProcess(workers=4) as m:
        print(m.census())                 # 2N channel ends in the master, N in each worker
        m.signal("reload")
        m.wait_mesh()                     # the new generation, in slots 4-7
        print(m.get())                    # Answer(slot=4, pid=..., generation=2)

In the foreground (the default) the master runs with ``--die-with-parent``:
it is sent SIGTERM (a fast shutdown) when the process that started it dies,
so it never outlives the notebook or the test; it runs in a session of its
own, so interrupting a cell does not stop it. ``daemon=True`` runs it with
``--daemon``, as nginx runs with ``daemon on``, which a binary upgrade needs
(SIGUSR2 is ignored by a master whose parent is still the one it started
under); the daemon is then found through its pid file, and a small
watchdog process stops it if the process that started it dies without
stopping it.

Whatever happens, everything this object started is stopped by pid:
``stop()`` sends QUIT, then TERM, then SIGKILL after deadlines, to every
master it has seen (an upgrade makes two) and SIGKILLs any worker still
alive afterwards; the same runs, without the grace periods, when the object
is garbage collected or the interpreter exits. Processes are known by pid
*and* start time, so a recycled pid is never signalled.
"""

from __future__ import annotations

import json
import os
import re
import signal as _signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ngxlab.lab.census import Census, CensusError, census_master, children_of
from ngxlab.lab.master import Worker

__all__ = ["MasterProcess", "MasterProcessError", "MasterProcessTimeout", "Answer"]

PID_FILE = "logs/ngxlab.pid"
OLDPID_FILE = "logs/ngxlab.pid.oldbin"
SLOTS_FILE = "logs/ngxlab.slots"
SLOTS_FILE_OLDBIN = "ngxlab.slots.oldbin"    # an old master's, while a new binary runs
ERROR_LOG = "logs/error.log"
STDERR_LOG = "logs/stderr.log"

_ANSWER = re.compile(rb"slot (\d+) pid (\d+) generation (\d+)")


class MasterProcessError(RuntimeError):
    """The master failed to start, died, or did not do what was asked (the
    message ends with the tail of its error log)."""


class MasterProcessTimeout(MasterProcessError, TimeoutError):
    """A wait on the master ran past its deadline."""


@dataclass(frozen=True)
class Answer:
    """What a worker answered to ``GET /``."""
    slot: int
    pid: int
    generation: int


# -- processes known by (pid, start time) -------------------------------------


from ngxlab.lab._proc import Proc as _Proc  # noqa: E402


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _wait_gone(procs, timeout: float, popen: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if popen is not None:
            popen.poll()            # reap our own child, so that it is not a zombie
        if not any(p.alive() for p in procs):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)


@dataclass
class _Guard:
    """What must be stopped, apart from the MasterProcess object so that
    ``weakref.finalize`` can run it after the object is gone."""

    popen: subprocess.Popen | None = None
    watchdog: subprocess.Popen | None = None        # daemon mode: see _WATCHDOG
    masters: list = field(default_factory=list)      # _Proc, in the order seen
    workers: set = field(default_factory=set)        # _Proc of every child ever seen
    tmpdir: tempfile.TemporaryDirectory | None = None

    def note(self, master: "_Proc | None" = None) -> None:
        """Remember ``master`` and every child of every master seen; a child
        that is a master itself (a new binary, once it has its title, which
        it takes before it forks any worker) is remembered as a master."""
        if master is not None and master not in self.masters:
            self.masters.append(master)
        for m in self.masters:          # grows while we walk it
            if not m.alive():
                continue
            try:
                kids = children_of(m.pid)
            except CensusError:
                continue
            for k in kids:
                ref = _Proc.of(k)
                if ref is None or ref in self.masters:
                    continue
                if _comm(k) == "ngxlab: master":
                    self.workers.discard(ref)
                    self.masters.append(ref)
                else:
                    self.workers.add(ref)

    def shutdown(self, quit_timeout: float, term_timeout: float) -> None:
        """QUIT, TERM, SIGKILL each master by pid (newest first), then
        SIGKILL the workers still alive, then reap. Safe to call twice."""
        self.note()
        for m in reversed(self.masters):
            if not m.alive():
                continue
            for signum, timeout in ((_signal.SIGQUIT, quit_timeout),
                                    (_signal.SIGTERM, term_timeout),
                                    (_signal.SIGKILL, 2.0)):
                self.note()
                if not m.kill(signum) or _wait_gone([m], timeout, self.popen):
                    break
        self._finish(grace=0.5)

    def kill_now(self) -> None:
        """The finalizer's path: no grace periods."""
        self.note()
        for m in self.masters:
            m.kill(_signal.SIGKILL)
        self._finish(grace=0.0)

    def _finish(self, grace: float) -> None:
        left = [w for w in self.workers if w.alive()]
        if left and not _wait_gone(left, grace):
            for w in left:
                w.kill(_signal.SIGKILL)
            _wait_gone(left, 2.0)
        if self.popen is not None and self.popen.returncode is None:
            try:
                self.popen.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5.0)
        self.workers = {w for w in self.workers if w.alive()}
        if self.watchdog is not None:
            if self.watchdog.poll() is None:
                self.watchdog.kill()
            self.watchdog.wait(timeout=5.0)
            self.watchdog = None
        if self.tmpdir is not None:
            self.tmpdir.cleanup()
            self.tmpdir = None


# A daemon master is not this process's child and has no parent to die with:
# this watchdog, started beside it, waits on a pidfd of the process that
# started the MasterProcess (a notebook kernel, a test) and, if that process
# dies without stopping it, stops every ngxlab master named by the prefix's
# pid files (TERM, then SIGKILL) and any worker left in its slots files.
# stop() ends the watchdog itself.
_WATCHDOG = r"""
import json, os, select, signal, sys, time
parent, prefix = int(sys.argv[1]), sys.argv[2]
fd = os.pidfd_open(parent)
if os.getppid() == parent:
    select.select([fd], [], [])
def comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return ""
def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(") ", 1)[1][0] not in "ZX"
    except OSError:
        return False
logs = os.path.join(prefix, "logs")
masters = []
for name in ("ngxlab.pid", "ngxlab.pid.oldbin"):
    try:
        with open(os.path.join(logs, name)) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        continue
    if comm(pid) == "ngxlab: master":
        masters.append(pid)
workers = []
for name in ("ngxlab.slots", "ngxlab.slots.oldbin"):
    try:
        with open(os.path.join(logs, name)) as f:
            workers += [s["pid"] for s in json.load(f).get("slots", [])]
    except (OSError, ValueError):
        pass
for signum, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 1.0)):
    for pid in masters:
        if alive(pid):
            os.kill(pid, signum)
    end = time.monotonic() + wait
    while any(alive(p) for p in masters) and time.monotonic() < end:
        time.sleep(0.02)
for pid in workers:
    if alive(pid) and comm(pid) == "ngxlab: worker":
        os.kill(pid, signal.SIGKILL)
"""


def _env() -> dict[str, str]:
    """This environment, with the directory holding ``ngxlab`` first on
    PYTHONPATH (a notebook may import ngxlab from a checkout that is not
    installed)."""
    import ngxlab
    root = str(Path(ngxlab.__file__).resolve().parent.parent)
    env = dict(os.environ)
    path = [root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    env["PYTHONPATH"] = os.pathsep.join(path)
    return env


class MasterProcess:
    """``python -m ngxlab run`` as its own process. A context manager.

    ``workers``: how many (1 to 1024). ``prefix``: the directory for
    ``conf/`` and ``logs/`` (a temporary directory, removed by ``stop()``,
    when None). ``listen``: ``("127.0.0.1", port)``, port 0 for a free one
    (``port`` says which). ``daemon``: run with ``--daemon``.
    ``nginx_orphans``: workers outlive a killed master, as nginx's do.
    ``nginx_quirks``: nginx's behaviour where the mirrors' safe defaults
    differ (``ngxlab run --nginx-quirks``).
    ``log_level``: the error log's level. ``command_prefix``: a command to
    run ``python -m ngxlab run`` under (e.g. ``strace -f -o FILE --``); the
    master is then found by its pid file. ``start_timeout``: how long
    ``start()`` waits for the full mesh.
    """

    def __init__(self, workers: int = 4, *, prefix: str | os.PathLike | None = None,
                 listen: tuple[str, int] = ("127.0.0.1", 0), daemon: bool = False,
                 nginx_orphans: bool = False, nginx_quirks: bool = False,
                 log_level: str = "notice",
                 command_prefix: list[str] | tuple[str, ...] = (),
                 start_timeout: float = 15.0):
        if not isinstance(workers, int) or isinstance(workers, bool) or not 1 <= workers <= 1024:
            raise ValueError(f"workers must be an int from 1 to 1024, not {workers!r}")
        if listen[0] != "127.0.0.1":
            raise ValueError("ngxlab listens on 127.0.0.1 only")
        self.n = workers
        self.listen = (listen[0], int(listen[1]))
        self.daemon = bool(daemon)
        self.nginx_orphans = bool(nginx_orphans)
        self.nginx_quirks = bool(nginx_quirks)
        self.log_level = log_level
        self.command_prefix = list(command_prefix)
        self.start_timeout = float(start_timeout)
        self._guard = _Guard()
        self._finalizer = weakref.finalize(self, self._guard.kill_now)
        if prefix is None:
            self._guard.tmpdir = tempfile.TemporaryDirectory(prefix="ngxlab-run-")
            prefix = self._guard.tmpdir.name
        self._prefix = Path(prefix).resolve()
        self._master: _Proc | None = None
        self._port: int | None = None
        self._started = False
        self._stopped = False
        self.returncode: int | None = None

    # -- where things are ------------------------------------------------------

    @property
    def prefix(self) -> Path:
        return self._prefix

    @property
    def log_path(self) -> Path:
        """The error log, shared by the master and its workers."""
        return self._prefix / ERROR_LOG

    @property
    def pid_path(self) -> Path:
        return self._prefix / PID_FILE

    @property
    def oldpid_path(self) -> Path:
        return self._prefix / OLDPID_FILE

    @property
    def slots_path(self) -> Path:
        return self._prefix / SLOTS_FILE

    @property
    def pid(self) -> int:
        """The master this object follows (see ``follow()``)."""
        if self._master is None:
            raise MasterProcessError("the master has not been started")
        return self._master.pid

    @property
    def running(self) -> bool:
        return self._master is not None and self._master.alive()

    @property
    def port(self) -> int:
        """The port the workers accept on (it stays the same across reloads
        and binary upgrades: the listening socket is inherited)."""
        if self._port is not None:
            return self._port
        table = self.table()
        for text in (table or {}).get("listen", []):
            self._port = int(text.rsplit(":", 1)[1])
            return self._port
        if self.listen[1]:
            return self.listen[1]
        raise MasterProcessError("the master listens on no port (yet)" + self._hint())

    def command(self) -> list[str]:
        """The command line ``start()`` runs."""
        argv = [sys.executable, "-m", "ngxlab", "run", "--workers", str(self.n),
                "--prefix", str(self._prefix), "--listen", "%s:%d" % self.listen,
                "--log-level", self.log_level, "--quiet"]
        argv.append("--daemon" if self.daemon else "--die-with-parent")
        if self.nginx_orphans:
            argv.append("--nginx-orphans")
        if self.nginx_quirks:
            argv.append("--nginx-quirks")
        return self.command_prefix + argv

    def __repr__(self) -> str:
        state = ("not started" if not self._started else
                 "stopped" if self._stopped else
                 f"master {self._master.pid}" if self._master else "starting")
        return f"<MasterProcess workers={self.n} prefix={str(self._prefix)!r} {state}>"

    # -- life ------------------------------------------------------------------

    def __enter__(self) -> "MasterProcess":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "MasterProcess":
        """Start the master; wait until the pid file and ``logs/ngxlab.slots``
        name it, with N workers, and the census shows the full channel mesh.
        Raises ``MasterProcessError`` (with the log tail) and stops whatever
        was started when that does not happen within ``start_timeout``."""
        if self._started:
            raise MasterProcessError("this MasterProcess was already started; make a new one")
        self._started = True
        try:
            self._launch()
            self.wait_mesh(self.n, timeout=self.start_timeout)
        except BaseException:
            self.stop(quit_timeout=1.0, term_timeout=1.0)
            raise
        return self

    def _launch(self) -> None:
        logs = self._prefix / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for name in (PID_FILE, SLOTS_FILE, "logs/" + SLOTS_FILE_OLDBIN):
            try:
                (self._prefix / name).unlink()
            except FileNotFoundError:
                pass
        deadline = time.monotonic() + self.start_timeout
        with open(self._prefix / STDERR_LOG, "ab") as err:
            # a session of its own: interrupting a notebook cell (SIGINT to
            # the kernel's process group) must not stop the master, which
            # --die-with-parent ties to this process's life instead
            popen = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=err,
                                     stderr=err, close_fds=True, cwd=str(self._prefix),
                                     env=_env(), start_new_session=True)
        self._guard.popen = popen
        if self.daemon:
            self._guard.watchdog = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _WATCHDOG, str(os.getpid()),
                 str(self._prefix)], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                close_fds=True, start_new_session=True)
        if self.daemon and not self.command_prefix:
            try:
                rc = popen.wait(timeout=self.start_timeout)
            except subprocess.TimeoutExpired:
                raise MasterProcessTimeout("ngxlab run --daemon did not detach in time"
                                           + self._hint()) from None
            if rc != 0:
                raise MasterProcessError(f"ngxlab run --daemon exited with status {rc}"
                                         + self._hint())
        while True:
            pid = self.read_pid()
            if pid is not None:
                ref = _Proc.of(pid)
                if ref is not None and (self.daemon or self.command_prefix or pid == popen.pid):
                    self._master = ref
                    self._guard.note(ref)
                    return
            if popen.poll() is not None and not self.daemon:
                self.returncode = popen.returncode
                raise MasterProcessError(f"ngxlab run exited with status {popen.returncode} "
                                         f"during start-up" + self._hint())
            if time.monotonic() >= deadline:
                raise MasterProcessTimeout("ngxlab run wrote no pid file in time" + self._hint())
            time.sleep(0.005)

    def stop(self, *, quit_timeout: float = 5.0, term_timeout: float = 3.0) -> int | None:
        """QUIT, then TERM, then SIGKILL (by pid, after the deadlines) every
        master seen; SIGKILL any worker still alive; reap; remove the
        temporary prefix. Returns the master's exit status when it is this
        process's child (foreground), else None. Idempotent."""
        if self._stopped:
            return self.returncode
        self._stopped = True
        try:
            self._guard.shutdown(quit_timeout, term_timeout)
        finally:
            self._finalizer.detach()
        if self._guard.popen is not None and self._master is not None \
                and self._guard.popen.pid == self._master.pid:
            self.returncode = self._guard.popen.returncode
        return self.returncode

    def wait_exit(self, timeout: float = 10.0) -> int | None:
        """Wait until the followed master has exited (after quit or stop) and
        its workers with it; reap it. Returns its exit status when it is this
        process's child, else None."""
        self._guard.note()
        m = self._master
        if m is None:
            raise MasterProcessError("the master has not been started")
        if not _wait_gone([m], timeout, self._guard.popen):
            raise MasterProcessTimeout(f"master {m.pid} still running after {timeout} s"
                                       + self._hint())
        popen = self._guard.popen
        if popen is not None and popen.pid == m.pid:
            self.returncode = popen.wait(timeout=timeout)
            return self.returncode
        return None

    def follow(self, pid: int | None = None) -> int:
        """Follow another master from now on: ``pid``, or the one the pid file
        names (after a binary upgrade, the new one). The old one is still
        stopped by ``stop()``. Returns the pid."""
        if pid is None:
            pid = self.read_pid()
            if pid is None:
                raise MasterProcessError(f"no pid in {self.pid_path}" + self._hint())
        ref = _Proc.of(pid)
        if ref is None:
            raise MasterProcessError(f"master {pid} is not running" + self._hint())
        self._master = ref
        self._guard.note(ref)
        return pid

    # -- signals -----------------------------------------------------------------

    def signal(self, name: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
        """Run ``python -m ngxlab signal NAME --prefix PREFIX`` (stop, quit,
        reopen, reload: what ``nginx -s`` sends); returns the CompletedProcess
        (``returncode``, ``stdout``, ``stderr`` as text)."""
        self._guard.note()
        return subprocess.run([sys.executable, "-m", "ngxlab", "signal", name,
                               "--prefix", str(self._prefix)],
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, env=_env())

    def send_signal(self, signum: int) -> None:
        """``kill(pid, signum)`` to the followed master (any signal: USR2,
        WINCH, SIGKILL, ...)."""
        self._guard.note()
        if self._master is None or not self._master.kill(signum):
            raise MasterProcessError("the master is not running" + self._hint())

    def kill_worker(self, slot: int, signum: int = _signal.SIGKILL) -> int:
        """Send ``signum`` to the worker in ``slot``; returns its pid."""
        self._guard.note()
        slots = self.slots()
        if slot not in slots:
            raise KeyError(f"no worker in slot {slot} (slots: {slots})")
        ref = _Proc.of(slots[slot])
        if ref is None or not ref.kill(signum):
            raise MasterProcessError(f"the worker in slot {slot} is not running")
        return ref.pid

    # -- looking -----------------------------------------------------------------

    def read_pid(self, path: str | os.PathLike | None = None) -> int | None:
        """The pid in the pid file (or ``path``), or None."""
        try:
            text = Path(path or self.pid_path).read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def table(self) -> dict | None:
        """``logs/ngxlab.slots`` as written by the followed master (its process
        table: ``{"master", "generation", "listen", "slots": [...]}``), or None.
        An old master writes ``logs/ngxlab.slots.oldbin`` while a new binary
        runs."""
        for path in (self.slots_path, self.slots_path.with_name(SLOTS_FILE_OLDBIN)):
            try:
                with open(path) as f:
                    table = json.load(f)
            except (OSError, ValueError):
                continue
            if self._master is None or table.get("master") == self._master.pid:
                return table
        return None

    @property
    def workers(self) -> list[Worker]:
        """The live slots of the master's table, in slot order (exiting ones
        included, flagged)."""
        table = self.table() or {"slots": []}
        return [Worker(s["slot"], s["pid"], tuple(s["channel"]), bool(s["respawn"]),
                       bool(s["just_spawn"]), bool(s["exiting"]))
                for s in sorted(table["slots"], key=lambda s: s["slot"])
                if not s["detached"]]

    def slots(self) -> dict[int, int]:
        """``{slot: pid}`` of the workers in the master's table."""
        return {w.slot: w.pid for w in self.workers}

    @property
    def generation(self) -> int | None:
        table = self.table()
        return None if table is None else table.get("generation")

    def census(self) -> Census:
        """The descriptor census of the master and its children, slots from
        its table."""
        if self._master is None:
            raise MasterProcessError("the master has not been started")
        self._guard.note()
        return census_master(self._master.pid,
                             slots={pid: slot for slot, pid in self.slots().items()})

    def wait_mesh(self, n: int | None = None, timeout: float = 10.0) -> Census:
        """Wait until the master's table holds exactly ``n`` workers (default:
        as many as started), none exiting, all alive, and the census shows
        them with the full channel mesh (2n ends in the master, n in each).
        Returns that census."""
        n = self.n if n is None else n
        deadline = time.monotonic() + timeout
        last = "no table yet"
        while True:
            m = self._master
            if m is None or not m.alive():
                raise MasterProcessError("the master is not running" + self._hint())
            ws = self.workers
            pids = {w.pid for w in ws}
            if len(ws) == n and not any(w.exiting for w in ws) \
                    and all(_Proc.of(p) is not None for p in pids):
                try:
                    c = self.census()
                except CensusError as e:
                    c, last = None, str(e)
                if c is not None:
                    last = c.summary()
                    if c.is_full_mesh(n) and set(c.worker_pids) == pids:
                        return c
            elif ws:
                last = f"table: {sorted((w.slot, w.pid, w.exiting) for w in ws)}"
            if time.monotonic() >= deadline:
                raise MasterProcessTimeout(f"no full mesh of {n} workers within {timeout} s "
                                           f"({last})" + self._hint())
            time.sleep(0.01)

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0, *,
                 interval: float = 0.01, what: str | None = None) -> Any:
        """Call ``predicate()`` until it returns something true; return that.
        Raises ``MasterProcessTimeout`` (with the log tail) after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise MasterProcessTimeout(f"{what or getattr(predicate, '__name__', 'condition')}"
                                           f" not true after {timeout} s" + self._hint())
            time.sleep(interval)

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

        return self.wait_for(hits, timeout, what=f"{count} log line(s) matching {pattern!r}")

    def log_tail(self, lines: int = 20) -> str:
        text = self.log_lines()
        try:
            text += (self._prefix / STDERR_LOG).read_text(errors="replace").splitlines()
        except OSError:
            pass
        return "\n".join(text[-lines:])

    def _hint(self) -> str:
        tail = self.log_tail(12)
        return f"\n--- error log tail ---\n{tail}" if tail else ""

    # -- HTTP ----------------------------------------------------------------------

    def get(self, path: str = "/", timeout: float = 5.0) -> Answer:
        """One HTTP GET to 127.0.0.1:port; returns the worker's answer
        (slot, pid, generation). Raises ``OSError`` (``urllib.error.URLError``,
        ``ConnectionResetError``, ...) when the request fails."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://127.0.0.1:{self.port}{path}", timeout=timeout) as r:
            body = r.read()
        m = _ANSWER.search(body)
        if m is None:
            raise MasterProcessError(f"unexpected answer {body[:200]!r}")
        return Answer(int(m.group(1)), int(m.group(2)), int(m.group(3)))
