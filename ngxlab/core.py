"""Return codes, log levels and the error log: ngx_core.h and ngx_log.[ch].

nginx functions answer with small negative integers instead of raising, and
they log every failed system call at the place it failed, in one fixed format::

    2026/11/27 10:00:00 [alert] 123#0: sendmsg() failed (9: Bad file descriptor)

The mirrors in ngxlab do the same, so that a chapter can set a Python mirror
beside the nginx function and compare the two branch by branch, and so that
``ngxlab run`` reads like nginx's error log. ``ngxlab.lab`` turns these codes
into exceptions for people who would rather not check return values.

Deviations:

- ``ngx_log_t`` is a small object with a file and a level, not nginx's chain
  of logs with per-module debug masks. Debug messages are kept when the level
  is ``NGX_LOG_DEBUG``; nginx needs ``--with-debug`` for them.
- The message format uses Python's ``%`` codes (``%d``, ``%s``) where nginx
  has its own (``%P``, ``%z``, ``%V``); the text of each message is nginx's.
- The time at the start of a line is formatted once a second, as nginx's
  ``ngx_cached_err_log_time``, but from the clock read for the line: nginx
  reads the clock only in ``ngx_time_update`` (each turn of the event loop,
  a signal), so its time can be older than the line.
- ``sizeof`` gives the size of a mirrored C struct (a class with a ``_layout``
  :class:`struct.Struct`), so callers can write ``sizeof(ngx_channel_t)`` as
  nginx does.
"""

from __future__ import annotations

import os
import sys
import _thread
import time

__all__ = [
    "NGX_OK", "NGX_ERROR", "NGX_AGAIN", "NGX_BUSY", "NGX_DONE", "NGX_DECLINED",
    "NGX_ABORT",
    "NGX_LOG_STDERR", "NGX_LOG_EMERG", "NGX_LOG_ALERT", "NGX_LOG_CRIT",
    "NGX_LOG_ERR", "NGX_LOG_WARN", "NGX_LOG_NOTICE", "NGX_LOG_INFO",
    "NGX_LOG_DEBUG",
    "ngx_log_t", "ngx_log_error", "ngx_log_debug", "sizeof",
]

# src/core/ngx_core.h
NGX_OK = 0
NGX_ERROR = -1
NGX_AGAIN = -2
NGX_BUSY = -3
NGX_DONE = -4
NGX_DECLINED = -5
NGX_ABORT = -6

# src/core/ngx_log.h
NGX_LOG_STDERR = 0
NGX_LOG_EMERG = 1
NGX_LOG_ALERT = 2
NGX_LOG_CRIT = 3
NGX_LOG_ERR = 4
NGX_LOG_WARN = 5
NGX_LOG_NOTICE = 6
NGX_LOG_INFO = 7
NGX_LOG_DEBUG = 8

# src/core/ngx_log.c, err_levels[]
_err_levels = ("", "emerg", "alert", "crit", "error", "warn", "notice", "info",
               "debug")

_level_names = {name: i for i, name in enumerate(_err_levels) if name}


def sizeof(t) -> int:
    """``sizeof(t)`` for a mirrored C struct: the size of its byte layout."""
    return t._layout.size



class ngx_log_t:
    """A log in nginx's error-log format, written to stderr or a file.

    ``file`` is a path (opened for append, like nginx's ``error_log``), an
    open text stream, or ``None`` for the process's current ``sys.stderr``.
    ``log_level`` is a number or one of nginx's level names ("notice").
    ``echo``, a text stream, gets a copy of every line (``ngxlab run`` in
    the foreground echoes its log to the terminal, as nginx does with
    ``error_log stderr``).
    Each line is written with a single ``write()`` on an ``O_APPEND``
    descriptor when ``file`` is a path, so the master and its workers can
    share one file, as they share nginx's error log.
    """

    def __init__(self, file=None, log_level=NGX_LOG_NOTICE, echo=None):
        if isinstance(log_level, str):
            try:
                log_level = _level_names[log_level]
            except KeyError:
                raise ValueError(f"unknown log level {log_level!r}; "
                                 f"expected one of {', '.join(_level_names)}")
        self.log_level = log_level
        self.echo = echo
        self.path = None
        self._fd = -1
        self._stream = None
        if isinstance(file, (str, os.PathLike)):
            self.path = os.fspath(file)
            self._open()
        else:
            self._stream = file
        self._lock = _thread.allocate_lock()     # threading.Lock, without importing threading

    def _open(self):
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT
                           | os.O_CLOEXEC, 0o644)

    def reopen(self):
        """Reopen the file by name, as nginx does on SIGUSR1 (log rotation)."""
        if self.path is None:
            return
        old = self._fd
        self._open()
        if old != -1:
            os.close(old)

    def close(self):
        if self._fd != -1:
            os.close(self._fd)
            self._fd = -1

    def fileno(self) -> int:
        """The descriptor the log writes to (-1 when it writes to a stream)."""
        return self._fd

    def format(self, level, err, msg) -> str:
        line = "%s [%s] %d#0: %s" % (_err_log_time(), _err_levels[level],
                                     os.getpid(), msg)
        if err:
            line += " (%d: %s)" % (err, os.strerror(err))
        return line + "\n"

    def write(self, level, err, msg):
        line = self.format(level, err, msg)
        if self.echo is not None:
            try:
                self.echo.write(line)
                self.echo.flush()
            except (OSError, ValueError):
                pass
        if self._fd != -1:
            os.write(self._fd, line.encode("utf-8", "backslashreplace"))
            return
        stream = self._stream if self._stream is not None else sys.stderr
        with self._lock:
            stream.write(line)
            stream.flush()


# nginx's ngx_cached_err_log_time: the time of the log lines, formatted once
# a second, not for every line
_cached_err_log_time = [-1, ""]


def _err_log_time():
    now = int(time.time())
    if now != _cached_err_log_time[0]:
        _cached_err_log_time[:] = now, time.strftime("%Y/%m/%d %H:%M:%S",
                                                     time.localtime(now))
    return _cached_err_log_time[1]


def ngx_log_error(level, log, err, fmt, *args):
    """Log ``fmt % args`` at ``level``, followed by "(errno: strerror)"
    when ``err`` is non-zero, unless the log's level is lower."""
    if log is None or level > log.log_level:
        return
    log.write(level, err, fmt % args if args else fmt)


def ngx_log_debug(log, err, fmt, *args):
    """nginx's ``ngx_log_debugN`` macros: only when the log is at debug."""
    if log is None or log.log_level < NGX_LOG_DEBUG:
        return
    log.write(NGX_LOG_DEBUG, err, fmt % args if args else fmt)
