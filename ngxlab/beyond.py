"""Beyond nginx: a worker hands a live connection to another over the mesh.

Not a mirror: nginx has nothing like this (its workers never write to a
channel). This module runs inside the workers, beside ``ngxlab._http``, whose
answer it reuses, and reaches the mirrors through two hooks that do nothing
until something is registered (see "Deviations" in ``ngxlab.channel`` and
``ngxlab.process_cycle``):

- ``register(command, handler, descriptor=...)`` claims a command number
  nginx does not use. ``ngx_read_channel`` then gives the descriptors that
  came with that command to the handler (``Extension.descriptors``) instead
  of closing them and refusing the message, and ``ngx_channel_handler``
  calls the handler instead of logging "unknown channel command".
- ``install(cycle)`` sets every listening socket's ``handler`` to ``route``
  (nginx's ``ls->handler``, which ``ngx_event_accept`` calls for each
  connection it accepts), registers the three commands of the handoff and
  adds ``observe`` to ``ngxlab.process_cycle._received``. It is called in
  the master before the workers are forked, so every worker inherits it.

Why here and not in ``ngxlab.lab``: this is code the workers run while they
serve, like ``ngxlab._http``; the instruments that start a master with it,
drive it and measure it are in ``ngxlab.lab.handoff``.

The rule. A request line ``GET /shard/KEY... HTTP/1.x`` belongs to the
worker in slot ``crc32(KEY) % worker_processes`` (``owner``): a worker keeps
a key's state, say, and the key should always reach it. The worker that
accepted the connection reads the request line with ``MSG_PEEK``, which
leaves the bytes in the socket, serves the connection itself when it owns
the key (or there is no key, or the owner is not running), and otherwise
writes a HANDOFF message with the connection's descriptor attached into the
owner's ``channel[0]``, the copy every worker holds. The owner reads it like
any channel message and serves the connection as if it had accepted it; the
client sees one ordinary HTTP exchange.

The protocol, three commands in a namespace of their own (``NAMESPACE``,
"ngxl" in the upper half of the 64-bit command field: nginx numbers its
commands from 1 and uses 1 to 5, Tengine adds 6 and 7, and a module that
picks small numbers cannot reach 2**62):

- ``HANDOFF`` {pid, slot of the sender, fd = the connection}: "serve this".
- ``TAKEN`` {pid, slot of the receiver}: "I have it, close your copy".
- ``REFUSED`` {pid, slot of the receiver}: "I closed mine, serve it".

A message in flight is only as safe as the channel that holds it: when the
receiver dies before reading it, the master reaps the receiver and closes
both ends of its pair, and the kernel drops every message still queued
there, descriptors included. So the sender keeps its own copy of the
descriptor until TAKEN or REFUSED arrives, and answers arrive in the order
the handoffs were read (one stream each way), so they are matched in order.
The receiver answers before it reads a byte of the request, so an
unanswered handoff is always untouched. If the receiver dies instead, the
master's CLOSE_CHANNEL about it (``observe``) is the signal: every handoff
still waiting for that pid is served by the sender, from the copy it kept.
A timeout would not do: it cannot tell a slow receiver from a dead one, and
reclaiming from a slow one would have two workers read the same socket.
Instead a handoff unanswered for ``UNANSWERED_S`` is logged, and a pending
handoff keeps a timer armed, so a worker that is shutting down waits for
its answers before it exits. ``acknowledge=False`` is the fire-and-forget
variant (the sender closes its copy at once), to show what it loses.

The directory. A worker's ``ngx_processes[]`` is a copy taken at fork and
patched by OPEN_CHANNEL and CLOSE_CHANNEL: ``ngx_last_process`` stays as it
was at the fork, so a loop below it misses every peer spawned later, and
CLOSE_CHANNEL leaves the dead pid in place. ``directory()`` is the list of
live peers that the handoff needs: built once from every slot of the table
(not below ``ngx_last_process``), keeping the entries with a pid and a
``channel[0]`` that are not the worker's own slot nor flagged exiting, and
kept up to date by ``observe`` from every OPEN_CHANNEL and CLOSE_CHANNEL.
A handoff from a sender the receiver does not know yet (a peer forked so
recently that its OPEN_CHANNEL is still behind the HANDOFF in the channel)
waits, parked, for that OPEN_CHANNEL, and is closed after ``PARK_S``.

Deviations (what this module changes, and only where it is installed):

- The listening sockets' ``handler`` is ``route``: every accepted
  connection is peeked at before ``ngxlab._http.init_connection`` gets it.
- A worker reads three more commands; a descriptor that comes with HANDOFF
  is handed to it instead of being closed with the channel. With
  ``nginx_quirks=True`` the reader never hands a descriptor over (it leaks,
  as in nginx), and the receiver answers REFUSED.
- ``observe`` runs after every channel message a worker reads.
"""

