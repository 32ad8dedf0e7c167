"""ngxlab.lab.nginx: a real nginx started, signalled, counted and always stopped."""

from __future__ import annotations

import gc
import os
import re
import signal
import socket
import subprocess
import time

import pytest

from ngxlab.lab.proc import alive as _alive, start_time as process_start_time
from ngxlab.lab.nginx import Nginx, NginxError, NginxNotFound, find_nginx

pytestmark = pytest.mark.nginx


def _all_gone(pids, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.mark.timeout(60)
def test_start_serve_stop(nginx_bin):
    ngx = Nginx(workers=2, binary=nginx_bin)
    assert "not started" in repr(ngx)
    with ngx:
        pids = [ngx.master_pid, *ngx.worker_pids]
        assert len(ngx.worker_pids) == 2 and all(_alive(p) for p in pids)
        assert ngx.get() == (200, b"ok\n")
        assert ngx.prefix.is_dir() and ngx.log_path.is_file()
        assert int(ngx.pid_path.read_text()) == ngx.master_pid
        conf = ngx.conf_path.read_text()
        assert f"listen 127.0.0.1:{ngx.port};" in conf
        assert "worker_processes 2;" in conf and "daemon off;" in conf
        out = subprocess.run([nginx_bin, "-v"], capture_output=True, text=True).stderr
        assert ngx.version in out and re.fullmatch(r"\d+\.\d+\.\d+", ngx.version)
        assert "-e" in ngx.command()     # early errors go to the prefix, not /var/log/nginx
        prefix = ngx.prefix
        c = ngx.census()
        assert c.is_full_mesh(2)
        assert "running" in repr(ngx)
    assert _all_gone(pids)
    assert not prefix.exists()
    ngx.stop()                            # idempotent
    with pytest.raises(NginxError):
        ngx.start()                       # an Nginx runs once


@pytest.mark.timeout(60)
def test_kill_worker_is_respawned_into_the_same_slot(nginx_bin):
    with Nginx(workers=4, binary=nginx_bin) as ngx:
        before = ngx.slots
        assert sorted(before) == [0, 1, 2, 3]
        killed = ngx.kill_worker(1)
        assert killed == before[1]
        c = ngx.wait_mesh(4, timeout=10)
        after = ngx.slots
        assert after[1] != killed and not _alive(killed)
        assert {s: p for s, p in after.items() if s != 1} == {s: p for s, p in before.items() if s != 1}
        assert c.is_full_mesh(4) and c.slots == after
        assert c.process(after[1]).channel_ends == ("0:0", "1:1", "2:0", "3:0")
        assert c.master.channel_fds == 8


@pytest.mark.timeout(60)
def test_reload_settles_on_a_new_generation(nginx_bin):
    with Nginx(workers=4, binary=nginx_bin) as ngx:
        old = set(ngx.worker_pids)
        ngx.signal("reload")
        c = ngx.wait_mesh(4, timeout=10)
        assert set(c.worker_pids).isdisjoint(old)
        assert len(c.workers) == 4 and c.master.channel_fds == 8
        assert all(w.channel_fds == 4 for w in c.workers)
        assert sorted(c.slots) == [4, 5, 6, 7]   # the new generation came while 0-3 were taken
        assert _all_gone(old, 1)
        # a second reload finds slots 0-3 free again
        ngx.signal("reload")
        c = ngx.wait_mesh(4, timeout=10)
        assert sorted(c.slots) == [0, 1, 2, 3]
        ngx.signal("reopen")
        assert ngx.wait_mesh(4, timeout=5).worker_pids == c.worker_pids


@pytest.mark.timeout(60)
def test_daemon_mode_is_tracked_by_its_pid_file(nginx_bin):
    with Nginx(workers=2, binary=nginx_bin, daemon=True) as ngx:
        master = ngx.master_pid
        assert int(ngx.pid_path.read_text()) == master
        with open(f"/proc/{master}/stat") as f:
            session = int(f.read().rsplit(")", 1)[1].split()[3])
        assert session == master          # ngx_daemon forked and called setsid()
        assert ngx.census().is_full_mesh(2)
        pids = [master, *ngx.worker_pids]
    assert _all_gone(pids)


@pytest.mark.timeout(60)
def test_stop_escalates_to_sigkill(nginx_bin):
    ngx = Nginx(workers=2, binary=nginx_bin).start()
    pids = [ngx.master_pid, *ngx.worker_pids]
    os.kill(ngx.master_pid, signal.SIGSTOP)   # a master that can no longer act on QUIT or TERM
    t0 = time.monotonic()
    ngx.stop(quit_timeout=0.3, term_timeout=0.3)
    assert time.monotonic() - t0 < 5
    assert _all_gone(pids, 1)                 # the orphaned workers too


@pytest.mark.timeout(60)
def test_forgotten_nginx_is_killed_by_the_finalizer(nginx_bin):
    ngx = Nginx(workers=1, binary=nginx_bin).start()
    pids = [ngx.master_pid, *ngx.worker_pids]
    prefix = ngx.prefix
    del ngx
    gc.collect()
    assert _all_gone(pids)
    assert not prefix.exists()


@pytest.mark.timeout(60)
def test_signals_by_name_and_number(nginx_bin):
    with Nginx(workers=1, binary=nginx_bin) as ngx:
        with pytest.raises(ValueError, match="unknown signal name"):
            ngx.signal("restart")
        with pytest.raises(KeyError):
            ngx.kill_worker(5)
        off = ngx.log_offset()
        ngx.send_signal(signal.SIGUSR1)
        ngx.wait_log(r"reopening logs$", count=2, since=off)
        ngx.signal("quit")
        ngx.wait_exit(5)
        assert not ngx.running
        with pytest.raises(NginxError, match="not running"):
            ngx.signal("reload")


@pytest.mark.timeout(30)
def test_missing_binary():
    with pytest.raises(NginxNotFound, match="not found") as info:
        Nginx(binary="/nonexistent/nginx")
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(NginxNotFound):
        find_nginx("/nonexistent/nginx")


@pytest.mark.timeout(60)
def test_start_failure_reports_the_error_log(nginx_bin):
    busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        ngx = Nginx(workers=1, binary=nginx_bin, port=busy.getsockname()[1], start_timeout=3)
        with pytest.raises(NginxError, match="Address already in use"):
            ngx.start()
        assert not ngx.running
    finally:
        busy.close()


@pytest.mark.timeout(60)
def test_worker_start_times_follow_spawn_order(nginx_bin):
    with Nginx(workers=3, binary=nginx_bin) as ngx:
        starts = [(process_start_time(p), p) for p in ngx.worker_pids]
        assert starts == sorted(starts)
