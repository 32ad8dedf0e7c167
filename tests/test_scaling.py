"""ngxlab.lab.timing, descriptors and side_by_side: behaviour, not speed.

Quick runs with few workers check the structure of what the scaling
measurements return (every N present for every system, positive times in
the right order, ratios computed from the two medians of one run), that the
descriptor counts equal the formulas exactly (a real nginx and ngxlab: 2N in
the master and N in each worker; without the closing in
ngx_worker_process_init: N + k + 1 in the worker in slot k), that every
process a measurement started is gone afterwards, and that nginx's side is
reported as skipped, with the reason, when there is no nginx. Tests that need
nginx take the ``nginx_bin`` fixture: skipped without nginx, failed under
NGXLAB_STRICT=1. No speed is asserted.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from importlib import resources

import pytest

from ngxlab.lab import descriptors, figures, quitting, side_by_side, timing
from ngxlab.lab.nginx import nginx_available

pytestmark = pytest.mark.timeout(120)

MISSING = "/nonexistent/ngxlab-test/nginx"


def _gone(pid: int) -> bool:
    """The process is gone (or a zombie of someone else's), or the pid now
    belongs to a process that is neither nginx nor ngxlab."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        with open(f"/proc/{pid}/comm") as f:
            comm = f.read().strip()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            floor = b"ngxlab.lab.floor" in f.read()
    except OSError:
        return True
    state = data[data.rfind(b")") + 2:].split()[0]
    return state in (b"Z", b"X") or not (comm.startswith("nginx") or comm.startswith("ngxlab")
                                         or floor)


def _assert_all_gone(runs) -> None:
    for r in runs:
        if r.system != "inprocess":
            assert _gone(r.master_pid), f"{r.system} master {r.master_pid} still alive"
        for pid in r.worker_pids:
            assert _gone(pid), f"{r.system} worker {pid} still alive"


# -- the formulas ------------------------------------------------------------------


def test_formulas():
    for n in range(1, 40):
        assert descriptors.mesh_total(n) == n * n + 2 * n == 2 * n + n * n
        per = [descriptors.without_closing_worker(n, k) for k in range(n)]
        assert per == [n + k + 1 for k in range(n)]
        assert descriptors.without_closing_total(n) == 2 * n + sum(per) == (3 * n * n + 5 * n) // 2
    assert descriptors.mesh_total(32) == 1088 and descriptors.without_closing_total(32) == 1616


# -- start-up to the full mesh, and QUIT ----------------------------------------------


@pytest.fixture(scope="module")
def startup(nginx_bin):
    """One quick interleaved run: N = 1 and 3, two repeats, QUITs timed."""
    return timing.startup_to_mesh((1, 3), 2, quick=True, nginx_binary=nginx_bin,
                                   measure_quit=True)


def test_startup_structure(startup):
    r = startup
    assert r.nginx_skipped is None and r.nginx_version
    assert r.ns == (1, 3) and r.repeats == 2
    assert r.systems() == ["ngxlab", "nginx", "floor", "inprocess"]
    for n in r.ns:
        for s in r.systems():
            runs = [x for x in r.runs if x.system == s and x.n == n]
            assert len(runs) == 2, (s, n)
            for x in runs:
                assert x.confirmed, x.detail
                assert x.mesh_ms > 0 and x.first_worker_ms > 0 and math.isfinite(x.mesh_ms)
                assert x.first_worker_ms <= x.all_forked_ms <= x.mesh_ms
                assert x.polls >= 1 and x.poll_us > 0
                assert len(x.worker_pids) == n and len(x.worker_cpu_list) == n
                assert x.workers_cpu_ms > 0 and x.worker_page_faults > 0
                if s == "inprocess":
                    assert x.master_page_faults is None      # this process is the master
                else:
                    assert x.master_page_faults > 0
                if s == "inprocess":
                    assert x.master_cpu_ms is None and x.quit_workers_ms is None
                elif s == "floor":                          # its QUIT is not timed
                    assert x.master_cpu_ms > 0 and x.quit_workers_ms is None
                else:
                    assert x.master_cpu_ms > 0
                    assert 0 < x.quit_workers_ms <= x.quit_master_ms
        s = r.samples("ngxlab", n)
        assert s.reference == "nginx" and len(s.values) == len(s.reference_values) == 2
        assert r.ratio(n) == pytest.approx(statistics.median(r.values("ngxlab", n))
                                           / statistics.median(r.values("nginx", n)))
        # the master's page faults per further worker: from the smallest N on
        if n == min(r.ns):
            assert r.master_faults_per_worker("ngxlab", n) is None
        else:
            for s in ("ngxlab", "nginx", "floor"):
                per = r.master_faults_per_worker(s, n)
                assert per == pytest.approx(
                    (statistics.median(r.values(s, n, "master_page_faults"))
                     - statistics.median(r.values(s, min(r.ns), "master_page_faults")))
                    / (n - min(r.ns))), s
            # a Python master copies pages after every fork; nginx's hardly any
            assert r.master_faults_per_worker("ngxlab", n) > r.master_faults_per_worker("nginx", n)
        after = r.after_first_fork("ngxlab", n)
        assert len(after) == 2 and all(x >= 0 for x in after)
        # the Python floor splits the ratio: ngxlab / floor times floor / nginx
        lab, floor, ngx = (statistics.median(r.values(s, n)) for s in ("ngxlab", "floor", "nginx"))
        assert r.floor_ratio(n) == pytest.approx(lab / floor)
        assert r.floor_over_nginx(n) == pytest.approx(floor / ngx)
        assert r.floor_ratio(n) * r.floor_over_nginx(n) == pytest.approx(r.ratio(n))
    # interleaved: every (N, repeat) has one run of each system, and the first alternates
    firsts = []
    for rep in range(2):
        for n in r.ns:
            group = sorted((x for x in r.runs if x.n == n and x.repeat == rep),
                           key=lambda x: x.order)
            assert [x.order for x in group] == [0, 1, 2, 3]
            assert {x.system for x in group} == {"ngxlab", "nginx", "floor", "inprocess"}
            firsts.append(group[0].system)
    assert len(set(firsts)) > 1
    # Python's own start-up, measured in the same rotation
    assert set(r.python) == {"python -c pass", "python -c 'import ngxlab.nginx'",
                             "python -m ngxlab --version", "nginx -v"}
    for smp in r.python.values():
        assert smp.values and all(v > 0 for v in smp.values)
    # from the first fork on: the same runs, both sides, never below zero;
    # no ratio at all when nginx's mesh was complete at the poll that saw
    # its first worker (a median of 0 ms: below the poll's resolution)
    ours = statistics.median([x.mesh_ms - x.first_worker_ms for x in r.runs
                              if x.system == "ngxlab" and x.n == 3])
    theirs = statistics.median([x.mesh_ms - x.first_worker_ms for x in r.runs
                                if x.system == "nginx" and x.n == 3])
    assert ours >= 0 and theirs >= 0
    if theirs == 0 or ours == 0:
        assert r.ratio_after_first_fork(3) is None
    else:
        assert r.ratio_after_first_fork(3) == pytest.approx(ours / theirs)
        assert r.ratio_after_first_fork(3) > 0
    rows = r.ratios()
    assert [row["measure"] for row in rows][:2] == ["start-up to full mesh, N=1",
                                                     "start-up to full mesh, N=3"]
    pairs = [(row["subject"], row["reference"]) for row in rows]
    assert pairs[:6] == [("ngxlab", "nginx")] * 2 + [("ngxlab", "floor")] * 2 \
        + [("floor", "nginx")] * 2
    for row in rows[2:6]:
        assert row["ratio"] == pytest.approx(row["subject_median"] / row["reference_median"])
    assert all(row["target"] is None for row in rows)        # the targets are at N = 32
    json.dumps(r.to_dict())
    assert "ngxlab ms" in r.table() and "ngxlab/floor" in r.table()
    assert "ngxlab beside the Python floor:" in r.table()
    assert "Python: CPython" in r.table() or "Python: " in r.table()
    _assert_all_gone(r.runs)


def test_quit_reuses_the_startup_runs(startup):
    q = quitting.quit_to_exit(reuse=startup)
    for n in q.ns:
        for s in ("ngxlab", "nginx"):
            smp = q.samples(s, n)
            assert len(smp.values) == 2 and all(v > 0 for v in smp.values)
        assert q.ratio(n) == pytest.approx(statistics.median(q.samples("ngxlab", n).values)
                                           / statistics.median(q.samples("nginx", n).values))
    assert len(q.ratios()) == 2 * len(q.ns)
    json.dumps(q.to_dict())


def test_quit_to_exit_alone(nginx_bin):
    q = quitting.quit_to_exit((2,), 1, nginx_binary=nginx_bin)
    assert {(x.system, x.n) for x in q.runs} == {("ngxlab", 2), ("nginx", 2)}
    for x in q.runs:
        assert 0 < x.quit_workers_ms <= x.quit_master_ms
    _assert_all_gone(q.runs)


def test_calibration_is_what_the_census_says(nginx_bin):
    ngx = timing.calibrate("nginx", binary=nginx_bin)
    lab = timing.calibrate("ngxlab")
    inproc = timing.calibrate("inprocess")
    assert ngx.master_other == lab.master_other          # log, listening socket, stdio
    assert inproc.master_other is None
    for cal in (ngx, lab, inproc):
        assert cal.worker_other > 0 and cal.epoll_targets >= 2
        assert cal.worker_total(5) == 5 + cal.worker_other
    # a Python worker's extra descriptors: the signal wakeup pipe (2) and the
    # pidfd that watches the master, against nginx's eventfd
    assert lab.worker_other == ngx.worker_other + 2
    with pytest.raises(ValueError):
        timing.calibrate("apache")


# -- descriptors against N ------------------------------------------------------------


def test_descriptors_equal_the_formulas(nginx_bin):
    d = descriptors.descriptors_vs_n((1, 2, 5), nginx_binary=nginx_bin)
    assert d.nginx_skipped is None
    assert d.systems() == ["nginx", "ngxlab", "ngxlab, no closing"]
    for n in (1, 2, 5):
        for system in ("nginx", "ngxlab"):
            c = d.get(system, n)
            assert c.master_channel == 2 * n
            assert c.worker_channel == [n] * n
            assert c.channel_total == n * n + 2 * n == descriptors.mesh_total(n)
            assert c.pairs == n and c.matches_formula
        c = d.get("ngxlab, no closing", n)
        assert c.master_channel == 2 * n
        assert c.worker_channel == [n + k + 1 for k in range(n)]
        assert c.channel_total == descriptors.without_closing_total(n) == (3 * n * n + 5 * n) // 2
        assert c.matches_formula
    # the same totals per role in nginx and ngxlab's masters
    assert [d.get("nginx", n).master_total for n in (1, 2, 5)] == \
        [d.get("ngxlab", n).master_total for n in (1, 2, 5)]
    assert d.all_match
    json.dumps(d.to_dict())


def test_no_ratio_after_first_fork_below_the_polls_resolution():
    # a recorded run, then ngxlab's mesh at N=4 seen complete at the poll
    # that saw its first worker (0 ms after the first fork): no ratio there,
    # as where nginx's is 0 ms, instead of a ratio of 0
    rec = json.loads(resources.files("ngxlab.lab").joinpath("data/recorded_mesh.json")
                     .read_text())
    r = timing.StartupResult.from_dict(rec["startup_to_mesh"])
    assert r.ratio_after_first_fork(4) > 0 and r.ratio_after_first_fork(16) > 0
    r.runs = [dataclasses.replace(x, mesh_ms=x.first_worker_ms)
              if x.system == "ngxlab" and x.n == 4 else x for x in r.runs]
    assert statistics.median(r.after_first_fork("ngxlab", 4)) == 0
    assert r.ratio_after_first_fork(4) is None
    assert r.ratio_after_first_fork(16) > 0
    after = {x["measure"]: x["ratio"] for x in r.ratios()
             if x["measure"].startswith("first fork to full mesh")}
    assert after["first fork to full mesh, N=4"] is None
    assert after["first fork to full mesh, N=16"] == pytest.approx(r.ratio_after_first_fork(16))
    r.table()


# -- without nginx -----------------------------------------------------------------------


def test_nginx_missing_is_reported_as_skipped():
    path, why = nginx_available(MISSING)
    assert path is None and why
    r = timing.startup_to_mesh((1,), 1, nginx_binary=MISSING, inprocess=False, python=False)
    assert r.nginx_skipped == why
    assert r.systems() == ["ngxlab", "floor"]
    assert r.floor_ratio(1) is not None and r.floor_over_nginx(1) is None
    assert not any(x.system == "nginx" for x in r.runs)
    assert r.ratio(1) is None and r.ratio_after_first_fork(1) is None
    assert r.samples("nginx", 1).skipped == why
    assert r.samples("ngxlab", 1).ratio is None          # never a ratio against nothing
    assert "skipped" in r.table()
    figures.plot_startup(r)                                # draws the reason instead
    d = descriptors.descriptors_vs_n((2,), nginx_binary=MISSING)
    assert d.nginx_skipped == why and d.get("nginx", 2) is None
    assert d.get("ngxlab", 2).matches_formula
    r2 = timing.startup_to_mesh((1,), 1, nginx=False, inprocess=False, python=False)
    assert "nginx=False" in r2.nginx_skipped
    _assert_all_gone(r.runs)


def test_target_repeats_add_rounds_at_the_targets_n_only():
    # N = 32 carries the start-up targets: it gets its own further rounds
    assert timing.STARTUP_TARGET[0] == timing.FLOOR_TARGET[0] == 32
    r = timing.startup_to_mesh((1, 32), 1, target_repeats=2, nginx=False, inprocess=False,
                               python=False, measure_quit=True)
    assert r.target_repeats == 2 and r.repeats_at(1) == 1 and r.repeats_at(32) == 2
    for s in ("ngxlab", "floor"):
        assert len(r.values(s, 1)) == 1 and len(r.values(s, 32)) == 2, s
        assert r.samples(s, 32).params["repeats"] == 2
    # the further round keeps the rotation: the other system goes first
    firsts = [x.system for x in r.runs if x.n == 32 and x.order == 0]
    assert sorted(firsts) == ["floor", "ngxlab"]
    assert all(x.confirmed for x in r.runs), [x.detail for x in r.runs]
    back = timing.StartupResult.from_dict(r.to_dict())
    assert back.target_repeats == 2 and back.repeats_at(32) == 2
    assert quitting.quit_to_exit(reuse=r).median("ngxlab", 32) is not None
    _assert_all_gone(r.runs)
    # no more rounds than repeats, or no target's N in ns: nothing is added
    r2 = timing.startup_to_mesh((1,), 1, target_repeats=3, nginx=False, inprocess=False,
                                python=False, floor=False)
    assert r2.target_repeats is None and len(r2.runs) == 1 and r2.repeats_at(1) == 1


def test_bad_arguments():
    with pytest.raises(ValueError):
        timing.startup_to_mesh((0,), 1)
    with pytest.raises(ValueError):
        quitting.quit_to_exit(reuse=timing.startup_to_mesh((1,), 1, nginx=False,
                                                           inprocess=True, python=False))


# -- the section for `ngxlab bench` ---------------------------------------------------------


@pytest.fixture(scope="module")
def matplotlib_fonts(startup):
    """Draw the three figures once, before the leak guard's first look:
    matplotlib keeps every font file it has rendered with open, in a
    process-wide cache, for the life of the process (a cache, not a leak)."""
    import io

    counts = [descriptors.DescriptorCount(system=s, n=1, master_channel=2, master_total=7,
                                      worker_channel=[1], worker_total=[8], channel_total=3,
                                      pairs=1) for s in ("nginx", "ngxlab")]
    desc = descriptors.DescriptorsResult(ns=(1,), counts=counts, nginx_skipped=None,
                                     machine=startup.machine)
    for fig in (figures.plot_startup(startup),
                figures.plot_quit(quitting.quit_to_exit(reuse=startup)),
                figures.plot_descriptors(desc)):
        fig.savefig(io.BytesIO(), format="png")


# -- results as JSON, and the recordings shipped with the book -----------------------------


def test_results_survive_json(startup):
    again = timing.StartupResult.from_dict(json.loads(json.dumps(startup.to_dict())))
    assert again.table() == startup.table() and again.ratios() == startup.ratios()
    q = quitting.quit_to_exit(reuse=startup)
    assert quitting.QuitResult.from_dict(json.loads(json.dumps(q.to_dict()))).table() == q.table()


def _recorded(name: str) -> dict:
    from importlib import resources
    return json.loads(resources.files("ngxlab.lab").joinpath(f"data/{name}").read_text())


def test_recorded_mesh_is_a_labelled_real_run():
    rec = _recorded("recorded_mesh.json")
    assert rec["date"] and rec["nginx"] and rec["machine"] and "record_mesh" in rec["what"]
    startup = timing.StartupResult.from_dict(rec["startup_to_mesh"])
    desc = descriptors.DescriptorsResult.from_dict(rec["descriptors_vs_n"])
    assert startup.nginx_skipped is None and startup.nginx_version == rec["nginx"]
    assert startup.all_confirmed and desc.all_match
    for n in startup.ns:
        assert startup.ratio(n) > 0 and len(startup.values("nginx", n)) == startup.repeats
    assert desc.systems() == ["nginx", "ngxlab", "ngxlab, no closing"]


def test_recorded_side_by_side_is_a_labelled_real_run():
    rec = _recorded("recorded_side_by_side.json")
    assert rec["date"] and rec["nginx"] and rec["machine"]
    sbs = side_by_side.SideBySide.from_dict(rec["side_by_side"])
    n = sbs.n
    assert sbs.counts("nginx", "startup") == {"OPEN_CHANNEL": n * (n - 1) // 2}
    for phase in ("startup", "reopen", "kill_worker:1"):
        assert sbs.diff(phase) == []
    for phase in ("reload", "quit"):
        assert sbs.diff(phase, without=["CLOSE_CHANNEL"]) == []


# -- side by side, live -----------------------------------------------------------------------


def test_side_by_side_live(nginx_bin, strace_bin):
    n = 3
    sbs = side_by_side.side_by_side(n, nginx_binary=nginx_bin)
    a, b = sbs.census["nginx"], sbs.census["ngxlab"]
    assert [c[:3] for c in a.counts()] == [c[:3] for c in b.counts()]   # role, slot, channels
    assert a.counts()[0][2] == 2 * n and all(c[2] == n for c in a.counts()[1:])
    for view in (a, b):                    # nothing of this machine's paths on a page
        for p in view.processes:
            whats = [what.replace("/dev/null", "") for _fd, _k, _l, what in p["fds"]]
            assert not any("/" in what for what in whats), p
    assert sbs.phases == ["startup", *side_by_side.SIDE_BY_SIDE_ACTIONS]
    for phase in ("startup", "reopen", "kill_worker:1"):
        assert sbs.diff(phase) == [], phase
    for phase in ("reload", "quit"):
        assert sbs.diff(phase, without=["CLOSE_CHANNEL"]) == [], phase
    for system in ("nginx", "ngxlab"):
        closes = sbs.counts(system, "reload").get("CLOSE_CHANNEL", 0)
        assert n * n <= closes <= n * n + n * (n - 1) // 2, (system, closes)
        assert sbs.counts(system, "reload")["OPEN_CHANNEL"] == n * n + n * (n - 1) // 2
    again = side_by_side.SideBySide.from_dict(json.loads(json.dumps(sbs.to_dict())))
    assert again.diff("reload") == sbs.diff("reload")
