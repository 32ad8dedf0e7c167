"""The command line: ``python -m ngxlab ...`` run as a user runs it. Every
error is one line naming the problem, a non-zero exit status (1 when the
thing asked for failed, 2 for a usage error), and nothing signalled or
forked."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _tools import wait_for as _wait
from ngxlab.lab.proc import state as _state
from ngxlab.lab.run import MasterProcess, MasterProcessError

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


# -- `ngxlab run` read without argparse --------------------------------------------


_PLAIN_RUN_LINES = [
    ["run", "--prefix", "p"],
    ["run", "--prefix", "p", "--workers", "32", "--listen", "127.0.0.1:8080",
     "--log-level", "debug", "--quiet", "--die-with-parent"],
    ["run", "--daemon", "--nginx-orphans", "--nginx-quirks", "--prefix", "/x y"],
    ["run", "--workers", "3", "--prefix", "a", "--workers", "5", "--prefix", "b"],
]

# what only argparse reads (abbreviations, "=", help, "--") or refuses
_OTHER_LINES = [
    ["run", "--work", "3", "--prefix", "p"],
    ["run", "--prefix=p"],
    ["run", "--prefix", "p", "-h"],
    ["run", "--prefix", "p", "--help"],
    ["run", "--prefix", "-p"],
    ["run", "--prefix", "p", "--workers", "-4"],
    ["run", "--prefix", "p", "--workers", "0"],
    ["run", "--prefix", "p", "--workers", "+4"],
    ["run", "--prefix", "p", "--workers", "\u0664"],
    ["run", "--prefix", "p", "--listen", "0.0.0.0:80"],
    ["run", "--prefix", "p", "--log-level", "loud"],
    ["run", "--prefix", ""],
    ["run", "--prefix"],
    ["run", "--workers", "4"],
    ["run", "--prefix", "p", "extra"],
    ["run", "--prefix", "p", "--", "--quiet"],
    ["run", "--prefix", "p", "--quiet=1"],
    ["signal", "quit", "--prefix", "p"],
    ["--version"],
    [],
]


@pytest.mark.parametrize("argv", _PLAIN_RUN_LINES + _OTHER_LINES,
                         ids=lambda a: " ".join(a) or "(none)")
def test_a_plain_run_line_reads_as_argparse_reads_it(argv, capsys):
    """``ngxlab run`` reads a plain command line without argparse
    (``_plain_run``), to the values argparse would give; every other
    command line is left to argparse."""
    from ngxlab import __main__ as cli
    plain = cli._plain_run(argv)
    if argv not in _PLAIN_RUN_LINES:
        assert plain is None
        return
    assert plain is not None
    assert vars(plain) == vars(cli._parser().parse_args(argv))
    assert capsys.readouterr() == ("", "")


def test_run_imports_no_argparse_json_ctypes_or_re():
    """A plain ``ngxlab run`` gets to its first fork without argparse (nor
    shutil, which argparse's help formatter imports), json (the slots file
    imports it when it is first written), ctypes (``--die-with-parent``
    imports it in the master's loop) or re (read_conf compiles its pattern
    on a reload). Run without ``site`` (``-S``), as nothing else imports
    them: an editable install's import hook imports re."""
    code = ("import sys, ngxlab.__main__ as cli\n"
            "args = cli._plain_run(['run', '--prefix', 'p', '--workers', '2', '--quiet'])\n"
            "import ngxlab.nginx\n"
            "print(args.workers, *(m in sys.modules\n"
            "                      for m in ('argparse', 'shutil', 'json', 'ctypes', 're')))\n")
    done = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                          env=_env(), timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2"] + ["False"] * 5


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


@pytest.mark.timeout(90)
def test_run_rejects_a_bad_number_of_workers(tmp_path):
    # 513 and 1024 fit the 1024-slot table once, not twice: a reload, which
    # runs the old and the new generation side by side, could not hold them.
    # Digits of other scripts (Arabic-Indic three, a fullwidth four) are not
    # numbers here, as they are not to nginx's ngx_atoi.
    for value in ("0", "-1", "513", "1024", "1025", "four", "2.5", "\u0663", "\uff14",
                  "+4", "4_0"):
        line = _run_fails(tmp_path / "p", "--workers", value, status=2, message="--workers")
        assert value in line
        if value in ("0", "-1", "513", "1024", "1025"):
            assert "must be from 1 to 512" in line and "two generations" in line
        else:
            assert "not a number" in line
    assert not (tmp_path / "p").exists()          # rejected before anything was made


