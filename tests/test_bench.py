"""ngxlab.lab.cost, fdpass, compare, report, figures and bench: smoke runs with tiny sizes.

These check structure and sanity (positive numbers, ratios computed from the
two medians, files written, the C floor built and run), never a speed: the
benchmark reports targets, tests do not assert them. The leak guard
(conftest.py) checks after each test that no descriptor stayed open (received
descriptors included) and that every echo child was reaped.
"""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
import subprocess
import sys
import threading

import pytest

from _tools import child_pids
from ngxlab.lab import _cbuild, bench, cost, fdpass, figures, report, scale
from ngxlab.lab.compare import Samples

pytestmark = pytest.mark.timeout(120)

TINY = dict(n=20, batch=5, rounds=2)       # 2 batches per round, 4 samples


def _check_samples(s: Samples, *, unit: str, reference: str) -> None:
    assert s.skipped is None, s.skipped
    assert s.unit == unit and s.reference == reference
    assert s.values and all(v > 0 and math.isfinite(v) for v in s.values)
    assert s.reference_values and all(v > 0 for v in s.reference_values)
    assert s.p10 <= s.median <= s.p90
    # the ratio is of the two medians of this run's samples (computed here independently)
    assert s.ratio == pytest.approx(statistics.median(s.values)
                                    / statistics.median(s.reference_values))


# -- the numbers -----------------------------------------------------------------


def test_samples_statistics_and_ratio():
    s = Samples(measure="m", variant="a", unit="ns", values=[5.0, 1.0, 3.0, 2.0, 4.0],
                reference="b", reference_values=[2.0, 2.0, 1.0])
    assert s.median == 3.0
    assert s.p10 == pytest.approx(1.4) and s.p90 == pytest.approx(4.6)
    assert s.reference_median == 2.0
    assert s.ratio == 1.5
    d = s.to_dict()
    assert d["median"] == 3.0 and d["ratio"] == 1.5 and d["values"] == [5.0, 1.0, 3.0, 2.0, 4.0]
    json.dumps(d)

    empty = Samples(measure="m", variant="c", unit="ns", skipped="no compiler")
    assert empty.median is None and empty.ratio is None
    assert "skipped" in repr(empty)


PYTHON_VARIANTS = [v for v in cost.ROUND_TRIP_VARIANTS if v != "c"]


@pytest.mark.parametrize("with_fd", [False, True], ids=["no_fd", "one_fd"])
@pytest.mark.parametrize("variant", PYTHON_VARIANTS)
def test_round_trip_python_variants(variant, with_fd):
    s = cost.round_trip(variant, with_fd=with_fd, **TINY)
    if with_fd and variant not in cost.DESCRIPTOR_VARIANTS:
        assert s.skipped and "descriptor" in s.skipped
        assert s.values == [] and s.ratio is None
        return
    _check_samples(s, unit="ns", reference="raw")
    assert len(s.values) == 4
    assert s.params["n"] == 20 and s.params["with_fd"] == with_fd
    if variant == "raw":
        assert s.ratio == 1.0


@pytest.mark.parametrize("with_fd", [False, True], ids=["no_fd", "one_fd"])
def test_round_trip_c_floor(cc, with_fd):
    s = cost.round_trip("c", with_fd=with_fd, **TINY)
    _check_samples(s, unit="ns", reference="raw")
    assert len(s.values) == 4


def test_round_trips_share_one_reference():
    got = cost.round_trips(["ngxlab", "os_pipe"], reference="mp_pipe", **TINY)
    assert list(got) == ["ngxlab", "os_pipe", "mp_pipe"]
    ref = got["mp_pipe"].values
    for s in got.values():
        assert s.reference == "mp_pipe" and s.reference_values == ref
        assert s.ratio == pytest.approx(statistics.median(s.values) / statistics.median(ref))


@pytest.mark.parametrize("placement", cost.PLACEMENTS)
def test_placement_is_recorded_and_undone(placement):
    import os

    before = os.sched_getaffinity(0)
    s = cost.round_trip("raw", placement=placement, **TINY)
    assert os.sched_getaffinity(0) == before
    assert s.params["placement"].startswith(placement if len(before) > 1 or placement != "split"
                                            else "same")
    assert len(s.values) == 4
    f = fdpass.fds_per_second(16, seconds=0.04, rounds=1, interval=0.02, placement=placement)
    assert os.sched_getaffinity(0) == before and f.values
    with pytest.raises(ValueError, match="placement"):
        cost.round_trip("raw", placement="anywhere", **TINY)


def test_round_trip_rejects_unknown_variant():
    with pytest.raises(ValueError, match="unknown variant"):
        cost.round_trip("carrier_pigeon", **TINY)


