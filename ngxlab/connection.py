"""Connections and listening sockets: src/core/ngx_connection.[ch] at
release-1.30.4, reduced to what the channel and the workers' tiny HTTP
answer need.

A channel is read through a connection object, like any socket in nginx:
``ngx_add_channel_event`` takes one from ``ngx_get_connection`` and marks its
events as channel events. The listening sockets are opened by the master
before it forks, so every worker inherits them; a new binary inherits them
across ``execve`` because they have no ``FD_CLOEXEC``, and finds them again
from the ``NGINX`` environment variable (``ngx_set_inherited_sockets``).

Deviations:

- Connections are plain objects in a dict keyed by descriptor, not a
  preallocated array with a free list; ``worker_connections`` still limits
  how many are in use (``ngx_get_connection`` logs nginx's alert).
- ``ngx_listening_t`` keeps only the fields ngxlab uses.
- ``ngx_close_listening_sockets`` closes every descriptor and sets it to -1
  but leaves the entries in ``cycle.listening`` (nginx empties the array).
- ``ngx_close_connection`` has no ``shared`` connections, no ``log_error``
  levels and no reusable-connection queue: a failed ``close()`` is logged at
  crit, nginx's level for every error but ECONNRESET and ENOTCONN, which
  ``close()`` does not return on Linux.
- ``ngx_open_listening_sockets`` opens AF_INET sockets only (ngxlab listens
  on 127.0.0.1), tries once (nginx tries five times, half a second apart,
  while ``bind()`` fails with EADDRINUSE) and sets no socket options but
  ``SO_REUSEADDR``.
"""

from __future__ import annotations

import os
import socket

from ngxlab import event as evt
from ngxlab.core import (
    NGX_ERROR, NGX_LOG_ALERT, NGX_LOG_CRIT, NGX_LOG_EMERG,
    NGX_OK, ngx_log_error,
)

__all__ = [
    "ngx_connection_t", "ngx_listening_t", "ngx_get_connection",
    "ngx_free_connection", "ngx_close_connection", "ngx_create_listening",
    "ngx_open_listening_sockets", "ngx_set_inherited_sockets",
    "ngx_close_listening_sockets",
]

worker_connections = 512
_used = {}


class ngx_connection_t:
    __slots__ = ("fd", "read", "write", "data", "log", "pool", "listening",
                 "sockaddr", "__weakref__")

    def __init__(self, fd, log):
        self.fd = fd
        self.log = log
        self.data = None
        self.pool = None
        self.listening = None
        self.sockaddr = None
        self.read = evt.ngx_event_t(self, log=log)
        self.write = evt.ngx_event_t(self, log=log, write=1)

    def __repr__(self):
        return f"ngx_connection_t(fd={self.fd})"


class ngx_listening_t:
    """A listening socket: its descriptor, address and flags."""

    __slots__ = ("fd", "sockaddr", "addr_text", "type", "backlog",
                 "inherited", "ignore", "connection", "handler")

    def __init__(self, sockaddr=None, type=socket.SOCK_STREAM, backlog=511):
        self.fd = -1
        self.sockaddr = sockaddr
        self.addr_text = "%s:%d" % sockaddr if sockaddr else ""
        self.type = type
        self.backlog = backlog
        self.inherited = 0
        self.ignore = 0
        self.connection = None
        self.handler = None

    def __repr__(self):
        return (f"ngx_listening_t(fd={self.fd}, addr={self.addr_text!r}, "
                f"inherited={self.inherited})")


def ngx_get_connection(s, log):
    """A connection object for descriptor ``s``, or ``None`` after the alert
    "N worker_connections are not enough"."""
    if len(_used) >= worker_connections:
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "%d worker_connections are not enough", worker_connections)
        return None
    c = ngx_connection_t(s, log)
    _used[s] = c
    return c


def ngx_free_connection(c):
    if _used.get(c.fd) is c:
        del _used[c.fd]


