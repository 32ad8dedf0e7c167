"""ngxlab.lab.fork: forking from a notebook cell or a script.

Real forks throughout. The leak guard (conftest.py) checks after every test
that no descriptor stayed open and no child is left unreaped; the tests about
grandchildren check those by pid, since a grandchild is not our child.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from _tools import fd_table, require_module
from ngxlab.lab.fork import ChildError, ChildResult, ChildTimeout, forked, run_in_child

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(60)


def _gone(pid: int) -> bool:
    """The process has ended (a zombie waiting for an init that does not reap counts)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat[stat.rindex(")") + 2:].split()[0] in ("Z", "X")


def _wait_gone(pid: int, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.02)
    return _gone(pid)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# -- output, values, failures ----------------------------------------------


def test_output_is_captured_in_order():
    def child():
        print("one")
        print("two", file=sys.stderr)
        os.write(1, b"three (written to fd 1)\n")
        print("four")

    result = run_in_child(child)
    assert isinstance(result, ChildResult)
    assert result.ok and result.exitcode == 0 and result.signal is None
    assert result.output == "one\ntwo\nthree (written to fd 1)\nfour\n"
    assert result.pid > 0 and result.pid != os.getpid()
    assert 0 < result.duration < 10


def test_return_value_comes_back():
    result = run_in_child(lambda a, b=0: {"sum": a + b, "pid": os.getpid()}, 2, b=3)
    assert result.ok
    assert result.value == {"sum": 5, "pid": result.pid}


def test_large_output_and_value_do_not_deadlock():
    # Both exceed a pipe's 64 KiB buffer: the parent must read both pipes
    # while the child writes.
    def child():
        sys.stdout.write("x" * 300_000 + "\n")
        return b"y" * 500_000

    result = run_in_child(child)
    assert result.ok
    assert len(result.output) == 300_001
    assert result.value == b"y" * 500_000


def test_exception_gives_child_error_with_traceback(capsys):
    def explode():
        print("before the error")
        raise ValueError("bad input")

    result = run_in_child(explode)
    assert not result.ok
    assert result.exitcode == 1
    assert result.exception == "ValueError: bad input"
    assert "Traceback (most recent call last)" in result.traceback
    assert "in explode" in result.traceback
    assert result.output.startswith("before the error\n")
    assert result.traceback in result.output  # printed by the child, as Python would

    with pytest.raises(ChildError) as info:
        forked(explode)
    assert not isinstance(info.value, ChildTimeout)
    assert info.value.traceback is not None and "in explode" in info.value.traceback
    assert "ValueError: bad input" in str(info.value)
    assert "in explode" in str(info.value)
    printed = capsys.readouterr().out
    assert printed == "before the error\n"  # the traceback is in the error, not twice


def test_forked_prints_output_and_returns_value(capsys):
    assert forked(lambda: print("from the child") or 7) == 7
    assert capsys.readouterr().out == "from the child\n"


def test_exit_status_and_signal():
    result = run_in_child(sys.exit, 3)
    assert (result.exitcode, result.signal, result.ok) == (3, None, False)
    assert "status 3" in result.describe()

    assert run_in_child(sys.exit, 0).ok

    result = run_in_child(lambda: os.kill(os.getpid(), signal.SIGTERM) or time.sleep(5))
    assert result.exitcode is None and result.signal == signal.SIGTERM
    with pytest.raises(ChildError, match="SIGTERM"):
        result.check()


def test_unpicklable_value_is_a_failure():
    result = run_in_child(lambda: (lambda: None))
    assert not result.ok
    assert result.exitcode == 1
    assert "PicklingError" in result.exception or "AttributeError" in result.exception


def test_child_runs_in_its_own_process_group_with_stdin_at_devnull():
    def child():
        print(os.getpgrp() == os.getpid())
        try:
            input()
        except EOFError:
            print("EOF")

    result = run_in_child(child)
    assert result.output == "True\nEOF\n"


# -- deadlines and leftovers -------------------------------------------------


def test_timeout_kills_and_reaps():
    start = time.monotonic()
    result = run_in_child(lambda: print("started", flush=True) or time.sleep(60), timeout=0.5)
    took = time.monotonic() - start
    assert result.timed_out and not result.ok
    assert result.signal == signal.SIGKILL
    assert result.output == "started\n"
    assert 0.4 < took < 5
    with pytest.raises(ChildTimeout):
        forked(time.sleep, 60, timeout=0.2)
    # The leak guard checks that the children were reaped.


def test_grandchild_holding_the_pipe_does_not_hang(tmp_path):
    # The grandchild leaves the child's process group (setsid), so it is not
    # killed with the group, and keeps stdout (the pipe) open for 60 s. The
    # parent must return when the child ends, not at EOF.
    pidfile = tmp_path / "grandchild"

    def child():
        pid = os.fork()
        if pid == 0:
            os.setsid()
            pidfile.write_text(str(os.getpid()))
            time.sleep(60)
            os._exit(0)
        while not pidfile.exists() or not pidfile.read_text():
            time.sleep(0.01)
        print("child done")

    start = time.monotonic()
    result = run_in_child(child, timeout=30)
    grandchild = int(pidfile.read_text())
    try:
        assert time.monotonic() - start < 5
        assert result.ok and result.output == "child done\n"
        assert not _gone(grandchild)  # outside the group: left alone
    finally:
        _kill(grandchild)
    assert _wait_gone(grandchild)