from __future__ import annotations

import collections
import json
import os
import socket
import time
import zlib

from ngxlab import _http, connection, cycle as cy, event as evt
from ngxlab import process, process_cycle as pc
from ngxlab import channel
from ngxlab.channel import (
    NGX_CMD_CLOSE_CHANNEL, NGX_CMD_OPEN_CHANNEL, NGX_CMD_REOPEN,
    ngx_channel_t, ngx_write_channel,
)
from ngxlab.core import (
    NGX_ERROR, NGX_LOG_ALERT, NGX_LOG_NOTICE, NGX_OK,
    ngx_log_error, sizeof,
)

__all__ = [
    "NAMESPACE", "HANDOFF", "TAKEN", "REFUSED", "SHARD", "Extension",
    "register", "unregister", "install", "uninstall", "owner", "request_key",
    "route", "hand_off", "observe", "directory", "naive_directory", "stats",
    "report", "UNANSWERED_S", "PARK_S",
]

NAMESPACE = 0x6E67786C << 32            # b"ngxl": ngxlab's commands
HANDOFF = NAMESPACE | 1
TAKEN = NAMESPACE | 2
REFUSED = NAMESPACE | 3

SHARD = b"/shard/"         # GET /shard/KEY...: KEY chooses the worker
PEEK = 1024                # how much of the request head the rule looks at

UNANSWERED_S = 2.0         # a handoff unanswered this long is logged
PARK_S = 1.0               # how long a handoff from an unknown sender waits
TICK_MS = 250

_SIZE = sizeof(ngx_channel_t)
_U64 = 1 << 64


# -- the registry ---------------------------------------------------------------


class Extension:
    """A command nginx does not use, registered with ``register``: what
    ``ngx_read_channel`` and ``ngx_channel_handler`` call for it.

    ``handler(ch, fd, log)`` gets the message and the descriptor that came
    with it, or -1 (never ``ch.fd``, which is only the number the sender
    wrote into the message)."""

    __slots__ = ("command", "name", "handler", "descriptor", "_arrived")

    def __init__(self, command, name, handler, descriptor):
        self.command = command
        self.name = name
        self.handler = handler
        self.descriptor = descriptor
        self._arrived = -1

    def descriptors(self, ch, fds, log):
        """Called by ``ngx_read_channel`` with every descriptor the kernel
        installed with this message: keep exactly one if the command
        carries one, close the others."""
        keep = fds[0] if self.descriptor and len(fds) == 1 else -1
        extra = [fd for fd in fds if fd != keep]
        if extra:
            ngx_log_error(NGX_LOG_ALERT, log, 0,
                          "recvmsg() returned %d unexpected descriptor(s) "
                          "with channel command %s, closed",
                          len(extra), self.name)
            for fd in extra:
                os.close(fd)
        self._arrived = keep

    def __call__(self, ch, log):
        """Called by ``ngx_channel_handler`` for the message just read."""
        fd, self._arrived = self._arrived, -1
        self.handler(ch, fd, log)

    def __repr__(self):
        return (f"Extension({self.name} = {self.command:#x}, "
                f"descriptor={self.descriptor})")


