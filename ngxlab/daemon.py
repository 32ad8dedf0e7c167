"""Becoming a daemon: src/os/unix/ngx_daemon.c at release-1.30.4.

One ``fork()``: the parent exits, the child starts a new session, clears its
umask and points stdin and stdout at /dev/null. There is no second fork and
no ``chdir``, as in nginx. stderr is left as it is until the pid file is
written; then ``main`` points it at the error log (nginx's
``ngx_log_redirect_stderr``), so that the daemon holds nothing of the
terminal or the pipes of the process that started it.

Deviations:

- The parent leaves with ``os._exit(0)`` after flushing (nginx calls
  ``exit(0)``): it must not run the handlers a Python program registered
  with ``atexit``, which belong to the daemon now.
"""

from __future__ import annotations

import os

from ngxlab import _forking
# The import cycle of the mirrors (process, process_cycle, cycle, nginx,
# daemon, _http), as nginx's files share their globals through "extern":
# each imports the others' modules, never names from them, so any of them
# can be imported first; attributes are read when a function runs.
from ngxlab import process
from ngxlab.core import NGX_ERROR, NGX_LOG_EMERG, NGX_OK, ngx_log_error

__all__ = ["ngx_daemon"]


def ngx_daemon(log):
    """Fork; the parent exits 0; the child returns ``NGX_OK`` as a daemon,
    or ``NGX_ERROR`` after an emerg line."""
    try:
        pid = _forking.fork()
    except OSError as e:
        ngx_log_error(NGX_LOG_EMERG, log, e.errno or 0, "fork() failed")
        return NGX_ERROR

    if pid != 0:
        _forking.exit(0)

    process.ngx_parent = process.ngx_pid
    process.ngx_pid = os.getpid()

    try:
        os.setsid()
    except OSError as e:
        ngx_log_error(NGX_LOG_EMERG, log, e.errno or 0, "setsid() failed")
        return NGX_ERROR

    os.umask(0)

    try:
        fd = os.open("/dev/null", os.O_RDWR)
    except OSError as e:
        ngx_log_error(NGX_LOG_EMERG, log, e.errno or 0,
                      "open(\"/dev/null\") failed")
        return NGX_ERROR

    for target, what in ((0, "STDIN"), (1, "STDOUT")):
        try:
            os.dup2(fd, target)
        except OSError as e:
            ngx_log_error(NGX_LOG_EMERG, log, e.errno or 0,
                          "dup2(%s) failed", what)
            return NGX_ERROR

    if fd > 2:
        os.close(fd)

    return NGX_OK
