"""The master and worker cycles: src/os/unix/ngx_process_cycle.[ch] at
release-1.30.4.

The master blocks its signals, starts the workers, and then sleeps until a
signal arrives; each signal sets a flag, and the loop acts on the flags:
reap dead children and respawn them into the same slot, start a new
generation on reload, forward QUIT/TERMINATE/REOPEN to the workers over their
channels, start a new binary. It never reads a channel; it only writes
``channel[0]``.

A worker closes the channel ends it must not hold, registers its own
``channel[1]`` with its event loop and, from then on, does what the master's
messages say: ``ngx_channel_handler`` sets the same flags a signal would, or
updates the worker's copy of the process table (OPEN_CHANNEL, CLOSE_CHANNEL).

Deviations:

- ``sigsuspend`` becomes ``sigwaitinfo`` on the blocked set: the master takes
  a signal synchronously, then any others already pending, and runs
  ``ngx_signal_handler`` for each from the loop (see ``ngxlab.process``).
  While messages wait in the write queue (below), the wait is a
  ``sigtimedwait`` that the queue's SIGIO (or a half-second safety net) ends
  to write them; the loop itself passes only when a signal came, as nginx's.
- The two writes nginx marks ``TODO: NGX_AGAIN`` (OPEN_CHANNEL in
  ``ngx_pass_open_channel``, at start-up, respawn and reload; the
  CLOSE_CHANNEL broadcast in ``ngx_reap_children``) go through ngxlab's
  write queue, ``ngxlab._pending``: a message that finds the receiver's
  channel full is kept (an OPEN_CHANNEL with a ``dup()`` of its descriptor)
  and written in order as soon as there is room, instead of being lost. The
  master never blocks on it. A reaped slot's queue is dropped, a child
  closes the duplicates it inherited, and ``ngx_signal_worker_processes``
  sends QUIT, TERMINATE and REOPEN to a slot with a queue by ``kill()`` (as
  nginx does when a channel write fails) rather than overtake the queue.
  With ``nginx_quirks`` the messages are lost as in nginx.
- ``ngx_start_worker_processes`` does not call ``ngx_pass_open_channel``
  after a failed spawn (nginx announces whatever ``ngx_process_slot`` names:
  the previous process again after a failed ``socketpair()``, whose
  receivers then hold two descriptors for it, one never closed; a closed
  descriptor after a failed ``fork()``, "sendmsg() failed (9: Bad file
  descriptor)" once per worker). ``nginx_quirks`` announces as nginx does.
- ``ngx_reap_children`` neither closes nor announces closed again the
  channel of a slot whose respawn failed (``ngx_spawn_process`` has set it
  to -1; nginx closes the stale numbers again, by then another process's
  descriptors, and sends a second CLOSE_CHANNEL). ``nginx_quirks`` does.
- ``live`` is recomputed from the table when QUIT or TERM is pending, so a
  master none of whose workers could be spawned exits (nginx's ``live``
  stays 1 until a SIGCHLD that never comes, and the master never exits).
  ``nginx_quirks`` keeps nginx's.
- ``ngx_channel_handler`` checks the slot of OPEN_CHANNEL and CLOSE_CHANNEL
  against ``NGX_MAX_PROCESSES`` (nginx indexes its array unchecked, outside
  it for a bad slot; Python would raise ``IndexError`` or wrap a negative
  slot to the end) and logs an alert "channel command N for invalid slot S
  ignored", in both modes; the descriptor of such an OPEN_CHANNEL is closed
  (left open with ``nginx_quirks``).
- An unknown command makes ``ngx_channel_handler`` log an alert "unknown
  channel command N ignored"; nginx ignores it without a word, and so does
  ngxlab with ``nginx_quirks``.
- Observation points nginx does not have: ``_table_observers`` run at the
  top of a pass of the master's loop when no signal is pending (the
  command line writes the process table to ``logs/ngxlab.slots`` with one,
  when it changed; during a storm of SIGCHLD it is written once the storm
  has passed, not once per pass), and ``_received`` after every message a
  worker reads (``lab.Master``'s reports). Both are empty unless an
  instrument fills them. The message ``_received`` (and an extension of
  ``ngxlab.beyond``) is given is the handler's ``ch``: one ``ngx_channel_t``
  per process, which the next message overwrites, as nginx's ``ch`` on the
  handler's stack lives only as long as the call.
- The channel mesh in the worker is nginx's; ngxlab adds one descriptor: a
  pidfd of the master, registered with the event loop, so that a worker
  notices its master's death and exits within a second
  (``ngx_core_conf_t.watch_master``, on by default). nginx's workers live on
  when the master is killed: with ``watch_master=0`` so do ngxlab's. If
  ``pidfd_open`` fails (kernels before 5.3, or no descriptor left) the
  worker's init exits with code 2, which is not respawned.
- There are no modules, so no ``init_process`` loop, no ``exit_process``
  hooks in ``ngx_worker_process_exit`` and no ``exit_master`` hooks in
  ``ngx_master_process_exit``: ``ngx_worker_process_init`` calls the two
  hooks ngxlab has (the event loop, the listening sockets), each fatal on
  ``NGX_ERROR`` (exit code 2), as a module's is.
- ``ngx_worker_process_exit`` and ``ngx_master_process_exit`` end the process
  with ``os._exit`` after flushing (nginx calls ``exit()``), and do not copy
  the log into a static exit cycle.
- ``ngx_worker_process_init`` mirrors the signal mask, the module hooks
  and the channel clean-up; it does not mirror the environment, priority,
  rlimits, setgid/setuid, CPU affinity, dumpable, chdir and srandom steps,
  which ngxlab has no configuration for. ``ngx_worker_process_cycle`` has
  no shutdown timer and no posted events.
- On ``NGX_ERROR`` nginx's ``ngx_channel_handler`` first calls
  ``ngx_del_conn(c, 0)`` under epoll; ngxlab's ``ngx_close_connection``
  removes the descriptor from epoll itself (``ngx_del_event`` with
  ``NGX_CLOSE_EVENT``), which does the same.
- ``ngx_worker_process_exit`` logs "aborting" after an unclean graceful exit
  but does not call ``ngx_debug_point`` (no ``debug_points`` directive), and
  its "open socket #N left" line names the descriptor only, not nginx's
  connection number and index.
- ``ngx_channel_handler`` gives a command nginx does not know to the
  handler registered for it in ``ngxlab.channel._extensions`` (see
  ``ngxlab.beyond``), before the branch that logs it as unknown; with
  nothing registered that branch is as before.
- The master's title is "master process" without nginx's copy of the
  command line (see ``ngxlab.setproctitle``).
- ``keep_inherited_channels`` (ngxlab's, off by default) skips the
  closing in ``ngx_worker_process_init``, to measure what it saves.
- There is no cache manager or loader: ``ngx_start_cache_manager_processes``
  is not mirrored, and ``worker_processes + 2`` in the termination path keeps
  nginx's "+ 2".
"""