def register(command, handler, *, descriptor=False, name=None):
    """Give channel messages with ``command`` to ``handler(ch, fd, log)``
    in this process (and in every process it forks afterwards). ``ch`` is
    the worker's one ``ngx_channel_t``, which the next message overwrites:
    a handler that keeps the message past its call keeps a copy.
    ``descriptor``: the command carries one descriptor. Raises
    ``ValueError`` for a number nginx uses (0 to 5), one that does not fit
    the 64-bit field, or one already registered."""
    if not isinstance(command, int) or isinstance(command, bool) \
            or not NGX_CMD_REOPEN < command < _U64:
        raise ValueError(f"command must be an int above {NGX_CMD_REOPEN} "
                         f"(nginx uses 1 to 5) and below 2**64, not "
                         f"{command!r}")
    if command in channel._extensions:
        raise ValueError(f"command {command:#x} is already registered: "
                         f"{channel._extensions[command]!r}")
    name = name or f"{command:#x}"
    ext = Extension(command, name, handler, bool(descriptor))
    channel._extensions[command] = ext
    channel._command_names[command] = name
    return ext


def unregister(command):
    """Forget ``command`` (no error if it was not registered)."""
    channel._extensions.pop(command, None)
    channel._command_names.pop(command, None)


# -- this process's state (each worker has its own copy after fork) -------------


class _Handoff:
    __slots__ = ("pid", "fd", "since", "warned")

    def __init__(self, pid, fd, since):
        self.pid = pid
        self.fd = fd
        self.since = since
        self.warned = False


_workers = 0               # worker_processes: the rule's modulus
_acknowledge = True
_record = False
_reports = None            # a folder for report() files, or None
_peers = None              # directory(): {slot: pid}, built on first use
_pending = {}              # slot -> deque of _Handoff sent there, unanswered
_parked = {}               # slot -> [_Handoff] from a sender not known yet
_tick = None
stats = collections.Counter()
handed = []                # the request targets handed off (record=True)
RECORD_MAX = 100_000


def _reset():
    global _peers, _tick
    _peers = None
    _pending.clear()
    _parked.clear()
    _tick = None
    stats.clear()
    del handed[:]


def install(cycle, *, acknowledge=True, record=False, reports=None):
    """Make the workers this process forks from now on route connections
    by key and hand them off (see the module's docstring). ``acknowledge``:
    the sender keeps its copy until TAKEN or REFUSED. ``record``: each
    worker remembers the request targets it handed off. ``reports``: a
    folder where each worker writes ``report()`` after every REOPEN."""
    global _workers, _acknowledge, _record, _reports
    for ls in cycle.listening:
        ls.handler = route
    register(HANDOFF, _on_handoff, descriptor=True, name="HANDOFF")
    register(TAKEN, _on_answer, name="TAKEN")
    register(REFUSED, _on_answer, name="REFUSED")
    if observe not in pc._received:
        pc._received.append(observe)
    _reset()
    _workers = cycle.conf.worker_processes
    _acknowledge = bool(acknowledge)
    _record = bool(record)
    _reports = None if reports is None else os.fspath(reports)


def uninstall(cycle=None):
    """Undo ``install`` in this process."""
    if cycle is not None:
        for ls in cycle.listening:
            if ls.handler is route:
                ls.handler = None
    for command in (HANDOFF, TAKEN, REFUSED):
        unregister(command)
    while observe in pc._received:
        pc._received.remove(observe)
    _reset()


# -- the directory ----------------------------------------------------------------


def directory():
    """This worker's live peers, ``{slot: pid}``: every slot of its table
    (all ``NGX_MAX_PROCESSES`` of them, not the ones below the
    ``ngx_last_process`` frozen at its fork) holding a pid and a
    ``channel[0]``, except its own slot and peers already exiting at its
    fork; then kept up to date by ``observe``."""
    global _peers
    if _peers is None:
        own = process.ngx_process_slot
        _peers = {s: p.pid for s, p in enumerate(process.ngx_processes)
                  if s != own and p.pid > 0 and p.channel[0] != -1
                  and not (p.exiting or p.exited or p.detached)}
    return _peers


