"""Forking safely from a notebook cell, or from any script.

``run_in_child(fn, *args, **kwargs)`` runs ``fn`` in a forked child process and
returns a :class:`ChildResult`: what the child printed, how it ended, how long it
took, and the value ``fn`` returned (pickled back through a pipe).
``forked(fn, ...)`` is the version for a notebook cell: it prints the child's
output into the cell, raises :class:`ChildError` (with the child's traceback)
when the child failed, and returns the child's value::

    from ngxlab.lab.fork import forked

    def child():
        print("hello from", os.getpid())
        return os.getppid()

    parent = forked(child)

Why this is more than ``os.fork()``. In a Jupyter kernel, a bare fork is a trap:

- A child that raises unwinds into its copy of the kernel instead of exiting,
  and lives on as a stray clone of the kernel. Here the child always ends in
  ``os._exit()``, after printing its traceback.
- The child's ``sys.stdout`` is the kernel's stream object, whose machinery
  (threads, ZMQ sockets) did not survive the fork. Here the child's fds 1 and 2
  point at a pipe, ``sys.stdout``/``sys.stderr`` are plain line-buffered files
  on them, and the parent prints what came through into the cell.
- A parent that waits for EOF or for ``waitpid`` can hang the cell forever.
  Here every wait has a deadline (``timeout``), after which the child and its
  process group get SIGKILL, and the child is always reaped.
- Python 3.12+ warns on every fork in a multi-threaded process (a kernel has
  about a dozen threads); the fork goes through ``ngxlab._forking.fork()``,
  which silences that warning for this one call.

Process groups. The child makes itself the leader of a new process group
(``setpgid(0, 0)``, also done from the parent so neither side races). Jupyter's
"interrupt kernel" sends SIGINT to the kernel's whole process group; with its
own group, the child is not interrupted half-way through. The parent alone
gets the KeyboardInterrupt, kills the child's group, reaps the child and
re-raises, so the cell ends promptly and leaves nothing behind. The group also
lets the parent end everything the child started: when the child has ended,
whatever is left in its group (workers it forked and did not wait for) gets
SIGKILL. Because the group is not the terminal's foreground group, the
child's stdin is ``/dev/null``: a background process reading the terminal
would be stopped by SIGTTIN.

Kernel restarts. The child asks the kernel for SIGKILL when its parent dies
(``prctl(PR_SET_PDEATHSIG)``), then checks ``getppid()`` in case the parent died
before that call: a restarted or killed kernel leaves no child behind. (Linux
sends that signal when the *thread* that forked ends; ``run_in_child`` waits
for the child in that same thread, so that cannot come early.)

Grandchildren. A grandchild inherits the output pipe; if it outlives the
child, EOF never comes. The parent therefore watches the child itself (a
pidfd, or ``waitid(WNOWAIT)`` where pidfds are missing): once the child has
ended, it takes what is already in the pipes and stops reading. Output a
grandchild writes after the child ended is not collected.

Not a mirror of nginx: nothing here has an ``ngx_`` name.
"""

from __future__ import annotations

import ctypes
import faulthandler
import os
import pickle
import re
import select
import signal as _signal
import struct
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, NoReturn

from ngxlab import _forking

__all__ = [
    "ChildResult", "ChildError", "ChildTimeout", "run_in_child", "forked",
    "set_parent_death_signal",
]

_HEADER = struct.Struct("!Q")          # length of the pickled payload
_READ_SIZE = 65536
_PR_SET_PDEATHSIG = 1                  # <linux/prctl.h>
_KILL_REAP_S = 5.0                     # how long to wait for a SIGKILLed child

_libc = None


# -- results and errors ------------------------------------------------------


