"""The channel: src/os/unix/ngx_channel.[ch] at release-1.30.4.

A channel is one end of an ``AF_UNIX``/``SOCK_STREAM`` socketpair made by
``ngx_spawn_process``. The master writes fixed-size ``ngx_channel_t`` messages
into ``channel[0]``; the worker reads them from ``channel[1]``. An
``NGX_CMD_OPEN_CHANNEL`` message carries a descriptor as ``SCM_RIGHTS``
ancillary data: that is how a worker learns the ``channel[0]`` of a worker
forked after it.

Descriptors are plain integers here, as in nginx (``s`` is an ``int``), so a
chapter can print them and compare them with ``/proc/PID/fd``.

Deviations:

- Where nginx loses or leaks, ngxlab does not, unless asked. With the default
  ``nginx_quirks=False``, ``ngx_read_channel`` closes every descriptor it does
  not hand to its caller and returns ``NGX_ERROR``: a descriptor attached to a
  command other than OPEN_CHANNEL (nginx leaks it: the kernel has already
  installed it in the receiver), more than one descriptor (nginx's control
  buffer, ``CMSG_SPACE(sizeof(int))`` = 24 bytes, has room for exactly two on
  x86-64; nginx keeps the first and leaks the second), a truncated message
  (nginx logs "recvmsg() truncated data" and goes on), and short reads that
  carried descriptors. With ``nginx_quirks=True`` it behaves as nginx does,
  leaks included, for the book's demonstrations.
- nginx reads an OPEN_CHANNEL message that came without ancillary data against
  whatever was left in its (unzeroed) control buffer on the stack; ngxlab
  treats a missing control message as ``cmsg_len == 0`` and logs "too small
  ancillary data".
- The errors that nginx has no words for (a stray descriptor) are logged at
  alert level in the same style, and say what was closed.
- An extension point nginx does not have (``_extensions``, filled by
  ``ngxlab.beyond.register``): with the default ``nginx_quirks=False``,
  descriptors that came with a registered command are handed to that
  command's handler (``descriptors()``), which owns them from then on, and
  the message is returned instead of refused. Only the branch for
  unexpected descriptors looks at it; with nothing registered, or with
  ``nginx_quirks=True``, the reader is as described above.
- ``NGX_CMD_*`` are declared in ``ngx_process_cycle.h`` in nginx; they live
  here, beside the message that carries them, and ``ngxlab.process_cycle``
  re-exports them.
- ``sendmsg()`` and ``recvmsg()`` interrupted by a signal (EINTR) are
  retried by Python (PEP 475) where nginx logs "sendmsg() failed" or
  "recvmsg() failed" and returns ``NGX_ERROR``; on a non-blocking channel
  neither call sleeps, so neither is interrupted in practice.
- The descriptor is wrapped in a socket object whose timeout is 0 whatever
  ``socket.setdefaulttimeout()`` says, so that each call is exactly one
  system call, as in C.
- ``ngx_add_channel_event`` has no ``ngx_add_conn`` branch (it serves event
  modules other than epoll, which ngxlab does not have) and leaves the
  connection without a pool (nginx gives it the cycle's).
"""

from __future__ import annotations

import atexit
import errno
import os
import socket
import struct

from ngxlab.core import (
    NGX_AGAIN, NGX_ERROR, NGX_LOG_ALERT, NGX_OK, ngx_log_debug, ngx_log_error,
    sizeof,
)

__all__ = [
    "NGX_CMD_OPEN_CHANNEL", "NGX_CMD_CLOSE_CHANNEL", "NGX_CMD_QUIT",
    "NGX_CMD_TERMINATE", "NGX_CMD_REOPEN", "ngx_channel_t",
    "ngx_write_channel", "ngx_read_channel", "ngx_add_channel_event",
    "ngx_close_channel", "command_name",
]

# src/os/unix/ngx_process_cycle.h
NGX_CMD_OPEN_CHANNEL = 1
NGX_CMD_CLOSE_CHANNEL = 2
NGX_CMD_QUIT = 3
NGX_CMD_TERMINATE = 4
NGX_CMD_REOPEN = 5