def naive_directory():
    """What a loop over ``range(ngx_last_process)`` finds in this worker's
    table: the peers as nginx's own loops would see them here."""
    own = process.ngx_process_slot
    return {s: p.pid for s, p in
            enumerate(process.ngx_processes[:process.ngx_last_process])
            if s != own and p.pid > 0 and p.channel[0] != -1}


# -- the rule ---------------------------------------------------------------------


def owner(key, workers=None):
    """The slot that owns ``key`` (bytes): ``crc32(key) % workers``."""
    return zlib.crc32(key) % (workers or _workers)


def request_key(head):
    """The KEY of a request line ``METHOD /shard/KEY[/...][?...] ...`` at
    the start of ``head`` (bytes), or None: no complete line, or no key."""
    line, newline, _ = head.partition(b"\n")
    if not newline:
        return None
    parts = line.split()
    if len(parts) < 2 or not parts[1].startswith(SHARD):
        return None
    key = parts[1][len(SHARD):].split(b"?", 1)[0].split(b"/", 1)[0]
    return key or None


# -- the sender -------------------------------------------------------------------


def route(c):
    """``ls.handler``: what the worker does with a connection it accepted.
    Look at the request line without taking it from the socket, then
    serve the connection here or hand it to the key's owner."""
    stats["accepted"] += 1
    c.read.handler = _peek
    _peek(c.read)


def _peek(ev):
    c = ev.data
    if ev.timedout:
        connection.ngx_close_connection(c)
        return
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK,
                      0, c.fd)
    try:
        head = s.recv(PEEK, socket.MSG_PEEK)
    except BlockingIOError:
        head = None
    except OSError:
        head = b""
    finally:
        s.detach()
    if head is None:                     # nothing yet: wait for it
        if not c.read.active:
            if evt.ngx_add_event(c.read, evt.NGX_READ_EVENT, 0) \
                    == NGX_ERROR:
                connection.ngx_close_connection(c)
                return
            evt.ngx_add_timer(c.read, _http.READ_TIMEOUT_MS)
        return
    if not head:                         # closed (or reset) before a request
        connection.ngx_close_connection(c)
        return

    key = request_key(head)
    slot = None if key is None else owner(key)
    log = c.log
    fd = _detach(c)
    if slot is None or slot == process.ngx_process_slot:
        stats["direct"] += 1
        _serve(fd, log)
        return
    pid = directory().get(slot)
    if pid is None:
        stats["owner_absent"] += 1
        _serve(fd, log)
        return
    hand_off(fd, slot, pid, log, head.split(None, 2)[1])


def _detach(c):
    """Take the connection out of this worker's event loop and free it,
    leaving its descriptor open; return the descriptor."""
    if c.read.timer_set:
        evt.ngx_del_timer(c.read)
    if c.read.active:
        evt.ngx_del_event(c.read, evt.NGX_READ_EVENT, 0)
    connection.ngx_free_connection(c)
    fd, c.fd = c.fd, -1
    return fd


def _serve(fd, log):
    """Serve the connection on ``fd`` here, as ``ngxlab._http`` serves a
    connection it accepted."""
    c = connection.ngx_get_connection(fd, log)
    if c is None:
        os.close(fd)
        return
    if _http.init_connection(c) == NGX_OK:
        c.read.handler(c.read)           # the request is usually there


def hand_off(fd, slot, pid, log, target=b""):
    """Write HANDOFF with ``fd`` attached into ``channel[0]`` of ``slot``
    (the worker ``pid``). Keeps ``fd`` until the answer when acknowledging,
    else closes it. If the write fails (the channel is full, or the peer's
    pair is already closed), serve the connection here. Returns
    ``ngx_write_channel``'s code."""
    ch = ngx_channel_t(HANDOFF, process.ngx_pid, process.ngx_process_slot, fd)
    rc = ngx_write_channel(process.ngx_processes[slot].channel[0], ch, _SIZE,
                           log)
    if rc != NGX_OK:
        stats["send_failed"] += 1
        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "handoff to slot %d pid %d not sent (%s): served here",
                      slot, pid, "channel full" if rc != NGX_ERROR else "error")
        _serve(fd, log)
        return rc
    stats["handed_off"] += 1
    if _record and len(handed) < RECORD_MAX:
        handed.append(target.decode("latin-1"))
    if _acknowledge:
        _pending.setdefault(slot, collections.deque()).append(
            _Handoff(pid, fd, time.monotonic()))
        _arm(log)
    else:
        os.close(fd)
    return rc