from __future__ import annotations

import _signal
import os
import signal
import time

# Everything a worker runs is imported here, in the master, before any fork:
# an import after fork() would be paid again by every worker.
from ngxlab import _forking, _pending, channel, connection, event as evt
# The import cycle of the mirrors (process, process_cycle, cycle, nginx,
# daemon, _http), as nginx's files share their globals through "extern":
# each imports the others' modules, never names from them, so any of them
# can be imported first; attributes are read when a function runs.
from ngxlab import _http, cycle as cy, nginx, process
from ngxlab.setproctitle import ngx_setproctitle
from ngxlab.channel import (  # noqa: F401  (re-exported, as ngx_process_cycle.h)
    NGX_CMD_CLOSE_CHANNEL, NGX_CMD_OPEN_CHANNEL, NGX_CMD_QUIT, NGX_CMD_REOPEN,
    NGX_CMD_TERMINATE, ngx_channel_t, ngx_read_channel, ngx_write_channel,
)
from ngxlab.core import (
    NGX_AGAIN, NGX_ERROR, NGX_LOG_ALERT, NGX_LOG_DEBUG, NGX_LOG_NOTICE, NGX_OK,
    ngx_log_debug, ngx_log_error, sizeof,
)

__all__ = [
    "NGX_CMD_OPEN_CHANNEL", "NGX_CMD_CLOSE_CHANNEL", "NGX_CMD_QUIT",
    "NGX_CMD_TERMINATE", "NGX_CMD_REOPEN",
    "NGX_PROCESS_SINGLE", "NGX_PROCESS_MASTER", "NGX_PROCESS_SIGNALLER",
    "NGX_PROCESS_WORKER", "NGX_PROCESS_HELPER",
    "ngx_master_process_cycle", "ngx_start_worker_processes",
    "ngx_pass_open_channel", "ngx_signal_worker_processes",
    "ngx_reap_children", "ngx_master_process_exit",
    "ngx_worker_process_cycle", "ngx_worker_process_init",
    "ngx_worker_process_exit", "ngx_channel_handler",
]

