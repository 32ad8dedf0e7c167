"""Start-up and the binary upgrade: src/core/nginx.c at release-1.30.4.

``main`` is what ``ngxlab run`` executes, in nginx's order: note the pids,
pick up listening sockets inherited from an old master (the ``NGINX``
environment variable), build the cycle and open the listening sockets,
install the signal handlers, daemonize if asked, write the pid file, and
enter the master cycle.

On SIGUSR2 the master calls ``ngx_exec_new_binary``: it renames its pid file
to ``.oldbin`` and starts the same program again as a DETACHED child, with
``NGINX=5;`` naming the listening descriptors that the new process inherits
across ``execve`` (they have no ``FD_CLOEXEC``; the channels have it and
vanish). Both masters then accept on the same socket until the old one is
told to quit.

Deviations:

- The new binary gets this process's whole environment plus ``NGINX``
  (nginx passes only the variables named by ``env`` directives, and ``TZ``):
  a Python program needs its interpreter's variables.
- No ``SPARE=XXXX...`` variable: ngxlab does not rewrite ``argv`` for its
  title (see ``ngxlab.setproctitle``).
- ``ngxlab run`` writes ``conf/ngxlab.conf`` from its command line (nginx
  only reads its file); a new binary (``NGINX`` set) reads the file when
  there is one and leaves it as it is, as nginx's new binary does.
- A master with a parent that is still its parent ignores SIGUSR2, as nginx
  does (``ngx_parent``): in the foreground under a shell that lives on,
  ``kill -USR2`` is "ignored"; run with ``--daemon`` to upgrade.
- One prefix, one master: ``main`` refuses to start (an emerg line, exit
  status 1) while the pid file names a running master of the same prefix,
  before it binds or forks anything. nginx has no such check; its second
  master is stopped by ``bind()`` on the busy port, which a master
  listening on port 0 does not meet.
- stderr is pointed at the error log (nginx's ``ngx_log_redirect_stderr``)
  only in a daemon: in the foreground ``ngxlab run`` echoes its log to the
  terminal, where nginx points stderr at the log in both cases.
- An error log that cannot be opened ends ``main`` with nginx's "could not
  open error log file" line and status 1; nginx goes on with stderr and
  fails later, when ``ngx_init_cycle`` opens the log.
- A master that dies of an uncaught exception (a bug: nginx's C has no such
  path) logs an alert and removes its pid file on the way out.
- ``write_slots`` is ngxlab's; a write that fails never ends the master.
"""

from __future__ import annotations

import os
import signal
import sys

from ngxlab import connection
# The import cycle of the mirrors (process, process_cycle, cycle, nginx,
# daemon, _http), as nginx's files share their globals through "extern":
# each imports the others' modules, never names from them, so any of them
# can be imported first; attributes are read when a function runs.
from ngxlab import cycle as cy, daemon as dm, process, process_cycle as pc
from ngxlab.core import (
    NGX_LOG_ALERT, NGX_LOG_EMERG, NGX_LOG_NOTICE, NGX_OK,
    ngx_log_debug, ngx_log_error, ngx_log_t,
)

__all__ = ["NGINX_VAR", "ngx_argv", "main", "ngx_add_inherited_sockets",
           "ngx_exec_new_binary"]

NGINX_VAR = "NGINX"

ngx_argv = []


def ngx_add_inherited_sockets(cycle):
    """Read ``NGINX=5;6;`` and add each descriptor to ``cycle.listening`` as
    an inherited socket. Returns ``NGX_OK`` (also when the variable is
    absent) or what ``ngx_set_inherited_sockets`` returns."""
    inherited = os.environ.get(NGINX_VAR)
    if inherited is None:
        return NGX_OK

    ngx_log_error(NGX_LOG_NOTICE, cycle.log, 0,
                  "using inherited sockets from \"%s\"", inherited)

    v = ""
    for ch in inherited:
        if ch in ":;":
            if not v.isdigit():
                ngx_log_error(NGX_LOG_EMERG, cycle.log, 0,
                              "invalid socket number \"%s\" in " + NGINX_VAR
                              + " environment variable, ignoring the rest"
                              " of the variable", v)
                break
            ls = connection.ngx_listening_t()
            ls.fd = int(v)
            ls.inherited = 1
            cycle.listening.append(ls)
            v = ""
        else:
            v += ch

    if v:
        ngx_log_error(NGX_LOG_EMERG, cycle.log, 0,
                      "invalid socket number \"%s\" in " + NGINX_VAR
                      + " environment variable, ignoring", v)

    pc.ngx_inherited = 1

    return connection.ngx_set_inherited_sockets(cycle)