def _on_answer(ch, fd, log):
    """TAKEN or REFUSED from the worker in ``ch.slot``: the oldest handoff
    still waiting for that worker is settled."""
    waiting = _pending.get(ch.slot)
    if not waiting or waiting[0].pid != ch.pid:
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "%s from slot %d pid %d answers no handoff",
                      channel.command_name(ch.command), ch.slot, ch.pid)
        return
    h = waiting.popleft()
    if ch.command == TAKEN:
        stats["acknowledged"] += 1
        os.close(h.fd)
    else:
        stats["taken_back"] += 1
        _serve(h.fd, log)


# -- the receiver -----------------------------------------------------------------


def _on_handoff(ch, fd, log):
    """HANDOFF from the worker in ``ch.slot``: serve the connection, after
    telling the sender it can close its copy."""
    stats["received"] += 1
    slot, pid = ch.slot, ch.pid
    if not 0 <= slot < process.NGX_MAX_PROCESSES \
            or slot == process.ngx_process_slot:
        stats["refused"] += 1
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "handoff from slot %d pid %d: not a peer's slot, %s",
                      slot, pid, "connection closed" if fd != -1
                      else "no descriptor")
        if fd != -1:
            os.close(fd)
        return
    known = directory().get(slot) == pid
    if fd == -1:
        stats["refused"] += 1
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "handoff from slot %d pid %d came without a descriptor",
                      slot, pid)
        if known and _acknowledge:
            _answer(REFUSED, slot, log)
        return
    if not known:
        stats["parked"] += 1
        _parked.setdefault(slot, []).append(
            _Handoff(pid, fd, time.monotonic() + PARK_S))
        _arm(log)
        return
    _take(slot, fd, log)


def _take(slot, fd, log):
    if not _is_tcp_connection(fd):
        stats["refused"] += 1
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "handoff from slot %d: descriptor %d is not a TCP "
                      "connection, closed", slot, fd)
        os.close(fd)
        if _acknowledge:
            _answer(REFUSED, slot, log)
        return
    c = connection.ngx_get_connection(fd, log)
    if c is None:
        stats["refused"] += 1
        os.close(fd)
        if _acknowledge:
            _answer(REFUSED, slot, log)
        return
    if _acknowledge:
        _answer(TAKEN, slot, log)        # before a byte of the request is read
    stats["served_for_peer"] += 1
    if _http.init_connection(c) == NGX_OK:
        c.read.handler(c.read)


def _answer(command, slot, log):
    ch = ngx_channel_t(command, process.ngx_pid, process.ngx_process_slot, -1)
    fd = process.ngx_processes[slot].channel[0]
    rc = ngx_write_channel(fd, ch, _SIZE, log) if fd != -1 else NGX_ERROR
    if rc != NGX_OK:
        stats["answer_lost"] += 1
        ngx_log_error(NGX_LOG_ALERT, log, 0, "%s to slot %d not delivered",
                      channel.command_name(command), slot)
    return rc


