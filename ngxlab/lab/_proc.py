"""Processes known by (pid, start time), read from /proc (lab's, private).

A pid is reused once its process is reaped; the start time (field 22 of
/proc/PID/stat, clock ticks after boot) is not. The instruments that stop
what they started (Nginx, MasterProcess, the scaling runs) keep a ``Proc``
and signal it only while it is still the same process.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass


def stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time) of ``pid``, or None when there is none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rfind(b")") + 2:].split()
    return rest[0].decode(), int(rest[1]), int(rest[19])


def start_time(pid: int) -> int | None:
    """Start time of a live (not zombie) process, or None."""
    st = stat(pid)
    return None if st is None or st[0] in ("Z", "X") else st[2]


@dataclass(frozen=True)
class Proc:
    pid: int
    start: int

    @classmethod
    def of(cls, pid: int) -> "Proc | None":
        st = start_time(pid)
        return None if st is None else cls(pid, st)

    def alive(self) -> bool:
        """Running (a zombie counts as gone), and still the same process."""
        return start_time(self.pid) == self.start

    def kill(self, signum: int) -> bool:
        """Send ``signum`` if it is still the same live process."""
        if not self.alive():
            return False
        try:
            os.kill(self.pid, signum)
            return True
        except ProcessLookupError:
            return False


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