# src/os/unix/ngx_process_cycle.h: process types
NGX_PROCESS_SINGLE = 0
NGX_PROCESS_MASTER = 1
NGX_PROCESS_SIGNALLER = 2
NGX_PROCESS_WORKER = 3
NGX_PROCESS_HELPER = 4

# src/os/unix/ngx_process_cycle.c globals
ngx_process = NGX_PROCESS_SINGLE
ngx_worker = 0

ngx_reap = 0
ngx_sigio = 0
ngx_sigalrm = 0
ngx_terminate = 0
ngx_quit = 0
ngx_debug_quit = 0
ngx_exiting = 0
ngx_reconfigure = 0
ngx_reopen = 0
ngx_change_binary = 0
ngx_new_binary = 0
ngx_inherited = 0
ngx_daemonized = 0
ngx_noaccept = 0
ngx_noaccepting = 0
ngx_restart = 0

# The flags above, by name, for _reset() (a test checks that every flag
# defined here is listed)
_flags = (
    "ngx_reap", "ngx_sigio", "ngx_sigalrm", "ngx_terminate", "ngx_quit",
    "ngx_debug_quit", "ngx_exiting", "ngx_reconfigure", "ngx_reopen",
    "ngx_change_binary", "ngx_new_binary", "ngx_inherited", "ngx_daemonized",
    "ngx_noaccept", "ngx_noaccepting", "ngx_restart",
)

# How nginx's quirks are kept for demonstrations (not nginx's): with this
# true, every safe default listed under "Deviations" gives way to nginx's
# behaviour (messages lost on a full channel, announcements after a failed
# spawn, a master that cannot exit without workers), and the worker reads
# its channel as nginx does, leaks included.
nginx_quirks = False


def _reset():
    """ngxlab's: put this module's globals back as at import, in place (the
    flags, the process type, the knobs and the observers), for a process
    that runs one master after another (``lab.Master``)."""
    global ngx_process, ngx_worker, nginx_quirks, keep_inherited_channels
    g = globals()
    for flag in _flags:
        g[flag] = 0
    ngx_process = NGX_PROCESS_SINGLE
    ngx_worker = 0
    nginx_quirks = False
    keep_inherited_channels = False
    del _received[:]
    del _table_observers[:]

_master_signals = (
    signal.SIGCHLD, signal.SIGALRM, signal.SIGIO, signal.SIGINT,
    signal.SIGHUP, signal.SIGUSR1, signal.SIGWINCH, signal.SIGTERM,
    signal.SIGQUIT, signal.SIGUSR2,
)


def _sigsuspend(sigset, log):
    """Wait for one signal of ``sigset`` (all blocked), then take every other
    one already pending, running ``ngx_signal_handler`` for each. While
    messages are queued for full channels, the wait flushes them as room
    appears (``ngxlab._pending.sigwaitinfo``)."""
    info = _pending.sigwaitinfo(sigset, log)
    process.ngx_signal_handler(info.si_signo, info)
    while True:
        info = signal.sigtimedwait(sigset, 0)
        if info is None:
            return
        process.ngx_signal_handler(info.si_signo, info)


