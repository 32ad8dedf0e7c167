"""The master and worker cycles, run as nginx runs: ``python -m ngxlab run`` in
its own process (``ngxlab.lab.MasterProcess``), real workers, real signals,
real sockets. Each test checks what nginx does in the same situation
(release-1.30.4, ngx_process_cycle.c, ngx_process.c, nginx.c)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from _tools import wait_for as _wait

from ngxlab.lab.census import CensusError, census_master, children_of
from ngxlab.lab.proc import Proc as _Proc, alive as _alive, state as _state
from ngxlab.lab.run import MasterProcess

N = 4

# every test here: no [alert], [crit] or [emerg] in a master's log that the
# test did not provoke (and name with @pytest.mark.expected_alerts)
pytestmark = pytest.mark.usefixtures("no_unexpected_alerts")


# -- helpers ------------------------------------------------------------------


def _cli(*args) -> subprocess.CompletedProcess:
    """``python -m ngxlab ARGS`` (this checkout's ngxlab, wherever pytest runs)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.pathsep.join([root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    return subprocess.run([sys.executable, "-m", "ngxlab", *map(str, args)],
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
                          env=dict(os.environ, PYTHONPATH=path))


def _lines(mp: MasterProcess, pattern: str, since: int = 0) -> list[str]:
    rx = re.compile(pattern)
    return [line for line in mp.log_lines(since) if rx.search(line)]


def _assert_topology(c, n: int, slots: dict[int, int]) -> None:
    """nginx's shape (nginx-facts 4.1): n pairs; the master holds both ends of
    each (2n); worker k holds its own channel[1] and every other slot's
    channel[0] (n); channel[0] of a slot is shared by the master and the n-1
    other workers, channel[1] by the master and its worker only."""
    assert c.is_full_mesh(n), c
    assert c.master.channel_fds == 2 * n
    assert sorted(w.channel_fds for w in c.workers) == [n] * n
    assert len(c.pairs) == n
    assert {p.slot: p.worker_pid for p in c.pairs} == slots
    for pair in c.pairs:
        assert pair.holders_of(1) == tuple(sorted((c.master_pid, pair.worker_pid)))
        others = {pid for slot, pid in slots.items() if slot != pair.slot}
        assert set(pair.holders_of(0)) == others | {c.master_pid}
    assert c.channel_fds == n * n + 2 * n


@contextlib.contextmanager
def _frozen(pids):
    """SIGSTOP ``pids`` for the block (a stopped worker is not among epoll's
    waiters, so the kernel hands new connections to the others)."""
    pids = list(pids)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        _wait(lambda: all(_state(p) == "T" for p in pids), 5, "workers stopped")
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def _mesh(master: int, n: int) -> set[int] | None:
    """The worker pids of ``master`` when they have the full mesh, else None."""
    try:
        c = census_master(master)
    except Exception:
        return None
    return set(c.worker_pids) if c.is_full_mesh(n) else None


def _accepted_by(c, port):
    """The workers holding an accepted connection on ``port``."""
    return [w.pid for w in c.workers for f in w.fds
            if f.kind == "tcp" and f.detail.startswith(f"127.0.0.1:{port} ESTABLISHED")]


