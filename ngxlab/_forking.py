"""The two halves of every fork in ngxlab (not a mirror of nginx).

``fork()`` flushes Python's buffered streams first, so a child does not print
its parent's pending output a second time, and silences, around this one call
only, the DeprecationWarning Python 3.12+ gives when a multi-threaded process
(a Jupyter kernel has about a dozen threads) forks. ``run_child()`` runs the
child's work and always ends the process with ``os._exit()``: a child never
returns into its caller's stack (in a notebook that would be a second,
stray kernel), and an exception is printed before the child exits.
"""

from __future__ import annotations

import os
import sys

# Neither typing (for NoReturn, an annotation never evaluated here) nor
# traceback (for a child that fails) nor warnings (for 3.12's warning) is
# imported up front: they would be on every master's way to its first fork.

__all__ = ["fork", "run_child", "exit", "exit_code"]

# Python 3.12 and later warn when a process with several threads forks
_WARNS_ON_FORK = sys.version_info >= (3, 12)


def _flush():
    streams = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    for i, stream in enumerate(streams):
        # each stream once: sys.stdout is sys.__stdout__ unless replaced
        if stream is None or stream in streams[:i]:
            continue
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def fork() -> int:
    """``os.fork()`` after flushing, with 3.12's multi-threaded-fork warning
    silenced for this call only. Raises ``OSError`` like ``os.fork``."""
    _flush()
    if not _WARNS_ON_FORK:
        return os.fork()
    import warnings
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r".*use of fork\(\) may lead to deadlocks",
            category=DeprecationWarning)
        return os.fork()


def run_child(fn, *args) -> "NoReturn":
    """Run ``fn(*args)`` in a freshly forked child and ``os._exit`` with its
    status: 0 when it returns, the code of ``SystemExit``, 1 after printing
    the traceback of any other exception (KeyboardInterrupt included)."""
    code = 1
    try:
        fn(*args)
        code = 0
    except SystemExit as e:
        code = exit_code(e)
    except BaseException:
        try:
            import traceback
            traceback.print_exc()
        except BaseException:
            pass
    finally:
        _flush()
        os._exit(code)


def exit_code(e: SystemExit) -> int:
    """The status ``sys.exit(...)`` would give: 0 for None, the number, or 1
    after printing any other value to stderr."""
    if e.code is None:
        return 0
    if isinstance(e.code, int):
        return e.code
    print(e.code, file=sys.stderr)
    return 1


def exit(code: int) -> "NoReturn":
    """End this process now with ``code``, after flushing (a forked child
    must not run its parent's ``atexit`` handlers or finalizers)."""
    _flush()
    os._exit(code)
