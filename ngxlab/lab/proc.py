"""What ``/proc`` says about a process: the one reader of ``/proc/PID/stat``
and of a process's children for all of ``ngxlab.lab``.

A pid is reused once its process is reaped; the start time (field 22 of
``/proc/PID/stat``, clock ticks after boot) is not. The runners keep a
:class:`Proc` (pid and start time) for every process they start or see, and
signal it only while it is still the same process. Every reader returns
``None`` (or an empty list, or -1 for a count) for a process that is gone,
so that a caller decides what a missing process means.

Not a mirror of nginx: nothing here has an ``ngx_`` name.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

__all__ = [
    "Stat", "stat", "state", "alive", "start_time", "ppid", "comm", "cmdline",
    "wait_state", "children", "fd_count", "fd_targets", "epoll_set", "cpu_ms", "cpu_times",
    "minor_faults", "voluntary_switches", "Proc",
]


@dataclass(frozen=True)
class Stat:
    """The fields of ``/proc/PID/stat`` that ngxlab reads."""

    state: str          # R, S, D, T, Z, X, ...
    ppid: int
    session: int
    minflt: int         # minor page faults so far
    start: int          # clock ticks after boot


def _stat_fields(pid: int) -> list[bytes] | None:
    """The fields of ``/proc/PID/stat`` after the command name (field 3 on,
    so ``[0]`` is the state), or None when there is none. Raises
    ``PermissionError`` when it may not be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # the command name (field 2) is in parentheses and may hold spaces or ")"
    return data[data.rfind(b")") + 2:].split()


def stat(pid: int) -> Stat | None:
    """``/proc/PID/stat`` of ``pid``, or None when there is none. Raises
    ``PermissionError`` when it may not be read."""
    rest = _stat_fields(pid)
    if rest is None:
        return None
    return Stat(state=rest[0].decode(), ppid=int(rest[1]), session=int(rest[3]),
                minflt=int(rest[7]), start=int(rest[19]))


def state(pid: int) -> str | None:
    """The state letter of ``pid`` (R, S, T, Z, ...), or None when it is gone."""
    st = stat(pid)
    return None if st is None else st.state


def alive(pid: int) -> bool:
    """Running: it exists and is not a zombie."""
    return state(pid) not in (None, "Z", "X")


def wait_state(pid: int, states: str, timeout: float = 5.0) -> str:
    """Wait until ``pid`` is in one of ``states`` (letters, e.g. "T" for
    stopped) and return it; ``TimeoutError`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        now = state(pid)
        if now is not None and now in states:
            return now
        if time.monotonic() > deadline:
            raise TimeoutError(f"process {pid} not in state {states!r} within {timeout} s "
                               f"(it is {now or 'gone'})")
        time.sleep(0.001)


def start_time(pid: int) -> int | None:
    """Start time of a live (not zombie) process, or None."""
    st = stat(pid)
    return None if st is None or st.state in ("Z", "X") else st.start


def ppid(pid: int) -> int | None:
    """The parent's pid, or None when ``pid`` is gone."""
    st = stat(pid)
    return None if st is None else st.ppid


def comm(pid: int) -> str:
    """``/proc/PID/comm`` (the process's title, e.g. "ngxlab: master"), "" when gone."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def cmdline(pid: int) -> str | None:
    """The command line, arguments joined by spaces; None when gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()


def children(pid: int, *, zombies: bool = False) -> list[int] | None:
    """The children of ``pid`` (live ones only unless ``zombies``), in pid
    order; None when ``pid`` is gone. Raises ``PermissionError`` when its
    tasks may not be listed.

    Reads ``/proc/PID/task/*/children`` where the kernel provides it
    (CONFIG_PROC_CHILDREN), else scans the parent of every process."""
    task_dir = f"/proc/{pid}/task"
    try:
        tids = os.listdir(task_dir)
    except (FileNotFoundError, ProcessLookupError):
        return None
    kids: set[int] = set()
    found = False
    for tid in tids:
        try:
            with open(f"{task_dir}/{tid}/children", "rb") as f:
                kids.update(int(x) for x in f.read().split())
            found = True
        except (FileNotFoundError, ProcessLookupError):
            continue        # a thread that ended since the listing
    if not found:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                st = _stat_or_none(int(entry))
                if st is not None and st.ppid == pid:
                    kids.add(int(entry))
    return sorted(k for k in kids if zombies or alive(k))


def _stat_or_none(pid: int) -> Stat | None:
    try:
        return stat(pid)
    except PermissionError:
        return None


def fd_count(pid: int) -> int:
    """How many descriptors ``pid`` holds (one ``listdir``), -1 when it is gone."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return -1


def fd_targets(pid: int) -> dict[int, str] | None:
    """``{fd: what readlink(/proc/PID/fd/FD) says}``, or None when ``pid`` is gone."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    out = {}
    for name in names:
        try:
            out[int(name)] = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue        # closed between the listing and the look
    return out


def epoll_set(pid: int, fd: int) -> tuple[int, ...] | None:
    """The descriptors registered in ``pid``'s epoll instance ``fd``
    (``tfd:`` lines of ``/proc/PID/fdinfo/FD``), or None when unreadable."""
    try:
        with open(f"/proc/{pid}/fdinfo/{fd}") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    out = []
    for line in lines:
        if line.startswith("tfd:"):
            try:
                out.append(int(line.split()[1]))
            except (IndexError, ValueError):
                pass
    return tuple(sorted(out))


def cpu_ms(pid: int) -> float | None:
    """CPU time ``pid`` has run so far, in ms (``/proc/PID/schedstat``, ns
    resolution; all its threads), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/schedstat", "rb") as f:
            return int(f.read().split()[0]) / 1e6
    except (OSError, ValueError, IndexError):
        return None


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_times(pid: int) -> tuple[float, float] | None:
    """(user + system CPU of ``pid`` itself, of its reaped children), in
    seconds at the clock tick's resolution, or None when it is gone."""
    rest = _stat_fields(pid)
    if rest is None:
        return None
    return ((int(rest[11]) + int(rest[12])) / _TICK,
            (int(rest[13]) + int(rest[14])) / _TICK)


def minor_faults(pid: int) -> int | None:
    """Minor page faults of ``pid`` so far (after a fork, mostly copy-on-write
    copies of the parent's pages), or None when it is gone."""
    st = stat(pid)
    return None if st is None else st.minflt


def voluntary_switches(pid: int) -> int | None:
    """How many times ``pid`` has gone to sleep so far (``voluntary_ctxt_switches``
    in ``/proc/PID/status``): for a process that sleeps in ``epoll_wait``,
    the number of times it was woken, plus one. None when it is gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"voluntary_ctxt_switches:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


@dataclass(frozen=True)
class Proc:
    """A process known by pid *and* start time."""

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
