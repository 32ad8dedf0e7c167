"""Process titles: src/os/unix/ngx_setproctitle.[ch] at release-1.30.4.

nginx rewrites its ``argv`` so that ``ps`` shows "nginx: master process" and
"nginx: worker process". ngxlab sets the kernel's 15-byte process name
instead (``prctl(PR_SET_NAME)``), which ``ps -o comm``, ``top`` and
``/proc/PID/comm`` show: "ngxlab: master", "ngxlab: worker".

Deviations:

- Only the short name is set, not the full command line.
- The name is written to ``/proc/self/comm``, which sets what
  ``prctl(PR_SET_NAME)`` sets for the calling (main) thread, without
  ``ctypes``: loading ctypes would cost the master a few milliseconds before
  its first fork. ``prctl`` through ctypes remains the fallback where
  ``/proc`` cannot be written; where ctypes cannot be loaded either (no
  descriptor left to open its files with, EMFILE), the name stays as it
  was. nginx's title, written into its own ``argv``, cannot fail.
"""

from __future__ import annotations

import os

__all__ = ["ngx_setproctitle"]

_PR_SET_NAME = 15


def ngx_setproctitle(title):
    """Name this process "ngxlab: <first word of title>" ("master process"
    gives "ngxlab: master")."""
    name = ("ngxlab: " + title.split()[0]).encode()[:15]
    try:
        fd = os.open("/proc/self/comm", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, name)
        finally:
            os.close(fd)
    except OSError:
        try:
            import ctypes
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)
        except OSError:
            pass    # no descriptor left to load ctypes with (EMFILE): the old name stays