def _is_tcp_connection(fd):
    """Whether ``fd`` is a connected TCP socket (not a listening one, not a
    pipe or a Unix socket someone sent instead)."""
    try:
        s = socket.socket(fileno=fd)     # asks the kernel for family and type
    except OSError:
        return False
    try:
        return (s.family in (socket.AF_INET, socket.AF_INET6)
                and s.type == socket.SOCK_STREAM
                and not s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
    except OSError:
        return False
    finally:
        s.detach()


# -- what the master's messages mean here ------------------------------------------


def observe(ch):
    """Runs after every channel message a worker reads (it is in
    ``ngxlab.process_cycle._received``). OPEN_CHANNEL: a peer to add, and
    the handoffs parked for it to take. CLOSE_CHANNEL: a peer to drop, and
    the handoffs that died with it to serve here. REOPEN: write
    ``report()`` when a folder for reports was given."""
    command = ch.command
    if command == NGX_CMD_OPEN_CHANNEL or command == NGX_CMD_CLOSE_CHANNEL:
        slot = ch.slot
        if not 0 <= slot < process.NGX_MAX_PROCESSES \
                or slot == process.ngx_process_slot:
            return
        peers = directory()
        log = cy.ngx_cycle.log
        if command == NGX_CMD_OPEN_CHANNEL:
            peers[slot] = ch.pid
            parked = _parked.pop(slot, None)
            for h in parked or ():
                if h.pid == ch.pid:
                    _take(slot, h.fd, log)
                else:
                    _parked.setdefault(slot, []).append(h)
        else:
            if peers.get(slot) == ch.pid:
                del peers[slot]
            waiting = _pending.get(slot)
            if waiting:
                lost = [h for h in waiting if h.pid == ch.pid]
                _pending[slot] = collections.deque(
                    h for h in waiting if h.pid != ch.pid)
                for h in lost:
                    stats["taken_back"] += 1
                    ngx_log_error(NGX_LOG_NOTICE, log, 0,
                                  "handoff to slot %d pid %d was not taken "
                                  "before it exited: served here",
                                  slot, ch.pid)
                    _serve(h.fd, log)
    elif command == NGX_CMD_REOPEN and _reports is not None:
        _write_report()


def _arm(log):
    global _tick
    if _tick is None:
        _tick = evt.ngx_event_t(handler=_on_tick, log=log)
    if not _tick.timer_set:
        evt.ngx_add_timer(_tick, TICK_MS)


def _on_tick(ev):
    """Log what has waited too long for an answer; close what was parked
    too long; stay armed while anything waits (a worker that is shutting
    down does not exit before its handoffs are answered)."""
    ev.timedout = 0
    now = time.monotonic()
    for slot, waiting in _pending.items():
        for h in waiting:
            if not h.warned and now - h.since >= UNANSWERED_S:
                h.warned = True
                stats["unanswered"] += 1
                ngx_log_error(NGX_LOG_ALERT, ev.log, 0,
                              "handoff to slot %d pid %d unanswered for "
                              "%.1f s", slot, h.pid, now - h.since)
    for slot in list(_parked):
        for h in [h for h in _parked[slot] if h.since <= now]:
            _parked[slot].remove(h)
            stats["park_expired"] += 1
            ngx_log_error(NGX_LOG_ALERT, ev.log, 0,
                          "handoff from slot %d pid %d: no such peer "
                          "announced within %.1f s, connection closed",
                          slot, h.pid, PARK_S)
            os.close(h.fd)
        if not _parked[slot]:
            del _parked[slot]
    if any(_pending.values()) or _parked:
        evt.ngx_add_timer(ev, TICK_MS)


# -- what a worker reports ------------------------------------------------------------


def report():
    """This worker's view as plain data: its slot and pid, its counters,
    ``directory()`` and ``naive_directory()``, what is pending and parked,
    and the request targets it handed off (``record=True``)."""
    return {
        "pid": os.getpid(), "slot": process.ngx_process_slot,
        "ngx_last_process": process.ngx_last_process,
        "stats": dict(stats),
        "directory": {str(s): p for s, p in sorted(directory().items())},
        "naive_directory": {str(s): p for s, p in
                            sorted(naive_directory().items())},
        "pending": sum(len(q) for q in _pending.values()),
        "parked": sum(len(q) for q in _parked.values()),
        "handed": list(handed),
    }


def _write_report():
    path = os.path.join(_reports, f"handoff-{os.getpid()}.json")
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(report(), f)
        os.replace(tmp, path)
    except OSError as e:
        ngx_log_error(NGX_LOG_ALERT, cy.ngx_cycle.log, e.errno or 0,
                      "writing the handoff report %s failed", path)