@pytest.mark.timeout(60)
def test_run_rejects_a_port_in_other_digits_and_an_empty_prefix(tmp_path):
    for port in ("\u0668\u0660\u0668\u0660", "\u0968\u0966", "+80", " 80"):
        line = _run_fails(tmp_path / "p", "--listen", f"127.0.0.1:{port}", status=2,
                          message="--listen")
        assert "expected 127.0.0.1:PORT" in line
    assert not (tmp_path / "p").exists()
    # --prefix '' would silently mean the current directory
    for args in (["run", "--quiet"], ["signal", "quit"], ["topology"]):
        done = subprocess.run([sys.executable, "-m", "ngxlab", *args, "--prefix", ""],
                              capture_output=True, text=True, timeout=30, cwd=tmp_path,
                              stdin=subprocess.DEVNULL, env=_env())
        assert done.returncode == 2, (args, done.stderr)
        (line,) = _error_lines(done)
        assert "--prefix" in line and "empty prefix" in line, line
    assert list(tmp_path.iterdir()) == []         # nothing made in the current directory


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


# -- one prefix, one master: the pid file ----------------------------------------------


def _log(prefix) -> str:
    try:
        return (Path(prefix) / "logs" / "error.log").read_text()
    except FileNotFoundError:
        return ""


class _Run:
    """``ngxlab run`` started as this test's child (``shell`` runs it under
    ``sh -c`` with a prefix such as ``ulimit -n 16;``, so that a limit is
    set in the child only), stopped and reaped by pid whatever happens."""

    def __init__(self, prefix, *args, shell: str = ""):
        self.prefix = Path(prefix)
        argv = [sys.executable, "-m", "ngxlab", "run", "--prefix", str(prefix), "--quiet",
                "--die-with-parent", *args]
        if shell:
            argv = ["sh", "-c", shell + ' exec "$@"', "sh", *argv]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=_env())

    @property
    def pid_file(self) -> Path:
        return self.prefix / "logs" / "ngxlab.pid"

    def wait_started(self, timeout: float = 15.0) -> None:
        def up():
            assert self.proc.poll() is None, self.proc.communicate()
            return f"start worker process" in _log(self.prefix) and self.pid_file.exists()
        _wait(up, timeout, "the master started")

    def stop(self, timeout: float = 30.0) -> tuple[int, str]:
        """``ngxlab signal stop``; the exit status and stderr of the master."""
        if self.proc.poll() is None:
            done = ngxlab("signal", "stop", "--prefix", self.prefix)
            assert done.returncode == 0, done.stderr
        _out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, err

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()            # sh or the master itself (exec)
        self.proc.communicate()
        for pid in _processes_naming(str(self.prefix)):
            try:
                os.kill(pid, 9)         # a worker whose master was killed
            except ProcessLookupError:
                pass
        _wait(lambda: not _processes_naming(str(self.prefix)), 10, "its workers gone")


@pytest.mark.timeout(60)
def test_a_second_run_on_a_busy_prefix_refuses(tmp_path):
    # nginx's second master stops at bind() (the port is busy); an ngxlab
    # master on port 0 has no such guard, so the pid file is the guard
    with MasterProcess(1) as mp:
        first = mp.master_pid
        pid_file = mp.prefix / "logs" / "ngxlab.pid"
        for extra in ([], ["--daemon"], ["--workers", "3"]):
            t0 = time.monotonic()
            done = ngxlab("run", "--prefix", mp.prefix, "--quiet", "--die-with-parent", *extra)
            assert time.monotonic() - t0 < 10
            assert done.returncode == 1, (extra, done.stderr)
            (line,) = _error_lines(done)
            assert "[emerg]" in line and f'"{pid_file}" names master process {first}' in line
            assert "still running on this prefix" in line
            # the first master's pid file is untouched, and it is still the one signalled
            assert pid_file.read_text() == f"{first}\n"
        off = mp.log_offset()
        assert mp.signal("reload").returncode == 0
        mp.wait_log(r"#0: reconfiguring$", since=off)
        mp.wait_mesh(1)
        assert mp.master_pid == first
    assert not pid_file.exists()