def ngx_master_process_cycle(cycle):
    """The master's life: start the workers, then act on signals forever.
    Leaves through ``ngx_master_process_exit`` when nothing is left alive
    after QUIT or TERM."""
    global ngx_reap, ngx_sigalrm, ngx_reconfigure, ngx_restart, ngx_reopen
    global ngx_change_binary, ngx_new_binary, ngx_noaccept, ngx_noaccepting

    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, _master_signals)
    except OSError as e:
        ngx_log_error(NGX_LOG_ALERT, cycle.log, e.errno or 0,
                      "sigprocmask() failed")

    ngx_setproctitle("master process")

    ccf = cycle.conf
    ngx_start_worker_processes(cycle, ccf.worker_processes,
                               process.NGX_PROCESS_RESPAWN)

    ngx_new_binary = 0
    delay = 0
    sigio = 0
    live = 1

    while True:
        # ngxlab's observers of the process table (not nginx's), when no
        # signal is waiting to start the next pass at once
        if _table_observers and not signal.sigpending():
            for observe in _table_observers:
                observe(cycle)

        if delay:
            if ngx_sigalrm:
                sigio = 0
                delay *= 2
                ngx_sigalrm = 0

            ngx_log_debug(cycle.log, 0, "termination cycle: %d", delay)
            signal.setitimer(signal.ITIMER_REAL, delay / 1000.0)

        ngx_log_debug(cycle.log, 0, "sigsuspend")

        _sigsuspend(_master_signals, cycle.log)

        ngx_log_debug(cycle.log, 0, "wake up, sigio %d", sigio)

        if ngx_reap:
            ngx_reap = 0
            ngx_log_debug(cycle.log, 0, "reap children")
            live = ngx_reap_children(cycle)

        # ngxlab: live is only recomputed when a child is reaped; a master
        # whose every spawn failed would wait for a SIGCHLD that never comes
        if live and (ngx_terminate or ngx_quit) and not nginx_quirks:
            live = _live()

        if not live and (ngx_terminate or ngx_quit):
            ngx_master_process_exit(cycle)

        if ngx_terminate:
            if delay == 0:
                delay = 50

            if sigio:
                sigio -= 1
                continue

            sigio = ccf.worker_processes + 2   # nginx: "+ 2 cache processes"

            if delay > 1000:
                ngx_signal_worker_processes(cycle, signal.SIGKILL)
            else:
                ngx_signal_worker_processes(cycle, signal.SIGTERM)

            continue

        if ngx_quit:
            ngx_signal_worker_processes(cycle, signal.SIGQUIT)
            connection.ngx_close_listening_sockets(cycle)
            continue

        if ngx_reconfigure:
            ngx_reconfigure = 0

            if ngx_new_binary:
                ngx_start_worker_processes(cycle, ccf.worker_processes,
                                           process.NGX_PROCESS_RESPAWN)
                ngx_noaccepting = 0
                continue

            ngx_log_error(NGX_LOG_NOTICE, cycle.log, 0, "reconfiguring")

            new = cy.ngx_init_cycle(cycle)
            if new is None:
                continue

            cycle = cy.ngx_cycle = new
            ccf = cycle.conf
            ngx_start_worker_processes(cycle, ccf.worker_processes,
                                       process.NGX_PROCESS_JUST_RESPAWN)

            # allow new processes to start
            time.sleep(0.1)

            live = 1
            ngx_signal_worker_processes(cycle, signal.SIGQUIT)

        if ngx_restart:
            ngx_restart = 0
            ngx_start_worker_processes(cycle, ccf.worker_processes,
                                       process.NGX_PROCESS_RESPAWN)
            live = 1

        if ngx_reopen:
            ngx_reopen = 0
            ngx_log_error(NGX_LOG_NOTICE, cycle.log, 0, "reopening logs")
            cy.ngx_reopen_files(cycle)
            ngx_signal_worker_processes(cycle, signal.SIGUSR1)

        if ngx_change_binary:
            ngx_change_binary = 0
            ngx_log_error(NGX_LOG_NOTICE, cycle.log, 0, "changing binary")
            ngx_new_binary = nginx.ngx_exec_new_binary(cycle, nginx.ngx_argv)

        if ngx_noaccept:
            ngx_noaccept = 0
            ngx_noaccepting = 1
            ngx_signal_worker_processes(cycle, signal.SIGQUIT)


def _debug(log):
    """Whether ``log`` keeps debug lines: what nginx's ``ngx_log_debugN``
    macros test inline before each line. A loop over the process table tests
    it once, so that at other levels a debug line costs no call and no
    arguments (nginx's costs a comparison)."""
    return log is not None and log.log_level >= NGX_LOG_DEBUG


def _live():
    """Whether a child counts as live for ``ngx_reap_children``: not exited,
    and exiting or not detached (a running new binary does not count)."""
    return int(any(p.pid != -1 and not p.exited
                   and (p.exiting or not p.detached)
                   for p in process.ngx_processes[:process.ngx_last_process]))


