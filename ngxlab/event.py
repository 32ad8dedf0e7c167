"""The worker's event loop: src/event/ngx_event.[ch], ngx_event_timer.[ch]
and modules/ngx_epoll_module.c at release-1.30.4, reduced to what a worker
needs to read its channel, accept on its listening sockets and keep timers.

A worker sleeps in ``epoll_wait`` inside ``ngx_process_events_and_timers``;
when its channel becomes readable, epoll wakes it and the read event's
handler (``ngx_channel_handler``) runs. Read and write events of one
descriptor share one epoll registration, as in nginx's epoll module.

Deviations:

- One epoll module, no ``ngx_event_actions`` table: ``ngx_add_event`` and
  ``ngx_del_event`` are the epoll functions.
- Signals wake ``epoll_wait`` through a pipe given to
  ``signal.set_wakeup_fd``: Python retries ``epoll_wait`` after EINTR (PEP
  475), where C returns to the loop. The pipe's read end is registered with
  epoll next to the channel; it is not a connection.
- Timers are a heap of (deadline, sequence, event), not a red-black tree.
- No ``instance`` bit: nginx tags each epoll registration so that an event
  for a descriptor closed and reused within one ``epoll_wait`` batch is
  recognised as stale; ngxlab looks the descriptor up again instead.
- ``ngx_del_event`` with ``NGX_CLOSE_EVENT`` unregisters the descriptor when
  no event of its connection stays active (nginx only clears ``active``,
  relying on ``close()``, which drops the registration only when no other
  descriptor in any process refers to the same open file: a channel's is
  shared with the master). This is what nginx's ``ngx_channel_handler``
  does with ``ngx_del_conn`` before it closes a channel.
- ``ngx_event_process_init`` makes only the epoll instance (nginx's
  ``ngx_epoll_init``) and the wakeup pipe: no accept mutex, no timer
  resolution, no connection array (see ``ngxlab.connection``); the
  listening sockets are registered by ngxlab's ``_http`` module, always with
  ``NGX_EXCLUSIVE_EVENT`` (nginx only with more than one worker). A failure
  to make either is logged at emerg and returned as ``NGX_ERROR``, which the
  worker's init treats as fatal (exit code 2), as nginx's does.
"""

from __future__ import annotations

import heapq
import itertools
import os
import select
import signal
import time

from ngxlab.core import (
    NGX_AGAIN, NGX_ERROR, NGX_LOG_ALERT, NGX_LOG_EMERG, NGX_OK, ngx_log_error,
)

__all__ = [
    "NGX_READ_EVENT", "NGX_WRITE_EVENT", "NGX_CLOSE_EVENT",
    "NGX_EXCLUSIVE_EVENT", "NGX_TIMER_INFINITE",
    "ngx_event_t", "ngx_event_process_init", "ngx_add_event", "ngx_del_event",
    "ngx_add_timer", "ngx_del_timer", "ngx_process_events_and_timers",
    "close_event_loop", "ngx_event_no_timers_left",
]

# src/event/ngx_event.h with epoll
NGX_READ_EVENT = select.EPOLLIN | select.EPOLLRDHUP
NGX_WRITE_EVENT = select.EPOLLOUT
NGX_CLOSE_EVENT = 1
NGX_EXCLUSIVE_EVENT = select.EPOLLEXCLUSIVE     # 0x10000000
NGX_TIMER_INFINITE = -1

# <sys/epoll.h>: the op numbers nginx's "epoll_ctl(%d, %d) failed" shows
EPOLL_CTL_ADD = 1
EPOLL_CTL_DEL = 2
EPOLL_CTL_MOD = 3

ep = None           # the worker's epoll object (nginx: static int ep)
_wakeup = (-1, -1)  # signal wakeup pipe
_fds = {}           # fd -> connection registered with epoll
_timers = []
_seq = itertools.count()


