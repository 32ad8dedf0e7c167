"""Processes and signals: src/os/unix/ngx_process.[ch] at release-1.30.4.

The master keeps a table of its children, ``ngx_processes``: one
``ngx_process_t`` per slot, each with the socketpair that is that child's
channel. ``ngx_spawn_process`` fills a slot, makes the pair and forks. The
same table is copied into every child by ``fork()``, and each child keeps its
own copy up to date from the OPEN_CHANNEL and CLOSE_CHANNEL messages it reads:
after a fork each process has its own ``ngx_processes``, ``ngx_last_process``,
``ngx_process_slot`` and ``ngx_channel``, which is why they are module
globals here, as they are globals in nginx.

Read them through the module (``process.ngx_last_process``): ``from ... import``
would copy the number once.

Deviations:

- A child never returns from ``ngx_spawn_process``: ``proc`` runs inside
  ``ngxlab._forking.run_child``, which ends the process with ``os._exit()``
  whatever happens (nginx's ``proc`` never returns either; a Python exception
  would otherwise unwind into the caller's copy of the stack).
- Python's ``fork()`` is preceded by a flush of stdout and stderr.
- ``socket.socketpair()`` creates both ends with ``SOCK_CLOEXEC``; nginx
  creates them without it and sets ``FD_CLOEXEC`` afterwards with
  ``fcntl`` (ngxlab makes that call too, so the result is the same).
- When ``fork()`` fails for a DETACHED spawn, ngxlab does not call
  ``ngx_close_channel`` on the slot's -1 entries (nginx does, which only
  logs two failed ``close()`` calls).
- ``ngx_signal_handler`` does what nginx's does (sets the flag, logs
  "signal N (SIG...) received", reaps with ``ngx_process_get_status`` on
  SIGCHLD); only *when* it runs differs. nginx runs it inside the signal
  handler. In Python, work inside a signal handler runs at an arbitrary
  bytecode of the main thread, which has broken other pre-fork servers; so
  the master takes its signals synchronously with ``sigwaitinfo``, then
  ``sigtimedwait(0)`` for any others already pending (see
  ``ngx_master_process_cycle``), and calls ``ngx_signal_handler`` from its
  loop, and a worker's Python-level handler (run by the interpreter between
  two bytecodes) calls it and the event loop does the rest. A Python handler
  gets no ``siginfo``, so a worker's "signal N (SIG...) received" line never
  says "from PID".
- When a step after ``socketpair()`` fails (a descriptor flag, ``fork()``),
  the pair is closed and the slot's ``channel`` set to -1, -1. nginx leaves
  the closed numbers in the slot; the next ``socketpair()`` gets the same
  numbers, so a later ``ngx_reap_children`` (retrying a failed respawn) or
  a later worker's ``ngx_worker_process_init`` closes another process's
  channel through them. ``nginx_quirks`` (``ngxlab.process_cycle``) leaves
  them, as nginx does.
- A child first closes the descriptors the master's write queue holds
  (``ngxlab._pending``, ngxlab's answer to nginx's ``TODO: NGX_AGAIN``),
  before it runs ``proc``: they are the master's, and a worker that kept
  them would hold channels nginx's worker does not.
- ``ngx_pid`` and ``ngx_parent`` are defined in ngx_process_cycle.c in nginx;
  they live here beside ``ngx_spawn_process``, which sets them in the child.
- ``ngx_unlock_mutexes`` has nothing to unlock: ngxlab has no accept mutex
  and no shared memory zones.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import termios

from ngxlab import _forking, _pending
# The import cycle of the mirrors (process, process_cycle, cycle, nginx,
# daemon, _http), as nginx's files share their globals through "extern":
# each imports the others' modules, never names from them, so any of them
# can be imported first; attributes are read when a function runs.
from ngxlab import cycle as cy, process_cycle as pc
from ngxlab.channel import ngx_close_channel
from ngxlab.core import (
    NGX_ERROR, NGX_LOG_ALERT, NGX_LOG_CRIT, NGX_LOG_EMERG, NGX_LOG_INFO,
    NGX_LOG_NOTICE, NGX_OK, ngx_log_debug, ngx_log_error,
)

__all__ = [
    "NGX_INVALID_PID", "NGX_MAX_PROCESSES", "NGX_PROCESS_NORESPAWN",
    "NGX_PROCESS_JUST_SPAWN", "NGX_PROCESS_RESPAWN",
    "NGX_PROCESS_JUST_RESPAWN", "NGX_PROCESS_DETACHED",
    "ngx_process_t", "ngx_exec_ctx_t", "ngx_signal_t", "ngx_processes",
    "signals", "ngx_spawn_process", "ngx_execute", "ngx_init_signals",
    "ngx_signal_handler", "ngx_process_get_status", "ngx_os_signal_process",
]

# src/os/unix/ngx_process.h
NGX_INVALID_PID = -1
NGX_MAX_PROCESSES = 1024

NGX_PROCESS_NORESPAWN = -1
NGX_PROCESS_JUST_SPAWN = -2
NGX_PROCESS_RESPAWN = -3
NGX_PROCESS_JUST_RESPAWN = -4
NGX_PROCESS_DETACHED = -5


class ngx_process_t:
    """One slot of the process table.

    ``pid`` is -1 for a free slot and 0 for a slot never used (nginx's table
    is a zero-filled static array); ``channel`` is the socketpair, ``[0]``
    written by the master, ``[1]`` read by the child; ``status`` is the raw
    ``waitpid`` status. The five flags are nginx's one-bit fields.
    """

    __slots__ = ("pid", "status", "channel", "proc", "data", "name",
                 "respawn", "just_spawn", "detached", "exiting", "exited")

    def __init__(self):
        # every field zeroed, as in nginx's static table (ngx_event_t in
        # event.py has the same shape: each is a C struct, field by field)
        self.pid = 0
        self.status = 0
        self.channel = [0, 0]
        self.proc = None
        self.data = None
        self.name = None
        self.respawn = 0
        self.just_spawn = 0
        self.detached = 0
        self.exiting = 0
        self.exited = 0

    def __repr__(self):
        flags = [f for f in ("respawn", "just_spawn", "detached", "exiting",
                             "exited") if getattr(self, f)]
        return (f"ngx_process_t(pid={self.pid}, name={self.name!r}, "
                f"channel={self.channel}, flags={'|'.join(flags) or '-'})")


class ngx_exec_ctx_t:
    """What ``ngx_execute`` needs to ``execve`` a new binary."""

    __slots__ = ("path", "name", "argv", "envp")

    def __init__(self, path, name, argv, envp):
        self.path = path
        self.name = name
        self.argv = argv
        self.envp = envp


class ngx_signal_t:
    """One row of ``signals[]``: number, name, ``nginx -s`` word, handler."""

    __slots__ = ("signo", "signame", "name", "handler")

    def __init__(self, signo, signame, name, handler):
        self.signo = signo
        self.signame = signame
        self.name = name
        self.handler = handler


# src/os/unix/ngx_process.c globals
ngx_process_slot = 0
ngx_channel = -1
ngx_last_process = 0
ngx_processes = [ngx_process_t() for _ in range(NGX_MAX_PROCESSES)]

# declared in ngx_process.h, defined in ngx_process_cycle.c
ngx_pid = os.getpid()
ngx_parent = os.getppid()


def _log():
    return cy.ngx_cycle.log if cy.ngx_cycle is not None else None


def _nonblocking(fd):
    # ngx_nonblocking() is ioctl(FIONBIO) on Linux
    fcntl.ioctl(fd, termios.FIONBIO, b"\x01\x00\x00\x00")


def ngx_spawn_process(cycle, proc, data, name, respawn):
    """Fork a child that runs ``proc(cycle, data)``; return its pid.

    ``respawn`` is a spawn mode (``NGX_PROCESS_*``) or, when >= 0, the slot
    to respawn into. Returns ``NGX_INVALID_PID`` after logging nginx's alert
    when the table is full or ``socketpair()``, a descriptor flag or
    ``fork()`` fails; no descriptor is left open on any of those paths.
    """
    global ngx_channel, ngx_process_slot, ngx_last_process, ngx_pid, ngx_parent

    if respawn >= 0:
        s = respawn

    else:
        for s in range(ngx_last_process + 1):
            if s == ngx_last_process or ngx_processes[s].pid == -1:
                break

        if s == NGX_MAX_PROCESSES:
            ngx_log_error(NGX_LOG_ALERT, cycle.log, 0,
                          "no more than %d processes can be spawned",
                          NGX_MAX_PROCESSES)
            return NGX_INVALID_PID

    p = ngx_processes[s]

    if respawn != NGX_PROCESS_DETACHED:

        # Solaris 9 still has no AF_LOCAL, says nginx: AF_UNIX it is.
        try:
            p.channel[0], p.channel[1] = _socketpair()
        except OSError as e:
            ngx_log_error(NGX_LOG_ALERT, cycle.log, e.errno or 0,
                          "socketpair() failed while spawning \"%s\"", name)
            return NGX_INVALID_PID

        ngx_log_debug(cycle.log, 0, "channel %d:%d", p.channel[0],
                      p.channel[1])

        # nginx's six calls, each with its own failure branch: the same
        # branch for all six, so one handler, told which call failed by what
        try:
            what = "ioctl(FIONBIO)"
            _nonblocking(p.channel[0])
            _nonblocking(p.channel[1])
            what = "ioctl(FIOASYNC)"
            fcntl.ioctl(p.channel[0], termios.FIOASYNC, b"\x01\x00\x00\x00")
            what = "fcntl(F_SETOWN)"
            fcntl.fcntl(p.channel[0], fcntl.F_SETOWN, ngx_pid)
            what = "fcntl(FD_CLOEXEC)"
            fcntl.fcntl(p.channel[0], fcntl.F_SETFD, fcntl.FD_CLOEXEC)
            fcntl.fcntl(p.channel[1], fcntl.F_SETFD, fcntl.FD_CLOEXEC)
        except OSError as e:
            ngx_log_error(NGX_LOG_ALERT, cycle.log, e.errno or 0,
                          "%s failed while spawning \"%s\"", what, name)
            ngx_close_channel(p.channel, cycle.log)
            _forget_channel(p)
            return NGX_INVALID_PID

        ngx_channel = p.channel[1]

    else:
        p.channel[0] = -1
        p.channel[1] = -1

    ngx_process_slot = s

    try:
        pid = _forking.fork()
    except OSError as e:
        ngx_log_error(NGX_LOG_ALERT, cycle.log, e.errno or 0,
                      "fork() failed while spawning \"%s\"", name)
        if respawn != NGX_PROCESS_DETACHED:
            # nginx also "closes" the -1 entries of a detached slot, which
            # only logs two failed close() calls.
            ngx_close_channel(p.channel, cycle.log)
            _forget_channel(p)
        return NGX_INVALID_PID

    if pid == 0:
        ngx_parent = ngx_pid
        ngx_pid = os.getpid()
        _pending.forget()       # ngxlab: the master's queue is not the child's
        _forking.run_child(proc, cycle, data)   # never returns

    ngx_log_error(NGX_LOG_NOTICE, cycle.log, 0, "start %s %d", name, pid)

    p.pid = pid
    p.exited = 0

    if respawn >= 0:
        return pid

    p.proc = proc
    p.data = data
    p.name = name
    p.exiting = 0

    if respawn == NGX_PROCESS_NORESPAWN:
        p.respawn, p.just_spawn, p.detached = 0, 0, 0
    elif respawn == NGX_PROCESS_JUST_SPAWN:
        p.respawn, p.just_spawn, p.detached = 0, 1, 0
    elif respawn == NGX_PROCESS_RESPAWN:
        p.respawn, p.just_spawn, p.detached = 1, 0, 0
    elif respawn == NGX_PROCESS_JUST_RESPAWN:
        p.respawn, p.just_spawn, p.detached = 1, 1, 0
    elif respawn == NGX_PROCESS_DETACHED:
        p.respawn, p.just_spawn, p.detached = 0, 0, 1

    if s == ngx_last_process:
        ngx_last_process += 1

    return pid


def _forget_channel(p):
    # ngxlab: a pair closed on a failure path is not left in the slot. nginx
    # leaves the closed numbers there; the next socketpair() reuses them, so
    # a later ngx_reap_children() (a failed respawn is retried on the next
    # reap) or a later worker's ngx_worker_process_init() closes them again,
    # and by then they name another process's channel.
    if not pc.nginx_quirks:
        p.channel[0] = p.channel[1] = -1


def _socketpair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return a.detach(), b.detach()


def ngx_execute(cycle, ctx):
    """Fork a DETACHED child (no channel) that runs ``execve(ctx.path)``."""
    return ngx_spawn_process(cycle, ngx_execute_proc, ctx, ctx.name,
                             NGX_PROCESS_DETACHED)


def ngx_execute_proc(cycle, data):
    """The child of ``ngx_execute``: ``execve``, or alert and ``exit(1)``."""
    ctx = data
    try:
        os.execve(ctx.path, ctx.argv, ctx.envp)
    except OSError as e:
        ngx_log_error(NGX_LOG_ALERT, cycle.log, e.errno or 0,
                      "execve() failed while executing %s \"%s\"",
                      ctx.name, ctx.path)
    raise SystemExit(1)


def ngx_init_signals(log):
    """Install ``ngx_signal_handler`` for every signal of ``signals[]`` that
    has one, and ``SIG_IGN`` for SIGSYS and SIGPIPE. Returns ``NGX_OK``, or
    ``NGX_ERROR`` after an emerg "sigaction(SIG...) failed"."""
    for sig in signals:
        try:
            if sig.handler is not None:
                signal.signal(sig.signo, _python_signal_handler)
            else:
                signal.signal(sig.signo, signal.SIG_IGN)
        except (OSError, ValueError) as e:
            ngx_log_error(NGX_LOG_EMERG, log, getattr(e, "errno", 0) or 0,
                          "sigaction(%s) failed", sig.signame)
            return NGX_ERROR
    return NGX_OK


def _python_signal_handler(signo, frame):
    # Python runs this in the main thread between two bytecodes, after the C
    # handler has noted the signal (and woken the event loop through the
    # wakeup descriptor). No siginfo reaches Python here.
    ngx_signal_handler(signo, None)


def ngx_signal_handler(signo, siginfo):
    """Set the flag for ``signo`` for this process type and log "signal N
    (NAME) received [from PID][, action]". ``siginfo`` is the result of
    ``signal.sigwaitinfo`` (with ``si_pid``) or ``None``."""
    sig = next((s for s in signals if s.signo == signo), None)
    signame = sig.signame if sig else "signal %d" % signo
    ignore = 0
    action = ""

    if pc.ngx_process in (pc.NGX_PROCESS_MASTER, pc.NGX_PROCESS_SINGLE):
        if signo == signal.SIGQUIT:
            pc.ngx_quit = 1
            action = ", shutting down"
        elif signo in (signal.SIGTERM, signal.SIGINT):
            pc.ngx_terminate = 1
            action = ", exiting"
        elif signo == signal.SIGWINCH:
            if pc.ngx_daemonized:
                pc.ngx_noaccept = 1
                action = ", stop accepting connections"
        elif signo == signal.SIGHUP:
            pc.ngx_reconfigure = 1
            action = ", reconfiguring"
        elif signo == signal.SIGUSR1:
            pc.ngx_reopen = 1
            action = ", reopening logs"
        elif signo == signal.SIGUSR2:
            if os.getppid() == ngx_parent or pc.ngx_new_binary > 0:
                # the new binary while the old master lives, or the old
                # master while a new binary runs
                action = ", ignoring"
                ignore = 1
            else:
                pc.ngx_change_binary = 1
                action = ", changing binary"
        elif signo == signal.SIGALRM:
            pc.ngx_sigalrm = 1
        elif signo == signal.SIGIO:
            pc.ngx_sigio = 1
        elif signo == signal.SIGCHLD:
            pc.ngx_reap = 1

    elif pc.ngx_process in (pc.NGX_PROCESS_WORKER, pc.NGX_PROCESS_HELPER):
        if signo == signal.SIGWINCH and pc.ngx_daemonized:
            pc.ngx_debug_quit = 1
        if signo == signal.SIGQUIT or (signo == signal.SIGWINCH
                                       and pc.ngx_daemonized):
            pc.ngx_quit = 1
            action = ", shutting down"
        elif signo in (signal.SIGTERM, signal.SIGINT):
            pc.ngx_terminate = 1
            action = ", exiting"
        elif signo == signal.SIGUSR1:
            pc.ngx_reopen = 1
            action = ", reopening logs"
        elif signo in (signal.SIGHUP, signal.SIGUSR2, signal.SIGIO):
            action = ", ignoring"

    log = _log()
    si_pid = getattr(siginfo, "si_pid", 0) if siginfo is not None else 0
    if si_pid:
        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "signal %d (%s) received from %d%s",
                      signo, signame, si_pid, action)
    else:
        ngx_log_error(NGX_LOG_NOTICE, log, 0, "signal %d (%s) received%s",
                      signo, signame, action)

    if ignore:
        ngx_log_error(NGX_LOG_CRIT, log, 0,
                      "the changing binary signal is ignored: "
                      "you should shutdown or terminate "
                      "before either old or new binary's process")

    if signo == signal.SIGCHLD:
        ngx_process_get_status()


def ngx_process_get_status():
    """Reap every exited child with ``waitpid(-1, WNOHANG)``: record its
    status, mark its slot ``exited`` and log how it ended."""
    log = _log()
    one = 0

    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError as e:
            if one:
                return
            ngx_log_error(NGX_LOG_INFO, log, e.errno, "waitpid() failed")
            return
        except InterruptedError:
            continue
        except OSError as e:
            ngx_log_error(NGX_LOG_ALERT, log, e.errno or 0, "waitpid() failed")
            return

        if pid == 0:
            return

        one = 1
        process = "unknown process"

        i = 0
        while i < ngx_last_process:
            if ngx_processes[i].pid == pid:
                ngx_processes[i].status = status
                ngx_processes[i].exited = 1
                process = ngx_processes[i].name
                break
            i += 1

        if os.WIFSIGNALED(status):
            ngx_log_error(NGX_LOG_ALERT, log, 0, "%s %d exited on signal %d%s",
                          process, pid, os.WTERMSIG(status),
                          " (core dumped)" if os.WCOREDUMP(status) else "")
        else:
            ngx_log_error(NGX_LOG_NOTICE, log, 0, "%s %d exited with code %d",
                          process, pid, os.WEXITSTATUS(status))

        # nginx reads slot ngx_last_process here when the pid was not found
        if (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 2
                and i < NGX_MAX_PROCESSES and ngx_processes[i].respawn):
            ngx_log_error(NGX_LOG_ALERT, log, 0,
                          "%s %d exited with fatal code %d "
                          "and cannot be respawned",
                          process, pid, os.WEXITSTATUS(status))
            ngx_processes[i].respawn = 0


def ngx_os_signal_process(cycle, name, pid):
    """Send the signal ``nginx -s NAME`` sends ("stop", "quit", "reopen",
    "reload") to ``pid``. Returns 0, or 1 (unknown name, or ``kill`` failed
    after an alert "kill(PID, SIGNO) failed")."""
    for sig in signals:
        if name == sig.name:
            try:
                os.kill(pid, sig.signo)
                return 0
            except OSError as e:
                ngx_log_error(NGX_LOG_ALERT, cycle.log, e.errno or 0,
                              "kill(%d, %d) failed", pid, sig.signo)
    return 1


signals = [
    ngx_signal_t(signal.SIGHUP, "SIGHUP", "reload", ngx_signal_handler),
    ngx_signal_t(signal.SIGUSR1, "SIGUSR1", "reopen", ngx_signal_handler),
    ngx_signal_t(signal.SIGWINCH, "SIGWINCH", "", ngx_signal_handler),
    ngx_signal_t(signal.SIGTERM, "SIGTERM", "stop", ngx_signal_handler),
    ngx_signal_t(signal.SIGQUIT, "SIGQUIT", "quit", ngx_signal_handler),
    ngx_signal_t(signal.SIGUSR2, "SIGUSR2", "", ngx_signal_handler),
    ngx_signal_t(signal.SIGALRM, "SIGALRM", "", ngx_signal_handler),
    ngx_signal_t(signal.SIGINT, "SIGINT", "", ngx_signal_handler),
    ngx_signal_t(signal.SIGIO, "SIGIO", "", ngx_signal_handler),
    ngx_signal_t(signal.SIGCHLD, "SIGCHLD", "", ngx_signal_handler),
    ngx_signal_t(signal.SIGSYS, "SIGSYS, SIG_IGN", "", None),
    ngx_signal_t(signal.SIGPIPE, "SIGPIPE, SIG_IGN", "", None),
]