_command_names = {
    NGX_CMD_OPEN_CHANNEL: "OPEN_CHANNEL",
    NGX_CMD_CLOSE_CHANNEL: "CLOSE_CHANNEL",
    NGX_CMD_QUIT: "QUIT",
    NGX_CMD_TERMINATE: "TERMINATE",
    NGX_CMD_REOPEN: "REOPEN",
}


def command_name(command: int) -> str:
    """``"OPEN_CHANNEL"`` for 1, ..., ``"UNKNOWN(99)"`` for anything else."""
    return _command_names.get(command, f"UNKNOWN({command})")


class ngx_channel_t:
    """The 32-byte message: ``{ngx_uint_t command; ngx_pid_t pid;
    ngx_int_t slot; ngx_fd_t fd;}``.

    Native layout on LP64 Linux: ``command`` u64 at 0, ``pid`` i32 at 8 (4
    padding bytes), ``slot`` i64 at 16, ``fd`` i32 at 24 (4 trailing padding
    bytes). ``bytes(ch)`` gives the bytes nginx would send, padding zeroed (as
    nginx zeroes the struct with ``ngx_memzero`` before filling it, so no
    stack garbage leaks between processes).
    """

    __slots__ = ("command", "pid", "slot", "fd")

    # '@' = native sizes and alignment; '0l' pads the end to long alignment.
    _layout = struct.Struct("@Lili0l")

    def __init__(self, command=0, pid=0, slot=0, fd=-1):
        self.command = command
        self.pid = pid
        self.slot = slot
        self.fd = fd

    def __bytes__(self) -> bytes:
        return self._layout.pack(self.command, self.pid, self.slot, self.fd)

    @classmethod
    def from_bytes(cls, data) -> "ngx_channel_t":
        return cls(*cls._layout.unpack(data))

    def __repr__(self):
        return (f"ngx_channel_t(command={self.command} "
                f"[{command_name(self.command)}], pid={self.pid}, "
                f"slot={self.slot}, fd={self.fd})")

    def __eq__(self, other):
        if not isinstance(other, ngx_channel_t):
            return NotImplemented
        return (self.command, self.pid, self.slot, self.fd) == (
            other.command, other.pid, other.slot, other.fd)


_SIZE = sizeof(ngx_channel_t)
_INT = struct.Struct("i")
_INT_SIZE = _INT.size
_CMSG_SPACE_INT = socket.CMSG_SPACE(_INT.size)
_CMSG_LEN_INT = socket.CMSG_LEN(_INT.size)
# CMSG_LEN(n) is the aligned header's size plus n: this is CMSG_LEN(0)
_CMSG_HDR = socket.CMSG_LEN(0)
_SOL_SOCKET = int(socket.SOL_SOCKET)
_SCM_RIGHTS = int(socket.SCM_RIGHTS)
# plain ints: `int & IntFlag` builds an enum member on every call
_MSG_TRUNCS = int(socket.MSG_TRUNC | socket.MSG_CTRUNC)
_pack = ngx_channel_t._layout.pack
_unpack_from = ngx_channel_t._layout.unpack_from

# Observers of every message this process writes (ngxlab.lab.trace records
# the master's traffic with it). Empty, it costs one truthiness test.
_observers: list = []

# ngxlab's extension point (not nginx's; see ngxlab.beyond): a handler for
# each command number nginx does not use. Only consulted for a descriptor
# that came with a command other than OPEN_CHANNEL (here) and for a command
# ngx_channel_handler does not know; empty, nothing changes.
_extensions: dict = {}

# Socket objects wrapping descriptor numbers, each made on first use by
# _socket(). They are never closed through this table: a descriptor is
# closed by number (os.close / ngx_close_channel) and a number reused later
# names the new descriptor, as it does in C. A plain dict, read with
# .get(): CPython gives a dict subclass's subscript the generic path (a
# method lookup of __getitem__ and a call), which a cold wake pays in
# cache misses on every read and write of the channel.
_sockets: dict[int, socket.socket] = {}


