"""Shared test machinery.

- Strict mode: the fixtures ``nginx_bin``, ``strace_bin``, ``cc`` and
  ``chromium_bin`` skip a test when their tool is missing, and fail it under
  ``NGXLAB_STRICT=1`` (see ``_tools.require``).
- The leak guard: every test must leave no new descriptor open and no child
  process behind. Opt out with ``@pytest.mark.no_leak_check`` and say why.
- SIGIO is ignored in the pytest process (see ``pytest_configure``).
- No alert the test did not provoke: the fixture ``no_unexpected_alerts``
  reads the error log of every master a test starts (``MasterProcess``,
  ``Master``) and fails the test on an ``[alert]``, ``[crit]`` or ``[emerg]``
  line that no ``@pytest.mark.expected_alerts(regex, ...)`` of the test
  matches (``@pytest.mark.alerts_unchecked(reason)`` opts a test out).
"""

from __future__ import annotations

import gc
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from _tools import child_pids, describe_pid, fd_table, require_tool

pytest_plugins = ["pytester"]

# How long the leak guard waits for descriptors to close (threads finishing,
# garbage collection) and for children to be reaped by whoever forked them.
FD_SETTLE_S = 0.5
CHILD_GRACE_S = 2.0


def pytest_configure(config: pytest.Config) -> None:
    # Channels made the way nginx makes them (ngx_spawn_process) get FIOASYNC
    # and F_SETOWN set to the spawning process, which here is pytest itself:
    # the kernel then sends SIGIO to pytest whenever a channel becomes
    # readable, and SIGIO's default action terminates the process. nginx's
    # master installs a handler for SIGIO; the test process ignores it.
    # (Children forked or exec'd by the tests inherit the ignored disposition.)
    signal.signal(signal.SIGIO, signal.SIG_IGN)
    config.addinivalue_line(
        "markers", "no_leak_check: opt out of the descriptor and child-process leak guard"
    )
    config.addinivalue_line(
        "markers", "expected_alerts(*regex): the [alert], [crit] and [emerg] lines the test "
        "provokes (see the fixture no_unexpected_alerts)"
    )
    config.addinivalue_line(
        "markers", "alerts_unchecked(reason): no_unexpected_alerts leaves the test's masters "
        "alone (say why)"
    )


# -- tools -------------------------------------------------------------------


@pytest.fixture(scope="session")
def nginx_bin() -> str:
    """The nginx binary (PATH, else /usr/sbin/nginx, which is not on a user's PATH)."""
    return require_tool("nginx", "/usr/sbin/nginx", package="nginx", probe=["-v"])


@pytest.fixture(scope="session")
def strace_bin() -> str:
    """strace, checked to be allowed to trace here (ptrace may be forbidden in a container)."""
    return require_tool("strace", package="strace", probe=["-f", "-o", os.devnull, "true"])


def _compile_check(path: str) -> str | None:
    source = "#include <sys/socket.h>\nint main(void) { return socketpair(AF_UNIX, SOCK_STREAM, 0, (int[2]){0}) ? 1 : 0; }\n"
    with tempfile.TemporaryDirectory(prefix="ngxlab-cc-") as tmp:
        src = os.path.join(tmp, "t.c")
        with open(src, "w") as f:
            f.write(source)
        done = subprocess.run(
            [path, src, "-o", os.path.join(tmp, "t")], capture_output=True, text=True, timeout=60
        )
    return None if done.returncode == 0 else f"cannot compile a test program: {done.stderr.strip()[-300:]}"


@pytest.fixture(scope="session")
def cc() -> str:
    """A C compiler (gcc, else cc) that can compile against the C library's headers."""
    name = "gcc" if shutil.which("gcc") else "cc"
    return require_tool(name, package="gcc", check=_compile_check)


@pytest.fixture(scope="session")
def chromium_bin() -> str:
    """Debian's Chromium (what the browser test drives through Playwright)."""
    return require_tool("chromium", "/usr/bin/chromium", package="chromium", probe=["--version"])


# -- the leak guard ----------------------------------------------------------

_CALL_REPORT = pytest.StashKey[pytest.TestReport]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report = yield
    if report.when == "call":
        item.stash[_CALL_REPORT] = report
    return report


def _changed_fds(before: dict[int, str]) -> dict[int, str]:
    """Descriptors open now that were not open (to the same thing) before."""
    return {fd: target for fd, target in fd_table().items() if before.get(fd) != target}


def _new_fds(before: dict[int, str]) -> dict[int, str]:
    """Descriptors open now that were not open (to the same thing) before, after a settle."""
    deadline = time.monotonic() + FD_SETTLE_S
    while True:
        new = _changed_fds(before)
        if not new or time.monotonic() >= deadline:
            return new
        # a socket kept alive only by a reference cycle: collected here, and
        # only here (a collection of the suite's process takes 50 to 100 ms,
        # which every test paid before it looked)
        gc.collect()
        if not _changed_fds(before):
            return {}
        time.sleep(0.02)