def ngx_exec_new_binary(cycle, argv):
    """Start ``argv`` again as a new master that inherits the listening
    sockets; rename the pid file to ``.oldbin`` first. Returns the new
    process's pid, or ``NGX_INVALID_PID`` (the pid file is renamed back)."""
    env = dict(os.environ)
    env[NGINX_VAR] = "".join("%d;" % ls.fd for ls in cycle.listening
                             if not ls.ignore and ls.fd != -1)
    for k, v in env.items():
        ngx_log_debug(cycle.log, 0, "env: %s=%s", k, v)

    ctx = process.ngx_exec_ctx_t(argv[0], "new binary process", list(argv),
                                 env)

    # the pid file becomes .oldbin here; ngx_reap_children renames it back
    # when the new binary exits (nginx spells the two renames out at each site)
    ccf = cycle.conf
    try:
        os.rename(ccf.pid, ccf.oldpid)
    except OSError as e:
        ngx_log_error(NGX_LOG_ALERT, cycle.log, e.errno or 0,
                      "rename() %s to %s failed before executing new binary "
                      "process \"%s\"", ccf.pid, ccf.oldpid, argv[0])
        return process.NGX_INVALID_PID

    pid = process.ngx_execute(cycle, ctx)

    if pid == process.NGX_INVALID_PID:
        try:
            os.rename(ccf.oldpid, ccf.pid)
        except OSError as e:
            ngx_log_error(NGX_LOG_ALERT, cycle.log, e.errno or 0,
                          "rename() %s back to %s failed after an attempt to "
                          "execute new binary process \"%s\"", ccf.oldpid,
                          ccf.pid, argv[0])

    return pid


def write_conf(path, worker_processes, listen, error_log="logs/error.log"):
    """Write an ngxlab configuration file (see ``ngxlab.cycle``)."""
    with open(path, "w") as f:
        f.write("# ngxlab configuration: edit, then `ngxlab signal reload`\n")
        f.write("worker_processes %d;\n" % worker_processes)
        if listen is not None:
            f.write("listen %s:%d;\n" % listen)
        f.write("error_log %s notice;\n" % error_log)