def ngx_start_worker_processes(cycle, n, type):
    """Spawn ``n`` workers in mode ``type``; after each, tell the earlier
    ones about it (``ngx_pass_open_channel``)."""
    ngx_log_error(NGX_LOG_NOTICE, cycle.log, 0, "start worker processes")

    for i in range(n):
        pid = process.ngx_spawn_process(cycle, ngx_worker_process_cycle, i,
                                        "worker process", type)

        # ngxlab: nothing to announce after a failed spawn (nginx announces
        # the slot ngx_process_slot names: the previous process again after
        # a failed socketpair(), a closed channel after a failed fork())
        if pid == process.NGX_INVALID_PID and not nginx_quirks:
            continue

        ngx_pass_open_channel(cycle)


def ngx_pass_open_channel(cycle):
    """Send OPEN_CHANNEL {pid, slot, fd = its channel[0]} about the process
    just spawned to every other live process with a channel.

    nginx ignores the result ("TODO: NGX_AGAIN"): when a receiver's socket
    buffer is full the message is lost and that receiver never learns about
    the new process. ngxlab queues it instead (``ngxlab._pending``) and
    writes it, in order, when the receiver has read; with ``nginx_quirks``
    the message is lost as in nginx.
    """
    slot = process.ngx_process_slot
    new = process.ngx_processes[slot]
    # nginx's ngx_log_debugN macros test the log's level inline: tested once
    # here, not once per receiver
    debug = _debug(cycle.log)

    ch = ngx_channel_t(NGX_CMD_OPEN_CHANNEL, new.pid, slot, new.channel[0])

    for i in range(process.ngx_last_process):
        p = process.ngx_processes[i]
        if i == slot or p.pid == -1 or p.channel[0] == -1:
            continue

        if debug:
            ngx_log_debug(cycle.log, 0,
                          "pass channel s:%d pid:%d fd:%d to s:%d pid:%d fd:%d",
                          ch.slot, ch.pid, ch.fd, i, p.pid, p.channel[0])

        # TODO: NGX_AGAIN (nginx's comment: the result is ignored)

        if nginx_quirks:
            ngx_write_channel(p.channel[0], ch, sizeof(ngx_channel_t),
                              cycle.log)
        else:
            _pending.write(i, p.channel[0], ch, cycle.log)


def ngx_signal_worker_processes(cycle, signo):
    """Tell every child to QUIT, TERMINATE or REOPEN over its channel; fall
    back to ``kill(pid, signo)`` when there is no such command (SIGKILL) or
    the write did not succeed."""
    global ngx_reap

    if signo == signal.SIGQUIT:
        command = NGX_CMD_QUIT
    elif signo == signal.SIGTERM:
        command = NGX_CMD_TERMINATE
    elif signo == signal.SIGUSR1:
        command = NGX_CMD_REOPEN
    else:
        command = 0

    ch = ngx_channel_t(command, 0, 0, -1)
    debug = _debug(cycle.log)

    for i in range(process.ngx_last_process):
        p = process.ngx_processes[i]

        if debug:
            ngx_log_debug(cycle.log, 0, "child: %d %d e:%d t:%d d:%d r:%d j:%d",
                          i, p.pid, p.exiting, p.exited, p.detached, p.respawn,
                          p.just_spawn)

        if p.detached or p.pid == -1:
            continue

        if p.just_spawn:
            p.just_spawn = 0
            continue

        if p.exiting and signo == signal.SIGQUIT:
            continue

        if command:
            # ngxlab: behind messages queued for a full channel, the command
            # goes by kill(), as nginx's does when the write fails
            if not _pending.queued(i) \
                    and ngx_write_channel(p.channel[0], ch,
                                          sizeof(ngx_channel_t),
                                          cycle.log) == NGX_OK:
                if signo != signal.SIGUSR1:
                    p.exiting = 1
                continue

        if debug:
            ngx_log_debug(cycle.log, 0, "kill (%d, %d)", p.pid, signo)

        try:
            os.kill(p.pid, signo)
        except OSError as e:
            ngx_log_error(NGX_LOG_ALERT, cycle.log, e.errno or 0,
                          "kill(%d, %d) failed", p.pid, signo)
            if isinstance(e, ProcessLookupError):
                p.exited = 1
                p.exiting = 0
                ngx_reap = 1
            continue

        if signo != signal.SIGUSR1:
            p.exiting = 1


