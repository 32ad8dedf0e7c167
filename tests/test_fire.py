"""ngxlab.lab.load and ngxlab.lab.fire: short versions of what the chapter
"Under fire" measures, asserting behaviour, never a speed.

- The load client counts each kind of failure, against real sockets that
  fail in that way (nothing listening, a reset, an error status, a short
  answer, a queue nobody accepts from).
- A few reloads and one binary upgrade under load lose no request, on ngxlab
  and on nginx.
- A short kill storm leaves the descriptor counts flat, no zombie, and a
  full mesh (census) at the end, on both; the /proc test of a whole mesh
  says no while a survivor cannot read its channel.
- ngxlab's workers are gone after SIGKILL of their master; nginx's live on,
  answer, and are stopped by pid.

Every test runs under a timeout and the leak guard; ngxlab's masters run
under ``no_unexpected_alerts``.
"""

from __future__ import annotations

import io
import json
import signal
import socket
import struct
import threading
import time
from importlib import resources

import pytest

from ngxlab.lab import bench, figures, fire, load, proc
from ngxlab.lab.load import FAILURES, Load, LoadResult, probe
from ngxlab.lab.proc import Proc
from ngxlab.lab.run import MasterProcess

pytestmark = pytest.mark.usefixtures("no_unexpected_alerts")

SYSTEMS = ["ngxlab", "nginx"]


@pytest.fixture(params=SYSTEMS)
def each_system(request):
    """Each system in turn; nginx's run asks for nginx (strict mode fails without it)."""
    if request.param == "nginx":
        request.getfixturevalue("nginx_bin")
    return request.param


# -- the client counts every kind of failure -------------------------------------------


class _Server:
    """A listening socket on 127.0.0.1 and a thread that treats each
    connection with ``handle(conn)``; ``accept=False``: never accept."""

    def __init__(self, handle=None, accept: bool = True):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.handle = handle
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True) if accept else None

    def _run(self):
        self.sock.settimeout(0.05)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(1.0)
                try:
                    conn.recv(4096)
                    self.handle(conn)
                except OSError:
                    pass

    def __enter__(self):
        if self._thread is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.sock.close()


def _reset(conn):
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _answer(data: bytes):
    def handle(conn):
        conn.sendall(data)
    return handle