def test_an_interrupted_run_leaves_no_child(sigint_raises):
    # A real SIGINT (what a notebook's interrupt sends) in the middle of
    # measuring: the echo child must be ended and reaped, its descriptors
    # closed (the leak guard checks both after the test).
    before = child_pids()
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            cost.round_trip("ngxlab", with_fd=True, n=10_000_000, batch=20, rounds=1)
    finally:
        timer.cancel()
    assert child_pids() <= before


# -- descriptors per second ------------------------------------------------------


@pytest.mark.parametrize("per_message", fdpass.FDS_PER_MESSAGE)
def test_fds_per_second(cc, per_message):
    s = fdpass.fds_per_second(per_message, seconds=0.1, rounds=2, interval=0.02)
    _check_samples(s, unit="fds/s", reference="c")
    assert s.variant == "python"
    assert s.params["per_message"] == per_message
    assert s.params["window_messages"] * min(per_message, 16384) >= per_message


def test_fds_per_message_limits():
    with pytest.raises(ValueError, match="SCM_MAX_FD"):
        fdpass.fds_per_second(fdpass.SCM_MAX_FD + 1, seconds=0.01)
    with pytest.raises(ValueError):
        fdpass.fds_per_second(0, seconds=0.01)


def test_scm_rights_limit_is_253():
    # The fact the fds_per_second docstring states, checked on this kernel.
    assert fdpass.scm_rights_limit() == {253: "ok", 254: "EINVAL"}


# -- the C floor ---------------------------------------------------------------------


def test_c_floor_compiles_and_runs(cc):
    program = _cbuild.build("floor")
    assert program.is_file()
    assert _cbuild.build("floor") == program          # cached
    rt = subprocess.run([str(program), "rt", "40", "10", "5", "1"], capture_output=True,
                        text=True, timeout=30)
    assert rt.returncode == 0, rt.stderr
    out = json.loads(rt.stdout)
    assert out["mode"] == "rt" and out["with_fd"] == 1 and out["child_status"] == 0
    assert len(out["samples_ns"]) == 4 and min(out["samples_ns"]) > 0
    fds = subprocess.run([str(program), "fds", "253", "0.05", "0.01"], capture_output=True,
                         text=True, timeout=30)
    assert fds.returncode == 0, fds.stderr
    out = json.loads(fds.stdout)
    assert out["fds"] > 0 and out["fds"] % 253 == 0 and out["child_status"] == 0
    bad = subprocess.run([str(program), "fds", "254", "0.05", "0.01"], capture_output=True,
                         text=True, timeout=30)
    assert bad.returncode == 2 and "PER_MESSAGE" in bad.stderr


def test_without_a_compiler_c_is_skipped_not_faked(monkeypatch):
    monkeypatch.setattr(_cbuild, "_built", {})
    monkeypatch.setattr(_cbuild, "compiler", lambda: None)
    s = cost.round_trip("c", **TINY)
    assert s.skipped and "compiler" in s.skipped
    assert s.values == [] and s.median is None and s.ratio is None
    rows = cost.ratio_table([cost.round_trips(["ngxlab", "c"], **TINY)], [])
    assert all(r["ratio"] is None for r in rows if "c" in (r["subject"], r["reference"]))

    f = fdpass.fds_per_second(1, seconds=0.04, rounds=1, interval=0.02)
    assert f.values and f.reference_values == [] and f.ratio is None
    assert "compiler" in f.params["reference_skipped"]


# -- the rest ------------------------------------------------------------------------


def test_machine_info():
    m = report.machine_info()
    assert m.cores >= 1 and 1 <= m.usable_cores <= m.cores
    assert m.kernel and m.cpu_model and m.python.startswith(".".join(map(str, sys.version_info[:2])))
    assert m.date[:2] == "20"
    line = m.line()
    assert "Python" in line and m.kernel in line


def test_profile_round_trip_names_the_mirror():
    text = cost.profile_round_trip("ngxlab", n=200)
    assert "ngx_read_channel" in text and "ngx_write_channel" in text


def test_progress_without_tqdm(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)      # import tqdm raises ImportError
    s = cost.round_trip("os_pipe", progress=True, **TINY)
    assert len(s.values) == 4