@pytest.mark.timeout(60)
def test_a_runner_on_a_busy_prefix_refuses_and_leaves_the_pid_file(tmp_path):
    # lab.MasterProcess used to delete the pid file before it started: a
    # second runner on a busy prefix then took the prefix over
    with MasterProcess(1) as mp:
        first = mp.master_pid
        with pytest.raises(MasterProcessError, match=f"names master process {first}"):
            MasterProcess(1, prefix=mp.prefix).start()
        assert mp.pid_path.read_text() == f"{first}\n"
        off = mp.log_offset()
        assert mp.signal("reopen").returncode == 0
        mp.wait_log(r"#0: reopening logs$", since=off)


@pytest.mark.timeout(60)
def test_run_takes_over_a_stale_pid_file(tmp_path):
    # a pid file left by a master that was killed: a pid that is gone, or
    # one recycled by a process that is not an ngxlab master
    for text in (f"{_dead_pid()}\n", f"{os.getpid()}\n", "garbage\n"):
        prefix = tmp_path / f"p{len(list(tmp_path.iterdir()))}"
        _write_pid_at(prefix, text)
        with _Run(prefix, "--workers", "1") as run:
            run.wait_started()
            assert run.pid_file.read_text() == f"{run.proc.pid}\n"
            status, err = run.stop()
        assert status == 0, err
        assert not run.pid_file.exists()


def _write_pid_at(prefix: Path, text: str) -> None:
    (prefix / "logs").mkdir(parents=True)
    (prefix / "logs" / "ngxlab.pid").write_text(text)


@pytest.mark.timeout(60)
def test_signal_refuses_the_master_of_another_prefix(tmp_path):
    with MasterProcess(1) as mp:
        other = tmp_path / "a"
        _write_pid_at(other, f"{mp.master_pid}\n")
        off = mp.log_offset()
        for name in ("stop", "quit", "reopen", "reload"):
            done = ngxlab("signal", name, "--prefix", other)
            assert done.returncode == 1, (name, done.stderr)
            (line,) = done.stderr.splitlines()
            assert "[error]" in line and f"PID {mp.master_pid} in" in line
            assert f'is the master of "{mp.prefix}", not of "{other}"' in line
        # nothing reached the master; through its own prefix it answers
        time.sleep(0.2)
        assert not [line for line in mp.log_lines(off) if "signal" in line and "received" in line]
        done = ngxlab("signal", "reopen", "--prefix", mp.prefix)
        assert done.returncode == 0, done.stderr
        mp.wait_log(r"#0: reopening logs$", since=off)
        # the same prefix under another spelling (a symbolic link) is the same prefix
        link = tmp_path / "link"
        link.symlink_to(mp.prefix)
        assert ngxlab("signal", "reopen", "--prefix", link).returncode == 0
        mp.wait_log(r"#0: reopening logs$", count=2, since=off)


@pytest.mark.timeout(60)
def test_signal_refuses_a_zombie_master(tmp_path):
    # a master that has exited but that its parent (this test) has not
    # reaped: kill() succeeds on it and does nothing, so nginx -s exits 0
    with _Run(tmp_path / "p", "--workers", "1") as run:
        run.wait_started()
        pid = run.proc.pid
        os.kill(pid, 15)
        _wait(lambda: _state(pid) == "Z", 15, "the master a zombie")
        _write_pid(tmp_path / "p", f"{pid}\n")          # its own file is gone: as it was
        done = ngxlab("signal", "quit", "--prefix", tmp_path / "p")
        assert done.returncode == 1, done.stderr
        (line,) = done.stderr.splitlines()
        assert "[error]" in line and f"PID {pid} in" in line and "zombie" in line
        done = ngxlab("topology", "--prefix", tmp_path / "p")
        assert done.returncode == 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ("fifo", "directory"))
def test_a_pid_file_that_is_not_a_regular_file(tmp_path, kind):
    prefix = tmp_path / "p"
    (prefix / "logs").mkdir(parents=True)
    pid_file = prefix / "logs" / "ngxlab.pid"
    if kind == "fifo":
        os.mkfifo(pid_file)         # open() for reading would wait for a writer
    else:
        pid_file.mkdir()
    for args in (["signal", "quit"], ["signal", "reopen"]):
        done = ngxlab(*args, "--prefix", prefix, timeout=10)
        assert done.returncode == 1, (args, done.stderr)
        (line,) = done.stderr.splitlines()
        assert "[error]" in line and f'"{pid_file}" is not a regular file' in line
    done = ngxlab("topology", "--prefix", prefix, timeout=10)
    assert done.returncode == 1 and "is not a regular file" in done.stderr
    line = _run_fails(prefix, "--workers", "1", status=1, message="is not a regular file")
    assert "[emerg]" in line
    assert pid_file.is_dir() if kind == "directory" else pid_file.is_fifo()


