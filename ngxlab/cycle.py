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
  ``check=False``: also a master that has exited and waits to be reaped (a
  zombie: nginx's ``kill()`` succeeds on it, does nothing and returns 0),
  and a master that serves another prefix than ``cycle.prefix``. It
  also refuses pid 0, where nginx would call ``kill(0, sig)`` and signal its
  own process group.
- ``ngx_signal_process`` opens the pid file without blocking and refuses
  anything that is not a regular file ("is not a regular file"): nginx's
  ``open()`` of a FIFO waits for a writer for ever.
- ``ngx_create_pidfile`` refuses to take the file over while it names a
  running master of the same prefix (nginx truncates it: a second nginx is
  stopped earlier, by its busy port, which an ngxlab master on port 0 does
  not have), and refuses a pid file that is not a regular file.
  ``ngx_delete_pidfile`` removes the file only when it names this process
  (nginx removes it whoever wrote it).
- ``read_conf`` (nginx's configuration parser, reduced to three directives)
  takes ASCII digits only, as ``ngx_atoi`` does, and refuses more than
  ``MAX_WORKER_PROCESSES`` (512) worker processes, half of the process
  table: a reload runs two generations side by side, and nginx, which
  takes any number, spawns only part of the new generation when they do
  not fit ("no more than 1024 processes can be spawned").
- ``ngx_init_cycle`` reads ``error_log`` but keeps the old log: the path
  of the error log does not change on reload.
- ``ngx_reopen_files`` reopens the error log only, and without nginx's
  ``user`` argument: nginx ``chown()``s each reopened file to the workers'
  user (and adds ``S_IRUSR|S_IWUSR`` to its mode) so that the workers, no
  longer root, can write it; ngxlab runs master and workers as one user and
  has no ``user`` directive. A reopen that fails is logged at ``emerg``
  level and the old descriptor is kept, as in nginx. In a daemon, stderr is
  pointed at the reopened log, as nginx's ``ngx_log_redirect_stderr`` does.
"""

from __future__ import annotations

import errno
import os
import stat

from ngxlab.core import (
    NGX_ERROR, NGX_LOG_ALERT, NGX_LOG_EMERG, NGX_LOG_ERR, NGX_LOG_NOTICE,
    NGX_LOG_WARN, NGX_OK, ngx_log_error, ngx_log_t,
)
# The import cycle of the mirrors (process, process_cycle, cycle, nginx,
# daemon, _http), as nginx's files share their globals through "extern":
# each imports the others' modules, never names from them, so any of them
# can be imported first; attributes are read when a function runs.
from ngxlab import process, process_cycle as pc

__all__ = [
    "ngx_cycle", "ngx_cycle_t", "ngx_core_conf_t", "ngx_init_cycle",
    "ngx_create_pidfile", "ngx_delete_pidfile", "ngx_signal_process",
    "ngx_reopen_files", "read_conf", "is_ngxlab_master", "master_prefix",
    "MAX_WORKER_PROCESSES", "pidfile_owner", "redirect_stderr",
    "ascii_number", "check_pidfile", "read_pidfile",
]

ngx_cycle = None   # the current cycle of this process (nginx: ngx_cycle)

NGX_CONF_FILE = "conf/ngxlab.conf"
NGX_PID_PATH = "logs/ngxlab.pid"
NGX_ERROR_LOG_PATH = "logs/error.log"
NGX_OLDPID_EXT = ".oldbin"

# ngxlab's limit (nginx has none): a reload runs the old and the new
# generation side by side in the NGX_MAX_PROCESSES (1024) slots of the table.
# A number, not process.NGX_MAX_PROCESSES // 2: process may still be loading
# when this line runs (tests/test_import_cycle.py checks the half).
MAX_WORKER_PROCESSES = 512


def ascii_number(text):
    """``text`` as a non-negative int when it is ASCII digits only (as
    ``ngx_atoi`` reads a number), else ``None``: ``int()`` would also take
    " 12", "+12", "1_2" and the digits of every script ("\u0663")."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    if not text or not text.isascii() or not text.isdigit():
        return None
    return int(text)


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


# one directive a line; compiled by read_conf, on the rare path (a reload, a
# new binary): re is not on the master's way to its first fork
_DIRECTIVE = r"^\s*(\w+)\s+([^;#]*?)\s*;\s*(?:#.*)?$"


def read_conf(path):
    """Parse an ngxlab configuration file into a dict; raise ``ValueError``
    with a one-line message: the line of a directive it does not know or
    cannot read, or nginx's ``open() "PATH" failed (21: Is a directory)``
    when the file cannot be read."""
    import re
    directive = re.compile(_DIRECTIVE)
    conf = {}
    try:
        with open(path) as f:
            lines = f.readlines()
    except OSError as e:
        raise ValueError(f"open() \"{path}\" failed "
                         f"({e.errno}: {e.strerror})") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a text file ({e.reason})") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = directive.match(line)
        if not m:
            raise ValueError(f"{path}:{lineno}: cannot parse {line.strip()!r}")
        name, value = m.group(1), m.group(2)
        if name == "worker_processes":
            n = ascii_number(value)
            if n is None or not 1 <= n <= MAX_WORKER_PROCESSES:
                raise ValueError(
                    f"{path}:{lineno}: invalid value \"{value}\" in "
                    f"\"worker_processes\" (1 to {MAX_WORKER_PROCESSES}: "
                    f"a reload needs room for two generations in the "
                    f"{process.NGX_MAX_PROCESSES}-slot process table)")
            conf[name] = n
        elif name == "listen":
            host, _, port = value.rpartition(":")
            number = ascii_number(port)
            if host != "127.0.0.1" or number is None or number > 65535:
                raise ValueError(f"{path}:{lineno}: listen must be "
                                 f"127.0.0.1:PORT, not \"{value}\"")
            conf[name] = (host, number)
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
        except ValueError as e:
            ngx_log_error(NGX_LOG_EMERG, old_cycle.log, 0, "%s", e)
            return None

    old = old_cycle.conf
    n = conf.get("worker_processes", old.worker_processes)
    if not 1 <= n <= MAX_WORKER_PROCESSES:
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


def _open_pidfile(name, flags):
    """Open the pid file without ever blocking (a FIFO would wait for a
    writer); return the descriptor, or raise ``OSError`` (``EINVAL`` with
    the message "is not a regular file" for anything else)."""
    fd = os.open(name, flags | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "is not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_failed(level, log, name, e):
    # nginx's open() "NAME" failed (2: ...), or ngxlab's refusal of a FIFO
    if e.strerror == "is not a regular file":
        ngx_log_error(level, log, 0, "\"%s\" is not a regular file", name)
    else:
        ngx_log_error(level, log, e.errno or 0, "open() \"%s\" failed", name)


def read_pidfile(name):
    """The text of the pid file (its first 22 bytes, nginx's
    ``NGX_INT64_LEN + 2``) without its line end, read without blocking;
    raises ``OSError`` (``strerror`` "is not a regular file" for a FIFO,
    a directory, ...)."""
    fd = _open_pidfile(name, os.O_RDONLY)
    try:
        buf = os.read(fd, 22)
    finally:
        os.close(fd)
    return buf.rstrip(b"\r\n")


def _pid_state(pid):
    """The state letter of ``pid`` in /proc ("S", "R", "Z", ...), or None
    when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0].decode()
    except (OSError, IndexError):
        return None


def pidfile_owner(name, prefix):
    """ngxlab's (not nginx's): the pid of the running master the pid file
    ``name`` names when it serves ``prefix``, else ``None`` (no file, no
    number, a process that is gone, a zombie, not an ngxlab master, another
    prefix, or this very process). Raises ``OSError`` ("is not a regular
    file") for a pid file that is a FIFO, a directory, ..."""
    try:
        text = read_pidfile(name)
    except FileNotFoundError:
        return None
    pid = ascii_number(text)
    if not pid or pid == os.getpid() or _pid_state(pid) in (None, "Z", "X"):
        return None
    if not is_ngxlab_master(pid):
        return None
    served = master_prefix(pid)
    try:
        if served is None or not os.path.samefile(served, prefix):
            return None
    except OSError:
        return None
    return pid


def check_pidfile(name, prefix, log):
    """ngxlab's: ``NGX_ERROR`` after an emerg line when the pid file
    ``name`` is not a regular file or names a running master of ``prefix``
    (a second master must not take it over: the first could no longer be
    signalled); ``NGX_OK`` when there is no such file or it is stale."""
    try:
        owner = pidfile_owner(name, prefix)
    except OSError as e:
        _open_failed(NGX_LOG_EMERG, log, name, e)
        return NGX_ERROR
    if owner is not None:
        ngx_log_error(NGX_LOG_EMERG, log, 0,
                      "\"%s\" names master process %d, still running on "
                      "this prefix: not starting another (stop it first)",
                      name, owner)
        return NGX_ERROR
    return NGX_OK


def ngx_create_pidfile(name, log):
    """Write "PID\\n" into the pid file ``name`` (masters only). Returns
    ``NGX_OK`` or ``NGX_ERROR`` after an emerg line: nginx's "open() ...
    failed", or ngxlab's refusal of a file that is not a regular file or
    that names a running master of this prefix (``ngx_cycle.prefix``)."""
    if pc.ngx_process > pc.NGX_PROCESS_MASTER:
        return NGX_OK
    try:
        try:
            # a new file; an old one is taken over only when it is stale
            fd = _open_pidfile(name, os.O_RDWR | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            if ngx_cycle is not None \
                    and check_pidfile(name, ngx_cycle.prefix, log) != NGX_OK:
                return NGX_ERROR
            fd = _open_pidfile(name, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
    except OSError as e:
        _open_failed(NGX_LOG_EMERG, log, name, e)
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
    """Remove the pid file (its ``.oldbin`` name while a new binary runs)
    when it names this process: a file another master wrote is left."""
    ccf = cycle.conf
    name = ccf.oldpid if pc.ngx_new_binary else ccf.pid
    try:
        text = read_pidfile(name)
    except OSError:
        text = None                 # unlink says why, below
    if text is not None and ascii_number(text) != os.getpid():
        ngx_log_error(NGX_LOG_WARN, cycle.log, 0,
                      "\"%s\" names PID %s, not this master: leaving it",
                      name, text.decode(errors="replace"))
        return
    try:
        os.unlink(name)
    except OSError as e:
        ngx_log_error(NGX_LOG_ALERT, cycle.log, e.errno or 0,
                      "unlink() \"%s\" failed", name)


def is_ngxlab_master(pid) -> bool:
    """Whether ``pid`` is a running ngxlab master (its title or command
    line says so), so that a stale pid file never makes us signal a
    stranger that got the same pid. A zombie is not running."""
    if _pid_state(pid) in (None, "Z", "X"):
        return False
    argv = _cmdline(pid)
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            comm = f.read().strip()
    except OSError:
        return False
    if argv is None:
        return False
    if comm == b"ngxlab: master":
        return True
    if comm.startswith(b"ngxlab: "):
        return False            # a worker: it has its master's command line
    # a master writes its pid file just before it takes its title: know it
    # then by its command line, "... -m ngxlab run ..." or "ngxlab run ..."
    return _run_args(argv) is not None


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return None


def _run_args(argv):
    """The arguments after "run" in an ngxlab master's command line,
    strictly "python -m ngxlab run ..." or "ngxlab run ...", else None."""
    if argv[1:4] == [b"-m", b"ngxlab", b"run"]:
        return argv[4:]
    if os.path.basename(argv[0]) == b"ngxlab" and argv[1:2] == [b"run"]:
        return argv[2:]
    return None


def master_prefix(pid):
    """ngxlab's: the prefix the ngxlab master ``pid`` serves, read from its
    command line the way ``ngxlab run`` reads it (relative to the master's
    working directory, which it never changes), or ``None``."""
    import argparse
    import contextlib
    import io

    args = _run_args(_cmdline(pid) or [])
    if args is None:
        return None
    words = [a.decode(errors="surrogateescape") for a in args if a]
    # "run"'s --prefix as argparse reads it there (abbreviated, "=", last
    # one wins); the other options of a running master parsed already, so
    # they are passed over here, and the command line is not imported
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--prefix", required=True)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            parsed, _ = parser.parse_known_args(words)
    except SystemExit:
        return None
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None
    return os.path.join(cwd, parsed.prefix)


def ngx_signal_process(cycle, sig, check=True):
    """``nginx -s SIG``: read the pid file and send the signal. Returns 0
    or 1, the exit status of ``nginx -s``."""
    ngx_log_error(NGX_LOG_NOTICE, cycle.log, 0, "signal process started")

    name = cycle.conf.pid
    try:
        text = read_pidfile(name)
    except OSError as e:
        _open_failed(NGX_LOG_ERR, cycle.log, name, e)
        return 1

    # ngx_atoi: ASCII digits only (int() would take " 12", "+12", "1_2")
    pid = ascii_number(text)
    if not pid:
        ngx_log_error(NGX_LOG_ERR, cycle.log, 0,
                      "invalid PID number \"%s\" in \"%s\"",
                      text.decode(errors="replace"), name)
        return 1

    if check:
        state = _pid_state(pid)
        if state in ("Z", "X"):
            ngx_log_error(NGX_LOG_ERR, cycle.log, 0,
                          "PID %d in \"%s\" has exited and is not reaped yet"
                          " (a zombie), not signalling it", pid, name)
            return 1
        if not is_ngxlab_master(pid):
            ngx_log_error(NGX_LOG_ERR, cycle.log,
                          0 if state else errno.ESRCH,
                          "PID %d in \"%s\" is %s, not signalling it", pid,
                          name, "not an ngxlab master" if state
                          else "not running")
            return 1
        served = master_prefix(pid)
        try:
            same = served is not None and os.path.samefile(served,
                                                           cycle.prefix)
        except OSError:
            same = False
        if not same:
            ngx_log_error(NGX_LOG_ERR, cycle.log, 0,
                          "PID %d in \"%s\" is the master of %s, not of "
                          "\"%s\": not signalling it", pid, name,
                          "\"%s\"" % served if served else "another prefix",
                          cycle.prefix)
            return 1

    return process.ngx_os_signal_process(cycle, sig, pid)


def ngx_reopen_files(cycle, user=-1):
    """Reopen the error log by name (after log rotation). A failed open is
    logged and the old descriptor kept. ``user`` is nginx's argument, unused
    (see "Deviations")."""
    try:
        cycle.log.reopen()
    except OSError as e:
        ngx_log_error(NGX_LOG_EMERG, cycle.log, e.errno or 0,
                      "open() \"%s\" failed", cycle.log.path)
    if pc.ngx_daemonized:
        redirect_stderr(cycle.log)


def redirect_stderr(log):
    """nginx's ``ngx_log_redirect_stderr`` (src/core/ngx_log.c), for a
    daemon: point descriptor 2 at the error log, so that the daemon no
    longer holds the terminal or pipe of whoever started it, and what is
    written to stderr (a Python traceback) lands in the log. Returns
    ``NGX_OK`` or ``NGX_ERROR`` after an alert."""
    fd = log.fileno()
    if fd in (-1, 2):
        return NGX_OK
    try:
        os.dup2(fd, 2)
    except OSError as e:
        ngx_log_error(NGX_LOG_ALERT, log, e.errno or 0, "dup2(STDERR) failed")
        return NGX_ERROR
    return NGX_OK
