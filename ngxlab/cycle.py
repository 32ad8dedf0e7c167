"""The cycle, the pid file and ``nginx -s``: src/core/ngx_cycle.[ch] at
release-1.30.4.

An nginx cycle is one loaded configuration with everything made from it:
the log, the listening sockets, the settings of the core module. A reload
builds a new cycle (``ngx_init_cycle``) that keeps the old listening sockets,
then a new generation of workers is started with it.

ngxlab's configuration file has nginx's syntax and three directives::

    worker_processes 4;
    listen 127.0.0.1:8080;
    error_log logs/error.log notice;

Deviations:

- ``ngx_cycle_t`` holds the core settings directly (``cycle.conf``, an
  ``ngx_core_conf_t``) instead of reaching them through
  ``ngx_get_conf(cycle->conf_ctx, ngx_core_module)``.
- ``cycle.generation`` counts reloads; nginx has no such number. Workers
  report it, so a reader can see which configuration answered.
- ``ngx_signal_process`` refuses a pid that is not an ngxlab master (nginx
  would signal any pid found in the file, a recycled one included), unless
  ``check=False``; it also refuses pid 0, where nginx would call
  ``kill(0, sig)`` and signal its own process group.
- ``ngx_init_cycle`` reads ``error_log`` but keeps the old log: the path
  of the error log does not change on reload.
"""

from __future__ import annotations

import errno
import os
import re

from ngxlab.core import (
    NGX_ERROR, NGX_LOG_ALERT, NGX_LOG_EMERG, NGX_LOG_ERR, NGX_LOG_NOTICE,
    NGX_OK, ngx_log_error, ngx_log_t,
)

__all__ = [
    "ngx_cycle", "ngx_cycle_t", "ngx_core_conf_t", "ngx_init_cycle",
    "ngx_create_pidfile", "ngx_delete_pidfile", "ngx_signal_process",
    "ngx_reopen_files", "read_conf", "is_ngxlab_master",
]

ngx_cycle = None   # the current cycle of this process (nginx: ngx_cycle)

NGX_CONF_FILE = "conf/ngxlab.conf"
NGX_PID_PATH = "logs/ngxlab.pid"
NGX_ERROR_LOG_PATH = "logs/error.log"
NGX_OLDPID_EXT = ".oldbin"


class ngx_core_conf_t:
    """The core module's settings (``ngx_core_conf_t``), the ones ngxlab
    uses, plus ``listen`` and ``watch_master`` (ngxlab's: workers exit when
    their master dies; nginx's workers live on)."""

    def __init__(self, worker_processes=1, daemon=0, master=1, pid=None,
                 listen=None, watch_master=1):
        self.worker_processes = worker_processes
        self.daemon = daemon
        self.master = master
        self.pid = pid
        self.oldpid = pid + NGX_OLDPID_EXT if pid else None
        self.listen = listen
        self.watch_master = watch_master

    def __repr__(self):
        return (f"ngx_core_conf_t(worker_processes={self.worker_processes}, "
                f"daemon={self.daemon}, pid={self.pid!r}, "
                f"listen={self.listen!r})")


class ngx_cycle_t:
    """One configuration and what was made from it."""

    def __init__(self, prefix=".", log=None, conf=None, conf_file=None,
                 generation=1):
        self.prefix = os.path.abspath(prefix)
        self.log = log if log is not None else ngx_log_t()
        self.conf = conf if conf is not None else ngx_core_conf_t()
        self.conf_file = conf_file
        self.listening = []
        self.generation = generation
        self.error_log = None

    def __repr__(self):
        return (f"ngx_cycle_t(prefix={self.prefix!r}, generation="
                f"{self.generation}, {self.conf!r})")


_directive = re.compile(r"^\s*(\w+)\s+([^;#]*?)\s*;\s*(?:#.*)?$")


def read_conf(path):
    """Parse an ngxlab configuration file into a dict; raise ``ValueError``
    naming the line of a directive it does not know or cannot read."""
    conf = {}
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            m = _directive.match(line)
            if not m:
                raise ValueError(f"{path}:{lineno}: cannot parse {line.strip()!r}")
            name, value = m.group(1), m.group(2)
            if name == "worker_processes":
                try:
                    n = int(value)
                except ValueError:
                    raise ValueError(f"{path}:{lineno}: invalid value "
                                     f"\"{value}\" in \"worker_processes\"")
                conf[name] = n
            elif name == "listen":
                host, _, port = value.rpartition(":")
                if host != "127.0.0.1" or not port.isdigit():
                    raise ValueError(f"{path}:{lineno}: listen must be "
                                     f"127.0.0.1:PORT, not \"{value}\"")
                conf[name] = (host, int(port))
            elif name == "error_log":
                parts = value.split()
                conf[name] = (parts[0], parts[1] if len(parts) > 1 else "notice")
            else:
                raise ValueError(f"{path}:{lineno}: unknown directive \"{name}\"")
    return conf