def prepare_prefix(prefix):
    """Create ``prefix/conf`` and ``prefix/logs``; raise ``OSError`` with
    the path when the prefix cannot be written."""
    for sub in ("conf", "logs"):
        d = os.path.join(prefix, sub)
        os.makedirs(d, exist_ok=True)
        if not os.access(d, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied", d)


def main(argv, prefix, worker_processes, listen=("127.0.0.1", 0),
         daemon=False, watch_master=True, log_level="notice", echo=None,
         die_with_parent=False, nginx_quirks=False):
    """Run a master the way nginx's ``main`` does; returns an exit status
    only on a start-up error (the master itself leaves through exit).
    ``nginx_quirks``: nginx's behaviour where the mirrors' safe defaults
    differ (``ngxlab.process_cycle.nginx_quirks``)."""
    global ngx_argv
    ngx_argv = list(argv)
    pc.nginx_quirks = bool(nginx_quirks)

    process.ngx_pid = os.getpid()
    process.ngx_parent = os.getppid()

    prefix = os.path.abspath(prefix)
    conf_file = os.path.join(prefix, cy.NGX_CONF_FILE)
    pid_path = os.path.join(prefix, cy.NGX_PID_PATH)
    log_path = os.path.join(prefix, cy.NGX_ERROR_LOG_PATH)

    # nginx's ngx_use_stderr: until the pid file is written, a message at
    # warn or worse also goes to stderr, so that a start-up failure is seen
    # on the terminal even when the log is not echoed (--quiet, --daemon)
    try:
        log = ngx_log_t(log_path, log_level,
                        echo=echo if echo is not None else _StartupStderr())
    except OSError as e:
        # nginx's ngx_log_init, word for word
        sys.stderr.write("ngxlab: [alert] could not open error log file: "
                         "open() \"%s\" failed (%d: %s)\n"
                         % (log_path, e.errno, e.strerror))
        return 1

    ccf = cy.ngx_core_conf_t(worker_processes=worker_processes,
                                 daemon=int(daemon), pid=pid_path,
                                 listen=listen, watch_master=int(watch_master))
    cycle = cy.ngx_cycle_t(prefix=prefix, log=log, conf=ccf,
                               conf_file=conf_file)
    cycle.error_log = log_path
    cy.ngx_cycle = cycle

    from ngxlab import __version__
    ngx_log_error(NGX_LOG_NOTICE, log, 0,
                  "ngxlab/%s (mirrors nginx 1.30.4), Python %s", __version__,
                  sys.version.split()[0])

    # ngxlab's: one prefix, one master (nginx's second master is stopped
    # by its busy port; an ngxlab master listening on port 0 has none)
    if cy.check_pidfile(pid_path, prefix, log) != NGX_OK:
        return 1

    if ngx_add_inherited_sockets(cycle) != NGX_OK:
        return 1

    read_conf = pc.ngx_inherited and os.path.exists(conf_file)
    if read_conf:
        # a new binary reads the configuration file, as nginx's does: the
        # command line it inherited is older than a reload after an edit
        try:
            conf = cy.read_conf(conf_file)
        except ValueError as e:
            ngx_log_error(NGX_LOG_EMERG, log, 0, "%s", e)
            return 1
        worker_processes = conf.get("worker_processes", worker_processes)
        ccf.worker_processes = worker_processes

    # the listening socket of the configuration: an inherited one with the
    # same address (any address when the port is 0), or a new one
    if listen is not None:
        match = [ls for ls in cycle.listening if not ls.ignore
                 and ls.sockaddr is not None and ls.sockaddr[0] == listen[0]
                 and (listen[1] == 0 or ls.sockaddr[1] == listen[1])]
        for ls in cycle.listening:
            # an ignored entry may name no open descriptor at all
            if ls not in match[:1] and ls.fd != -1 and not ls.ignore:
                os.close(ls.fd)
        cycle.listening = match[:1]
        if not cycle.listening:
            connection.ngx_create_listening(cycle, listen)
        if connection.ngx_open_listening_sockets(cycle) != NGX_OK:
            return 1
        ccf.listen = cycle.listening[0].sockaddr
        ngx_log_error(NGX_LOG_NOTICE, log, 0, "listening on %s",
                      cycle.listening[0].addr_text)

    if not read_conf:
        try:
            write_conf(conf_file, worker_processes, ccf.listen)
        except OSError as e:
            ngx_log_error(NGX_LOG_EMERG, log, e.errno or 0,
                          "open() \"%s\" failed", conf_file)
            return 1

    pc.ngx_process = pc.NGX_PROCESS_MASTER

    if process.ngx_init_signals(log) != NGX_OK:
        return 1

    if die_with_parent:
        _die_with_parent(log)

    if not pc.ngx_inherited and ccf.daemon:
        if dm.ngx_daemon(log) != NGX_OK:
            return 1
        pc.ngx_daemonized = 1

    if pc.ngx_inherited:
        pc.ngx_daemonized = 1

    if cy.ngx_create_pidfile(ccf.pid, log) != NGX_OK:
        return 1

    # nginx points stderr at the error log here, in the foreground too;
    # ngxlab only in a daemon (in the foreground the log is echoed there)
    if pc.ngx_daemonized and cy.redirect_stderr(log) != NGX_OK:
        cy.ngx_delete_pidfile(cycle)
        return 1

    log.echo = echo     # nginx: ngx_use_stderr = 0

    slots_path = os.path.join(prefix, "logs", "ngxlab.slots")
    pc._table_observers.append(lambda c: write_slots(c, slots_path))

    master = os.getpid()
    try:
        pc.ngx_master_process_cycle(cycle)
    except BaseException as e:
        # ngxlab's: a master that dies of an exception (a bug) must not
        # leave its pid file behind, naming a process that is gone
        if os.getpid() == master:
            ngx_log_error(NGX_LOG_ALERT, log, 0, "master process failed: %r",
                          e)
            cy.ngx_delete_pidfile(cy.ngx_cycle or cycle)
        raise
    return 0


_last_slots = None
_slots_failed = None


def write_slots(cycle, path):
    """ngxlab's (not nginx's): write the master's process table as JSON to
    ``logs/ngxlab.slots`` when it changed, so that ``ngxlab topology`` and
    the notebooks can label each worker with its slot. While a new binary
    runs, the file belongs to it, as the pid file does: the old master
    writes ``logs/ngxlab.slots.oldbin`` instead, and takes the plain name
    back if the new binary exits.

    A write that fails (no descriptor left, a full disk, the name taken by a
    directory, a ``json`` module the master can no longer import) never
    ends the master: it is logged once, as an alert in nginx's words, and
    tried again the next time round the master's loop; the next success is
    logged as a notice."""
    global _last_slots, _slots_failed
    if pc.ngx_new_binary > 0:     # not NGX_INVALID_PID after a failed exec
        path += cy.NGX_OLDPID_EXT
    slots = [{"slot": i, "pid": p.pid, "channel": list(p.channel),
              "respawn": p.respawn, "just_spawn": p.just_spawn,
              "detached": p.detached, "exiting": p.exiting}
             for i, p in enumerate(process.ngx_processes[
                 :process.ngx_last_process]) if p.pid > 0]
    state = {"master": os.getpid(), "generation": cycle.generation,
             "listen": [ls.addr_text for ls in cycle.listening
                        if ls.fd != -1],
             "slots": slots}
    if (path, state) == _last_slots:
        return
    try:
        import json     # here: not on the master's way to its first fork
    except OSError as e:
        # no descriptor left to read it with (EMFILE)
        _slots_failure(cycle, ("import", e.errno), e.errno or 0, "import json failed")
        return
    except ImportError as e:
        # a master that can no longer read the standard library (it became
        # another user after it started, or its Python was replaced under it)
        _slots_failure(cycle, ("import", str(e)), 0, "import json failed (%s)" % e)
        return
    if _last_slots is not None and _last_slots[0] != path \
            and _last_slots[0].endswith(cy.NGX_OLDPID_EXT):
        try:
            os.unlink(_last_slots[0])
        except OSError:
            pass
    tmp = path + ".tmp"
    step = "open()"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                     0o644)
        try:
            step = "write()"
            data = json.dumps(state).encode()
            while data:
                data = data[os.write(fd, data):]
        finally:
            os.close(fd)
        step = "rename()"
        os.replace(tmp, path)
    except OSError as e:
        if step != "open()":
            try:
                os.unlink(tmp)
            except OSError:
                pass
        what = "%s \"%s\" to \"%s\"" % (step, tmp, path) \
            if step == "rename()" else "%s \"%s\"" % (step, tmp)
        _slots_failure(cycle, (step, e.errno), e.errno or 0, what + " failed")
        return
    if _slots_failed is not None:
        _slots_failed = None
        ngx_log_error(NGX_LOG_NOTICE, cycle.log, 0,
                      "%s written again", os.path.basename(path))
    _last_slots = (path, state)


