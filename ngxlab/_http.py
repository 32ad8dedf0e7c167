"""What ngxlab's workers serve (not a mirror of nginx): a minimal HTTP/1.0
answer naming the worker that accepted the connection.

Each worker registers the listening sockets it inherited from the master
with its event loop (as nginx's ``ngx_event_process_init`` does, with
``EPOLLEXCLUSIVE`` so that one worker wakes per connection), accepts, reads
the request head and answers::

    HTTP/1.0 200 OK
    Content-Type: text/plain

    slot 2 pid 12345 generation 1

so that a reader (or a test) can see which worker and which configuration
generation served a request across reloads and binary upgrades.

As in nginx, where ``ngx_event_accept`` gives each connection it accepts to
its listening socket's ``handler``, a listening socket whose ``handler`` is
set gets its connections handed to that function instead of
``init_connection`` (``ngxlab.beyond`` routes them that way).
"""

from __future__ import annotations

import os
import socket

from ngxlab import connection, event as evt
# The import cycle of the mirrors (process, process_cycle, cycle, nginx,
# daemon, _http), as nginx's files share their globals through "extern":
# each imports the others' modules, never names from them, so any of them
# can be imported first; attributes are read when a function runs.
from ngxlab import process
from ngxlab.core import NGX_ERROR, NGX_LOG_ALERT, NGX_OK, ngx_log_error

_open = {}
_cycle = None

READ_TIMEOUT_MS = 5000


def init_process(cycle):
    """Register every listening socket's accept event."""
    global _cycle
    _cycle = cycle
    for ls in cycle.listening:
        if ls.fd == -1:
            continue
        c = connection.ngx_get_connection(ls.fd, cycle.log)
        if c is None:
            return NGX_ERROR
        c.listening = ls
        ls.connection = c
        c.read.accept = 1
        c.read.handler = _accept
        if evt.ngx_add_event(c.read, evt.NGX_READ_EVENT,
                             evt.NGX_EXCLUSIVE_EVENT) == NGX_ERROR:
            return NGX_ERROR
    return NGX_OK


def _accept(ev):
    lc = ev.data
    for _ in range(16):
        try:
            fd, _addr = _accept4(lc.fd)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            ngx_log_error(NGX_LOG_ALERT, ev.log, e.errno or 0, "accept4() failed")
            return
        c = connection.ngx_get_connection(fd, ev.log)
        if c is None:
            os.close(fd)
            return
        (lc.listening.handler or init_connection)(c)


def init_connection(c):
    """What an accepted connection gets unless its listening socket names
    another handler (``ls.handler``, which nginx's ``ngx_event_accept``
    calls for each connection it accepts): a buffer for the request head,
    the read handler, a read timer. Returns ``NGX_OK``, or ``NGX_ERROR``
    after closing the connection."""
    c.data = bytearray()
    c.read.handler = _read_request
    _open[c.fd] = c
    if evt.ngx_add_event(c.read, evt.NGX_READ_EVENT, 0) \
            == NGX_ERROR:
        _close(c)
        return NGX_ERROR
    evt.ngx_add_timer(c.read, READ_TIMEOUT_MS)
    return NGX_OK


def _accept4(lfd):
    # timeout 0 whatever socket.setdefaulttimeout() says (see ngxlab.channel)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK,
                      0, lfd)
    try:
        conn, addr = s._accept()
    finally:
        s.detach()
    os.set_blocking(conn, False)
    return conn, addr


def _read_request(ev):
    c = ev.data
    if ev.timedout:
        _close(c)
        return
    try:
        chunk = os.read(c.fd, 4096)
    except BlockingIOError:
        return
    except OSError:
        _close(c)
        return
    if not chunk:
        _close(c)
        return
    c.data += chunk
    if b"\r\n\r\n" not in c.data and b"\n\n" not in c.data \
            and len(c.data) < 8192:
        return
    body = ("slot %d pid %d generation %d\n" % (
        process.ngx_process_slot, os.getpid(), _cycle.generation)).encode()
    head = (b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
    try:
        os.write(c.fd, head + body)
    except OSError:
        pass
    _close(c)


def _close(c):
    _open.pop(c.fd, None)
    connection.ngx_close_connection(c)


def close_idle_connections(cycle):
    """On QUIT: close the idle connections, as ``ngx_close_idle_connections``
    does for nginx's worker. nginx calls a connection idle only while it
    waits between two requests of a keep-alive connection; one accepted a
    moment ago, whose request has not been read yet, is not idle and is
    served before the worker exits (its read timer keeps the worker alive).
    ngxlab answers one request per connection and closes it, so none of its
    connections is ever idle and nothing is closed here. (Closing the
    connections that had sent nothing yet reset clients whose request was
    on its way during a reload or a binary upgrade.)"""
    for c in list(_open.values()):
        if getattr(c, "idle", 0):
            _close(c)


def open_connections():
    return list(_open.values())