def ngx_init_cycle(old_cycle):
    """Build a new cycle from the configuration file, keeping the old
    cycle's listening sockets. Returns ``None`` (and the old cycle stays)
    when the file cannot be read, after nginx's emerg line."""
    path = old_cycle.conf_file
    conf = {}
    if path:
        try:
            conf = read_conf(path)
        except (OSError, ValueError) as e:
            ngx_log_error(NGX_LOG_EMERG, old_cycle.log,
                          getattr(e, "errno", 0) or 0, "%s", e)
            return None

    old = old_cycle.conf
    n = conf.get("worker_processes", old.worker_processes)
    if not 1 <= n <= 1024:
        ngx_log_error(NGX_LOG_EMERG, old_cycle.log, 0,
                      "invalid value \"%d\" in \"worker_processes\"", n)
        return None

    listen = conf.get("listen", old.listen)
    if listen != old.listen and old.listen is not None:
        ngx_log_error(NGX_LOG_NOTICE, old_cycle.log, 0,
                      "listen %s:%d changed: keeping %s:%d (ngxlab reuses "
                      "the listening sockets on reload)", *listen, *old.listen)
        listen = old.listen

    cycle = ngx_cycle_t(prefix=old_cycle.prefix, log=old_cycle.log,
                        conf=ngx_core_conf_t(
                            worker_processes=n, daemon=old.daemon,
                            master=old.master, pid=old.pid, listen=listen,
                            watch_master=old.watch_master),
                        conf_file=path, generation=old_cycle.generation + 1)
    cycle.error_log = old_cycle.error_log
    cycle.listening = old_cycle.listening
    return cycle


def ngx_create_pidfile(name, log):
    """Write "PID\\n" into the pid file ``name`` (masters only). Returns
    ``NGX_OK`` or ``NGX_ERROR`` after an emerg "open() ... failed"."""
    from ngxlab import process_cycle as pc

    if pc.ngx_process > pc.NGX_PROCESS_MASTER:
        return NGX_OK
    try:
        fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                     0o644)
    except OSError as e:
        ngx_log_error(NGX_LOG_EMERG, log, e.errno or 0, "open() \"%s\" failed",
                      name)
        return NGX_ERROR
    try:
        os.write(fd, b"%d\n" % os.getpid())
    except OSError as e:
        ngx_log_error(NGX_LOG_ALERT, log, e.errno or 0,
                      "write() \"%s\" failed", name)
        return NGX_ERROR
    finally:
        os.close(fd)
    return NGX_OK


def ngx_delete_pidfile(cycle):
    """Remove the pid file: its ``.oldbin`` name while a new binary runs."""
    from ngxlab import process_cycle as pc

    ccf = cycle.conf
    name = ccf.oldpid if pc.ngx_new_binary else ccf.pid
    try:
        os.unlink(name)
    except OSError as e:
        ngx_log_error(NGX_LOG_ALERT, cycle.log, e.errno or 0,
                      "unlink() \"%s\" failed", name)


def is_ngxlab_master(pid) -> bool:
    """Whether ``pid`` is a running ngxlab master (its title or command
    line says so), so that a stale pid file never makes us signal a
    stranger that got the same pid."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        with open(f"/proc/{pid}/comm", "rb") as f:
            comm = f.read().strip()
    except OSError:
        return False
    if comm == b"ngxlab: master":
        return True
    if comm.startswith(b"ngxlab: "):
        return False            # a worker: it has its master's command line
    # a master writes its pid file just before it takes its title: know it
    # then by its command line, "... -m ngxlab run ..." or "ngxlab run ..."
    # (strictly at the start: "python -m ngxlab run ..." or "ngxlab run ...")
    if argv[1:4] == [b"-m", b"ngxlab", b"run"]:
        return True
    return os.path.basename(argv[0]) == b"ngxlab" and argv[1:2] == [b"run"]


def ngx_signal_process(cycle, sig, check=True):
    """``nginx -s SIG``: read the pid file and send the signal. Returns 0
    or 1, the exit status of ``nginx -s``."""
    from ngxlab.process import ngx_os_signal_process

    ngx_log_error(NGX_LOG_NOTICE, cycle.log, 0, "signal process started")

    name = cycle.conf.pid
    try:
        with open(name, "rb") as f:
            buf = f.read(22)
    except OSError as e:
        ngx_log_error(NGX_LOG_ERR, cycle.log, e.errno or 0,
                      "open() \"%s\" failed", name)
        return 1

    text = buf.rstrip(b"\r\n")
    try:
        # ngx_atoi: ASCII digits only (int() would take " 12", "+12", "1_2")
        if not text or not all(0x30 <= c <= 0x39 for c in text):
            raise ValueError
        pid = int(text)
        if pid <= 0:
            raise ValueError
    except ValueError:
        ngx_log_error(NGX_LOG_ERR, cycle.log, 0,
                      "invalid PID number \"%s\" in \"%s\"",
                      text.decode(errors="replace"), name)
        return 1

    if check and not is_ngxlab_master(pid):
        alive = os.path.exists(f"/proc/{pid}")
        ngx_log_error(NGX_LOG_ERR, cycle.log, 0 if alive else errno.ESRCH,
                      "PID %d in \"%s\" is %s, not signalling it", pid, name,
                      "not an ngxlab master" if alive else "not running")
        return 1

    return ngx_os_signal_process(cycle, sig, pid)


def ngx_reopen_files(cycle, user=-1):
    """Reopen the error log by name (after log rotation)."""
    cycle.log.reopen()
    return NGX_OK