def _slots_failure(cycle, failure, err, message):
    """Log a failed write of the slots file once, until it changes."""
    global _slots_failed
    if _slots_failed != failure:
        _slots_failed = failure
        ngx_log_error(NGX_LOG_ALERT, cycle.log, err, message)


class _StartupStderr:
    """The echo of the error log while ngxlab starts: the lines at warn level
    or worse, to this process's stderr (nginx writes them to the console
    while ``ngx_use_stderr`` is set)."""

    _levels = ("[emerg]", "[alert]", "[crit]", "[error]", "[warn]")

    def write(self, line):
        # "2026/11/27 10:00:00 [emerg] 123#0: ..."
        if line.split(" ", 3)[2:3] and line.split(" ", 3)[2] in self._levels:
            sys.stderr.write(line)

    def flush(self):
        sys.stderr.flush()


def _die_with_parent(log):
    # ngxlab's: a master started by a notebook or a test is sent SIGTERM
    # (a fast shutdown) when the process that started it dies. A parent
    # that is gone already is noticed here; prctl(PR_SET_PDEATHSIG), which
    # Python reaches only through ctypes, is called from the master's loop
    # (its first pass, an observer of the process table) rather than here:
    # importing ctypes would come before the first fork, on every start.
    if os.getppid() != process.ngx_parent:
        os.kill(os.getpid(), signal.SIGTERM)
        return
    pc._table_observers.append(_DieWithParent(process.ngx_parent))


class _DieWithParent:
    """The rest of ``_die_with_parent``, once, from the master's loop."""

    def __init__(self, parent):
        self.parent = parent
        self.master = os.getpid()
        self.done = False
        self.failed = False

    def __call__(self, cycle):
        if self.done:
            return
        if os.getpid() != self.master:
            self.done = True
            return      # a daemon: its fork() would have cleared the setting
        try:
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
        except (OSError, ImportError) as e:
            # loading ctypes opens files: with every descriptor taken
            # (EMFILE, as when spawns have failed for want of them) it
            # fails, and the next pass of the loop tries again; so does a
            # master that can no longer read the standard library
            if not self.failed:
                self.failed = True
                ngx_log_error(NGX_LOG_ALERT, cycle.log, getattr(e, "errno", 0) or 0,
                              "loading ctypes for prctl(PR_SET_PDEATHSIG) failed")
            return
        self.done = True
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != self.parent:
            os.kill(os.getpid(), signal.SIGTERM)     # it died in between
