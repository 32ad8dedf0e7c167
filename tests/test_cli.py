"""The command line: ``python -m ngxlab ...`` run as a user runs it. Every
error is one line naming the problem, a non-zero exit status (1 when the
thing asked for failed, 2 for a usage error), and nothing signalled or
forked."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ngxlab.lab.run import MasterProcess

SUBCOMMANDS = ("run", "signal", "topology", "bench")
ROOT = Path(__file__).resolve().parent.parent


def _env(**extra) -> dict[str, str]:
    path = [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(path), **extra)


def ngxlab(*args, timeout: float = 30.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ngxlab", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env=_env())


def _error_lines(done: subprocess.CompletedProcess) -> list[str]:
    """stderr without argparse's usage lines."""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return [line for line in lines if not line.startswith(("usage:", " "))]


def _processes_naming(text: str) -> list[int]:
    """Processes whose command line contains ``text`` (what a failed
    ``ngxlab run --prefix TEXT`` could have left behind)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    found.append(int(name))
        except OSError:
            continue
    return found


def _run_fails(prefix, *args, status: int, message: str, limit: float = 10.0) -> str:
    """``ngxlab run`` with a bad input: exits quickly with ``status``, one
    line mentioning ``message``, and leaves no process behind."""
    t0 = time.monotonic()
    done = ngxlab("run", "--prefix", prefix, "--quiet", *args)
    took = time.monotonic() - t0
    assert done.returncode == status, (done.returncode, done.stderr)
    assert took < limit, took
    errors = _error_lines(done)
    assert len(errors) == 1 and message in errors[0], done.stderr
    assert _processes_naming(str(prefix)) == []
    return errors[0]


# -- help and exit statuses ----------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", ("",) + SUBCOMMANDS)
def test_help(command):
    done = ngxlab(*([command] if command else []), "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: ngxlab {command}".rstrip())
    assert done.stderr == ""


@pytest.mark.timeout(30)
def test_no_command_prints_help_and_version_works():
    done = ngxlab()
    assert done.returncode == 0 and "usage: ngxlab" in done.stdout
    for name in SUBCOMMANDS:
        assert name in done.stdout
    version = ngxlab("--version")
    assert version.returncode == 0 and version.stdout.startswith("ngxlab ")


@pytest.mark.timeout(30)
def test_usage_errors_exit_2():
    for args in (["frobnicate"], ["run"], ["signal", "quit"], ["topology"],
                 ["topology", "--pid", "1", "--prefix", "/tmp"],
                 ["run", "--prefix", "/tmp/x", "--listen", "0.0.0.0:80"],
                 ["run", "--prefix", "/tmp/x", "--listen", "127.0.0.1:99999"],
                 ["topology", "--pid", "-3"]):
        done = ngxlab(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.startswith("usage: ngxlab"), (args, done.stderr)
        assert len(_error_lines(done)) == 1, (args, done.stderr)


# -- signal: bad pid files -------------------------------------------------------


@pytest.mark.timeout(30)
def test_signal_without_pid_file(tmp_path):
    done = ngxlab("signal", "quit", "--prefix", tmp_path)
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert f'open() "{tmp_path}/logs/ngxlab.pid" failed (2: No such file or directory)' in line
    assert "[error]" in line


def _write_pid(prefix, text) -> None:
    (prefix / "logs").mkdir(exist_ok=True)
    (prefix / "logs" / "ngxlab.pid").write_text(text)


def _dead_pid() -> int:
    """A pid that does not exist now (a child that exited and was reaped)."""
    done = subprocess.Popen(["true"])
    done.wait()
    pid = done.pid
    assert not os.path.exists(f"/proc/{pid}")
    return pid


@pytest.mark.timeout(30)
def test_signal_with_stale_pid(tmp_path):
    pid = _dead_pid()
    _write_pid(tmp_path, f"{pid}\n")
    done = ngxlab("signal", "quit", "--prefix", tmp_path)
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert f"PID {pid} in" in line and "is not running, not signalling it" in line
    assert "[error]" in line and "(3: No such process)" in line


@pytest.mark.timeout(30)
def test_signal_with_garbage_pid(tmp_path):
    _write_pid(tmp_path, "twelve\n")
    done = ngxlab("signal", "reload", "--prefix", tmp_path)
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert 'invalid PID number "twelve"' in line and "[error]" in line


@pytest.mark.timeout(30)
def test_signal_refuses_a_pid_that_is_not_an_ngxlab_master(tmp_path):
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        for pid in (sleeper.pid, os.getpid()):
            _write_pid(tmp_path, f"{pid}\n")
            for name in ("stop", "quit", "reopen", "reload"):
                done = ngxlab("signal", name, "--prefix", tmp_path)
                assert done.returncode == 1, (pid, name, done.stderr)
                (line,) = done.stderr.splitlines()
                assert f"PID {pid} in" in line and "not an ngxlab master" in line
        # nothing was sent: the sleeper still sleeps (not stopped, not killed)
        time.sleep(0.1)
        assert sleeper.poll() is None
        with open(f"/proc/{sleeper.pid}/stat") as f:
            assert f.read().rsplit(")", 1)[1].split()[0] == "S"
        with open(f"/proc/{sleeper.pid}/status") as f:
            pending = [line for line in f if line.startswith(("SigPnd", "ShdPnd"))]
        assert all(int(line.split()[1], 16) == 0 for line in pending), pending
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.timeout(30)
def test_signal_unknown_name(tmp_path):
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        _write_pid(tmp_path, f"{sleeper.pid}\n")
        for name in ("restart", "USR2", "kill", ""):
            done = ngxlab("signal", name, "--prefix", tmp_path)
            assert done.returncode == 2, (name, done.stderr)
            (line,) = _error_lines(done)
            assert "invalid choice" in line and "stop, quit, reopen, reload" in line.replace("'", "")
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


# -- run: bad inputs ---------------------------------------------------------------


@pytest.mark.timeout(60)
def test_run_rejects_a_bad_number_of_workers(tmp_path):
    for value in ("0", "-1", "1025", "four", "2.5"):
        line = _run_fails(tmp_path / "p", "--workers", value, status=2, message="--workers")
        assert value in line
        if value in ("0", "-1", "1025"):
            assert "must be from 1 to 1024" in line
    assert not (tmp_path / "p").exists()          # rejected before anything was made


@pytest.mark.timeout(30)
def test_run_on_an_occupied_port(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        line = _run_fails(tmp_path / "p", "--workers", "2", "--listen", f"127.0.0.1:{port}",
                          status=1, message="bind()")
    assert "[emerg]" in line and f"127.0.0.1:{port} failed (98: Address already in use)" in line
    assert not (tmp_path / "p" / "logs" / "ngxlab.pid").exists()


@pytest.mark.timeout(30)
def test_run_with_an_unwritable_prefix(tmp_path):
    plain = tmp_path / "plain-file"
    plain.write_text("not a directory\n")
    line = _run_fails(plain / "prefix", "--workers", "2", status=1, message="cannot use prefix")
    assert str(plain / "prefix") in line and "Not a directory" in line


@pytest.mark.timeout(30)
def test_run_ignores_a_bad_NGINX_variable(tmp_path):
    # ngx_add_inherited_sockets: a word that is no number is an emerg, a
    # number that is no socket a crit; both are ignored and the master
    # opens its own listening socket
    prefix = tmp_path / "p"
    proc = subprocess.Popen([sys.executable, "-m", "ngxlab", "run", "--workers", "1",
                             "--prefix", str(prefix), "--quiet", "--die-with-parent"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(NGINX="99;abc"))
    try:
        deadline = time.monotonic() + 10
        while not (prefix / "logs" / "ngxlab.slots").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.01)
        assert ngxlab("signal", "quit", "--prefix", prefix).returncode == 0
        _out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    lines = err.splitlines()
    assert len(lines) == 2, err           # the two, on stderr while starting; nothing else
    assert '[emerg]' in lines[0] and 'invalid socket number "abc" in NGINX' in lines[0]
    assert '[crit]' in lines[1] and "inherited socket #99" in lines[1]


# -- topology ----------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_topology_errors(tmp_path):
    done = ngxlab("topology", "--prefix", tmp_path)
    assert done.returncode == 1
    (line,) = _error_lines(done)
    assert "no pid in" in line and "ngxlab.pid" in line
    pid = _dead_pid()
    done = ngxlab("topology", "--pid", pid)
    assert done.returncode == 1
    (line,) = _error_lines(done)
    assert f"pid {pid}" in line and "no such process" in line


@pytest.mark.timeout(30)
def test_topology_and_signal_on_a_running_master(tmp_path):
    with MasterProcess(2) as mp:
        table = ngxlab("topology", "--prefix", mp.prefix)
        assert table.returncode == 0, table.stderr
        assert f"master {mp.master_pid}: 4 channel fds" in table.stdout
        assert "2 workers: 2 channel fds each" in table.stdout and "full mesh" in table.stdout
        by_pid = ngxlab("topology", "--pid", mp.master_pid, "--json")
        assert by_pid.returncode == 0 and f'"master_pid": {mp.master_pid}' in by_pid.stdout
        done = mp.signal("reopen")
        assert done.returncode == 0 and done.stdout == done.stderr == ""
        mp.wait_log(r"#0: reopening logs$", count=3)

        # a worker has its master's command line, but it is not a master
        worker = mp.slots[0]
        _write_pid(tmp_path, f"{worker}\n")
        off = mp.log_offset()
        done = ngxlab("signal", "stop", "--prefix", tmp_path)
        assert done.returncode == 1
        assert f"PID {worker} in" in done.stderr and "not an ngxlab master" in done.stderr
        time.sleep(0.1)
        assert mp.slots[0] == worker and not [
            line for line in mp.log_lines(off) if "SIGTERM" in line]
