"""Run a real nginx for experiments: start it, signal it, count its descriptors, stop it.

``Nginx`` writes a minimal configuration into a private prefix (a temporary
directory unless one is given), listens on 127.0.0.1 only, and starts nginx
with ``master_process on``.  Starting waits until the master and all workers
are up *and* every worker holds its full channel set, as the descriptor census
sees it (N channel descriptors per worker, 2N in the master).

    with Nginx(workers=4) as ngx:
        print(ngx.census())
        ngx.signal("reopen")
        ngx.kill_worker(1)
        ngx.wait_workers(4)

Every process it starts is stopped by pid: ``stop()`` sends QUIT, then TERM,
then SIGKILL after deadlines, and kills workers a killed master left behind.
nginx runs below a small keeper process, a child subreaper, so that a
daemonized master and orphaned workers are reaped too, and waiting for the
keeper waits for everything (strace included).  The same clean-up runs when
the object is garbage collected or the interpreter exits, so an experiment
that raises leaves no nginx running.

Slots.  nginx's slot table lives inside the master.  This class keeps a model
of it, following ``ngx_spawn_process``'s rule (a respawn reuses the dead
worker's slot; any other spawn takes the first free slot, so a reload's new
generation lands after the old one, in slots N..2N-1), and passes it to the
census.  With ``strace=True`` the decoded OPEN_CHANNEL messages carry nginx's
own slot numbers, which the tests compare with this model.
"""

from __future__ import annotations

import os
import re
import shutil
import signal as _signal
import subprocess
import sys
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from ngxlab.lab.census import Census, CensusError, census_master, children_of

__all__ = ["Nginx", "NginxError", "NginxNotFound", "NginxTimeout", "find_nginx", "nginx_version"]

_SIGNALS = {  # the words of ``nginx -s``
    "reload": _signal.SIGHUP,
    "reopen": _signal.SIGUSR1,
    "quit": _signal.SIGQUIT,
    "stop": _signal.SIGTERM,
}

STRACE_SYSCALLS = ("socketpair", "sendmsg", "recvmsg", "fork", "vfork", "clone", "clone3",
                   "kill", "tgkill", "close", "ioctl", "fcntl")


class NginxError(RuntimeError):
    """nginx failed to start, died, or did not do what was asked in time."""


class NginxNotFound(NginxError, FileNotFoundError):
    """No nginx binary (or no strace, when tracing was asked for)."""


class NginxTimeout(NginxError, TimeoutError):
    """A wait on nginx ran past its deadline."""