@dataclass
class ChildResult:
    """How one forked child ended.

    ``exitcode`` is the child's exit status, or ``None`` when a signal ended
    it (then ``signal`` is the signal number). ``output`` is everything the
    child wrote to its stdout and stderr, in order, as text. ``value`` is what
    ``fn`` returned (``None`` when it failed). ``exception`` (``"ValueError:
    bad"``) and ``traceback`` (the text Python printed) are set when ``fn``
    raised. ``timed_out`` is true when the parent killed the child at its
    deadline. ``duration`` is in seconds, from fork to reap.
    """

    pid: int
    exitcode: int | None
    signal: int | None
    output: str
    duration: float
    value: Any = None
    exception: str | None = None
    traceback: str | None = None
    timed_out: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The child ran ``fn`` to its end and exited with status 0."""
        return self.exitcode == 0 and not self.timed_out and self.exception is None

    def describe(self) -> str:
        """One line: how the child ended."""
        if self.timed_out:
            how = f"was killed with SIGKILL after its deadline ({self.duration:.2f} s)"
        elif self.exception is not None:
            how = f"raised {self.exception}"
        elif self.signal is not None:
            how = f"was killed by {_signal_name(self.signal)}"
        elif self.exitcode is None:
            how = "ended in an unknown way (it was reaped by someone else)"
        else:
            how = f"exited with status {self.exitcode}"
        return f"child {self.pid} {how}"

    def check(self) -> "ChildResult":
        """Return ``self`` if the child succeeded; raise :class:`ChildError`
        (:class:`ChildTimeout` after a deadline) otherwise."""
        if self.ok:
            return self
        if self.timed_out:
            raise ChildTimeout(self)
        raise ChildError(self)


class ChildError(RuntimeError):
    """A forked child failed: it raised, exited non-zero, or was killed.

    ``result`` is the :class:`ChildResult`; ``traceback`` is the child's
    traceback text (``None`` when it did not raise), also part of the message.
    """

    def __init__(self, result: ChildResult):
        self.result = result
        self.traceback = result.traceback
        message = result.describe()
        if result.traceback:
            message += "\n\nThe child's traceback:\n" + result.traceback.rstrip("\n")
        super().__init__(message)


class ChildTimeout(ChildError, TimeoutError):
    """The child did not end before its deadline and was killed."""


def _signal_name(sig: int) -> str:
    try:
        return _signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


# -- the child's side --------------------------------------------------------


def set_parent_death_signal(sig: int = _signal.SIGKILL, *,
                            expected_parent: int | None = None) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent ends
    (``prctl(PR_SET_PDEATHSIG)``), through ctypes.

    With ``expected_parent``, end this process at once (``os._exit(1)``) if
    its parent is already someone else: the parent died before the call.
    Returns False where prctl is not available (not Linux).
    """
    global _libc
    if not sys.platform.startswith("linux"):
        return False
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        if _libc.prctl(ctypes.c_int(_PR_SET_PDEATHSIG), ctypes.c_ulong(sig),
                       ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if expected_parent is not None and os.getppid() != expected_parent:
        _forking.exit(1)
    return True


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]



_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))) + os.sep


def _short_paths(text: str) -> str:
    """The child's traceback without this machine's paths: ngxlab's files as
    ``ngxlab/...``, a notebook cell's code as ``<cell>`` (IPython compiles
    each cell to a file under a temporary directory)."""
    text = text.replace(_PACKAGE_ROOT, "")
    return re.sub(r'"[^"]*ipykernel_\d+[/\\]\d+\.py"', '"<cell>"', text)

