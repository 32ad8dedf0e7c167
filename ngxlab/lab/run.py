"""Run ``ngxlab run`` as its own process and poke it like an operator pokes nginx.

``MasterProcess`` starts ``python -m ngxlab run ...`` (this interpreter), waits
until the master and all its workers are up *and* every worker holds its full
channel set, and then lets a notebook or a test do what one does to a running
nginx: send it signals (``signal("reload")`` runs ``ngxlab signal``, the
``nginx -s`` of ngxlab; ``send_signal()`` is ``kill``), look at its process
table (``slots``), count its descriptors (``census()``), read its error log,
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

Whatever happens, everything this object started is stopped by pid, as
every runner stops (:class:`ngxlab.lab.runner.Runner`): QUIT, then TERM,
then SIGKILL to every master it has seen (an upgrade makes two), SIGKILL to
any worker still alive afterwards; the same, without the grace periods,
when the object is garbage collected or the interpreter exits.

The master's table is read from ``logs/ngxlab.slots``, which ``ngxlab run``
rewrites whenever the table changes; :data:`SLOTS_PATH` and
:func:`read_table` are the one name and the one reader of that file.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ngxlab.cycle import NGX_ERROR_LOG_PATH, NGX_OLDPID_EXT, NGX_PID_PATH, pidfile_owner
from ngxlab.lab import proc
from ngxlab.lab.proc import Proc
from ngxlab.lab.runner import SIGNALS, Runner, RunnerError, RunnerTimeout, Worker, ngxlab_env

__all__ = ["MasterProcess", "MasterProcessError", "MasterProcessTimeout", "Answer",
           "SLOTS_PATH", "read_table", "FloorProcess"]

SLOTS_PATH = "logs/ngxlab.slots"     # ngxlab's, not nginx's: the master's process table
STDERR_LOG = "logs/stderr.log"

_ANSWER = re.compile(rb"slot (\d+) pid (\d+) generation (\d+)")


def read_table(prefix: str | os.PathLike, master: int | None = None) -> dict | None:
    """The process table an ngxlab master wrote under ``prefix``:
    ``{"master", "generation", "listen", "slots": [{"slot", "pid", "channel",
    "respawn", "just_spawn", "detached", "exiting"}, ...]}``, or None. While
    a new binary runs, the old master writes ``logs/ngxlab.slots.oldbin``:
    with ``master``, the table that master wrote."""
    base = Path(prefix) / SLOTS_PATH
    for path in (base, base.with_name(base.name + NGX_OLDPID_EXT)):
        try:
            with open(path) as f:
                table = json.load(f)
        except (OSError, ValueError):
            continue
        if master is None or table.get("master") == master:
            return table
    return None


class MasterProcessError(RunnerError):
    """The master failed to start, died, or did not do what was asked (the
    message ends with the tail of its error log)."""


class MasterProcessTimeout(MasterProcessError, RunnerTimeout):
    """A wait on the master ran past its deadline."""


@dataclass(frozen=True)
class Answer:
    """What a worker answered to ``GET /``."""
    slot: int
    pid: int
    generation: int


# A daemon master is not this process's child and has no parent to die with:
# this watchdog, started beside it, waits on a pidfd of the process that
# started the MasterProcess (a notebook kernel, a test) and, if that process
# dies without stopping it, stops every ngxlab master named by the prefix's
# pid files (TERM, then SIGKILL) and any worker left in its slots files.
# stop() ends the watchdog itself. It runs in a bare interpreter (-I -S, no
# ngxlab import: it must start fast and outlive a broken environment), so it
# reads /proc itself; the file names come from here, as arguments.
_WATCHDOG = r"""
import json, os, select, signal, sys, time
parent, prefix, pid_path, slots_path, ext = int(sys.argv[1]), sys.argv[2], *sys.argv[3:6]
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
masters = []
for name in (pid_path, pid_path + ext):
    try:
        with open(os.path.join(prefix, name)) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        continue
    if comm(pid) == "ngxlab: master":
        masters.append(pid)
workers = []
for name in (slots_path, slots_path + ext):
    try:
        with open(os.path.join(prefix, name)) as f:
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