def _socket(s: int) -> socket.socket:
    """``_sockets[s]``, made if it is not there yet (``EBADF`` for a
    negative number)."""
    sock = _sockets.get(s)
    if sock is None:
        if s < 0:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        # SOCK_NONBLOCK in the type makes the object's timeout 0 without
        # touching the descriptor's flags: sendmsg() and recvmsg() are then
        # plain system calls, whatever socket.setdefaulttimeout() says (a
        # timeout would turn EAGAIN into a wait and a TimeoutError)
        sock = _sockets[s] = socket.socket(
            socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK, 0, s)
    return sock


@atexit.register
def _forget_sockets():
    # Let go of the numbers without closing them: whoever owns a descriptor
    # closes it.
    for sock in _sockets.values():
        sock.detach()
    _sockets.clear()


def _close_fds(fds):
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _rights(ancdata):
    """Every descriptor the kernel installed from SCM_RIGHTS messages (a
    truncated control message may end in part of an int: not a descriptor)."""
    fds = []
    for level, type_, data in ancdata:
        if level == _SOL_SOCKET and type_ == _SCM_RIGHTS:
            if len(data) == _INT_SIZE:      # one: every OPEN_CHANNEL's
                fds.append(_INT.unpack(data)[0])
                continue
            for (fd,) in _INT.iter_unpack(data[:len(data) - len(data) % _INT_SIZE]):
                fds.append(fd)
    return fds


def ngx_write_channel(s, ch, size, log):
    """Send ``size`` bytes of ``ch`` on descriptor ``s``; attach ``ch.fd``
    as SCM_RIGHTS unless it is -1.

    Returns ``NGX_OK`` (the byte count is not checked, as in nginx),
    ``NGX_AGAIN`` when the socket buffer is full (not logged), or
    ``NGX_ERROR`` after logging "sendmsg() failed" at alert level.
    """
    fd = ch.fd
    data = _pack(ch.command, ch.pid, ch.slot, fd)     # bytes(ch)
    if size != _SIZE:
        data = data[:size].ljust(size, b"\0")

    if fd == -1:
        ancdata = ()
    else:
        ancdata = ((_SOL_SOCKET, _SCM_RIGHTS, _INT.pack(fd)),)

    try:
        (_sockets.get(s) or _socket(s)).sendmsg((data,), ancdata)
    except BlockingIOError:
        return NGX_AGAIN
    except OSError as e:
        ngx_log_error(NGX_LOG_ALERT, log, e.errno or 0, "sendmsg() failed")
        return NGX_ERROR

    if _observers:
        for observe in _observers:
            observe(s, ch, size)

    return NGX_OK


