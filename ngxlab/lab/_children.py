"""The benchmarks' children and placement (private to ``ngxlab.lab``): a
forked child that dies with its parent and always ends in ``os._exit``,
the CPU each side runs on, the C floor (``csrc/floor.c``) run as a program,
and the reason it cannot run where there is no compiler.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import termios
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from ngxlab import _forking
from ngxlab.channel import NGX_CMD_OPEN_CHANNEL, NGX_CMD_REOPEN, ngx_channel_t
from ngxlab.core import sizeof
from ngxlab.lab import _cbuild
from ngxlab.lab.fork import set_parent_death_signal

MESSAGE_SIZE = sizeof(ngx_channel_t)            # 32
PLACEMENTS = ("same", "split", "free")


class BenchError(RuntimeError):
    """A benchmark could not run (a child failed, a message came back wrong)."""


def _child_main(parent: int, close: Iterable[int], cpu: int, target: Callable,
                args: tuple) -> None:
    set_parent_death_signal(signal.SIGKILL, expected_parent=parent)
    if cpu >= 0:
        os.sched_setaffinity(0, {cpu})
    # A kernel interrupt signals the whole group; the parent cleans up.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for fd in close:
        try:
            os.close(fd)
        except OSError:
            pass
    target(*args)


def spawn(target: Callable, *args, close: Iterable[int] = (), cpu: int = -1) -> int:
    """Fork a child that runs ``target(*args)`` after closing ``close`` (on
    CPU ``cpu`` only, unless -1); it dies with its parent and always ends in
    ``os._exit``."""
    parent = os.getpid()
    close = tuple(close)
    pid = _forking.fork()
    if pid == 0:
        _forking.run_child(_child_main, parent, close, cpu, target, args)
    return pid


@dataclass(frozen=True)
class Placement:
    kind: str                 # what was asked for: same, split or free
    parent_cpu: int           # -1: not pinned
    child_cpu: int
    note: str = ""

    def describe(self) -> str:
        if self.parent_cpu < 0:
            text = "free: the scheduler places parent and child"
        elif self.parent_cpu == self.child_cpu:
            text = f"same: parent and child pinned to CPU {self.parent_cpu}"
        else:
            text = f"split: parent pinned to CPU {self.parent_cpu}, child to CPU {self.child_cpu}"
        return text + (f" ({self.note})" if self.note else "")


def place(kind: str) -> Placement:
    if kind not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, not {kind!r}")
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return Placement(kind, -1, -1, "CPU affinity is not available here")
    if kind == "free":
        return Placement(kind, -1, -1)
    if kind == "same":
        return Placement(kind, cpus[0], cpus[0])
    if len(cpus) < 2:
        return Placement(kind, cpus[0], cpus[0], "only one CPU: both on it")
    return Placement(kind, cpus[0], cpus[1])


@contextlib.contextmanager
def pinned(cpu: int):
    """Run the calling thread on ``cpu`` only, then restore its affinity."""
    if cpu < 0:
        yield
        return
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, saved)


def finish(pid: int, grace: float = 2.0) -> int | None:
    """Wait up to ``grace`` seconds for the child to exit, then SIGKILL it;
    always reap it. Returns its exit status (None if killed)."""
    deadline = time.monotonic() + grace
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() >= deadline:
            break
        time.sleep(0.002)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    while True:
        try:
            os.waitpid(pid, 0)
            return None
        except ChildProcessError:
            return None
        except KeyboardInterrupt:
            continue


def nonblocking(fd: int) -> None:
    # As ngx_nonblocking() on Linux: ioctl(FIONBIO).
    fcntl.ioctl(fd, termios.FIONBIO, b"\x01\x00\x00\x00")


def rights(ancdata) -> list[int]:
    fds: list[int] = []
    for level, type_, data in ancdata:
        if level == socket.SOL_SOCKET and type_ == socket.SCM_RIGHTS:
            fds.extend(array.array("i", data[:len(data) - len(data) % 4]))
    return fds


def message(with_fd: bool, devnull: int) -> ngx_channel_t:
    if with_fd:
        return ngx_channel_t(command=NGX_CMD_OPEN_CHANNEL, pid=os.getpid(), slot=0, fd=devnull)
    return ngx_channel_t(command=NGX_CMD_REOPEN, pid=os.getpid(), slot=0, fd=-1)



def run_floor(argv: list, timeout: float = 120.0) -> dict:
    argv = [str(a) for a in argv]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"{' '.join(argv)} did not finish in {timeout} s") from e
    if done.returncode != 0:
        raise BenchError(f"{' '.join(argv)} exited with status {done.returncode}: "
                         f"{done.stderr.strip()[-500:]}")
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as e:
        raise BenchError(f"{' '.join(argv)} printed no JSON line: {done.stdout[-500:]!r}") from e


def c_skip_reason() -> str | None:
    """Why the C floor cannot run here, or None when it can."""
    try:
        _cbuild.build("floor")
    except _cbuild.CompilerNotFound as e:
        return f"not measured: {e}"
    except _cbuild.CBuildError as e:
        return f"not measured: the C floor did not compile: {e}"
    return None