class ngx_event_t:
    """A read or write event of a connection, or a bare timer event."""

    __slots__ = ("data", "handler", "log", "active", "ready", "timedout",
                 "timer_set", "channel", "accept", "write", "_deadline")

    def __init__(self, data=None, handler=None, log=None, write=0):
        # nginx's fields that the mirrors use, zeroed as ngx_pcalloc leaves
        # them (the same shape as ngx_process_t's: a C struct, field by field)
        self.data = data
        self.handler = handler
        self.log = log
        self.active = 0
        self.ready = 0
        self.timedout = 0
        self.timer_set = 0
        self.channel = 0
        self.accept = 0
        self.write = write
        self._deadline = None


def ngx_event_process_init(cycle):
    """Create this process's epoll instance (``ngx_epoll_init``) and the
    signal wakeup pipe. Called in the worker after fork: an epoll instance
    made by the parent would be shared with it. Returns ``NGX_OK``, or
    ``NGX_ERROR`` after an emerg "epoll_create() failed" (or "pipe2()
    failed"), which the worker takes as fatal (exit code 2), as nginx does."""
    global ep, _wakeup
    close_event_loop()
    try:
        ep = select.epoll()
    except OSError as e:
        ngx_log_error(NGX_LOG_EMERG, cycle.log, e.errno or 0,
                      "epoll_create() failed")
        return NGX_ERROR
    try:
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        ngx_log_error(NGX_LOG_EMERG, cycle.log, e.errno or 0, "pipe2() failed")
        return NGX_ERROR
    _wakeup = (r, w)
    signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    ep.register(r, select.EPOLLIN)
    return NGX_OK


def close_event_loop():
    """Close the epoll instance and the wakeup pipe (ngxlab's own clean-up,
    for a process that stops using its event loop without exiting)."""
    global ep, _wakeup
    if ep is not None:
        ep.close()
        ep = None
    if _wakeup[0] != -1:
        try:
            signal.set_wakeup_fd(-1)
        except ValueError:
            pass
        os.close(_wakeup[0])
        os.close(_wakeup[1])
        _wakeup = (-1, -1)
    _fds.clear()
    _timers.clear()


def _mask(c):
    m = 0
    if c.read.active:
        m |= NGX_READ_EVENT
    if c.write.active:
        m |= NGX_WRITE_EVENT
    return m


def ngx_add_event(ev, event, flags):
    """Add ``ev`` (a connection's read or write event) to epoll; ``flags``
    is ORed into the mask (0: level-triggered). Returns ``NGX_OK`` or
    ``NGX_ERROR`` after an alert "epoll_ctl(OP, FD) failed"."""
    c = ev.data

    events = event

    if event == NGX_READ_EVENT:
        e = c.write
        prev = select.EPOLLOUT
    else:
        e = c.read
        prev = select.EPOLLIN | select.EPOLLRDHUP

    if e.active:
        op = EPOLL_CTL_MOD
        events |= prev
    else:
        op = EPOLL_CTL_ADD

    if flags & NGX_EXCLUSIVE_EVENT:
        events &= ~select.EPOLLRDHUP

    events |= flags

    try:
        if op == EPOLL_CTL_MOD:
            ep.modify(c.fd, events)
        else:
            ep.register(c.fd, events)
    except OSError as err:
        ngx_log_error(NGX_LOG_ALERT, ev.log, err.errno or 0,
                      "epoll_ctl(%d, %d) failed", op, c.fd)
        return NGX_ERROR

    ev.active = 1
    _fds[c.fd] = c
    return NGX_OK