def ngx_reap_children(cycle):
    """Clean up every exited child: close its pair, send CLOSE_CHANNEL to
    the living, respawn it into the same slot (then OPEN_CHANNEL) when it
    should be, or free the slot. Returns whether a child is still alive."""
    global ngx_new_binary, ngx_restart, ngx_noaccepting

    ch = ngx_channel_t(NGX_CMD_CLOSE_CHANNEL, 0, 0, -1)
    live = 0
    debug = _debug(cycle.log)

    i = 0
    while i < process.ngx_last_process:
        p = process.ngx_processes[i]

        if debug:
            ngx_log_debug(cycle.log, 0, "child: %d %d e:%d t:%d d:%d r:%d j:%d",
                          i, p.pid, p.exiting, p.exited, p.detached, p.respawn,
                          p.just_spawn)

        if p.pid == -1:
            i += 1
            continue

        if p.exited:

            # ngxlab: (the second condition) a slot whose respawn failed
            # has no channel left to close or to announce closed
            if not p.detached and (p.channel[0] != -1 or nginx_quirks):
                _pending.drop(i)        # ngxlab: nobody will read its queue
                channel.ngx_close_channel(p.channel, cycle.log)

                p.channel[0] = -1
                p.channel[1] = -1

                ch.pid = p.pid
                ch.slot = i

                for n in range(process.ngx_last_process):
                    q = process.ngx_processes[n]
                    if q.exited or q.pid == -1 or q.channel[0] == -1:
                        continue

                    if debug:
                        ngx_log_debug(cycle.log, 0,
                                      "pass close channel s:%d pid:%d to:%d",
                                      ch.slot, ch.pid, q.pid)

                    # TODO: NGX_AGAIN (nginx's comment: the result is ignored)

                    if nginx_quirks:
                        ngx_write_channel(q.channel[0], ch,
                                          sizeof(ngx_channel_t), cycle.log)
                    else:
                        _pending.write(n, q.channel[0], ch, cycle.log)

            if p.respawn and not p.exiting and not ngx_terminate \
                    and not ngx_quit:
                if process.ngx_spawn_process(cycle, p.proc, p.data, p.name,
                                             i) == process.NGX_INVALID_PID:
                    ngx_log_error(NGX_LOG_ALERT, cycle.log, 0,
                                  "could not respawn %s", p.name)
                    i += 1
                    continue

                ngx_pass_open_channel(cycle)

                live = 1
                i += 1
                continue

            if p.pid == ngx_new_binary:
                # back from .oldbin, the rename ngx_exec_new_binary made
                ccf = cycle.conf
                try:
                    os.rename(ccf.oldpid, ccf.pid)
                except OSError as e:
                    ngx_log_error(NGX_LOG_ALERT, cycle.log, e.errno or 0,
                                  "rename() %s back to %s failed after the "
                                  "new binary process \"%s\" exited",
                                  ccf.oldpid, ccf.pid, nginx.ngx_argv[0])

                ngx_new_binary = 0
                if ngx_noaccepting:
                    ngx_restart = 1
                    ngx_noaccepting = 0

            if i == process.ngx_last_process - 1:
                process.ngx_last_process -= 1
            else:
                p.pid = -1

        elif p.exiting or not p.detached:
            live = 1

        i += 1

    return live


def ngx_master_process_exit(cycle):
    """Delete the pid file, log "exit", close the listening sockets, exit."""
    cy.ngx_delete_pidfile(cycle)

    ngx_log_error(NGX_LOG_NOTICE, cycle.log, 0, "exit")

    connection.ngx_close_listening_sockets(cycle)

    _forking.exit(0)


def ngx_worker_process_cycle(cycle, data):
    """A worker's life: init, then the event loop, acting on the flags the
    channel handler (or a signal) sets."""
    global ngx_process, ngx_worker, ngx_quit, ngx_exiting, ngx_reopen

    worker = data

    ngx_process = NGX_PROCESS_WORKER
    ngx_worker = worker

    ngx_worker_process_init(cycle, worker)

    ngx_setproctitle("worker process")

    # nginx's ngx_log_debug0 tests the level inline: here once, not per pass
    debug = cycle.log is not None and cycle.log.log_level >= NGX_LOG_DEBUG

    while True:

        if ngx_exiting:
            if evt.ngx_event_no_timers_left() == NGX_OK:
                ngx_log_error(NGX_LOG_NOTICE, cycle.log, 0, "exiting")
                ngx_worker_process_exit(cycle)

        if debug:
            ngx_log_debug(cycle.log, 0, "worker cycle")

        evt.ngx_process_events_and_timers(cycle)

        if ngx_terminate:
            ngx_log_error(NGX_LOG_NOTICE, cycle.log, 0, "exiting")
            ngx_worker_process_exit(cycle)

        if ngx_quit:
            ngx_quit = 0
            ngx_log_error(NGX_LOG_NOTICE, cycle.log, 0,
                          "gracefully shutting down")
            ngx_setproctitle("worker process is shutting down")

            if not ngx_exiting:
                ngx_exiting = 1
                connection.ngx_close_listening_sockets(cycle)
                _http.close_idle_connections(cycle)

        if ngx_reopen:
            ngx_reopen = 0
            ngx_log_error(NGX_LOG_NOTICE, cycle.log, 0, "reopening logs")
            cy.ngx_reopen_files(cycle, -1)