@pytest.fixture(scope="module")
def matplotlib_fonts():
    """Draw both figures once, before the leak guard's first look.

    matplotlib keeps every font file it has rendered with open, in a
    process-wide cache (font_manager.get_font), for the life of the process:
    a cache, not a leak, and it would otherwise be charged to the first test
    that draws."""
    import io

    machine = report.machine_info()
    rts = {v: Samples(measure="round trip, no descriptor", variant=v, unit="ns",
                      values=[1000.0, 2000.0], reference="raw",
                      reference_values=[1000.0, 2000.0], params={"batch": 1})
           for v in cost.ROUND_TRIP_VARIANTS}
    fds = [Samples(measure="d", variant="python", unit="fds/s", values=[1e5, 2e6],
                   reference="c", reference_values=[1e5, 2e6], params={"per_message": k})
           for k in fdpass.FDS_PER_MESSAGE]
    for fig in (figures.plot_round_trips([rts, rts], machine),
                figures.plot_fds_per_second(fds, machine)):
        fig.savefig(io.BytesIO(), format="png")


def test_fork_rate_beside_c(cc):
    s = cost.fork_rate(forks=5, rounds=2)
    _check_samples(s, unit="ns", reference="c")
    assert len(s.values) == len(s.reference_values) == 2 and s.params["forks"] == 5


def test_page_copy_cost_prices_a_copied_page():
    # the leak guard also checks that the waiting child's pipe was closed
    s = cost.page_copy_cost(pages=256, rounds=3)
    _check_samples(s, unit="ns", reference="owned")
    assert len(s.values) == len(s.reference_values) == 3
    assert s.params == {"pages": 256, "rounds": 3, "page_size": os.sysconf("SC_PAGE_SIZE")}
    # a write that makes the kernel copy a page costs more than one that does not
    assert s.median > s.reference_median
    assert not child_pids()
    with pytest.raises(ValueError):
        cost.page_copy_cost(pages=0)


def test_readme_table_from_results():
    results = {"machine": {"date": "2030-01-02T03:04:05+00:00", "loadavg": [1.0, 0.5, 0.25]},
               "machine_line": "a machine", "loadavg_end": [2.0, 1.0, 0.5],
               "ratios": [dict(measure="m", subject="a", reference="b", ratio=1.234,
                               target="<= 1.5", met=True),
                          dict(measure="m2", subject="a", reference="b", ratio=2.0,
                               target="<= 1.5", met=False),
                          dict(measure="m3", subject="a", reference="c", ratio=None,
                               target=">= 0.8", met=None),
                          dict(measure="no target", subject="a", reference="b", ratio=3.0,
                               target=None, met=None)]}
    text = report.readme_table(results)
    assert text.splitlines()[0] == ("Measured by `ngxlab bench` on 2030-01-02: a machine "
                                    "(load 1.00, 0.50, 0.25 at the start, 2.00, 1.00, 0.50 "
                                    "at the end).")
    assert "| m, a / b | <= 1.5 | 1.23 |" in text
    assert "| m2, a / b | <= 1.5 | 2.00 (missed) |" in text
    assert "| m3, a / c | >= 0.8 | not measured |" in text
    assert "no target" not in text
    # a miss that two decimals would round onto its bound shows a third
    results["ratios"][0].update(ratio=1.152, target="<= 1.15", met=False)
    assert "| m, a / b | <= 1.15 | 1.152 (missed) |" in report.readme_table(results)
    # a targeted measure's split at the Python floor follows it, without a
    # target; a floor row of a measure without a target does not
    results["ratios"] += [dict(measure="m", subject="a", reference="floor", ratio=1.25,
                               target=None, met=None),
                          dict(measure="m", subject="floor", reference="b", ratio=1.5,
                               target=None, met=None),
                          dict(measure="no target", subject="floor", reference="b", ratio=9.0,
                               target=None, met=None)]
    text = report.readme_table(results)
    assert "| m, a / floor | - | 1.25 |" in text
    assert "| m, floor / b | - | 1.50 |" in text
    assert "no target" not in text


# -- the run kept in the repository, and the README's table -------------------------------


def test_readme_table_of_several_runs(tmp_path):
    def run(load, r1, r2):
        return {"machine": {"date": "2030-01-02T03:04:05+00:00", "loadavg": [load, 0.5, 0.25]},
                "machine_line": "a machine", "loadavg_end": [load + 0.5, 1.0, 0.5],
                "quick": False, "command": "ngxlab bench",
                "ratios": [dict(measure="m", subject="a", reference="b", ratio=r1,
                                target="<= 1.15", met=r1 <= 1.15),
                           dict(measure="m2", subject="a", reference="c", ratio=r2,
                                target=">= 0.8", met=None if r2 is None else r2 >= 0.8)]}
    runs = [run(0.1, 1.10, 0.9), run(0.2, 1.30, None), run(0.3, 1.12, 0.7)]
    text = report.readme_table(runs)
    assert text.splitlines()[0] == (
        "Measured by `ngxlab bench`, 3 runs one after the other on 2030-01-02: a machine "
        "(1-minute load at the start of each run: 0.10; 0.20; 0.30; at the end of the "
        "last: 0.80).")
    assert "| m, a / b | <= 1.15 | 1.12 | 1.10, 1.30, 1.12 |" in text   # the median meets it
    assert "| m2, a / c | >= 0.8 | not measured in 1 of 3 runs | 0.90, -, 0.70 |" in text
    # kept, read back, and put into a README by the command
    results = []
    for i, r in enumerate(runs):
        (tmp_path / f"r{i}.json").write_text(json.dumps(r))
        results.append(str(tmp_path / f"r{i}.json"))
    readme = tmp_path / "README.md"
    readme.write_text("before\n" + report.README_START + "old\n" + report.README_END + "after\n")
    saved = tmp_path / "kept.json"
    assert bench.save([json.loads(open(f).read()) for f in results], saved) == runs
    assert bench.saved(saved) == runs
    report.update_readme(readme, saved, tmp_path / "no-scale-run.json")
    assert readme.read_text() == ("before\n" + report.README_START + text + report.README_END
                                  + "after\n")