def find_nginx(binary: str | os.PathLike | None = None) -> str:
    """The nginx binary: ``binary`` if given, else ``nginx`` on PATH, else /usr/sbin/nginx."""
    if binary is not None:
        path = shutil.which(str(binary)) or (str(binary) if os.access(binary, os.X_OK) else None)
        if path is None:
            raise NginxNotFound(f"nginx binary {str(binary)!r} not found or not executable")
        return path
    for candidate in (shutil.which("nginx"), "/usr/sbin/nginx", "/usr/local/sbin/nginx",
                      "/usr/local/nginx/sbin/nginx"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise NginxNotFound("nginx not found: not on PATH and not in /usr/sbin "
                        "(on Debian or Ubuntu: apt-get install nginx-light, or nginx)")


def nginx_version(binary: str | os.PathLike | None = None) -> str:
    """The version nginx reports with ``-v``, e.g. ``"1.22.1"``."""
    out = subprocess.run([find_nginx(binary), "-v"], capture_output=True, text=True, timeout=10)
    m = re.search(r"nginx/(\S+)", out.stderr + out.stdout)
    if not m:
        raise NginxError(f"cannot read the version from {out.stderr.strip()!r}")
    return m.group(1)


# -- processes known by (pid, start time), so that a reused pid is never signalled --

from ngxlab.lab.proc import Proc as _Proc  # noqa: E402
from ngxlab.lab.runner import free_port as _free_port  # noqa: E402


def _wait_gone(procs, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if not any(p.alive() for p in procs):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


# nginx is started by this small keeper, which makes itself a child subreaper
# (prctl PR_SET_CHILD_SUBREAPER) and waits for every process below it: a daemonized
# master, or workers orphaned by a killed master, are reparented to it and reaped,
# instead of ending up as zombies under a PID 1 that may not reap them.  It exits
# when nothing is left below it, so waiting for it waits for nginx (and strace).
_KEEPER = r"""
import os, sys
try:
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
except Exception:
    pass
argv = sys.argv[1:]
pid = os.fork()
if pid == 0:
    try:
        os.execv(argv[0], argv)
    finally:
        os._exit(127)
code = 0
while True:
    try:
        done, status = os.waitpid(-1, 0)
    except ChildProcessError:
        break
    except InterruptedError:
        continue
    if done == pid:
        code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def _descendants(pid: int) -> list[_Proc]:
    out, todo = [], [pid]
    while todo:
        try:
            kids = children_of(todo.pop())
        except CensusError:
            continue
        for k in kids:
            ref = _Proc.of(k)
            if ref is not None:
                out.append(ref)
                todo.append(k)
    return out


@dataclass
class _Guard:
    """Everything that must be stopped, kept apart from the Nginx object so that
    ``weakref.finalize`` can run it after the object is gone."""

    keeper: subprocess.Popen | None = None          # the keeper, parent of nginx (or of strace)
    master: _Proc | None = None
    workers: set = field(default_factory=set)       # _Proc of every child ever seen
    tmpdir: tempfile.TemporaryDirectory | None = None

    def note_children(self) -> None:
        if self.master is not None and self.master.alive():
            try:
                kids = children_of(self.master.pid)
            except CensusError:
                return
            for k in kids:
                ref = _Proc.of(k)
                if ref is not None:
                    self.workers.add(ref)

    def shutdown(self, quit_timeout: float = 3.0, term_timeout: float = 2.0,
                 remove_prefix: bool = True) -> None:
        """QUIT, then TERM, then SIGKILL, by pid; then reap.  Safe to call twice."""
        self.note_children()
        master = self.master
        if master is not None and master.alive():
            if master.kill(_signal.SIGQUIT) and not _wait_gone([master], quit_timeout):
                if master.kill(_signal.SIGTERM) and not _wait_gone([master], term_timeout):
                    self.note_children()
                    master.kill(_signal.SIGKILL)
                    _wait_gone([master], 2.0)
        self._finish(remove_prefix)

    def kill_now(self) -> None:
        """The finalizer's path: no grace periods, SIGKILL everything still alive."""
        self.note_children()
        if self.master is not None:
            self.master.kill(_signal.SIGKILL)
        self._finish(True)

    def _finish(self, remove_prefix: bool) -> None:
        # workers a dead master left behind (nginx workers do not watch their master:
        # a SIGKILL of the master leaves them running)
        left = [w for w in self.workers if w.alive()]
        for w in left:
            w.kill(_signal.SIGKILL)
        _wait_gone(left, 2.0)
        keeper = self.keeper
        if keeper is not None and keeper.returncode is None:
            try:
                keeper.wait(timeout=5.0)     # strace, if any, exits once its tracees have
            except subprocess.TimeoutExpired:
                stuck = _descendants(keeper.pid)
                for ref in stuck:
                    ref.kill(_signal.SIGKILL)
                _wait_gone(stuck, 2.0)
                try:
                    keeper.wait(timeout=2.0)
                except subprocess.TimeoutExpired:
                    keeper.kill()
                    keeper.wait(timeout=5.0)
        self.workers = {w for w in self.workers if w.alive()}
        if remove_prefix and self.tmpdir is not None:
            self.tmpdir.cleanup()
            self.tmpdir = None


class Nginx:
    """A real nginx master with ``workers`` workers, in a private prefix, on 127.0.0.1.

    Parameters: ``workers`` (``worker_processes``); ``prefix`` (directory for the
    configuration, logs, pid file and temp paths; a temporary directory, removed
    at stop, if None); ``port`` (0 picks a free port); ``binary`` (default:
    :func:`find_nginx`); ``daemon`` (``daemon on``: nginx forks away and is
    tracked by its pid file); ``debug_log`` (``error_log ... debug``; Debian's
    nginx is built ``--with-debug``); ``strace`` (True, or a path: run nginx
    under ``strace -f`` recording the channel system calls, see
    :mod:`ngxlab.lab.trace`); ``user`` (the ``user`` directive; by default, when
    running as root, ``root``, so that workers keep the experimenter's identity
    and can reopen logs in the private prefix).
    """

    def __init__(self, workers: int = 4, *, prefix: str | os.PathLike | None = None, port: int = 0,
                 binary: str | os.PathLike | None = None, daemon: bool = False,
                 debug_log: bool = False, strace: bool | str | os.PathLike | None = None,
                 user: str | None = None, start_timeout: float = 10.0):
        if int(workers) < 1:
            raise ValueError("workers must be at least 1")
        self.workers = int(workers)
        self.binary = find_nginx(binary)
        self._prefix_arg = prefix
        self._port_arg = int(port)
        self.daemon = bool(daemon)
        self.debug_log = bool(debug_log)
        self._strace_arg = strace
        self.user = user
        self.start_timeout = float(start_timeout)
        self._strace_bin = None
        if strace:
            self._strace_bin = shutil.which("strace")
            if self._strace_bin is None:
                raise NginxNotFound("strace not found on PATH (apt-get install strace)")
        self._guard = _Guard()
        self._finalizer = weakref.finalize(self, self._guard.kill_now)
        self._prefix: Path | None = None
        self._port: int | None = self._port_arg or None
        self._strace_path: Path | None = None
        self._version: str | None = None
        self._started = False
        self._stopped = False
        # the slot-table model: slot -> pid
        self._slot_of: dict[int, int] = {}
        self._reload_reserved: set[int] | None = None
        self._expect_gone: set[int] = set()

    # -- properties --
    @property
    def prefix(self) -> Path:
        self._need_prefix()
        return self._prefix

    @property
    def port(self) -> int:
        if self._port is None:
            raise NginxError("nginx has not been started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def conf_path(self) -> Path:
        return self.prefix / "nginx.conf"

    @property
    def error_log_path(self) -> Path:
        return self.prefix / "error.log"

    @property
    def pid_path(self) -> Path:
        return self.prefix / "nginx.pid"

    @property
    def strace_path(self) -> Path | None:
        """Where strace writes (None without ``strace``)."""
        return self._strace_path

    @property
    def version(self) -> str:
        if self._version is None:
            self._version = nginx_version(self.binary)
        return self._version

    @property
    def master_pid(self) -> int:
        if self._guard.master is None:
            raise NginxError("nginx has not been started")
        return self._guard.master.pid

    @property
    def running(self) -> bool:
        return self._guard.master is not None and self._guard.master.alive()

    @property
    def slots(self) -> dict[int, int]:
        """``{slot: worker pid}`` as the model of nginx's table says, refreshed now."""
        self._refresh_slots()
        return dict(sorted(self._slot_of.items()))

    @property
    def worker_pids(self) -> tuple[int, ...]:
        """The live workers' pids, in slot order."""
        return tuple(self.slots.values())

    def __repr__(self) -> str:
        state = "running" if self.running else ("stopped" if self._stopped else "not started")
        master = f" master={self._guard.master.pid}" if self._guard.master else ""
        return f"<Nginx workers={self.workers} {state}{master} port={self._port}>"

    # -- configuration --
    def _need_prefix(self) -> None:
        if self._prefix is not None:
            return
        if self._prefix_arg is None:
            self._guard.tmpdir = tempfile.TemporaryDirectory(prefix="ngxlab-nginx-")
            self._prefix = Path(self._guard.tmpdir.name)
        else:
            self._prefix = Path(self._prefix_arg).resolve()
            self._prefix.mkdir(parents=True, exist_ok=True)

    def config_text(self) -> str:
        """The nginx.conf this instance writes."""
        p = self.prefix
        user = self.user
        if user is None and os.geteuid() == 0:
            user = "root"
        lines = []
        if user:
            lines.append(f"user {user};")
        lines += [
            f"worker_processes {self.workers};",
            "master_process on;",
            f"daemon {'on' if self.daemon else 'off'};",
            f"pid {p}/nginx.pid;",
            f"lock_file {p}/nginx.lock;",
            f"error_log {p}/error.log {'debug' if self.debug_log else 'notice'};",
            "events { worker_connections 64; }",
            "http {",
            "    access_log off;",
            "    default_type text/plain;",
            f"    client_body_temp_path {p}/temp/client_body;",
            f"    proxy_temp_path {p}/temp/proxy;",
            f"    fastcgi_temp_path {p}/temp/fastcgi;",
            f"    uwsgi_temp_path {p}/temp/uwsgi;",
            f"    scgi_temp_path {p}/temp/scgi;",
            "    server {",
            f"        listen 127.0.0.1:{self._port};",
            '        location / { return 200 "ok\\n"; }',
            "    }",
            "}",
        ]
        return "\n".join(lines) + "\n"

    def command(self) -> list[str]:
        """The nginx command line (without strace)."""
        p = self.prefix
        cmd = [self.binary, "-p", f"{p}/", "-c", str(self.conf_path)]
        if tuple(int(x) for x in re.findall(r"\d+", self.version)[:3]) >= (1, 19, 5):
            cmd += ["-e", str(self.error_log_path)]  # early errors go here, not to /var/log/nginx
        return cmd

    def strace_command(self, output: str | os.PathLike) -> list[str]:
        """The strace prefix used with ``strace=...``: follow forks, epoch timestamps,
        every byte in hex (so each 32-byte channel message is decodable), SCM_RIGHTS
        descriptors, signals and exits, only the channel-related system calls."""
        return [self._strace_bin or "strace", "-f", "-ttt", "-xx", "-s", "64", "-q",
                "--seccomp-bpf", "-e", "trace=" + ",".join(STRACE_SYSCALLS),
                "-o", str(output), "--"]

    # -- life cycle --
    def __enter__(self) -> "Nginx":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "Nginx":
        """Start nginx and wait until every worker holds its full channel set."""
        if self._started:
            raise NginxError("this Nginx was already started; make a new one")
        self._started = True
        self._need_prefix()
        for sub in ("temp",):
            (self.prefix / sub).mkdir(exist_ok=True)
        attempts = 3 if self._port_arg == 0 else 1
        for attempt in range(attempts):
            self._port = self._port_arg or _free_port()
            try:
                self._launch()
                self.wait_workers(self.workers, timeout=self.start_timeout)
                return self
            except NginxError as e:
                tail = self.error_log_tail()
                self._guard.shutdown(quit_timeout=1.0, term_timeout=1.0, remove_prefix=False)
                self._guard.keeper = self._guard.master = None
                self._guard.workers.clear()
                self._slot_of.clear()
                if "Address already in use" in tail and attempt + 1 < attempts:
                    continue
                self._stopped = True
                if self._guard.tmpdir is not None:
                    self._guard.tmpdir.cleanup()
                    self._guard.tmpdir = None
                raise NginxError(f"{e}\n--- error log tail ---\n{tail}") from None
        raise AssertionError("unreachable")

    def _launch(self) -> None:
        self.conf_path.write_text(self.config_text())
        for name in ("nginx.pid", "error.log"):
            try:
                (self.prefix / name).unlink()
            except FileNotFoundError:
                pass
        cmd = self.command()
        if self._strace_arg:
            out = (self.prefix / "strace.txt" if self._strace_arg is True
                   else Path(self._strace_arg).resolve())
            self._strace_path = out
            cmd = self.strace_command(out) + cmd
        with open(self.prefix / "stderr.log", "ab") as err:
            keeper = subprocess.Popen([sys.executable, "-I", "-S", "-c", _KEEPER, *cmd],
                                      stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                      close_fds=True, start_new_session=True)
        self._guard.keeper = keeper
        deadline = time.monotonic() + self.start_timeout
        master = None
        while master is None:
            pid = self._read_pid_file()
            if pid is not None:
                master = _Proc.of(pid)
                if master is not None:
                    break
            if keeper.poll() is not None:
                raise NginxError(f"nginx exited with status {keeper.returncode} during startup")
            if time.monotonic() >= deadline:
                raise NginxTimeout("nginx wrote no pid file in time")
            time.sleep(0.005)
        self._guard.master = master

    def _read_pid_file(self) -> int | None:
        try:
            text = self.pid_path.read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() else None

    def stop(self, *, quit_timeout: float = 3.0, term_timeout: float = 2.0) -> None:
        """Graceful stop: QUIT, then TERM, then SIGKILL (by pid, after the deadlines);
        reap, stop strace, and remove the temporary prefix.  Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._guard.shutdown(quit_timeout=quit_timeout, term_timeout=term_timeout,
                             remove_prefix=False)
        tmp = self._guard.tmpdir
        if self._strace_path is not None and tmp is not None:
            # the trace lives in the temporary prefix: read it now, before the prefix goes
            try:
                self._strace_text = self._strace_path.read_text()
            except OSError:
                self._strace_text = None
        if tmp is not None:
            self._guard.tmpdir = None
            tmp.cleanup()
        self._finalizer.detach()

    def strace_text(self) -> str:
        """The strace output (also after stop, when the prefix was temporary)."""
        if self._strace_path is None:
            raise NginxError("nginx was not started with strace")
        text = getattr(self, "_strace_text", None)
        if text is not None:
            return text
        return self._strace_path.read_text()

    def wait_exit(self, timeout: float = 5.0) -> None:
        """Wait until the master has exited (after a quit/stop signal), then reap."""
        master = self._guard.master
        if master is None:
            raise NginxError("nginx has not been started")
        if not _wait_gone([master], timeout):
            raise NginxTimeout(f"nginx master {master.pid} still running after {timeout} s")

    # -- signals --
    def signal(self, name: str) -> None:
        """Send what ``nginx -s NAME`` sends: reload (HUP), reopen (USR1), quit (QUIT),
        stop (TERM), to the master by pid."""
        try:
            signum = _SIGNALS[name]
        except KeyError:
            raise ValueError(f"unknown signal name {name!r}; use one of {sorted(_SIGNALS)}") from None
        self.signal_raw(signum)

    def signal_raw(self, signum: int) -> None:
        """Send any signal (e.g. WINCH, USR2, HUP) to the master by pid."""
        master = self._guard.master
        if master is None or not master.alive():
            raise NginxError("nginx master is not running")
        self._refresh_slots()
        self._guard.note_children()
        if signum == _signal.SIGHUP:
            # a new generation will be spawned while the old one still holds its slots
            self._reload_reserved = set(self._slot_of)
            self._expect_gone |= set(self._slot_of.values())
        elif signum == _signal.SIGWINCH:
            self._expect_gone |= set(self._slot_of.values())
        master.kill(signum)

    def kill_worker(self, slot: int, signum: int = _signal.SIGKILL) -> int:
        """Send ``signum`` (SIGKILL by default) to the worker in ``slot``; returns its pid.
        nginx respawns a worker that dies without being asked to, into the same slot."""
        slots = self.slots
        if slot not in slots:
            raise KeyError(f"no worker in slot {slot} (slots: {slots})")
        pid = slots[slot]
        self._expect_gone.add(pid)
        ref = _Proc.of(pid)
        if ref is None or not ref.kill(signum):
            raise NginxError(f"worker {pid} in slot {slot} is not running")
        return pid

    # -- the slot model and the census --
    def _refresh_slots(self) -> None:
        master = self._guard.master
        if master is None or not master.alive():
            return
        kids = []
        for pid in children_of(master.pid):
            ref = _Proc.of(pid)
            if ref is not None:
                kids.append(ref)
                self._guard.workers.add(ref)
        kids.sort(key=lambda r: (r.start, r.pid))
        alive = {r.pid for r in kids}
        known = {pid: slot for slot, pid in self._slot_of.items()}
        new = [r.pid for r in kids if r.pid not in known]
        if new:
            if self._reload_reserved is not None:
                taken = set(self._slot_of) | self._reload_reserved
                free_first: list[int] = []
            else:
                taken = {slot for slot, pid in self._slot_of.items() if pid in alive}
                free_first = sorted(slot for slot, pid in self._slot_of.items() if pid not in alive)
            for pid in new:
                if free_first:
                    slot = free_first.pop(0)   # respawn: the dead worker's slot
                else:
                    slot = 0                   # first free slot
                    while slot in taken:
                        slot += 1
                taken.add(slot)
                self._slot_of[slot] = pid
        for slot, pid in list(self._slot_of.items()):
            if pid not in alive:
                del self._slot_of[slot]
        if self._reload_reserved is not None and not (self._expect_gone & alive):
            self._reload_reserved = None

    def census(self) -> Census:
        """The descriptor census of the master and its children, slots from the model."""
        master = self._guard.master
        if master is None:
            raise NginxError("nginx has not been started")
        for _attempt in range(5):
            self._refresh_slots()
            c = census_master(master.pid, slots=dict(self._slot_of))
            if all(w.slot is not None for w in c.workers):
                return c
            # a child was forked between the model's look and the census: look again
        return c

    def wait_workers(self, n: int | None = None, timeout: float = 10.0) -> Census:
        """Wait until nginx has exactly ``n`` children (default: ``workers``), all workers
        with the complete channel mesh, and none of the workers a reload or
        :meth:`kill_worker` retired is still alive.  Returns that census."""
        n = self.workers if n is None else int(n)
        deadline = time.monotonic() + timeout
        last: Census | None = None
        while True:
            master = self._guard.master
            if master is None or not master.alive():
                raise NginxError("nginx master is not running" + self._log_hint())
            try:
                c = self.census()
            except CensusError as e:
                if master.alive() and e.pid != master.pid:
                    c = None
                else:
                    raise NginxError(f"census failed: {e}" + self._log_hint()) from None
            if c is not None:
                last = c
                pids = {p.pid for p in c.processes if p.role != "master"}
                if (len(pids) == n and c.is_full_mesh(n) and not (self._expect_gone & pids)):
                    self._expect_gone.clear()
                    self._reload_reserved = None
                    return c
            if time.monotonic() >= deadline:
                state = last.summary() if last is not None else "no census"
                raise NginxTimeout(f"nginx did not settle to {n} workers with a full channel "
                                   f"mesh within {timeout} s ({state})" + self._log_hint())
            time.sleep(0.005)

    # -- logs --
    def error_log_tail(self, lines: int = 20) -> str:
        try:
            text = self.error_log_path.read_text(errors="replace")
        except (FileNotFoundError, NginxError):
            text = ""
        try:
            text += (self.prefix / "stderr.log").read_text(errors="replace")
        except OSError:
            pass
        return "\n".join(text.splitlines()[-lines:])

    def _log_hint(self) -> str:
        tail = self.error_log_tail(8)
        return f"\n--- error log tail ---\n{tail}" if tail else ""

    def log_offset(self) -> int:
        """Current size of the error log, to pass as ``since`` to :meth:`wait_log`."""
        try:
            return self.error_log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def wait_log(self, pattern: str, count: int = 1, *, since: int = 0, timeout: float = 5.0) -> list[str]:
        """Wait until the error log, from byte ``since`` on, has ``count`` lines matching
        the regular expression ``pattern``; returns them."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with open(self.error_log_path, "rb") as f:
                    f.seek(since)
                    text = f.read().decode(errors="replace")
            except FileNotFoundError:
                text = ""
            hits = [line for line in text.splitlines() if rx.search(line)]
            if len(hits) >= count:
                return hits
            if time.monotonic() >= deadline:
                raise NginxTimeout(f"{len(hits)} of {count} log lines matching {pattern!r} "
                                   f"after {timeout} s" + self._log_hint())
            time.sleep(0.005)

    def get(self, path: str = "/", timeout: float = 5.0) -> tuple[int, bytes]:
        """One HTTP GET to this nginx on 127.0.0.1: (status, body)."""
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()