@pytest.mark.timeout(60)
def test_run_with_a_directory_for_the_log_or_the_configuration(tmp_path):
    a = tmp_path / "a"
    (a / "logs" / "error.log").mkdir(parents=True)
    line = _run_fails(a, "--workers", "1", status=1, message="could not open error log file")
    assert f'open() "{a}/logs/error.log" failed (21: Is a directory)' in line
    b = tmp_path / "b"
    (b / "conf" / "ngxlab.conf").mkdir(parents=True)
    line = _run_fails(b, "--workers", "1", status=1, message="ngxlab.conf")
    assert "[emerg]" in line and f'open() "{b}/conf/ngxlab.conf" failed (21: Is a directory)' in line
    for prefix in (a, b):
        assert not (prefix / "logs" / "ngxlab.pid").exists()


@pytest.mark.timeout(60)
def test_reload_with_a_bad_configuration_keeps_the_master(tmp_path):
    with MasterProcess(1) as mp:
        conf = mp.prefix / "conf" / "ngxlab.conf"
        text = conf.read_text()
        for bad in ("worker_processes 513;", "worker_processes \u0664;", None):
            off = mp.log_offset()
            if bad is None:
                conf.unlink()
                conf.mkdir()            # the file's name taken by a directory
            else:
                conf.write_text(text.replace("worker_processes 1;", bad))
            assert mp.signal("reload").returncode == 0
            line = mp.wait_log(r"\[emerg\]", since=off)
            assert mp.running and mp.generation == 1
            emerg = [ln for ln in mp.log_lines(off) if "[emerg]" in ln]
            assert len(emerg) == 1, emerg
            if bad is None:
                assert f'open() "{conf}" failed (21: Is a directory)' in emerg[0]
            else:
                assert "invalid value" in emerg[0] and "worker_processes" in emerg[0]
            assert "Traceback" not in "".join(mp.log_lines(off)), line


# -- the master survives what it cannot write ---------------------------------------------


@pytest.mark.timeout(60)
def test_a_failed_write_of_the_slots_file_is_logged_once(tmp_path):
    prefix = tmp_path / "p"
    (prefix / "logs" / "ngxlab.slots.tmp").mkdir(parents=True)
    with _Run(prefix, "--workers", "2") as run:
        run.wait_started()
        pid = run.proc.pid
        alert = f'[alert] {pid}#0: open() "{prefix}/logs/ngxlab.slots.tmp" failed (21: Is a directory)'
        _wait(lambda: alert in _log(prefix), 10, "the alert")
        # more rounds of the master's loop, each of which tries again
        for _ in range(3):
            assert ngxlab("signal", "reopen", "--prefix", prefix).returncode == 0
        _wait(lambda: _log(prefix).count("reopening logs") >= 9, 10, "three reopens")
        assert run.proc.poll() is None
        assert _log(prefix).count(alert) == 1
        assert not (prefix / "logs" / "ngxlab.slots").exists()
        # once it can be written, it is, and the log says so
        (prefix / "logs" / "ngxlab.slots.tmp").rmdir()
        assert ngxlab("signal", "reopen", "--prefix", prefix).returncode == 0
        _wait(lambda: (prefix / "logs" / "ngxlab.slots").exists(), 10, "the slots file")
        assert "ngxlab.slots written again" in _log(prefix)
        status, err = run.stop()
    assert status == 0 and "Traceback" not in err, err
    assert not run.pid_file.exists()