def ngx_del_event(ev, event, flags):
    """Remove ``ev`` from epoll. With ``NGX_CLOSE_EVENT`` the descriptor is
    about to be closed; ngxlab then unregisters it when no event of the
    connection stays active (see the module's deviations)."""
    c = ev.data

    if flags & NGX_CLOSE_EVENT:
        ev.active = 0
        # Closing a descriptor removes it from epoll only when no other
        # descriptor (in any process) refers to the same open file; a
        # channel's is shared with the master, so unregister explicitly.
        if not _mask(c):
            _fds.pop(c.fd, None)
            try:
                ep.unregister(c.fd)
            except OSError:
                pass
        return NGX_OK

    # the same choice of the other event as ngx_add_event's: nginx repeats
    # it in ngx_epoll_del_event, and the mirror keeps each function whole
    if event == NGX_READ_EVENT:
        e = c.write
        prev = select.EPOLLOUT
    else:
        e = c.read
        prev = select.EPOLLIN | select.EPOLLRDHUP

    try:
        if e.active:
            op = EPOLL_CTL_MOD
            ep.modify(c.fd, prev | flags)
        else:
            op = EPOLL_CTL_DEL
            ep.unregister(c.fd)
    except OSError as err:
        ngx_log_error(NGX_LOG_ALERT, ev.log, err.errno or 0,
                      "epoll_ctl(%d, %d) failed", op, c.fd)
        return NGX_ERROR

    if op == EPOLL_CTL_DEL:
        _fds.pop(c.fd, None)
    ev.active = 0
    return NGX_OK


def ngx_add_timer(ev, timer):
    """Make ``ev.handler`` run with ``ev.timedout = 1`` in ``timer`` ms."""
    ev._deadline = time.monotonic() + timer / 1000.0
    ev.timer_set = 1
    heapq.heappush(_timers, (ev._deadline, next(_seq), ev))


def ngx_del_timer(ev):
    ev.timer_set = 0
    ev._deadline = None


def _find_timer():
    while _timers and _timers[0][2]._deadline != _timers[0][0]:
        heapq.heappop(_timers)          # deleted or re-armed
    if not _timers:
        return NGX_TIMER_INFINITE
    return max(0.0, _timers[0][0] - time.monotonic())


def _expire_timers():
    now = time.monotonic()
    while _timers:
        deadline, _, ev = _timers[0]
        if ev._deadline != deadline:
            heapq.heappop(_timers)
            continue
        if deadline > now:
            break
        heapq.heappop(_timers)
        ev.timer_set = 0
        ev._deadline = None
        ev.timedout = 1
        ev.handler(ev)


def ngx_event_no_timers_left():
    """``NGX_OK`` when no timer that must run before exit is pending (every
    timer here is one; nginx also has cancelable ones)."""
    return NGX_OK if _find_timer() == NGX_TIMER_INFINITE else NGX_AGAIN


# how many events one epoll_wait returns at most: nginx's "epoll_events"
# directive, 512 by default (Python's default is FD_SETSIZE - 1, an array of
# 1023 struct epoll_event allocated on every wake)
EPOLL_EVENTS = 512

# plain ints for the hot path (a module attribute lookup per event otherwise)
_EPOLLIN = select.EPOLLIN
_EPOLLOUT = select.EPOLLOUT
_EPOLLERR_HUP = select.EPOLLERR | select.EPOLLHUP


def ngx_process_events_and_timers(cycle):
    """Wait in ``epoll_wait`` until an event, a timer or a signal; run the
    handlers of the ready events, then of the expired timers."""
    timer = _find_timer() if _timers else NGX_TIMER_INFINITE
    try:
        events = ep.poll(timer, EPOLL_EVENTS)
    except InterruptedError:
        events = ()

    for fd, revents in events:
        if fd == _wakeup[0]:
            try:
                while os.read(fd, 512):
                    pass
            except BlockingIOError:
                pass
            continue

        c = _fds.get(fd)
        if c is None:
            continue

        if revents & _EPOLLERR_HUP:
            revents |= _EPOLLIN | _EPOLLOUT

        # nginx's rev->handler(rev). The handler is read, then called: it
        # is an attribute, not a method, and CPython 3.11 does not
        # specialise `rev.handler(rev)` (a method lookup on every event).
        rev = c.read
        if revents & _EPOLLIN and rev.active:
            rev.ready = 1
            handler = rev.handler
            handler(rev)

        wev = c.write
        if revents & _EPOLLOUT and wev.active and _fds.get(fd) is c:
            wev.ready = 1
            handler = wev.handler
            handler(wev)

    if _timers:
        _expire_timers()