class _Client(threading.Thread):
    """GET / in a loop on 127.0.0.1:port, one connection each, about every
    2 ms until stopped; records who answered and every failure (refused,
    reset, empty answer)."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port = port
        self.answers: list[int] = []
        self.errors: list[str] = []
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                    s.sendall(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                    data = b""
                    while chunk := s.recv(4096):
                        data += chunk
                m = re.search(rb"slot \d+ pid (\d+) generation \d+", data)
                if m is None:
                    self.errors.append(f"bad answer {data[:80]!r}")
                else:
                    self.answers.append(int(m.group(1)))
            except OSError as e:
                self.errors.append(repr(e))
            self.halt.wait(0.002)   # continuous, but leaves the two masters some CPU

    def stop(self):
        self.halt.set()
        self.join(10)
        assert not self.is_alive()


# -- start-up -----------------------------------------------------------------


@pytest.mark.timeout(30)
def test_startup_has_nginx_topology():
    with MasterProcess(N) as mp:
        slots = mp.slots
        assert sorted(slots) == list(range(N))
        assert all(_alive(p) for p in slots.values())
        assert int(mp.pid_path.read_text()) == mp.master_pid
        _assert_topology(mp.census(), N, slots)

        # the same through the command line, as an operator would ask
        done = _cli("topology", "--prefix", mp.prefix, "--json")
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        counts = report["counts"]
        # the master's whole table, as the kernel lists it (the master is at rest)
        assert counts["master"] == {"pid": mp.master_pid, "channel": 2 * N,
                                    "total": len(os.listdir(f"/proc/{mp.master_pid}/fd"))}
        assert {w["slot"]: w["pid"] for w in counts["worker"]} == slots
        assert all(w["channel"] == N for w in counts["worker"])
        assert len(report["pairs"]) == N and report["slot_source"] == "given"

        answer = mp.get()
        assert answer.slot in slots and slots[answer.slot] == answer.pid
        assert answer.generation == 1

        lines = _lines(mp, r"start worker process \d+$")
        assert [int(line.split()[-1]) for line in lines] == [slots[i] for i in range(N)]


# -- reload -------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_reload_starts_a_new_generation_in_new_slots():
    with MasterProcess(N) as mp:
        old = mp.slots
        # a client that connected before the reload and sends its request only
        # after the old workers were told to QUIT is still served by them
        held = socket.create_connection(("127.0.0.1", mp.port), timeout=5)
        with held:
            _wait(lambda: _accepted_by(mp.census(), mp.port), 5, "connection accepted")
            off = mp.log_offset()
            done = mp.signal("reload")
            assert done.returncode == 0, done.stderr
            mp.wait_log(r"#0: gracefully shutting down$", count=N, since=off)
            held.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := held.recv(4096):
                data += chunk
        m = re.search(rb"slot (\d+) pid (\d+) generation (\d+)$", data)
        assert m, data
        assert old[int(m.group(1))] == int(m.group(2)) and m.group(3) == b"1"
        # the new generation takes slots N..2N-1 while the old one still runs,
        # then the old one gets QUIT and its slots are freed
        _wait(lambda: sorted(mp.slots) == list(range(N, 2 * N)), 10, "slots 4-7 only")
        c = mp.wait_mesh(N)
        new = mp.slots
        _assert_topology(c, N, new)
        assert not set(new.values()) & set(old.values())
        _wait(lambda: not any(_alive(p) for p in old.values()), 5, "old generation gone")
        assert mp.generation == 2
        for _ in range(3):
            answer = mp.get()
            assert answer.generation == 2 and new[answer.slot] == answer.pid
        text = "\n".join(mp.log_lines())
        assert "reconfiguring" in text
        for pid in old.values():
            assert f"[notice] {pid}#0: gracefully shutting down" in text
            assert f"worker process {pid} exited with code 0" in text


# -- respawn ------------------------------------------------------------------


@pytest.mark.expected_alerts(r"\[alert\] \d+#0: worker process \d+ exited on signal 9$")
@pytest.mark.timeout(30)
def test_sigkill_of_a_worker_respawns_it_in_the_same_slot():
    with MasterProcess(N) as mp:
        before = mp.slots
        victim = mp.kill_worker(1)
        _wait(lambda: mp.slots.get(1) not in (None, victim), 10, "slot 1 respawned")
        c = mp.wait_mesh(N)
        after = mp.slots
        assert after[1] != victim and not _alive(victim)
        assert {s: p for s, p in after.items() if s != 1} == \
               {s: p for s, p in before.items() if s != 1}
        # every survivor closed the dead worker's channel[0] and holds the new one
        _assert_topology(c, N, after)
        lines = mp.log_lines()
        died = next(i for i, line in enumerate(lines)
                    if f"worker process {victim} exited on signal 9" in line)
        assert "[alert]" in lines[died]
        assert any(f"start worker process {after[1]}" in line for line in lines[died + 1:])


# -- reopen -------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_reopen_reaches_every_worker_and_reopens_the_log():
    with MasterProcess(N) as mp:
        workers = set(mp.slots.values())
        rotated = mp.log_path.with_name("error.log.1")
        os.rename(mp.log_path, rotated)
        done = mp.signal("reopen")
        assert done.returncode == 0, done.stderr

        def reopened(path):
            text = path.read_text() if path.exists() else ""
            return {int(m) for m in re.findall(r"(\d+)#0: reopening logs", text)}

        # each process says so in the file it had open (the old one), then reopens
        _wait(lambda: reopened(rotated) >= workers | {mp.master_pid}, 5, "REOPEN in every worker")
        _wait(mp.log_path.exists, 5, "a new error.log")
        # the next lines of every process go to the new file
        assert mp.signal("reopen").returncode == 0
        _wait(lambda: reopened(mp.log_path) >= workers | {mp.master_pid}, 5,
              "every process writes to the new error.log")
        assert "SIGUSR1" in mp.log_path.read_text()
        assert set(mp.slots.values()) == workers      # nobody restarted


# -- shutdown -----------------------------------------------------------------


@pytest.mark.timeout(30)
def test_quit_is_a_graceful_shutdown():
    mp = MasterProcess(N)
    with mp:
        workers = set(mp.slots.values())
        assert mp.signal("quit").returncode == 0
        assert mp.wait_exit(10) == 0
        assert not mp.pid_path.exists()
        text = "\n".join(mp.log_lines())
        for pid in workers:
            assert f"worker process {pid} exited with code 0" in text
            assert not _alive(pid)
        assert re.search(rf"{mp.master_pid}#0: exit$", text, re.M)
    assert mp.returncode == 0


@pytest.mark.expected_alerts(r"\[alert\] \d+#0: worker process \d+ exited on signal 9$")
@pytest.mark.timeout(30)
def test_stop_kills_a_worker_that_ignores_terminate():
    # a stopped worker reads no TERMINATE: the master re-sends it after each
    # SIGALRM, the timer doubling from 50 ms, and sends SIGKILL when the timer
    # that fired is over 1000 ms: after 50+100+200+400+800+1600 = 3150 ms
    with MasterProcess(2) as mp:
        slots = mp.slots
        os.kill(slots[0], signal.SIGSTOP)
        _wait(lambda: _state(slots[0]) == "T", 5, "worker stopped")
        t0 = time.monotonic()
        assert mp.signal("stop").returncode == 0
        assert mp.wait_exit(10) == 0
        took = time.monotonic() - t0
        assert 3.1 < took < 10.0, took
        lines = mp.log_lines()
        killed = next(i for i, line in enumerate(lines)
                      if f"worker process {slots[0]} exited on signal 9" in line)
        assert sum("signal 14 (SIGALRM) received" in line for line in lines[:killed]) == 6
        assert any(f"worker process {slots[1]} exited with code 0" in line
                   for line in lines[:killed])
        assert not mp.pid_path.exists()
        assert not _alive(slots[0]) and not _alive(slots[1])


# -- binary upgrade -----------------------------------------------------------


def _listener_inode(c, port):
    return {f.inode for f in c.master.fds if f.kind == "tcp" and f.detail.endswith(f":{port} LISTEN")}


@pytest.mark.timeout(40)
def test_usr2_starts_a_new_master_on_the_same_socket_without_refusing():
    with MasterProcess(2, daemon=True) as mp:
        port = mp.port
        old = mp.master_pid
        old_workers = set(mp.slots.values())
        client = _Client(port)
        client.start()
        try:
            _wait(lambda: client.answers, 5, "a first answer")

            # the new binary reads the configuration file, not the command
            # line it inherits: one more worker than the old master has
            conf = mp.prefix / "conf" / "ngxlab.conf"
            conf.write_text(conf.read_text().replace("worker_processes 2;",
                                                     "worker_processes 3;"))
            mp.send_signal(signal.SIGUSR2)
            new = _wait(lambda: (p := mp.read_pid()) not in (None, old) and p, 10,
                        "a new pid in the pid file")
            assert mp.read_pid(mp.oldpid_path) == old
            new_workers = _wait(lambda: _mesh(new, 3), 10, "the new master's mesh of 3")
            assert _alive(old) and all(_alive(p) for p in old_workers)
            # each master's table: the new one owns the plain names now
            assert set(mp.slots.values()) == old_workers
            assert mp.slots_path.with_name("ngxlab.slots.oldbin").exists()
            _wait(lambda: json.loads(mp.slots_path.read_text())["master"] == new, 5,
                  "the new master's table")
            mp.wait_log(rf"{new}#0: using inherited sockets from \"\d+;\"")
            # one listening socket, two masters
            assert _listener_inode(census_master(old), port) == \
                   _listener_inode(census_master(new), port) != set()

            # both generations accept on it while both masters run
            with _frozen(old_workers):
                assert mp.get().pid in new_workers
            with _frozen(new_workers):
                assert mp.get().pid in old_workers

            mp.send_signal(signal.SIGQUIT)          # the old master, gracefully
            assert mp.wait_exit(10) is None         # a daemon: not our child
            assert not any(_alive(p) for p in old_workers)
            assert mp.read_pid() == new and not mp.oldpid_path.exists()
            seen = len(client.answers)
            _wait(lambda: len(client.answers) > seen + 5, 5, "answers after the switch")
        finally:
            client.stop()
        assert client.errors == [], client.errors[:5]
        assert set(client.answers) & old_workers and set(client.answers) & new_workers
        assert set(client.answers) <= old_workers | new_workers

        mp.follow()
        assert mp.master_pid == new
        assert mp.signal("quit").returncode == 0
        mp.wait_exit(10)
        assert not mp.pid_path.exists()
        assert not any(_alive(p) for p in new_workers)


def _full_mesh(master: int, n: int) -> bool:
    """Whether the census of ``master`` shows the full mesh of ``n``; False
    while a process it lists goes away under it (a census is not atomic)."""
    try:
        return census_master(master).is_full_mesh(n)
    except CensusError:
        return False


@pytest.mark.timeout(40)
def test_winch_then_hup_is_nginx_rollback():
    with MasterProcess(2, daemon=True) as mp:
        old = mp.master_pid
        old_workers = set(mp.slots.values())
        mp.send_signal(signal.SIGUSR2)
        new = _wait(lambda: (p := mp.read_pid()) not in (None, old) and p, 10, "new master")
        new_workers = _wait(lambda: _mesh(new, 2), 10, "the new master's mesh")

        # WINCH: the old workers quit and are not respawned; the old master stays
        off = mp.log_offset()
        mp.send_signal(signal.SIGWINCH)
        _wait(lambda: children_of(old) == [new], 10, "old workers gone")
        assert not any(_alive(p) for p in old_workers)
        _wait(lambda: mp.slots == {}, 5, "the old master's table empty")
        time.sleep(0.3)
        assert children_of(old) == [new] and _alive(old)
        assert not _lines(mp, rf"{old}#0: start worker process", off)
        assert mp.get().pid in new_workers

        # HUP while the new binary runs: the old workers come back, same configuration
        off = mp.log_offset()
        mp.send_signal(signal.SIGHUP)
        back = _wait(lambda: (w := set(children_of(old)) - {new}) and len(w) == 2 and w, 10,
                     "old workers restarted")
        assert _wait(lambda: _full_mesh(old, 2), 10, "old mesh")
        assert not _lines(mp, rf"{old}#0: reconfiguring", off)
        assert len(_lines(mp, rf"{old}#0: start worker process \d+", off)) == 2
        # and said nothing alarming on the way: the OPEN_CHANNEL broadcast skips
        # the slots of the new binary and of the workers gone after WINCH
        assert _lines(mp, r"\[(alert|crit|emerg)\]", off) == []
        with _frozen(new_workers):
            answer = mp.get()
        assert answer.pid in back and answer.generation == 1
        _wait(lambda: set(mp.slots.values()) == back, 5, "the old master's table")

        # the new master goes: the old one takes its pid file back
        os.kill(new, signal.SIGQUIT)
        _wait(lambda: not _alive(new), 10, "new master gone")
        _wait(lambda: mp.read_pid() == old, 5, "pid file renamed back")
        assert not mp.oldpid_path.exists()
        mp.wait_log(rf"{old}#0: new binary process {new} exited with code 0")
        # and the plain name of its table
        _wait(lambda: json.loads(mp.slots_path.read_text())["master"] == old, 5, "table back")
        assert not mp.slots_path.with_name("ngxlab.slots.oldbin").exists()
        topology = _cli("topology", "--prefix", mp.prefix, "--json")
        assert topology.returncode == 0, topology.stderr
        assert json.loads(topology.stdout)["slot_source"] == "given"
        assert mp.signal("quit").returncode == 0
        mp.wait_exit(10)
        assert not any(_alive(p) for p in back | new_workers)


@pytest.mark.expected_alerts(r"\[crit\] \d+#0: the changing binary signal is ignored: ")
@pytest.mark.timeout(30)
def test_usr2_and_winch_are_ignored_in_the_foreground():
    # nginx's ngx_parent rule: a master whose parent is still the process it
    # started under takes itself for a new binary and ignores USR2; and
    # WINCH acts only on a daemon (ngx_daemonized)
    with MasterProcess(1) as mp:
        workers = set(mp.slots.values())
        mp.send_signal(signal.SIGUSR2)
        mp.wait_log(r"\[crit\] \d+#0: the changing binary signal is ignored: you should "
                    r"shutdown or terminate before either old or new binary's process")
        assert _lines(mp, r"signal 12 \(SIGUSR2\) received from \d+, ignoring")
        mp.send_signal(signal.SIGWINCH)
        mp.wait_log(rf"{mp.master_pid}#0: signal 28 \(SIGWINCH\) received from \d+$")
        time.sleep(0.2)
        assert not mp.oldpid_path.exists() and mp.read_pid() == mp.master_pid
        assert set(children_of(mp.master_pid)) == workers and set(mp.slots.values()) == workers
        assert not _lines(mp, r"gracefully shutting down|start new binary")


# -- the master's death -------------------------------------------------------


@pytest.mark.expected_alerts(r"\[alert\] \d+#0: master process \d+ exited, worker exiting$")
@pytest.mark.timeout(30)
def test_workers_exit_when_the_master_is_killed():
    with MasterProcess(2) as mp:
        workers = list(mp.slots.values())
        mp.send_signal(signal.SIGKILL)
        assert mp.wait_exit(5) == -signal.SIGKILL
        t0 = time.monotonic()
        _wait(lambda: not any(_alive(p) for p in workers), 1.0, "workers gone within 1 s")
        assert time.monotonic() - t0 < 1.0
        assert len(_lines(mp, rf"master process {mp.master_pid} exited, worker exiting")) == 2


@pytest.mark.timeout(30)
def test_nginx_orphans_outlive_the_master():
    with MasterProcess(2, nginx_orphans=True) as mp:
        workers = [_Proc.of(p) for p in mp.slots.values()]
        try:
            mp.send_signal(signal.SIGKILL)
            mp.wait_exit(5)
            time.sleep(1.0)
            assert all(w.alive() for w in workers)       # as nginx's workers do
            assert all(_stat_ppid(w.pid) != mp.master_pid for w in workers)
        finally:
            for w in workers:
                w.kill(signal.SIGKILL)
        _wait(lambda: not any(w.alive() for w in workers), 5, "orphans killed")


def _stat_ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


# -- exit code 2 --------------------------------------------------------------


def _exit_2(cycle, data):
    raise SystemExit(2)


@pytest.mark.expected_alerts(r"\[alert\] \d+#0: worker process \d+ exited with fatal code 2 "
                              r"and cannot be respawned$")
@pytest.mark.timeout(30)
def test_exit_code_2_is_not_respawned():
    # ngx_process_get_status + ngx_reap_children on a real child that exits 2
    # (nginx's workers do when their init fails): the slot is freed, not refilled
    from ngxlab import process, process_cycle as pc
    from ngxlab.lab import Master

    def wait_mesh(m):
        try:
            return m.wait_mesh()
        except Exception as e:        # say what the workers logged
            raise AssertionError(f"{e!r}\n" + "\n".join(m.log_lines())) from e

    with Master(1) as m:
        wait_mesh(m)
        survivor = m.slots[0]
        pid = process.ngx_spawn_process(m.cycle, _exit_2, None, "worker process",
                                        process.NGX_PROCESS_RESPAWN)
        assert pid > 0 and process.ngx_process_slot == 1
        pc.ngx_pass_open_channel(m.cycle)
        assert process.ngx_processes[1].respawn == 1
        # wait for it to exit without reaping it: ngx_process_get_status does that
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        process.ngx_process_get_status()
        p = process.ngx_processes[1]
        assert p.exited == 1 and os.WEXITSTATUS(p.status) == 2 and p.respawn == 0
        live = pc.ngx_reap_children(m.cycle)
        assert live == 1                           # slot 0 lives on
        assert process.ngx_last_process == 1       # the last slot is freed
        assert [w.slot for w in m.workers] == [0] and m.slots[0] == survivor
        text = "\n".join(m.log_lines())
        assert f"worker process {pid} exited with code 2" in text
        assert f"[alert] {os.getpid()}#0: worker process {pid} exited with fatal code 2 " \
               f"and cannot be respawned" in text
        assert text.count("start worker process") == 2
        wait_mesh(m)                               # the survivor closed slot 1's channel[0]


# -- the channel traffic, message by message, beside a real nginx -------------

ACTIONS = ("reopen", "kill_worker:1", "reload", "quit")


def _check_phases(seq: dict, n: int, who: str) -> None:
    """What nginx-facts and the measured baselines say the master sends."""
    opens = [x for x in seq["startup"] if x.command_name == "OPEN_CHANNEL"]
    assert len(seq["startup"]) == len(opens) == n * (n - 1) // 2, who
    assert all(x.has_fd for x in opens), who
    assert [(x.command_name, x.target_slot) for x in seq["reopen"]] == \
           [("REOPEN", s) for s in range(n)], who
    survivors = [s for s in range(n) if s != 1]
    assert [(x.command_name, x.slot, x.target_slot, x.has_fd) for x in seq["kill_worker:1"]] == \
           [("CLOSE_CHANNEL", 1, s, False) for s in survivors] + \
           [("OPEN_CHANNEL", 1, s, True) for s in survivors], who
    reload = seq["reload"]
    count = {c: sum(1 for x in reload if x.command_name == c)
             for c in ("OPEN_CHANNEL", "QUIT", "CLOSE_CHANNEL")}
    assert count["OPEN_CHANNEL"] == 4 * n + n * (n - 1) // 2 and count["QUIT"] == n, (who, count)
    closes = [(x.slot, x.target_slot) for x in reload if x.command_name == "CLOSE_CHANNEL"]
    # every old worker's end is closed in every new worker; the rest depends on exit timing
    assert {(o, t) for o in range(n) for t in range(n, 2 * n)} <= set(closes), (who, closes)
    assert len(closes) == len(set(closes)) and n * n <= len(closes) <= n * n + n * (n - 1) // 2
    assert [x.target_slot for x in seq["quit"] if x.command_name == "QUIT"] == \
           list(range(n, 2 * n)), who


@pytest.mark.nginx
@pytest.mark.expected_alerts(r"\[alert\] \d+#0: worker process \d+ exited on signal 9$")
@pytest.mark.timeout(90)
def test_channel_messages_match_nginx(nginx_bin, strace_bin, tmp_path):
    from ngxlab.lab.nginx import Nginx
    from ngxlab.lab.trace import diff_sequences, trace_run

    n = N
    lab = trace_run(MasterProcess(n), ACTIONS)
    ours = {k: lab.sequence(k) for k in lab.phases}
    run = trace_run(Nginx(n, binary=nginx_bin), ACTIONS)
    theirs = {k: run.sequence(k) for k in ours}
    _check_phases(theirs, n, f"nginx {run.version}")
    _check_phases(ours, n, "ngxlab")

    # up to pids and descriptor numbers, the same messages in the same order;
    # CLOSE_CHANNEL after a reload or a quit depends on when each old worker
    # exited (how many the master reaps in one pass), so those are compared
    # as the checks above do, and the rest message by message
    for phase in ours:
        timing = phase in ("reload", "quit")
        a = [x for x in theirs[phase] if not (timing and x.command_name == "CLOSE_CHANNEL")]
        b = [x for x in ours[phase] if not (timing and x.command_name == "CLOSE_CHANNEL")]
        diff = diff_sequences(a, b, names=("nginx", "ngxlab"))
        assert not diff, f"{phase}:\n" + "\n".join(diff)


# -- the instrument itself ----------------------------------------------------


@pytest.mark.alerts_unchecked("an instrument test: it checks that MasterProcess removes "
                               "its temporary prefix, log included")
@pytest.mark.timeout(30)
def test_master_process_start_failure_says_why(tmp_path):
    from ngxlab.lab.run import MasterProcessError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        mp = MasterProcess(2, listen=s.getsockname())
        prefix = mp.prefix
        with pytest.raises(MasterProcessError) as err:
            mp.start()
    assert "exited with status 1" in str(err.value)
    assert "Address already in use" in str(err.value)
    assert not prefix.exists()
    assert mp.returncode == 1


@pytest.mark.alerts_unchecked("an instrument test: it checks that MasterProcess removes "
                               "its temporary prefix, log included")
@pytest.mark.timeout(30)
@pytest.mark.parametrize("daemon", (False, True), ids=("foreground", "daemon"))
def test_master_process_leaves_nothing_behind(daemon):
    import gc

    mp = MasterProcess(2, daemon=daemon)
    mp.start()
    procs = [_Proc.of(mp.master_pid)] + [_Proc.of(p) for p in mp.slots.values()]
    prefix = mp.prefix
    assert all(p is not None and p.alive() for p in procs)
    del mp
    gc.collect()        # the finalizer: SIGKILL by pid, reap, remove the prefix
    _wait(lambda: not any(p.alive() for p in procs), 5, "everything gone")
    assert not prefix.exists()


@pytest.mark.alerts_unchecked("an instrument test: it checks that MasterProcess removes "
                               "its temporary prefix, log included")
@pytest.mark.timeout(30)
def test_master_process_stops_both_masters_of_an_upgrade():
    # workers that outlive their master (nginx's way) must still be found and stopped
    mp = MasterProcess(2, daemon=True, nginx_orphans=True)
    with mp:
        old = mp.master_pid
        mp.send_signal(signal.SIGUSR2)
        new = _wait(lambda: (p := mp.read_pid()) not in (None, old) and p, 10, "new master")
        new_workers = _wait(lambda: _mesh(new, 2), 10, "the new master's mesh")
        procs = [_Proc.of(p) for p in (old, new, *mp.slots.values(), *new_workers)]
        assert len(procs) == 6 and None not in procs
    # stop() without follow(): both masters got QUIT, newest first
    assert not any(p.alive() for p in procs)
    assert not mp.prefix.exists()


@pytest.mark.timeout(30)
def test_a_foreground_master_dies_with_its_parent(tmp_path):
    # the parent (a notebook kernel, a test) exits without stopping it:
    # --die-with-parent turns that into SIGTERM, a fast shutdown
    script = ("import os, sys\n"
              "from ngxlab.lab.run import MasterProcess\n"
              "m = MasterProcess(2, prefix=sys.argv[1]).start()\n"
              "print(m.master_pid, *m.slots.values(), flush=True)\n"
              "os._exit(0)\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True,
                          text=True, timeout=30, env=dict(os.environ, PYTHONPATH=root))
    assert done.returncode == 0, done.stderr
    master, *workers = map(int, done.stdout.split())
    _wait(lambda: not any(_alive(p) for p in (master, *workers)), 5, "all gone")
    log = (tmp_path / "logs" / "error.log").read_text()
    assert f"{master}#0: signal 15 (SIGTERM) received" in log
    assert re.search(rf"{master}#0: exit$", log, re.M)
    assert not (tmp_path / "logs" / "ngxlab.pid").exists()


@pytest.mark.timeout(30)
def test_a_daemon_master_is_stopped_when_its_starter_is_killed(tmp_path):
    # a daemon is nobody's child: the watchdog MasterProcess starts beside it
    # stops it when the starting process dies by SIGKILL (no atexit, no
    # finalizer runs then)
    script = ("import sys, time\n"
              "from ngxlab.lab.run import MasterProcess\n"
              "m = MasterProcess(2, prefix=sys.argv[1], daemon=True).start()\n"
              "print(m.master_pid, *m.slots.values(), flush=True)\n"
              "time.sleep(60)\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    starter = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)],
                               stdout=subprocess.PIPE, text=True,
                               env=dict(os.environ, PYTHONPATH=root))
    try:
        master, *workers = map(int, starter.stdout.readline().split())
        assert len(workers) == 2 and _alive(master)
    finally:
        starter.kill()
        starter.wait()
        starter.stdout.close()
    _wait(lambda: not any(_alive(p) for p in (master, *workers)), 8, "all gone")
    log = (tmp_path / "logs" / "error.log").read_text()
    assert f"{master}#0: signal 15 (SIGTERM) received" in log