@pytest.mark.timeout(150)
def test_sixteen_workers_with_sixteen_descriptors(tmp_path):
    # ulimit -n 16 and 15: most socketpair() calls fail, and a worker forked
    # with the table nearly full fails its own init; the master lives on, and
    # a stop leaves no pid file. (Whether the slots file's write meets EMFILE
    # here depends on when those workers are reaped: the next test makes it
    # certain.)
    for limit in (16, 15):
        prefix = tmp_path / f"p{limit}"
        with _Run(prefix, "--workers", "16", shell=f"ulimit -n {limit} &&") as run:
            pid = run.proc.pid
            _wait(lambda: run.pid_file.exists() and "socketpair() failed" in _log(prefix), 15,
                  "the failed spawns")
            time.sleep(1.0)
            assert run.proc.poll() is None, run.proc.communicate()
            with open(f"/proc/{pid}/limits") as f:
                assert [ln for ln in f if ln.startswith("Max open files")][0].split()[3] == str(limit)
            status, err = run.stop(timeout=60)
        log = _log(prefix)
        assert status == 0, (limit, status, err[-2000:])
        assert f" {pid}#0: master process failed" not in log and "write_slots" not in err
        assert not run.pid_file.exists()


@pytest.mark.timeout(90)
def test_the_slots_file_write_meets_emfile(tmp_path):
    # The master's descriptor limit lowered, while it runs, to two below
    # what it holds (prlimit on its pid): a killed worker's pair is closed at
    # its reap, which leaves the master at its limit, so the respawn fails in
    # socketpair() and the slots file's write in open(), both with EMFILE.
    # (A respawn that succeeded would fork a worker under the same limit,
    # whose init could fail and free two more numbers before the write.)
    # The master logs both and lives on; with its limit back, the next
    # change of its table is written.
    prefix = tmp_path / "p"
    with _Run(prefix, "--workers", "2") as run:
        run.wait_started()
        pid = run.proc.pid
        slots = prefix / "logs" / "ngxlab.slots"
        _wait(lambda: slots.exists() and len(json.loads(slots.read_text())["slots"]) == 2, 10,
              "the slots file")
        victim = json.loads(slots.read_text())["slots"][1]["pid"]
        held = []                       # what it holds when settled, not a passing open()
        for _ in range(10):
            held.append(len(os.listdir(f"/proc/{pid}/fd")))
            time.sleep(0.02)
        limits = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (min(held) - 2, limits[1]))
        os.kill(victim, signal.SIGKILL)
        failed = f'{pid}#0: open() "{prefix}/logs/ngxlab.slots.tmp" failed (24: '
        _wait(lambda: failed in _log(prefix), 10, f"the failed write (limit {min(held)}, held {held}):\n{_log(prefix)}")
        assert run.proc.poll() is None
        assert f"{pid}#0: socketpair() failed" in _log(prefix)
        resource.prlimit(pid, resource.RLIMIT_NOFILE, limits)
        other = json.loads(slots.read_text())["slots"][0]["pid"]
        os.kill(other, signal.SIGKILL)              # a change the master writes
        _wait(lambda: "ngxlab.slots written again" in _log(prefix), 10, "the next write")
        status, err = run.stop()
    assert status == 0 and "Traceback" not in err, err
    assert not run.pid_file.exists()


# -- run --daemon leaves the caller's terminal and pipes ----------------------------------


@pytest.mark.timeout(60)
def test_run_daemon_returns_to_a_caller_that_captures_its_output(tmp_path):
    prefix = tmp_path / "p"
    argv = [sys.executable, "-m", "ngxlab", "run", "--daemon", "--workers", "2",
            "--prefix", str(prefix)]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=_env())
    daemon = None
    try:
        # out=$(ngxlab run --daemon ... 2>&1): returns when the pipe's last
        # writer is gone, which must be soon after the daemon has started
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, out
        daemon = int((prefix / "logs" / "ngxlab.pid").read_text())
        assert os.readlink(f"/proc/{daemon}/fd/2") == str(prefix / "logs" / "error.log")
        assert os.readlink(f"/proc/{daemon}/fd/1") == "/dev/null"
        assert b"[emerg]" not in out and b"Traceback" not in out
        # after a log rotation and a reopen, stderr follows the log to its new file
        log = prefix / "logs" / "error.log"
        log.rename(log.with_name("error.log.1"))
        assert ngxlab("signal", "reopen", "--prefix", prefix).returncode == 0
        _wait(lambda: os.readlink(f"/proc/{daemon}/fd/2") == str(log), 10, "stderr on the new log")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if daemon is None:
            daemon = next(iter(_processes_naming(str(prefix))), None)
        if daemon is not None:
            ngxlab("signal", "quit", "--prefix", prefix)
            _wait(lambda: _state(daemon) is None, 20, "the daemon gone")
    assert not (prefix / "logs" / "ngxlab.pid").exists()
    _wait(lambda: not _processes_naming(str(prefix)), 10, "its workers gone")