def ngx_worker_process_init(cycle, worker):
    """Unblock signals, start the event loop and the listening sockets,
    close the channel ends a worker must not hold (the other slots'
    ``channel[1]``, its own ``channel[0]``) and register ``ngx_channel``
    for reading with ``ngx_channel_handler``."""
    try:
        # _signal's, the C function: signal.pthread_sigmask also turns the
        # old mask (the master's ten blocked signals, which nginx does not
        # read either) into Signals members, ten enum lookups in every worker
        _signal.pthread_sigmask(signal.SIG_SETMASK, [])
    except OSError as e:
        ngx_log_error(NGX_LOG_ALERT, cycle.log, e.errno or 0,
                      "sigprocmask() failed")

    # the modules' init_process hooks: the event module, then the listening
    # sockets' accept events
    if evt.ngx_event_process_init(cycle) == NGX_ERROR:
        _forking.exit(2)
    if _http.init_process(cycle) == NGX_ERROR:
        _forking.exit(2)
    if cycle.conf.watch_master and _watch_master(cycle) == NGX_ERROR:
        _forking.exit(2)

    slot = process.ngx_process_slot
    for n in range(0 if keep_inherited_channels
                   else process.ngx_last_process):
        p = process.ngx_processes[n]

        if p.pid == -1:
            continue

        if n == slot:
            continue

        if p.channel[1] == -1:
            continue

        try:
            os.close(p.channel[1])
        except OSError as e:
            ngx_log_error(NGX_LOG_ALERT, cycle.log, e.errno or 0,
                          "close() channel failed")

    try:
        if not keep_inherited_channels:
            os.close(process.ngx_processes[slot].channel[0])
    except OSError as e:
        ngx_log_error(NGX_LOG_ALERT, cycle.log, e.errno or 0,
                      "close() channel failed")

    if channel.ngx_add_channel_event(cycle, process.ngx_channel,
                                     evt.NGX_READ_EVENT,
                                     ngx_channel_handler) == NGX_ERROR:
        _forking.exit(2)


def _watch_master(cycle):
    """ngxlab's addition: a pidfd of the master in the event loop."""
    try:
        fd = os.pidfd_open(process.ngx_parent)
    except OSError as e:
        ngx_log_error(NGX_LOG_ALERT, cycle.log, e.errno or 0,
                      "pidfd_open(%d) failed", process.ngx_parent)
        return NGX_ERROR

    c = connection.ngx_get_connection(fd, cycle.log)
    if c is None:
        os.close(fd)
        return NGX_ERROR
    c.read.handler = _master_exited
    c.read.channel = 1
    if evt.ngx_add_event(c.read, evt.NGX_READ_EVENT, 0) \
            == NGX_ERROR:
        connection.ngx_close_connection(c)
        return NGX_ERROR
    if os.getppid() != process.ngx_parent:
        _master_exited(c.read)      # it died before we started watching
    return NGX_OK


def _master_exited(ev):
    global ngx_terminate
    ngx_log_error(NGX_LOG_ALERT, ev.log, 0,
                  "master process %d exited, worker exiting",
                  process.ngx_parent)
    connection.ngx_close_connection(ev.data)
    ngx_terminate = 1


def ngx_worker_process_exit(cycle):
    """Log the connections a graceful exit left open, log "exit", exit."""
    global ngx_debug_quit

    if ngx_exiting and not ngx_terminate:
        for c in _http.open_connections():
            ngx_log_error(NGX_LOG_ALERT, cycle.log, 0,
                          "open socket #%d left in connection", c.fd)
            ngx_debug_quit = 1

    if ngx_debug_quit:
        ngx_log_error(NGX_LOG_ALERT, cycle.log, 0, "aborting")

    ngx_log_error(NGX_LOG_NOTICE, cycle.log, 0, "exit")

    _forking.exit(0)