def ngx_close_connection(c):
    """Remove the connection's events from epoll, free it, close its
    descriptor."""
    if c.fd == -1:
        ngx_log_error(NGX_LOG_ALERT, c.log, 0, "connection already closed")
        return
    if c.read.timer_set:
        evt.ngx_del_timer(c.read)
    if c.write.timer_set:
        evt.ngx_del_timer(c.write)
    if c.read.active:
        evt.ngx_del_event(c.read, evt.NGX_READ_EVENT, evt.NGX_CLOSE_EVENT)
    if c.write.active:
        evt.ngx_del_event(c.write, evt.NGX_WRITE_EVENT, evt.NGX_CLOSE_EVENT)
    ngx_free_connection(c)
    fd, c.fd = c.fd, -1
    try:
        os.close(fd)
    except OSError as e:
        ngx_log_error(NGX_LOG_CRIT, c.log, e.errno or 0,
                      "close() socket %d failed", fd)


def ngx_create_listening(cycle, sockaddr):
    """Add a listening entry for ``(host, port)`` to ``cycle.listening``."""
    ls = ngx_listening_t(sockaddr)
    cycle.listening.append(ls)
    return ls


def ngx_open_listening_sockets(cycle):
    """Open, bind and listen every entry of ``cycle.listening`` that has no
    descriptor yet (inherited ones already have one). The descriptors are
    left inheritable, as nginx never sets ``FD_CLOEXEC`` on them. Returns
    ``NGX_OK`` or ``NGX_ERROR`` after nginx's emerg "bind() to ... failed"."""
    for ls in cycle.listening:
        if ls.ignore or ls.fd != -1 or ls.inherited:
            continue
        try:
            s = socket.socket(socket.AF_INET, ls.type)
        except OSError as e:
            ngx_log_error(NGX_LOG_EMERG, cycle.log, e.errno or 0,
                          "socket() %s failed", ls.addr_text)
            return NGX_ERROR
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(ls.sockaddr)
            s.listen(ls.backlog)
            s.setblocking(False)
        except OSError as e:
            what = "bind() to %s failed" if e.errno != 0 else "%s"
            ngx_log_error(NGX_LOG_EMERG, cycle.log, e.errno or 0, what,
                          ls.addr_text)
            s.close()
            return NGX_ERROR
        ls.sockaddr = s.getsockname()
        ls.addr_text = "%s:%d" % ls.sockaddr
        ls.fd = s.detach()
        os.set_inheritable(ls.fd, True)
    return NGX_OK


def ngx_set_inherited_sockets(cycle):
    """Rebuild each inherited listening entry (``ls.fd`` came from the
    ``NGINX`` variable) from the live socket: its address and type. An entry
    whose descriptor is not a usable socket is marked ``ignore``."""
    for ls in cycle.listening:
        try:
            s = socket.socket(fileno=ls.fd)
        except OSError as e:
            ngx_log_error(NGX_LOG_CRIT, cycle.log, e.errno or 0,
                          "getsockname() of the inherited socket #%d failed",
                          ls.fd)
            ls.ignore = 1
            continue
        try:
            if s.family != socket.AF_INET:
                ngx_log_error(NGX_LOG_CRIT, cycle.log, 0,
                              "the inherited socket #%d has an unsupported "
                              "protocol family", ls.fd)
                ls.ignore = 1
                continue
            ls.sockaddr = s.getsockname()
            ls.addr_text = "%s:%d" % ls.sockaddr
            ls.type = s.type
        finally:
            s.detach()
    return NGX_OK


def ngx_close_listening_sockets(cycle):
    """Close every listening socket of this process (a worker on QUIT, a
    master on exit): no new connection is accepted by it afterwards."""
    for ls in cycle.listening:
        if ls.fd == -1:
            continue
        c = ls.connection
        if c is not None:
            if c.read.active:
                evt.ngx_del_event(c.read, evt.NGX_READ_EVENT,
                                  evt.NGX_CLOSE_EVENT)
            ngx_free_connection(c)
            c.fd = -1
            ls.connection = None
        try:
            os.close(ls.fd)
        except OSError as e:
            ngx_log_error(NGX_LOG_CRIT, cycle.log, e.errno or 0,
                          "close() socket %s #%d failed", ls.addr_text, ls.fd)
        ls.fd = -1
    return NGX_OK