def test_readme_table_is_the_saved_run():
    saved = bench.saved()
    text = (report.SAVED.parent.parent.parent.parent / "README.md").read_text()
    block = text.split(report.README_START, 1)[1].split(report.README_END, 1)[0]
    assert block == report.readme_block(), \
        "the README's table differs from ngxlab/lab/data/bench.json: run python -m ngxlab.lab.report README.md"


def test_saved_scale_run_is_whole():
    [run] = bench.saved(report.SAVED_SCALE)
    assert run["quick"] is False and run["command"] == "ngxlab bench --only scale"
    assert run["sections"] == ["scale"]
    rows = {(r["measure"], r["subject"], r["reference"]): r for r in run["ratios"]}
    for t in scale.TARGETS:
        r = rows[(t.measure, t.subject, t.reference)]
        assert r["ratio"] is not None and r["met"] == t.met(r["ratio"])
    assert run["scale"]["workers"] == scale.FULL_WORKERS
    systems = [r["system"] for r in run["scale"]["runs"]]
    # the Python floor beside them (a run kept before it had none)
    assert systems.count("floor") in (0, scale.FULL_REPEATS)
    assert sorted(s for s in systems if s != "floor") == \
        sorted(["nginx", "ngxlab"] * scale.FULL_REPEATS)
    # the README's line on a wake's CPU is each system's median over its runs
    line = report.readme_block().split("CPU per wake of an old worker in the reload, medians: ")
    for system in set(systems):
        us = statistics.median(r["old_wake_us"] for r in run["scale"]["runs"]
                               if r["system"] == system)
        assert f"{system} {us:.1f} µs" in line[1].splitlines()[0], system


@pytest.mark.parametrize("i", range(len(bench.saved())))
def test_saved_run_describes_its_machine_and_is_whole(i):
    saved = bench.saved()[i]
    m = saved["machine"]
    for key in ("cpu_model", "cores", "kernel", "python", "pyc", "nginx", "compiler", "loadavg",
                "date"):
        assert m[key], key
    assert saved["quick"] is False and saved["command"] == "ngxlab bench"
    assert saved["params"]["n"] == bench.FULL["n"] and saved["params"]["rounds"] == bench.FULL["rounds"]
    rows = {(r["measure"], r["subject"], r["reference"]): r for r in saved["ratios"]}
    sections = saved.get("sections", bench.DEFAULT_SECTIONS)
    for t in bench.TARGETS:
        if t in scale.TARGETS and "scale" not in sections:
            continue            # the slow section, run with --only scale
        r = rows[(t.measure, t.subject, t.reference)]
        assert r["met"] == t.met(r["ratio"]) and r["ratio"] is not None
        assert r["ratio"] == pytest.approx(r["subject_median"] / r["reference_median"])


def test_write_recording_labels_what_made_it(tmp_path):
    m = report.machine_info()
    rec = report.write_recording(tmp_path / "r.json", "ngxlab.lab.x.record(n=2)", m, "1.22.1",
                                 part={"a": 1})
    assert rec == {"what": "ngxlab.lab.x.record(n=2)", "date": m.date[:10], "nginx": "1.22.1",
                   "machine": m.line(), "part": {"a": 1}}
    assert json.loads((tmp_path / "r.json").read_text()) == rec


def test_every_table_says_why_nginx_did_not_run():
    from ngxlab.lab.fullchannel import FullChannelResult
    assert report.table_text(["a", "b"], None) == "a\nb"
    assert report.table_text(["a"], "no nginx here") == "a\nnginx: skipped (no nginx here)"
    r = FullChannelResult(runs={}, machine="m", date="d", nginx_skipped="no nginx here")
    assert r.table().splitlines()[-1] == "nginx: skipped (no nginx here)"
