"""Process titles: src/os/unix/ngx_setproctitle.[ch] at release-1.30.4.

nginx rewrites its ``argv`` so that ``ps`` shows "nginx: master process" and
"nginx: worker process". ngxlab sets the kernel's 15-byte process name
instead (``prctl(PR_SET_NAME)``), which ``ps -o comm``, ``top`` and
``/proc/PID/comm`` show: "ngxlab: master", "ngxlab: worker".

Deviations:

- Only the short name is set, not the full command line.
"""

from __future__ import annotations

import ctypes

__all__ = ["ngx_setproctitle"]

_PR_SET_NAME = 15
_libc = ctypes.CDLL(None, use_errno=True)    # made once, before any fork


def ngx_setproctitle(title):
    """Name this process "ngxlab: <first word of title>" ("master process"
    gives "ngxlab: master")."""
    name = ("ngxlab: " + title.split()[0]).encode()[:15]
    _libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)