def ngx_channel_handler(ev):
    """Read every message waiting on the channel and act on it: QUIT,
    TERMINATE and REOPEN set flags; OPEN_CHANNEL records the peer's pid and
    the descriptor just received; CLOSE_CHANNEL closes the peer's
    ``channel[0]``. On an error the channel is closed for good, as nginx
    does."""
    global ngx_quit, ngx_terminate, ngx_reopen

    if ev.timedout:
        ev.timedout = 0
        return

    c = ev.data
    log = ev.log
    # nginx's ngx_log_debugN macros test the log's level inline; tested
    # once here, the debug lines cost nothing when the log is not at debug
    debug = log is not None and log.log_level >= NGX_LOG_DEBUG
    processes = process.ngx_processes

    if debug:
        ngx_log_debug(log, 0, "channel handler")

    ch = _ch                                # nginx's: a local on the stack
    while True:

        n = ngx_read_channel(c.fd, ch, _CHANNEL_SIZE, log, nginx_quirks)

        if debug:
            ngx_log_debug(log, 0, "channel: %d", n)

        if n == NGX_ERROR:
            connection.ngx_close_connection(c)
            return

        if n == NGX_AGAIN:
            return

        command = ch.command

        if debug:
            ngx_log_debug(log, 0, "channel command: %d", command)

        if command == NGX_CMD_QUIT:
            ngx_quit = 1

        elif command == NGX_CMD_TERMINATE:
            ngx_terminate = 1

        elif command == NGX_CMD_REOPEN:
            ngx_reopen = 1

        elif (command == NGX_CMD_OPEN_CHANNEL
              or command == NGX_CMD_CLOSE_CHANNEL) \
                and not 0 <= ch.slot < process.NGX_MAX_PROCESSES:
            # ngxlab: nginx indexes its table with the slot unchecked
            ngx_log_error(NGX_LOG_ALERT, log, 0,
                          "channel command %d for invalid slot %d ignored",
                          command, ch.slot)
            if command == NGX_CMD_OPEN_CHANNEL and not nginx_quirks:
                channel._close_fds((ch.fd,))

        elif command == NGX_CMD_OPEN_CHANNEL:
            if debug:
                ngx_log_debug(log, 0, "get channel s:%d pid:%d fd:%d",
                              ch.slot, ch.pid, ch.fd)

            p = processes[ch.slot]
            p.pid = ch.pid
            p.channel[0] = ch.fd

        elif command == NGX_CMD_CLOSE_CHANNEL:
            p = processes[ch.slot]
            if debug:
                ngx_log_debug(log, 0,
                              "close channel s:%d pid:%d our:%d fd:%d",
                              ch.slot, ch.pid, p.pid, p.channel[0])

            try:
                os.close(p.channel[0])
            except OSError as e:
                ngx_log_error(NGX_LOG_ALERT, log, e.errno or 0,
                              "close() channel failed")

            p.channel[0] = -1

        elif command in channel._extensions:   # ngxlab's: ngxlab.beyond
            channel._extensions[command](ch, log)

        elif not nginx_quirks:
            # nginx ignores an unknown command without a word
            ngx_log_error(NGX_LOG_ALERT, log, 0,
                          "unknown channel command %d ignored", command)

        if _received:
            for observe in _received:
                observe(ch)


_CHANNEL_SIZE = sizeof(ngx_channel_t)

# ngx_channel_handler's ch. nginx declares it on the handler's stack, which
# costs nothing; a new ngx_channel_t at every wake would cost a Python
# worker an allocation, an __init__ call and a deallocation, and a cold wake
# (each of a reload's) fetches the memory they touch (the class, its slots,
# __init__'s code) again. So each process has one, overwritten by every
# message it reads. As nginx's &ch, it is valid during the call: whoever
# keeps a message past it keeps a copy.
_ch = ngx_channel_t()


# ngxlab's observation points (not nginx's): callbacks run in a worker for
# every message it reads, and in the master each time round its loop (the
# command line writes the process table to logs/ngxlab.slots with it).
_received: list = []
_table_observers: list = []

# ngxlab's demonstration knob (not nginx's): a worker that keeps every
# channel end it inherited, to show what the closing in
# ngx_worker_process_init saves.
keep_inherited_channels = False