def test_leftovers_in_the_child_group_are_killed(tmp_path):
    pidfile = tmp_path / "grandchild"

    def child():
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        pidfile.write_text(str(pid))
        print("forked a worker and did not wait for it")

    result = run_in_child(child)
    grandchild = int(pidfile.read_text())
    try:
        assert result.ok
        assert _wait_gone(grandchild)
    finally:
        _kill(grandchild)


def test_keyboard_interrupt_while_waiting_kills_and_reaps_the_child(sigint_raises):
    # As Jupyter's "interrupt kernel" does to the kernel: SIGINT to the parent
    # while it waits. (Jupyter signals the whole group; the child has its own.)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    start = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_in_child(time.sleep, 60, timeout=30)
    finally:
        timer.cancel()
    assert time.monotonic() - start < 5
    # The leak guard checks that the child was reaped.


def test_child_dies_with_its_parent(tmp_path):
    # A kernel restart kills the kernel; its forked child must not outlive it.
    pidfile = tmp_path / "child"
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from ngxlab.lab.fork import run_in_child

        def child():
            Path({str(pidfile)!r}).write_text(str(__import__("os").getpid()))
            time.sleep(60)

        run_in_child(child, timeout=60)
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=env,
                              stdin=subprocess.DEVNULL)
    child = None
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (pidfile.exists() and pidfile.read_text()):
            assert parent.poll() is None, "the parent process ended early"
            time.sleep(0.02)
        child = int(pidfile.read_text())
        assert not _gone(child)
        parent.kill()
        parent.wait(10)
        assert _wait_gone(child), "the child outlived its killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        if child is not None:
            _kill(child)


def test_without_pidfd(monkeypatch, tmp_path):
    # Kernels before 5.3 have no pidfd: the parent then polls with
    # waitid(WNOWAIT). Same behaviour: output, value, deadline, grandchild.
    import ngxlab.lab.fork as fork_module

    monkeypatch.setattr(fork_module, "_pidfd_open", lambda pid: -1)
    result = run_in_child(lambda: print("hi") or 5)
    assert result.ok and result.output == "hi\n" and result.value == 5
    result = run_in_child(time.sleep, 60, timeout=0.3)
    assert result.timed_out and result.signal == signal.SIGKILL
    test_grandchild_holding_the_pipe_does_not_hang(tmp_path)


def test_no_descriptor_left_open():
    before = fd_table()
    run_in_child(print, "plain")
    run_in_child(lambda: 1 / 0)
    run_in_child(time.sleep, 10, timeout=0.1)
    run_in_child(lambda: os.pipe())  # the child's own descriptors die with it
    assert fd_table() == before


def test_fifty_forks_in_a_row():
    # each child's own value comes back (how fast is for `ngxlab bench`)
    for i in range(50):
        assert run_in_child(lambda i=i: i * i).value == i * i


# -- in a real notebook --------------------------------------------------------

NOTEBOOK = '''\
---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

```{code-cell} ipython3
import os, threading
from ngxlab.lab.fork import forked, ChildError

kernel = os.getpid()
print("kernel threads:", threading.active_count())
```

```{code-cell} ipython3
def hello():
    print("hello from the child", os.getpid() != kernel)
    return 42

value = forked(hello)
print("value", value)
```

```{code-cell} ipython3
def explode():
    print("before the error")
    raise ValueError("bad input")

forked(explode)
```
'''

RUNNER = '''\
import json, sys
import jupytext, nbclient

nb = jupytext.reads(sys.stdin.read(), fmt="md:myst")
client = nbclient.NotebookClient(nb, timeout=60, kernel_name="python3",
                                 allow_errors=True,
                                 resources={"metadata": {"path": sys.argv[1]}})
client.execute()
print(json.dumps([cell.get("outputs", []) for cell in nb.cells
                  if cell.cell_type == "code"]))
'''


def test_forked_in_a_notebook():
    for module in ("jupytext", "nbclient", "ipykernel"):
        require_module(module)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))
    done = subprocess.run([sys.executable, "-c", RUNNER, str(REPO)], input=NOTEBOOK,
                          capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    cells = json.loads(done.stdout.strip().splitlines()[-1])
    setup, hello, explode = cells

    def streams(outputs, name=None):
        return "".join(o["text"] for o in outputs
                       if o["output_type"] == "stream" and (name is None or o["name"] == name))

    for outputs in (setup, hello):
        assert not [o for o in outputs if o["output_type"] == "error"], outputs
    all_text = streams(setup) + streams(hello) + streams(explode)
    assert "multi-threaded" not in all_text and "may lead to deadlocks" not in all_text
    assert streams(hello, "stderr") == ""
    assert "hello from the child True\n" in streams(hello, "stdout")
    assert "value 42\n" in streams(hello, "stdout")

    errors = [o for o in explode if o["output_type"] == "error"]
    assert len(errors) == 1 and errors[0]["ename"] == "ChildError"
    assert "ValueError: bad input" in errors[0]["evalue"]
    assert "in explode" in errors[0]["evalue"]  # the child's traceback
    assert "before the error" in streams(explode, "stdout")