def _new_children(before: set[int]) -> set[int]:
    """Children that did not exist before and are still there (alive or unreaped) after the grace."""
    deadline = time.monotonic() + CHILD_GRACE_S
    while True:
        new = child_pids() - before
        if not new or time.monotonic() >= deadline:
            return new
        time.sleep(0.02)


def _unreaped_child(before: set[int]) -> int | None:
    """A new child that has exited and was never waited for, if any.

    The same question as ``os.waitpid(-1, os.WNOHANG)`` (which must raise
    ChildProcessError or return pid 0), asked with WNOWAIT so that the
    answer does not reap the child and hide the leak.
    """
    try:
        info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return None
    if info is None or info.si_pid in before:
        return None
    return info.si_pid


def _kill_and_reap(pids: set[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


@pytest.fixture(autouse=True)
def _leak_guard(request: pytest.FixtureRequest):
    """Fail a test that leaves a new descriptor open or a child unreaped."""
    if request.node.get_closest_marker("no_leak_check"):
        yield
        return
    fds_before = fd_table()
    children_before = child_pids()
    yield

    problems = []
    children = _new_children(children_before)
    zombie = _unreaped_child(children_before)
    if zombie is not None:
        children.add(zombie)
    if children:
        problems.append(
            "left child processes behind (killed and reaped now):\n"
            + "\n".join(f"    {describe_pid(pid)}" for pid in sorted(children))
        )
        _kill_and_reap(children)
    fds = _new_fds(fds_before)
    if fds:
        problems.append(
            "left descriptors open:\n"
            + "\n".join(f"    fd {fd} -> {target}" for fd, target in sorted(fds.items()))
        )

    call = request.node.stash.get(_CALL_REPORT, None)
    if problems and not (call is not None and call.failed):
        # A test that failed already has its own report; leaks after a failure
        # are usually its consequence, so they are not reported twice.
        pytest.fail("leak guard: this test " + "\nand ".join(problems), pytrace=False)


# -- no alert the test did not provoke ----------------------------------------

_ALERT = re.compile(r"\[(alert|crit|emerg)\] \d+#\d+: ")


@pytest.fixture
def no_unexpected_alerts(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                         monkeypatch: pytest.MonkeyPatch):
    """Fail the test when a master it started (``MasterProcess`` or ``Master``)
    logged an ``[alert]``, ``[crit]`` or ``[emerg]`` line that no regex of its
    ``expected_alerts`` marker matches: a failure the test did not provoke,
    such as a ``sendmsg()`` on a closed channel, must not pass unseen.

    Each master is given a log in a folder of this fixture when the test does
    not choose one (``prefix`` of ``MasterProcess``, ``log_path`` of
    ``Master``), so that the log is still there after the master stopped."""
    from ngxlab.lab.master import Master
    from ngxlab.lab.run import MasterProcess

    if request.node.get_closest_marker("alerts_unchecked"):
        yield []
        return
    logs: list[str] = []
    base = tmp_path_factory.mktemp("master-logs")
    original = {cls: cls.__init__ for cls in (MasterProcess, Master)}

    def mp_init(self, *args, prefix=None, **kwargs):
        if prefix is None:
            prefix = base / f"prefix-{len(logs)}"
            prefix.mkdir()
        original[MasterProcess](self, *args, prefix=prefix, **kwargs)
        logs.append(str(self.log_path))

    def master_init(self, *args, log_path=None, **kwargs):
        if log_path is None:
            log_path = base / f"error-{len(logs)}.log"
        original[Master](self, *args, log_path=log_path, **kwargs)
        logs.append(str(self.log_path))

    monkeypatch.setattr(MasterProcess, "__init__", mp_init)
    monkeypatch.setattr(Master, "__init__", master_init)
    yield logs

    expected = [re.compile(p) for m in request.node.iter_markers("expected_alerts") for p in m.args]
    unexpected = []
    for path in logs:
        try:
            with open(path, errors="replace") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            continue
        unexpected += [line for line in lines
                       if _ALERT.search(line) and not any(rx.search(line) for rx in expected)]
    call = request.node.stash.get(_CALL_REPORT, None)
    if unexpected and not (call is not None and call.failed):
        pytest.fail("the masters logged what the test did not provoke:\n"
                    + "\n".join(f"    {line}" for line in unexpected[:20]), pytrace=False)


# -- SIGINT raises, whatever this process inherited ---------------------------


@pytest.fixture
def sigint_raises():
    """SIGINT raises KeyboardInterrupt during the test, as in a notebook's
    kernel, even where the tests were started with SIGINT ignored (a
    background job of a shell without job control: Python then leaves it
    ignored, and a test that interrupts itself would wait for ever)."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