def ngx_read_channel(s, ch, size, log, nginx_quirks=False):
    """Read one message of ``size`` bytes from ``s`` into ``ch``.

    Returns the number of bytes read (32), ``NGX_AGAIN`` when nothing is
    waiting, or ``NGX_ERROR`` after logging why: "recvmsg() failed",
    "recvmsg() returned zero" (EOF, debug level), "recvmsg() returned not
    enough data: N", "recvmsg() returned too small ancillary data",
    "recvmsg() returned invalid ancillary data level L or type T", and
    "recvmsg() truncated data". For OPEN_CHANNEL, ``ch.fd`` becomes the
    descriptor this process received (its own number, not the sender's).

    ``nginx_quirks=True`` keeps nginx's behaviour exactly: truncation is only
    logged, and descriptors the caller is not given stay open (leaked). (It
    is not keyword-only: a function with keyword-only parameters takes a
    slower call path in CPython, and this is the channel's hot path.)
    """
    try:
        data, ancdata, flags, _ = (_sockets.get(s) or _socket(s)).recvmsg(
            size, _CMSG_SPACE_INT)
    except BlockingIOError:
        return NGX_AGAIN
    except OSError as e:
        ngx_log_error(NGX_LOG_ALERT, log, e.errno or 0, "recvmsg() failed")
        return NGX_ERROR

    n = len(data)
    fds = _rights(ancdata) if ancdata else ()

    if n == 0:
        ngx_log_debug(log, 0, "recvmsg() returned zero")
        if not nginx_quirks:
            _close_fds(fds)
        return NGX_ERROR

    if n < _SIZE:
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "recvmsg() returned not enough data: %d", n)
        if not nginx_quirks:
            _close_fds(fds)
        return NGX_ERROR

    ch.command, ch.pid, ch.slot, ch.fd = _unpack_from(data)
    kept = -1

    if ch.command == NGX_CMD_OPEN_CHANNEL:

        if ancdata:
            level, type_, cdata = ancdata[0]
            cmsg_len = _CMSG_HDR + len(cdata)       # CMSG_LEN(len(cdata))
        else:
            level = type_ = cmsg_len = 0

        if cmsg_len < _CMSG_LEN_INT:
            ngx_log_error(NGX_LOG_ALERT, log, 0,
                          "recvmsg() returned too small ancillary data")
            if not nginx_quirks:
                _close_fds(fds)
            return NGX_ERROR

        if level != _SOL_SOCKET or type_ != _SCM_RIGHTS:
            ngx_log_error(NGX_LOG_ALERT, log, 0,
                          "recvmsg() returned invalid ancillary data "
                          "level %d or type %d", level, type_)
            if not nginx_quirks:
                _close_fds(fds)
            return NGX_ERROR

        ch.fd = kept = fds[0]

    if flags & _MSG_TRUNCS:
        ngx_log_error(NGX_LOG_ALERT, log, 0, "recvmsg() truncated data")
        if not nginx_quirks:
            _close_fds(fds)
            ch.fd = -1
            return NGX_ERROR

    if fds and not nginx_quirks and len(fds) > (kept != -1):
        extension = _extensions.get(ch.command)
        if extension is not None:           # ngxlab's: see ngxlab.beyond
            extension.descriptors(ch, fds, log)
            return n
        # every descriptor but the one kept (counted, not listed: a list
        # comprehension reading `kept` made it a closure cell, allocated at
        # every call, on Python 3.11)
        stray = len(fds) - (kept != -1)
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "recvmsg() returned %d unexpected descriptor(s) with "
                      "channel command %d, closed", stray, ch.command)
        _close_fds(fds)
        ch.fd = -1
        return NGX_ERROR

    return n


def ngx_add_channel_event(cycle, fd, event, handler):
    """Register ``fd`` for ``event`` with ``handler`` in this process's event
    loop, through a connection object as nginx does.

    Returns ``NGX_OK``, or ``NGX_ERROR`` if no connection is free or the
    event cannot be added (the connection is then freed).
    """
    from ngxlab import connection, event as evt

    c = connection.ngx_get_connection(fd, cycle.log)
    if c is None:
        return NGX_ERROR

    c.pool = None
    rev = c.read
    wev = c.write
    rev.log = cycle.log
    wev.log = cycle.log
    rev.channel = 1
    wev.channel = 1

    ev = rev if event == evt.NGX_READ_EVENT else wev
    ev.handler = handler

    if evt.ngx_add_event(ev, event, 0) == NGX_ERROR:
        connection.ngx_free_connection(c)
        return NGX_ERROR

    return NGX_OK


def ngx_close_channel(fd, log):
    """Close ``fd[0]`` and ``fd[1]``; log "close() channel failed" for each
    failure. Like nginx, it does not set the entries to -1."""
    try:
        os.close(fd[0])
    except OSError as e:
        ngx_log_error(NGX_LOG_ALERT, log, e.errno or 0, "close() channel failed")
    try:
        os.close(fd[1])
    except OSError as e:
        ngx_log_error(NGX_LOG_ALERT, log, e.errno or 0, "close() channel failed")