def _child(fn, args, kwargs, parent, out_r, out_w, val_r, val_w) -> NoReturn:
    # Everything is inside the try: whatever happens, the process ends in
    # os._exit and never returns into the caller's (the kernel's) stack.
    code = 1
    try:
        try:
            os.setpgid(0, 0)
        except OSError:
            pass
        set_parent_death_signal(_signal.SIGKILL, expected_parent=parent)
        os.close(out_r)
        os.close(val_r)
        null = os.open(os.devnull, os.O_RDONLY)
        if null != 0:
            os.dup2(null, 0)
            os.close(null)
        os.dup2(out_w, 1)
        os.dup2(out_w, 2)
        os.close(out_w)
        # Plain files on fds 1 and 2, not the kernel's stream objects.
        sys.stdin = open(0, "r", closefd=False)
        sys.stdout = open(1, "w", buffering=1, encoding="utf-8",
                          errors="backslashreplace", closefd=False)
        sys.stderr = open(2, "w", buffering=1, encoding="utf-8",
                          errors="backslashreplace", closefd=False)
        try:
            faulthandler.enable(file=sys.stderr)  # a crash prints a traceback too
        except Exception:
            pass

        try:
            value = fn(*args, **kwargs)
            payload = pickle.dumps(("value", value), pickle.HIGHEST_PROTOCOL)
            code = 0
        except SystemExit as e:
            code = _forking.exit_code(e)
            payload = pickle.dumps(("exit", code))
        except BaseException as e:
            frames = e.__traceback__
            if frames is not None and frames.tb_frame.f_code is _child.__code__:
                frames = frames.tb_next    # start the traceback at fn
            tb = _short_paths("".join(traceback.format_exception(type(e), e, frames)))
            sys.stderr.write(tb)
            summary = "".join(traceback.format_exception_only(type(e), e)).strip()
            payload = pickle.dumps(("error", summary, tb))
            code = 1
        _write_all(val_w, _HEADER.pack(len(payload)) + payload)
    except BaseException:
        code = code or 1
        try:
            traceback.print_exc()
        except BaseException:
            pass
    finally:
        _forking.exit(code)


# -- the parent's side -------------------------------------------------------


def _pidfd_open(pid: int) -> int:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return -1


def _child_has_ended(pid: int) -> bool:
    """True when ``pid`` has ended, without reaping it (WNOWAIT)."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def _drain(fd: int, chunks: list[bytes]) -> bool:
    """Read what is in the pipe now; True at EOF."""
    while True:
        try:
            data = os.read(fd, _READ_SIZE)
        except BlockingIOError:
            return False
        except InterruptedError:
            continue
        if not data:
            return True
        chunks.append(data)


def _kill_group(pid: int, group: bool) -> None:
    # While the child is unreaped its pid cannot be reused, so the group id
    # (the child's pid) still names the child's group only.
    if group:
        try:
            os.killpg(pid, _signal.SIGKILL)
        except OSError:
            pass
    try:
        os.kill(pid, _signal.SIGKILL)
    except OSError:
        pass


def _reap(pid: int) -> tuple[int | None, int | None]:
    """waitpid(pid, 0); returns (exitcode, signal), (None, None) if someone
    else reaped it. A KeyboardInterrupt meanwhile does not leave it unreaped."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            return None, None
        except KeyboardInterrupt:
            continue
        if os.WIFSIGNALED(status):
            return None, os.WTERMSIG(status)
        return os.waitstatus_to_exitcode(status), None


