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
        ngx.wait_mesh()

It is a :class:`ngxlab.lab.runner.Runner`, with the same vocabulary as
``Master`` and ``MasterProcess``. Every process it starts is stopped by pid:
``stop()`` sends QUIT, then TERM, then SIGKILL after deadlines, and kills
workers a killed master left behind.
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

import http.client
import os
import re
import shutil
import signal as _signal
import subprocess
import sys
import time
from pathlib import Path

from ngxlab.lab.proc import Proc
from ngxlab.lab.runner import Runner, RunnerError, RunnerTimeout, Worker, free_port
from ngxlab.lab import proc

__all__ = ["Nginx", "NginxError", "NginxNotFound", "NginxTimeout", "find_nginx",
           "nginx_version", "nginx_available", "nginx_conf"]


class NginxError(RunnerError):
    """nginx failed to start, died, or did not do what was asked in time."""


class NginxNotFound(NginxError, FileNotFoundError):
    """No nginx binary (or no strace, when tracing was asked for)."""


class NginxTimeout(NginxError, RunnerTimeout):
    """A wait on nginx ran past its deadline."""


def find_nginx(binary: str | os.PathLike | None = None) -> str:
    """The nginx binary: ``binary`` if given, else ``$NGXLAB_NGINX`` if set, else
    ``nginx`` on PATH, else /usr/sbin/nginx. ``NGXLAB_NGINX=`` (set, empty) runs
    everything as on a machine without nginx: what the book shows then."""
    if binary is None and "NGXLAB_NGINX" in os.environ:
        binary = os.environ["NGXLAB_NGINX"]
        if not binary:
            raise NginxNotFound("nginx not found: NGXLAB_NGINX is set and empty")
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
    out = subprocess.run([find_nginx(binary), "-v"], capture_output=True, text=True, timeout=10,
                         stdin=subprocess.DEVNULL)
    m = re.search(r"nginx/(\S+)", out.stderr + out.stdout)
    if not m:
        raise NginxError(f"cannot read the version from {out.stderr.strip()!r}")
    return m.group(1)


def nginx_available(binary=None) -> tuple[str | None, str | None]:
    """(path, None) when nginx can be run here, else (None, the reason)."""
    try:
        path = find_nginx(binary)
        nginx_version(path)
    except NginxError as e:
        return None, str(e)
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"nginx cannot run here: {e}"
    return path, None