class MasterProcess(Runner):
    """``python -m ngxlab run`` as its own process. A context manager.

    ``workers``: how many (1 to 1024). ``prefix``: the directory for
    ``conf/`` and ``logs/`` (a temporary directory, removed by ``stop()``,
    when None). ``listen``: ``("127.0.0.1", port)``, port 0 for a free one
    (``port`` says which). ``daemon``: run with ``--daemon``.
    ``nginx_orphans``: workers outlive a killed master, as nginx's do.
    ``nginx_quirks``: nginx's behaviour where the mirrors' safe defaults
    differ (``ngxlab run --nginx-quirks``).
    ``log_level``: the error log's level. ``strace``: run it under ``strace
    -f`` (True, or the output's path); the master is then found by its pid
    file. ``start_timeout``: how long ``start()`` waits for the full mesh.
    """

    Error = MasterProcessError
    Timeout = MasterProcessTimeout
    _tmp_prefix = "ngxlab-run-"
    _stderr_name = STDERR_LOG

    def __init__(self, workers: int = 4, *, prefix: str | os.PathLike | None = None,
                 listen: tuple[str, int] = ("127.0.0.1", 0), daemon: bool = False,
                 nginx_orphans: bool = False, nginx_quirks: bool = False,
                 log_level: str = "notice",
                 strace: bool | str | os.PathLike | None = None,
                 start_timeout: float = 15.0):
        if listen[0] != "127.0.0.1":
            raise ValueError("ngxlab listens on 127.0.0.1 only")
        super().__init__(workers, prefix=prefix, strace=strace, start_timeout=start_timeout)
        self.listen = (listen[0], int(listen[1]))
        self.daemon = bool(daemon)
        self.nginx_orphans = bool(nginx_orphans)
        self.nginx_quirks = bool(nginx_quirks)
        self.log_level = log_level
        self._guard.master_title = "ngxlab: master"
        self._port: int | None = None
        self.prefix                        # made now: the paths below are known before start()

    # -- where things are ------------------------------------------------------

    @property
    def log_path(self) -> Path:
        return self.prefix / NGX_ERROR_LOG_PATH

    @property
    def pid_path(self) -> Path:
        return self.prefix / NGX_PID_PATH

    @property
    def oldpid_path(self) -> Path:
        return self.prefix / (NGX_PID_PATH + NGX_OLDPID_EXT)

    @property
    def slots_path(self) -> Path:
        return self.prefix / SLOTS_PATH

    @property
    def port(self) -> int:
        """The port the workers accept on (it stays the same across reloads
        and binary upgrades: the listening socket is inherited)."""
        if self._port is not None:
            return self._port
        for text in (self.table() or {}).get("listen", []):
            self._port = int(text.rsplit(":", 1)[1])
            return self._port
        if self.listen[1]:
            return self.listen[1]
        raise MasterProcessError("the master listens on no port (yet)" + self._hint())

    def command(self) -> list[str]:
        """The command line ``start()`` runs (strace's before it, when tracing)."""
        argv = [sys.executable, "-m", "ngxlab", "run", "--workers", str(self.n),
                "--prefix", str(self.prefix), "--listen", "%s:%d" % self.listen,
                "--log-level", self.log_level, "--quiet"]
        argv.append("--daemon" if self.daemon else "--die-with-parent")
        if self.nginx_orphans:
            argv.append("--nginx-orphans")
        if self.nginx_quirks:
            argv.append("--nginx-quirks")
        return self._command_prefix() + argv

    # -- how it launches --------------------------------------------------------

    def _launch(self) -> None:
        logs = self.prefix / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        # a stale pid file is removed (the wait below looks for a new one);
        # a live master's is not: `ngxlab run` refuses a busy prefix, and so
        # does this runner, before it starts anything
        try:
            owner = pidfile_owner(str(self.pid_path), str(self.prefix))
        except OSError as e:
            raise MasterProcessError(f"cannot use {self.pid_path}: {e.strerror}") from None
        if owner is not None:
            raise MasterProcessError(f"{self.pid_path} names master process {owner}, "
                                     "still running on this prefix: stop it first")
        for path in (self.pid_path, self.slots_path,
                     self.slots_path.with_name(self.slots_path.name + NGX_OLDPID_EXT)):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        deadline = time.monotonic() + self.start_timeout
        argv, env = self.command(), ngxlab_env()
        with open(self.prefix / STDERR_LOG, "ab") as err:
            self.launched_at = time.perf_counter()
            # a session of its own: interrupting a notebook cell (SIGINT to
            # the kernel's process group) must not stop the master, which
            # --die-with-parent ties to this process's life instead
            popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err,
                                     stderr=err, close_fds=True, cwd=str(self.prefix),
                                     env=env, start_new_session=True)
        self._guard.popen = popen
        if self.daemon:
            self._guard.helpers.append(subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _WATCHDOG, str(os.getpid()),
                 str(self.prefix), NGX_PID_PATH, SLOTS_PATH, NGX_OLDPID_EXT], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                close_fds=True, start_new_session=True))
        if self.daemon and not self._strace:
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
                ref = Proc.of(pid)
                if ref is not None and (self.daemon or self._strace or pid == popen.pid):
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

    # -- how it learns its slots ------------------------------------------------

    def table(self) -> dict | None:
        """``logs/ngxlab.slots`` as written by the followed master (see
        :func:`read_table`), or None."""
        return read_table(self.prefix, None if self._master is None else self._master.pid)

    def _table(self) -> list[Worker]:
        table = self.table() or {"slots": []}
        return [Worker(s["slot"], s["pid"], tuple(s["channel"]), bool(s["respawn"]),
                       bool(s["just_spawn"]), bool(s["exiting"]))
                for s in sorted(table["slots"], key=lambda s: s["slot"])
                if not s["detached"]]

    @property
    def generation(self) -> int | None:
        table = self.table()
        return None if table is None else table.get("generation")

    def signal(self, name: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
        """Run ``python -m ngxlab signal NAME --prefix PREFIX`` (stop, quit,
        reopen, reload: what ``nginx -s`` sends), as an operator would;
        returns the CompletedProcess (``returncode``, ``stdout``, ``stderr``)."""
        if name not in SIGNALS:
            raise ValueError(f"unknown signal name {name!r}; use one of {sorted(SIGNALS)}")
        self._guard.note()
        if self.running:
            self._note_signal(SIGNALS[name])
        return subprocess.run([sys.executable, "-m", "ngxlab", "signal", name,
                               "--prefix", str(self.prefix)],
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, env=ngxlab_env())

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


# -- the Python floor, started as ngxlab run is --------------------------------


class FloorProcess(Runner):
    """``python -m ngxlab.lab.floor --workers N --prefix DIR`` (see
    :mod:`ngxlab.lab.floor`) as a runner: started as ``MasterProcess``
    starts ``ngxlab run`` (the same interpreter, ``-m``, environment and
    session), known by its pid file (``logs/floor.pid``, written before its
    first fork); its slots are its children in the order they started (it
    never respawns)."""

    Error = RunnerError
    Timeout = RunnerTimeout
    _tmp_prefix = "ngxlab-floor-"
    _stderr_name = "logs/stderr.log"

    @property
    def log_path(self) -> Path:
        return self.prefix / "logs" / "error.log"      # the floor logs nothing

    @property
    def pid_path(self) -> Path:
        return self.prefix / "logs" / "floor.pid"

    def command(self) -> list[str]:
        return self._command_prefix() + [sys.executable, "-m", "ngxlab.lab.floor",
                                         "--workers", str(self.n), "--prefix", str(self.prefix),
                                         "--parent", str(os.getpid())]

    def _launch(self) -> None:
        (self.prefix / "logs").mkdir(parents=True, exist_ok=True)
        try:
            self.pid_path.unlink()
        except FileNotFoundError:
            pass
        argv, env = self.command(), ngxlab_env()
        with open(self.prefix / self._stderr_name, "ab") as err:
            self.launched_at = time.perf_counter()
            popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                     close_fds=True, cwd=str(self.prefix), env=env,
                                     start_new_session=True)
        self._guard.popen = popen
        deadline = time.monotonic() + self.start_timeout
        while True:
            pid = self.read_pid()
            # under strace, popen is strace and the floor is its child: the
            # pid file (removed above) names the floor
            ref = Proc.of(pid) if pid is not None and (pid == popen.pid or self._strace) \
                else None
            if ref is not None:
                self._master = ref
                self._guard.note(ref)
                return
            if popen.poll() is not None:
                self.returncode = popen.returncode
                raise self.Error(f"the floor exited with status {popen.returncode} during "
                                 f"start-up" + self._hint())
            if time.monotonic() >= deadline:
                raise self.Timeout("the floor wrote no pid file in time" + self._hint())
            time.sleep(0.005)

    def _table(self) -> list[Worker]:
        master = self._master
        if master is None or not master.alive():
            return []
        kids = [Proc.of(pid) for pid in proc.children(master.pid) or []]
        kids = sorted((k for k in kids if k is not None), key=lambda k: (k.start, k.pid))
        for k in kids:
            self._guard.workers.add(k)
        return [Worker(slot, k.pid) for slot, k in enumerate(kids)]
