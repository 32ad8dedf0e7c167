"""The master at scale (``ngxlab.lab.scale``): a reload and a QUIT with
hundreds of workers complete, and the side-by-side measurement runs.

Timing bounds here are generous on purpose: they separate "completes" from
"stalls" (a reload that used to hang the master for minutes at 300 workers
and more), not fast from slow; ``python -m ngxlab.lab.scale`` measures the
ratio to nginx."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import time
from pathlib import Path

import pytest
from _tools import wait_for

from ngxlab.lab import proc, scale
from ngxlab.lab.run import MasterProcess


@pytest.mark.timeout(600)
def test_300_workers_reload_and_quit():
    run = scale.measure_one("ngxlab", 300, timeout=300)
    assert run.settled, run          # the new generation complete, the old one gone
    assert run.quit_s < 60, run
    assert run.reload_master_cpu_s > 0 and run.reload_workers_cpu_s > 0
    # each old worker is told about each of the 300 new ones: woken at
    # least once, and never more often than once per message and poll
    assert 1 <= run.old_wakes <= 2 * 300 + run.polls, run
    assert run.old_wake_us > 0, run


def test_voluntary_switches_count_sleeps():
    before = proc.voluntary_switches(os.getpid())
    for _ in range(3):
        time.sleep(0.001)
    assert proc.voluntary_switches(os.getpid()) >= before + 3
    child = subprocess.Popen(["true"])
    child.wait(timeout=10)
    assert proc.voluntary_switches(child.pid) is None  # reaped: gone


@pytest.mark.timeout(120)
def test_the_floor_reloads_and_quits_as_measured():
    # the Python floor through the same measurement: settled (N new
    # children, the old ones gone, the settled descriptor counts), each old
    # worker woken by the OPEN_CHANNELs and its QUIT, and a QUIT to the exit
    run = scale.measure_one("floor", 20, timeout=60, start_timeout=60)
    assert run.system == "floor" and run.settled, run
    assert run.quit_s < 30, run
    assert 1 <= run.old_wakes <= 2 * 20 + run.polls, run
    assert run.old_wake_us > 0 and run.reload_workers_cpu_s > 0, run


@pytest.mark.timeout(180)
def test_side_by_side_with_nginx(nginx_bin):
    result = scale.scale(4, repeats=2)
    # interleaved, the order rotating: nginx first, then ngxlab first
    assert [r.system for r in result.runs] == ["nginx", "ngxlab", "floor",
                                               "ngxlab", "floor", "nginx"]
    assert all(r.settled for r in result.runs), result.runs
    assert result.reload_ratio > 0 and result.quit_ratio > 0
    rows = result.ratios()
    assert [(x["subject"], x["reference"]) for x in rows] == \
        [("ngxlab", "nginx")] * 4 + [("ngxlab", "floor")] * 4 + [("floor", "nginx")] * 4
    # the floor splits the ratio to nginx: ngxlab / floor x floor / nginx
    reload = [x["ratio"] for x in rows if x["measure"].startswith("reload of 4 workers, HUP")]
    assert reload[0] == pytest.approx(reload[1] * reload[2])
    assert all(x["target"] is None for x in rows)      # the targets are at 400 workers
    text = result.table()
    assert "ngxlab/nginx" in text and "ngxlab/floor" in text and "floor/nginx" in text
    assert [r.system for r in scale.scale(4, floor=False).runs] == ["nginx", "ngxlab"]


@pytest.mark.timeout(600)
def test_a_reload_of_300_workers_with_one_stopped():
    """One old worker stopped (SIGSTOP) during a reload of 300: its channel
    fills with the new generation's OPEN_CHANNELs and the old ones'
    CLOSE_CHANNELs. The master goes on (it used to wait a second per
    message for that channel: minutes), answers a signal, and once the
    worker is resumed (it gets its QUIT by kill(), queued behind its
    channel) the reload completes."""
    n = 300
    with MasterProcess(workers=n, start_timeout=300) as m:
        master = m.master_pid
        old = set(proc.children(master, zombies=True))
        base_master = proc.fd_count(master)
        base_worker = statistics.mode(proc.fd_count(p) for p in old)
        stopped = m.slots[0]
        os.kill(stopped, signal.SIGSTOP)
        try:
            os.kill(master, signal.SIGHUP)
            # every old worker but the stopped one gone, the new generation complete
            wait_for(lambda: len(set(proc.children(master, zombies=True)) - old) == n
                     and set(proc.children(master, zombies=True)) & old == {stopped}, 240, "the reload, but one")
            since = m.log_offset()
            t = time.monotonic()
            m.send_signal(signal.SIGUSR1)
            m.wait_log(rf"\] {master}#0: reopening logs", since=since, timeout=30)
            answered = time.monotonic() - t
        finally:
            os.kill(stopped, signal.SIGCONT)
        # The master answers after the pass it is in: the reap of ~300 old
        # workers, a CLOSE_CHANNEL to each of ~300 peers, on 2 cores shared
        # with 300 workers that read them (seconds). Waiting a second per
        # message for the stopped worker's full channel took minutes.
        assert answered < 60, answered
        wait_for(lambda: not set(proc.children(master, zombies=True)) & old and proc.fd_count(master) == base_master
                 and all(proc.fd_count(k) == base_worker for k in set(proc.children(master, zombies=True))),
                 120, "the reload complete after SIGCONT", interval=0.1)
        m.send_signal(signal.SIGQUIT)
        m.wait_exit(120)


def test_the_polls_descriptor_count_is_the_census_count():
    """The reload's polls count a process's descriptors with one stat() of
    /proc/PID/fd (its size, on Linux 6.2 and later) where the census lists
    them: the same number, and -1 once the process is gone."""
    r, w = os.pipe()
    child = subprocess.Popen(["sleep", "30"], pass_fds=(r, w))
    try:
        wait_for(lambda: proc.comm(child.pid) == "sleep", 10, "the child's exec")
        # asleep in nanosleep: right after the exec, sleep's own start-up may
        # still hold a file open (the locale archive) for a moment
        proc.wait_state(child.pid, "S", timeout=10)
        assert scale._fd_count(child.pid) == proc.fd_count(child.pid) == 5
    finally:
        os.close(r)
        os.close(w)
        child.kill()
        child.wait(timeout=10)
    assert scale._fd_count(child.pid) == proc.fd_count(child.pid) == -1


@pytest.mark.timeout(120)
def test_the_wake_ladder_runs_every_rung_and_leaves_nothing():
    from ngxlab import process_cycle as pc
    originals = {name: getattr(pc, name) for name in
                 ("ngx_worker_process_cycle", "ngx_channel_handler", "ngx_read_channel")}
    result = scale.wake_ladder(4, rounds=3, repeats=1)
    assert [r.layer for r in result.runs] == list(scale.LAYERS)
    for r in result.runs:
        # every message was read (the send waits for that), and read by a
        # worker that was woken for it at least now and then
        assert r.messages == 2 * 3 * 4, r
        assert r.cpu_us > 0 and r.wakes > 0, r
    assert set(result.to_dict()["medians"]) == set(scale.LAYERS)
    # the mirrors are this process's own again, and every worker is reaped
    assert {name: getattr(pc, name) for name in originals} == originals
    assert proc.children(os.getpid(), zombies=True) == []


def test_the_saved_wake_ladder_has_every_rung():
    import json
    from importlib.resources import files
    saved = json.loads(files("ngxlab.lab").joinpath("data/wake-ladder.json").read_text())
    assert set(saved["medians"]) == set(scale.LAYERS)
    assert all(saved["medians"][layer] > 0 for layer in scale.LAYERS)
    assert saved["workers"] >= 300 and len(saved["runs"]) >= 3 * len(scale.LAYERS)
    # the README quotes every rung's median from this file
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    paragraph = readme.split("python -m ngxlab.lab.scale --wakes", 1)[1].split("\n\n", 1)[0]
    flat = " ".join(paragraph.split())
    for layer in scale.LAYERS:
        assert f"{saved['medians'][layer]:.1f} µs" in flat, layer
    # and the CPU per wake of every rung, of this run and of the earlier one
    earlier = json.loads(files("ngxlab.lab").joinpath("data/wake-ladder-v1045.json").read_text())
    for name, data in (("wake-ladder.json", saved), ("wake-ladder-v1045.json", earlier)):
        result = scale.LadderResult(data["workers"], data["rounds"],
                                    [scale.LadderRun(**r) for r in data["runs"]],
                                    data["machine"])
        per_wake = [f"{result.median_per_wake(layer):.1f}" for layer in scale.LAYERS]
        assert f"`ngxlab/lab/data/{name}`" in flat
        assert ", ".join(per_wake[:-1]) + f" and {per_wake[-1]} µs" in flat, name
    counts = saved["bytecodes"]
    assert f"floor reads a message in {counts['floor']:.0f} bytecode" in flat
    assert f"the mirror in {counts['mirror']:.0f}" in flat
    for name in ("ngx_channel_handler", "ngx_read_channel", "ngx_process_events_and_timers"):
        assert f"`{name}` {counts['mirror by function'][name]:.0f}" in flat, name


def test_the_readme_reads_the_kept_scale_run_as_it_is():
    """The paragraph after the tables weighs the reload target against the
    floor with the kept run's own figures: floor / nginx, the room that
    leaves above the floor, ngxlab / floor, whether that is a miss, and
    each repeat's three ratios."""
    import json
    from importlib.resources import files
    kept = json.loads(files("ngxlab.lab").joinpath("data/bench-scale.json").read_text())
    run = kept["runs"][0]
    ratios = {(r["subject"], r["reference"]): r["ratio"] for r in run["ratios"]
              if r["measure"].endswith("HUP to settled")}
    floor_nginx, ngxlab_floor = ratios[("floor", "nginx")], ratios[("ngxlab", "floor")]
    repeats = {}
    for r in run["scale"]["runs"]:
        repeats.setdefault(r["repeat"], {})[r["system"]] = r["reload_s"]

    def each(a, b):
        values = [f"{t[a] / t[b]:.2f}" for _, t in sorted(repeats.items())]
        return ", ".join(values[:-1]) + f" and {values[-1]}"

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    paragraph = " ".join(readme.split("floor / nginx is Python's share of the reload,", 1)[1]
                         .split("\n\n", 1)[0].split())
    assert paragraph.startswith(f"{floor_nginx:.2f} in the run above"), paragraph
    room = 2 / round(floor_nginx, 2)            # as the sentence computes it
    assert f"2 / {floor_nginx:.2f} = {room:.2f}" in paragraph
    assert f"it measures {ngxlab_floor:.2f}, so the target is " \
        f"{'missed' if ngxlab_floor > room else 'met'}" in paragraph
    assert f"ngxlab / nginx was {each('ngxlab', 'nginx')}" in paragraph
    assert f"ngxlab / floor {each('ngxlab', 'floor')}" in paragraph
    assert f"floor / nginx {each('floor', 'nginx')}" in paragraph


def test_bytecodes_per_message_are_counted_per_function():
    counts = scale.bytecodes_per_message(messages=6)
    by = counts["mirror by function"]
    assert counts["mirror"] == pytest.approx(sum(by.values()))
    for name in ("ngx_process_events_and_timers", "ngx_channel_handler", "ngx_read_channel"):
        assert by[name] > 0, by
    # the floor's reading is one loop; the mirror's goes through nginx's layers
    assert 0 < counts["floor"] < counts["mirror"]
    assert proc.children(os.getpid(), zombies=True) == []