@pytest.mark.timeout(30)
@pytest.mark.parametrize("handle, kind", [
    (_reset, "reset"),
    (_answer(b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"), "status"),
    (_answer(b"HTTP/1.0 200 OK\r\nContent-Length: 10\r\n\r\nshort"), "short"),
    (_answer(b""), "short"),
    (_answer(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n"), "ok"),
], ids=["reset", "status", "short-body", "no-answer", "ok"])
def test_probe_tells_each_outcome(handle, kind):
    with _Server(handle) as srv:
        counts = probe(srv.port, 3)
    assert counts[kind] == 3 and sum(counts.values()) == 3, counts


@pytest.mark.timeout(30)
def test_load_counts_refused_connections():
    with _Server(accept=False) as srv:
        port = srv.port
    # nothing listens on the port any more
    with Load(port, rate=200, timeout=1.0) as ld:
        time.sleep(0.3)
    r = ld.result
    assert r.total > 10 and r.counts["refused"] == r.total and r.failed == r.total
    assert r.failures["refused"] == r.total and r.counts["ok"] == 0


@pytest.mark.timeout(30)
def test_load_counts_timeouts_in_a_queue_nobody_accepts_from():
    with _Server(accept=False) as srv:
        with Load(srv.port, rate=100, timeout=0.3, concurrency=20) as ld:
            time.sleep(0.4)
    r = ld.result
    assert r.total > 5 and r.counts["timeout"] == r.total, r.counts


@pytest.mark.timeout(30)
def test_load_answers_and_timeline_against_a_server():
    with _Server(_answer(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n")) as srv:
        with Load(srv.port, rate=200, timeout=2.0) as ld:
            time.sleep(0.1)
            ld.mark("a")
            time.sleep(0.4)
    r = ld.result
    assert r.failed == 0 and r.counts["ok"] == r.total > 50
    assert len(r.start_ms) == len(r.end_ms) == len(r.outcome) == len(r.lag_ms) == r.total
    assert all(e >= s for s, e in zip(r.start_ms, r.end_ms))
    tl = r.timeline(50)
    # complete bins only, and every answer counted in them ended before the last start
    assert len(tl["t_s"]) == int(max(r.start_ms) // 50)
    assert sum(tl["ok_per_s"]) * 50 / 1000 == pytest.approx(
        sum(1 for e in r.end_ms if e < len(tl["t_s"]) * 50))
    assert [k for _t, k in r.marks] == ["a"] and 50 < r.marks[0][0] < 500
    back = LoadResult.from_dict(json.loads(json.dumps(r.to_dict())))
    assert back.summary() == r.summary() and back.timeline() == r.timeline()
    assert back.failures == {k: 0 for k in FAILURES}


def test_load_refuses_bad_sizes():
    with pytest.raises(ValueError):
        Load(1, rate=0)
    with pytest.raises(load.LoadError, match="not started"):
        Load(1).stop()


# -- reload and binary upgrade under load -------------------------------------------------


@pytest.mark.timeout(90)
def test_reloads_under_load_lose_no_request(each_system):
    u = fire.reload_under_load(each_system, n=2, reloads=3, rate=300, lead_s=0.2,
                               gap_s=0.05, tail_s=0.2)
    assert u.load.total > 100
    assert u.failed == 0, (u.failures, u.load.errors)
    assert len(u.steps_ms["settle"]) == 3 and all(x > 0 for x in u.steps_ms["settle"])
    assert [k for _t, k in u.load.marks] == ["HUP", "settled"] * 3
    assert u.census_full
    back = fire.UnderLoad.from_dict(json.loads(json.dumps(u.to_dict())))
    assert back.failed == 0 and back.load.timeline() == u.load.timeline()


@pytest.mark.timeout(90)
def test_binary_upgrade_under_load_loses_no_request(each_system):
    u = fire.upgrade_under_load(each_system, n=2, rate=300, lead_s=0.2, pause_s=0.1,
                                tail_s=0.2)
    assert u.failed == 0, (u.failures, u.load.errors)
    assert [k for _t, k in u.load.marks] == ["USR2", "new workers ready", "WINCH",
                                            "old workers gone", "QUIT", "old master gone"]
    assert sorted(u.steps_ms) == ["new", "quit", "winch"]
    assert u.census_full                        # the new master's mesh, by the census
    # requests kept coming and being answered after the old master had gone
    gone = u.load.marks[-1][0]
    assert sum(1 for s in u.load.start_ms if s > gone) > 10


# -- the kill storm --------------------------------------------------------------------------


KILLED = r"\[alert\] \d+#0: worker process \d+ exited on signal 9$"


@pytest.mark.expected_alerts(KILLED)
@pytest.mark.timeout(90)
def test_kill_storm_leaves_counts_flat_no_zombie_and_a_full_mesh(each_system):
    st = fire.kill_storm(each_system, n=3, kills=15, seed=3)
    assert st.kills == 15 and len(st.whole_ms) == len(st.replaced_ms) == 15
    assert all(0 < r <= w for r, w in zip(st.replaced_ms, st.whole_ms))
    assert st.flat, (st.base_master_fds, st.master_fds, st.base_worker_fds,
                     st.worker_fds_min, st.worker_fds_max)
    assert st.zombies == [0] * 15 and st.max_zombies == 0
    assert st.census_full and st.census_master_channel == 6
    assert st.census_worker_channel == [3, 3, 3]
    back = fire.StormResult.from_dict(json.loads(json.dumps(st.to_dict())))
    assert back.respawn == st.respawn and back.flat


@pytest.mark.expected_alerts(KILLED)
@pytest.mark.timeout(60)
def test_mesh_whole_says_no_while_a_survivor_cannot_read_its_channel():
    with MasterProcess(3) as mp:
        c = mp.wait_mesh()
        master = mp.master_pid
        per_worker = len([t for t in proc.fd_targets(c.workers[0].pid).values()
                          if t.startswith("socket:")])
        assert fire.mesh_whole(master, mp.worker_pids, per_worker)
        assert not fire.mesh_whole(master, mp.worker_pids, per_worker + 1)
        frozen = Proc.of(mp.slots[0])
        frozen.kill(signal.SIGSTOP)
        try:
            victim = mp.kill_worker(2)
            kids = mp.wait_for(lambda: (k := proc.children(master)) and len(k) == 3
                               and victim not in k and k, 10, what="the replacement")
            # the replacement holds what it should, but the frozen worker still
            # holds the dead worker's end and not the newcomer's
            time.sleep(0.3)
            assert not fire.mesh_whole(master, kids, per_worker)
        finally:
            frozen.kill(signal.SIGCONT)
        mp.wait_for(lambda: fire.mesh_whole(master, kids, per_worker), 10,
                    what="the mesh whole after SIGCONT")
        assert mp.wait_mesh().is_full_mesh(3)


# -- the master's death -------------------------------------------------------------------


@pytest.mark.expected_alerts(r"\[alert\] \d+#0: master process \d+ exited, worker exiting$")
@pytest.mark.timeout(60)
def test_ngxlab_workers_are_gone_after_a_master_sigkill():
    m = fire.master_kill("ngxlab", n=3, hold_s=2.0, probes=2)
    assert m.gone_ms is not None and m.alive_after == 0 and not m.orphans
    assert m.alive[0] == (0.0, 3) and m.alive[-1][1] == 0
    assert m.answered["ok"] == 0 and m.answered["refused"] == 2   # nobody listens any more
    assert m.cleanup_ms is None


@pytest.mark.timeout(60)
@pytest.mark.parametrize("variant", ["nginx", "ngxlab --nginx-orphans"])
def test_nginx_workers_live_on_after_a_master_sigkill(variant, request):
    if variant == "nginx":
        request.getfixturevalue("nginx_bin")
    m = fire.master_kill(variant, n=2, hold_s=0.3, probes=3)
    assert m.gone_ms is None and m.alive_after == 2 and m.orphans
    assert m.answered["ok"] == 3                 # the orphans still serve
    assert m.cleanup_ms is not None and m.cleanup_killed == 0    # QUIT by pid ended them


def test_master_kill_refuses_an_unknown_variant():
    with pytest.raises(ValueError, match="variant"):
        fire.master_kill("apache")


# -- the recording the chapter shows without nginx ----------------------------------------


def test_the_recording_is_labelled_and_reads_back():
    rec = json.loads(resources.files("ngxlab.lab").joinpath(fire.RECORDED).read_text())
    assert rec["what"].startswith("ngxlab.lab.fire.record_under_fire(")
    assert rec["date"] and rec["nginx"] and rec["machine"]
    uf = fire.UnderFire.from_dict(rec["under_fire"])
    assert uf.nginx_skipped is None and set(uf.systems) == {"ngxlab", "nginx"}
    assert set(uf.master_kill) == set(fire.MASTER_KILL_VARIANTS)
    for action in ("reload", "upgrade"):
        for u in getattr(uf, action).values():
            # the summary kept is that of the counts kept
            assert u.load.summary()["failed"] == u.failed == sum(u.failures.values())
            assert u.load.summary()["total"] == u.load.total
    for st in uf.storm.values():
        assert len(st.whole_ms) == st.kills == uf.params["kills"]
    assert "kill storm" in uf.table()


def _draw_recording():
    rec = json.loads(resources.files("ngxlab.lab").joinpath(fire.RECORDED).read_text())
    uf = fire.UnderFire.from_dict(rec["under_fire"])
    figs = (figures.plot_under_load(uf.reload, title="reloads", machine=uf.machine),
            figures.plot_under_load(uf.upgrade), figures.plot_storm(uf.storm),
            figures.plot_master_kill(uf.master_kill))
    for fig in figs:
        fig.savefig(io.BytesIO(), format="png")
    return figs


@pytest.fixture(scope="module")
def matplotlib_fonts():
    """Draw the figures once before the leak guard's first look: matplotlib
    keeps every font file it has rendered with open, in a process-wide
    cache, for the life of the process (a cache, not a leak)."""
    _draw_recording()


def test_the_figures_draw_from_the_recording(matplotlib_fonts):
    for fig in _draw_recording():
        assert fig.get_figwidth() == pytest.approx(figures.WIDTH)  # the book's column


def test_the_kept_bench_run_keeps_the_storm_summary_not_its_lists(tmp_path):
    rec = json.loads(resources.files("ngxlab.lab").joinpath(fire.RECORDED).read_text())
    [kept] = bench.save({"under_fire": rec["under_fire"]}, tmp_path / "kept.json")
    st = kept["under_fire"]["storm"]["ngxlab"]
    assert "whole_ms" not in st and st["whole_ms_count"] == rec["under_fire"]["params"]["kills"]
    assert st["respawn"] == rec["under_fire"]["storm"]["ngxlab"]["respawn"] and st["flat"]
    assert json.loads((tmp_path / "kept.json").read_text()) == {"runs": [kept]}
    assert bench.saved(tmp_path / "kept.json") == [kept]