def run_in_child(fn: Callable[..., Any], *args: Any, timeout: float | None = 10.0,
                 **kwargs: Any) -> ChildResult:
    """Run ``fn(*args, **kwargs)`` in a forked child; return a :class:`ChildResult`.

    The child's stdout and stderr are collected (not printed: see
    :func:`forked`); the child's return value comes back pickled (it must be
    picklable, or the child fails with the pickling error). After ``timeout``
    seconds (``None``: no deadline) the child and its process group get
    SIGKILL and the result has ``timed_out=True``; the child is always
    reaped, and no descriptor stays open in the parent. A KeyboardInterrupt
    while waiting kills and reaps the child, then propagates.

    ``timeout`` is the one keyword taken from ``fn``'s keywords; to pass a
    ``timeout`` to ``fn``, wrap it in ``functools.partial``.
    """
    parent = os.getpid()
    out_r, out_w = os.pipe()
    try:
        val_r, val_w = os.pipe()
    except BaseException:
        os.close(out_r)
        os.close(out_w)
        raise

    start = time.monotonic()
    try:
        pid = _forking.fork()
    except BaseException:
        for fd in (out_r, out_w, val_r, val_w):
            os.close(fd)
        raise

    if pid == 0:
        _child(fn, args, kwargs, parent, out_r, out_w, val_r, val_w)

    os.close(out_w)
    os.close(val_w)
    try:
        os.setpgid(pid, pid)
        group = True
    except OSError:
        # EACCES (the child has exec'd) or EPERM (it called setsid()): both
        # come after the child's own setpgid(0, 0), so ask what it did.
        try:
            group = os.getpgid(pid) == pid
        except OSError:
            group = False
    pidfd = _pidfd_open(pid)
    deadline = None if timeout is None else start + timeout

    out: list[bytes] = []
    val: list[bytes] = []
    timed_out = False
    try:
        os.set_blocking(out_r, False)
        os.set_blocking(val_r, False)
        poller = select.poll()
        open_fds = {out_r: out, val_r: val}
        for fd in open_fds:
            poller.register(fd, select.POLLIN)
        if pidfd != -1:
            poller.register(pidfd, select.POLLIN)

        ended = False
        while not ended:
            if deadline is None:
                wait_ms = -1 if pidfd != -1 else 50
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    timed_out = True
                    break
                wait_ms = max(1, int(left * 1000) + 1)
                if pidfd == -1:
                    wait_ms = min(wait_ms, 50)
            for fd, _ in poller.poll(wait_ms):
                if fd == pidfd:
                    ended = True
                elif fd in open_fds and _drain(fd, open_fds[fd]):
                    poller.unregister(fd)
                    del open_fds[fd]
            if pidfd == -1 and not ended:
                ended = _child_has_ended(pid)

        # Whatever the child wrote before it ended (or before its deadline)
        # is in the pipes now; a grandchild may hold them open, so no EOF wait.
        for fd, chunks in open_fds.items():
            _drain(fd, chunks)
        if timed_out:
            _kill_group(pid, group)
        elif group:
            # The child has ended: end whatever it left in its group.
            try:
                os.killpg(pid, _signal.SIGKILL)
            except OSError:
                pass
        exitcode, sig = _reap(pid)
    except BaseException:
        _kill_group(pid, group)
        _reap(pid)
        raise
    finally:
        os.close(out_r)
        os.close(val_r)
        if pidfd != -1:
            os.close(pidfd)

    result = ChildResult(
        pid=pid, exitcode=exitcode, signal=sig,
        output=b"".join(out).decode("utf-8", "replace"),
        duration=time.monotonic() - start, timed_out=timed_out,
    )
    if exitcode is None and sig is None:
        result.notes.append("the child was reaped by another waitpid() in this process")
    _read_value(b"".join(val), result)
    return result


def _read_value(data: bytes, result: ChildResult) -> None:
    if len(data) < _HEADER.size:
        if not result.timed_out and result.signal is None and result.exitcode is not None:
            result.notes.append("the child sent no result")
        return
    (size,) = _HEADER.unpack_from(data)
    payload = data[_HEADER.size:_HEADER.size + size]
    if len(payload) < size:
        result.notes.append("the child's result was cut short")
        return
    try:
        message = pickle.loads(payload)
    except Exception as e:  # unpicklable in the parent (class only in the child)
        result.notes.append(f"the child's return value could not be unpickled: {e!r}")
        result.exception = result.exception or f"UnpicklingError: {e}"
        return
    kind = message[0]
    if kind == "value":
        result.value = message[1]
    elif kind == "error":
        result.exception, result.traceback = message[1], message[2]


def forked(fn: Callable[..., Any], *args: Any, timeout: float | None = 10.0,
           **kwargs: Any) -> Any:
    """Run ``fn(*args, **kwargs)`` in a forked child, print its output here,
    and return its value.

    Raises :class:`ChildError` when the child raised (the message ends with
    the child's traceback, which is therefore not printed twice), exited
    non-zero or was killed, and :class:`ChildTimeout` when it was still
    running after ``timeout`` seconds.
    """
    result = run_in_child(fn, *args, timeout=timeout, **kwargs)
    output = result.output
    if result.traceback and output.endswith(result.traceback):
        output = output[:-len(result.traceback)]
    if output:
        sys.stdout.write(output)
        if not output.endswith("\n"):
            sys.stdout.write("\n")
        sys.stdout.flush()
    result.check()
    return result.value