def nginx_conf(prefix: str | os.PathLike, workers: int, port: int, *, daemon: bool = False,
               debug_log: bool = False, user: str | None = None) -> str:
    """The one nginx.conf of ngxlab: ``worker_processes``, ``master_process on``,
    the pid file, lock file, error log and temp paths in ``prefix``, one
    server on 127.0.0.1:``port`` that answers "ok". ``user``: by default,
    when running as root, ``root``, so that workers keep the experimenter's
    identity and can reopen logs in the private prefix."""
    p = Path(prefix)
    if user is None and os.geteuid() == 0:
        user = "root"
    lines = [f"user {user};"] if user else []
    lines += [
        f"worker_processes {workers};",
        "master_process on;",
        f"daemon {'on' if daemon else 'off'};",
        f"pid {p}/nginx.pid;",
        f"lock_file {p}/nginx.lock;",
        f"error_log {p}/error.log {'debug' if debug_log else 'notice'};",
        "events { worker_connections 64; }",
        "http {",
        "    access_log off;",
        "    default_type text/plain;",
        *(f"    {kind}_temp_path {p}/temp/{kind};"
          for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")),
        "    server {",
        f"        listen 127.0.0.1:{port};",
        '        location / { return 200 "ok\\n"; }',
        "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"


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



class Nginx(Runner):
    """A real nginx master with ``workers`` workers, in a private prefix, on 127.0.0.1.

    Parameters: ``workers`` (``worker_processes``); ``prefix`` (directory for the
    configuration, logs, pid file and temp paths; a temporary directory, removed
    at stop, if None); ``port`` (0 picks a free port); ``binary`` (default:
    :func:`find_nginx`); ``daemon`` (``daemon on``: nginx forks away and is
    tracked by its pid file); ``debug_log`` (``error_log ... debug``; Debian's
    nginx is built ``--with-debug``); ``strace`` (True, or a path: run nginx
    under ``strace -f`` recording the channel system calls, see
    :mod:`ngxlab.lab.trace`); ``user`` (see :func:`nginx_conf`); ``keeper``
    (False: nginx is this process's own child, with no keeper above it, as a
    start-up measurement needs; a daemonized master or orphaned workers are
    then not reaped by anyone here).
    """

    Error = NginxError
    Timeout = NginxTimeout
    _tmp_prefix = "ngxlab-nginx-"

    def __init__(self, workers: int = 4, *, prefix: str | os.PathLike | None = None, port: int = 0,
                 binary: str | os.PathLike | None = None, daemon: bool = False,
                 debug_log: bool = False, strace: bool | str | os.PathLike | None = None,
                 user: str | None = None, keeper: bool = True, start_timeout: float = 10.0):
        self.binary = find_nginx(binary)
        super().__init__(workers, prefix=prefix, strace=strace, start_timeout=start_timeout)
        self._port_arg = int(port)
        self.daemon = bool(daemon)
        self.debug_log = bool(debug_log)
        self.user = user
        self.keeper = bool(keeper)
        self._port: int | None = self._port_arg or None
        self._version: str | None = None
        # the slot-table model: slot -> pid
        self._slot_of: dict[int, int] = {}
        self._reload_reserved: set[int] | None = None

    def _not_found(self, why: str) -> Exception:
        return NginxNotFound(why)

    # -- where things are --
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
    def log_path(self) -> Path:
        return self.prefix / "error.log"

    @property
    def pid_path(self) -> Path:
        return self.prefix / "nginx.pid"

    @property
    def version(self) -> str:
        if self._version is None:
            self._version = nginx_version(self.binary)
        return self._version

    def config_text(self) -> str:
        """The nginx.conf this instance writes (:func:`nginx_conf`)."""
        return nginx_conf(self.prefix, self.n, self._port or 0, daemon=self.daemon,
                          debug_log=self.debug_log, user=self.user)

    def command(self) -> list[str]:
        """The nginx command line (strace's before it, when tracing)."""
        p = self.prefix
        cmd = [self.binary, "-p", f"{p}/", "-c", str(self.conf_path)]
        if tuple(int(x) for x in re.findall(r"\d+", self.version)[:3]) >= (1, 19, 5):
            cmd += ["-e", str(self.log_path)]  # early errors go here, not to /var/log/nginx
        return self._command_prefix() + cmd

    # -- how it launches --
    def _launch(self) -> None:
        (self.prefix / "temp").mkdir(exist_ok=True)
        attempts = 3 if self._port_arg == 0 else 1
        for attempt in range(attempts):
            self._port = self._port_arg or free_port()
            try:
                self._launch_once()
                return
            except NginxError:
                taken = "Address already in use" in self.log_tail()
                if not taken or attempt + 1 == attempts:
                    raise
                self._guard.popen.wait(timeout=10.0)        # it exited: try another port

    def _launch_once(self) -> None:
        self.conf_path.write_text(self.config_text())
        for name in ("nginx.pid", "error.log"):
            try:
                (self.prefix / name).unlink()
            except FileNotFoundError:
                pass
        argv = self.command()
        if self.keeper:
            argv = [sys.executable, "-I", "-S", "-c", _KEEPER, *argv]
        with open(self.prefix / self._stderr_name, "ab") as err:
            self.launched_at = time.perf_counter()
            keeper = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                      close_fds=True, start_new_session=True)
        self._guard.popen = keeper
        deadline = time.monotonic() + self.start_timeout
        while True:
            pid = self.read_pid()
            master = Proc.of(pid) if pid is not None else None
            if master is not None:
                self._master = master
                self._guard.note(master)
                return
            if keeper.poll() is not None:
                raise NginxError(f"nginx exited with status {keeper.returncode} during startup"
                                 + self._hint())
            if time.monotonic() >= deadline:
                raise NginxTimeout("nginx wrote no pid file in time" + self._hint())
            time.sleep(0.005)

    def _followed(self) -> None:
        # the slot model starts again from the new master's workers (a new
        # binary fills its own table from slot 0)
        self._slot_of = {}
        self._reload_reserved = None
        self._retired = set()

    # -- signals: the slot model follows what nginx does with them --
    def _note_signal(self, signum: int) -> None:
        self._refresh_slots()
        self._guard.note()
        if signum == _signal.SIGHUP:
            # a new generation will be spawned while the old one still holds its slots
            self._reload_reserved = set(self._slot_of)
        elif signum == _signal.SIGWINCH:
            self._retired |= set(self._slot_of.values())
        super()._note_signal(signum)

    # -- how it learns its slots: a model of nginx's table --
    def _refresh_slots(self) -> None:
        master = self._master
        if master is None or not master.alive():
            return
        kids = []
        for pid in proc.children(master.pid) or []:
            ref = Proc.of(pid)
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
        if self._reload_reserved is not None and not (self._retired & alive):
            self._reload_reserved = None

    def _table(self) -> list[Worker]:
        self._refresh_slots()
        return [Worker(slot, pid) for slot, pid in sorted(self._slot_of.items())]

    def get(self, path: str = "/", timeout: float = 5.0) -> tuple[int, bytes]:
        """One HTTP GET to this nginx on 127.0.0.1: (status, body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()
