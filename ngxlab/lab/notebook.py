"""What the chapters' cells use besides the runners, written once.

- :func:`operator`: run ``python -m ngxlab ARGS --prefix DIR`` as an operator
  types it, and show what it printed and its exit status;
- :class:`LogClock`: stamp every line appended to an error log with when it
  appeared, in ms (nginx's timestamps are whole seconds);
- :func:`strace_attached`: ``strace -f -p PID`` for the length of a block;
- :func:`wait_until`: poll a condition with a deadline;
- :func:`state` and :func:`alive`: what ``/proc`` says of a pid
  (:mod:`ngxlab.lab.proc`).

Each is shown in the chapter that first uses it and imported in the others.

Not a mirror of nginx: nothing here has an ``ngx_`` name.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from ngxlab.lab.proc import alive, state
from ngxlab.lab.runner import ngxlab_env

__all__ = ["operator", "LogClock", "strace_attached", "wait_until", "state", "alive"]


def operator(*args: str, prefix, show: bool = True) -> subprocess.CompletedProcess:
    """Run ``python -m ngxlab ARGS --prefix DIR`` and, with ``show``, print it
    as typed, what it printed (the prefix shown as ``DIR``) and its exit status."""
    r = subprocess.run([sys.executable, "-m", "ngxlab", *args, "--prefix", str(prefix)],
                       capture_output=True, text=True, timeout=30, env=ngxlab_env(),
                       stdin=subprocess.DEVNULL)
    if show:
        print(f"$ ngxlab {' '.join(args)} --prefix DIR")
        print((r.stdout + r.stderr).replace(str(prefix), "DIR"), end="")
        print(f"(exit status {r.returncode})")
    return r


class LogClock:
    """Stamp every line appended to a log file with when it appeared, in ms."""

    def __init__(self, path, interval=0.0005):
        self.path, self.interval = path, interval
        self.lines = []                      # (ms since start, line)
        self._stop = threading.Event()

    def now(self):
        return (time.monotonic() - self.t0) * 1000

    def at(self, epoch):
        """A time.time() value (an strace -ttt stamp) on this clock, in ms."""
        return (epoch - self.epoch0) * 1000

    def __enter__(self):
        self._file = open(self.path, "rb")
        self._file.seek(0, os.SEEK_END)
        self._rest = b""
        self.t0, self.epoch0 = time.monotonic(), time.time()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        data = self._file.read()
        if data:
            t = self.now()
            *done, self._rest = (self._rest + data).split(b"\n")
            self.lines += [(t, line.decode()) for line in done]

    def _run(self):
        while not self._stop.is_set():
            self._poll()
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._poll()
        self._file.close()


@contextmanager
def strace_attached(pid, out, calls="sendmsg,kill") -> Iterator[str | None]:
    """`strace -f -p PID` while the block runs; yields the output path, or None."""
    proc = None
    if shutil.which("strace") is None:
        print("(strace is not installed: no system-call trace)")
    else:
        proc = subprocess.Popen(["strace", "-f", "-xx", "-ttt", "-e", f"trace={calls}",
                                 "-o", out, "-p", str(pid)],
                                stderr=subprocess.PIPE, text=True)
        first = proc.stderr.readline()       # "strace: Process N attached"
        if "attached" not in first:
            print(f"(strace could not attach: {first.strip()})")
    try:
        yield out if proc is not None and proc.poll() is None else None
    finally:
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)          # detach
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stderr.close()


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Poll predicate() until it is true; raise TimeoutError after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(getattr(predicate, "__name__", "condition"))
        time.sleep(0.002)
    return value
