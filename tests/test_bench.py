"""ngxlab.lab.bench: smoke runs with tiny sizes.

These check structure and sanity (positive numbers, ratios computed from the
two medians, files written, the C floor built and run), never a speed: the
benchmark reports targets, tests do not assert them. The leak guard
(conftest.py) checks after each test that no descriptor stayed open (received
descriptors included) and that every echo child was reaped.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from ngxlab.lab import _cbuild, bench
from ngxlab.lab.bench import Samples

pytestmark = pytest.mark.timeout(120)

TINY = dict(n=20, batch=5, rounds=2)       # 2 batches per round, 4 samples


def _check_samples(s: Samples, *, unit: str, reference: str) -> None:
    assert s.skipped is None, s.skipped
    assert s.unit == unit and s.reference == reference
    assert s.values and all(v > 0 and math.isfinite(v) for v in s.values)
    assert s.reference_values and all(v > 0 for v in s.reference_values)
    assert s.p10 <= s.median <= s.p90
    assert s.ratio == s.median / s.reference_median


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


PYTHON_VARIANTS = [v for v in bench.ROUND_TRIP_VARIANTS if v != "c"]


@pytest.mark.parametrize("with_fd", [False, True], ids=["no_fd", "one_fd"])
@pytest.mark.parametrize("variant", PYTHON_VARIANTS)
def test_round_trip_python_variants(variant, with_fd):
    s = bench.round_trip(variant, with_fd=with_fd, **TINY)
    if with_fd and variant not in bench.DESCRIPTOR_VARIANTS:
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
    s = bench.round_trip("c", with_fd=with_fd, **TINY)
    _check_samples(s, unit="ns", reference="raw")
    assert len(s.values) == 4


def test_round_trips_share_one_reference():
    got = bench.round_trips(["ngxlab", "os_pipe"], reference="mp_pipe", **TINY)
    assert list(got) == ["ngxlab", "os_pipe", "mp_pipe"]
    ref = got["mp_pipe"].values
    for s in got.values():
        assert s.reference == "mp_pipe" and s.reference_values == ref
        assert s.ratio == s.median / got["mp_pipe"].median


@pytest.mark.parametrize("placement", bench.PLACEMENTS)
def test_placement_is_recorded_and_undone(placement):
    import os

    before = os.sched_getaffinity(0)
    s = bench.round_trip("raw", placement=placement, **TINY)
    assert os.sched_getaffinity(0) == before
    assert s.params["placement"].startswith(placement if len(before) > 1 or placement != "split"
                                            else "same")
    assert len(s.values) == 4
    f = bench.fds_per_second(16, seconds=0.04, rounds=1, interval=0.02, placement=placement)
    assert os.sched_getaffinity(0) == before and f.values
    with pytest.raises(ValueError, match="placement"):
        bench.round_trip("raw", placement="anywhere", **TINY)


def test_round_trip_rejects_unknown_variant():
    with pytest.raises(ValueError, match="unknown variant"):
        bench.round_trip("carrier_pigeon", **TINY)


def test_an_interrupted_run_leaves_no_child(monkeypatch):
    # KeyboardInterrupt (a kernel interrupt) in the middle of measuring: the
    # echo child must be ended and reaped, its descriptors closed.
    def interrupted(self, batches, batch, warmup):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench._Ngxlab, "measure", interrupted)
    with pytest.raises(KeyboardInterrupt):
        bench.round_trip("ngxlab", with_fd=True, **TINY)


# -- descriptors per second ------------------------------------------------------


@pytest.mark.parametrize("per_message", bench.FDS_PER_MESSAGE)
def test_fds_per_second(cc, per_message):
    s = bench.fds_per_second(per_message, seconds=0.1, rounds=2, interval=0.02)
    _check_samples(s, unit="fds/s", reference="c")
    assert s.variant == "python"
    assert s.params["per_message"] == per_message
    assert s.params["window_messages"] * min(per_message, 16384) >= per_message


def test_fds_per_message_limits():
    with pytest.raises(ValueError, match="SCM_MAX_FD"):
        bench.fds_per_second(bench.SCM_MAX_FD + 1, seconds=0.01)
    with pytest.raises(ValueError):
        bench.fds_per_second(0, seconds=0.01)


def test_scm_rights_limit_is_253():
    # The fact the fds_per_second docstring states, checked on this kernel.
    assert bench.scm_rights_limit() == {253: "ok", 254: "EINVAL"}


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
    s = bench.round_trip("c", **TINY)
    assert s.skipped and "compiler" in s.skipped
    assert s.values == [] and s.median is None and s.ratio is None
    rows = bench.ratio_table([bench.round_trips(["ngxlab", "c"], **TINY)], [])
    assert all(r["ratio"] is None for r in rows if "c" in (r["subject"], r["reference"]))

    f = bench.fds_per_second(1, seconds=0.04, rounds=1, interval=0.02)
    assert f.values and f.reference_values == [] and f.ratio is None
    assert "compiler" in f.params["reference_skipped"]


# -- the rest ------------------------------------------------------------------------


def test_machine_info():
    m = bench.machine_info()
    assert m.cores >= 1 and 1 <= m.usable_cores <= m.cores
    assert m.kernel and m.cpu_model and m.python.startswith(".".join(map(str, sys.version_info[:2])))
    assert m.date[:2] == "20"
    line = m.line()
    assert "Python" in line and m.kernel in line


def test_profile_round_trip_names_the_mirror():
    text = bench.profile_round_trip("ngxlab", n=200)
    assert "ngx_read_channel" in text and "ngx_write_channel" in text


def test_progress_without_tqdm(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)      # import tqdm raises ImportError
    s = bench.round_trip("os_pipe", progress=True, **TINY)
    assert len(s.values) == 4


@pytest.fixture(scope="module")
def matplotlib_fonts():
    """Draw both figures once, before the leak guard's first look.

    matplotlib keeps every font file it has rendered with open, in a
    process-wide cache (font_manager.get_font), for the life of the process:
    a cache, not a leak, and it would otherwise be charged to the first test
    that draws."""
    import io

    machine = bench.machine_info()
    rts = {v: Samples(measure="round trip, no descriptor", variant=v, unit="ns",
                      values=[1000.0, 2000.0], reference="raw",
                      reference_values=[1000.0, 2000.0], params={"batch": 1})
           for v in bench.ROUND_TRIP_VARIANTS}
    fds = [Samples(measure="d", variant="python", unit="fds/s", values=[1e5, 2e6],
                   reference="c", reference_values=[1e5, 2e6], params={"per_message": k})
           for k in bench.FDS_PER_MESSAGE]
    for fig in (bench.plot_round_trips([rts, rts], machine),
                bench.plot_fds_per_second(fds, machine)):
        fig.savefig(io.BytesIO(), format="png")


def test_run_quick_writes_results_and_figures(tmp_path, monkeypatch, capsys, matplotlib_fonts):
    calls = []

    def section(*, out_dir, quick, progress):
        calls.append((out_dir, quick, progress))
        (out_dir / "extra.png").write_bytes(b"")
        row = dict(measure="an extra section", subject="x", reference="y", unit="ns",
                   subject_median=2.0, reference_median=1.0, ratio=2.0, target=None, met=None)
        return {"value": 1, "figures": ["extra.png"], "ratios": [row]}

    monkeypatch.setattr(bench, "EXTRA_SECTIONS", [])
    bench.register_section("extra", section, "a stand-in for the nginx runner's sections")

    results = bench.run(tmp_path, quick=True, progress=False)
    printed = capsys.readouterr().out

    data = json.loads((tmp_path / "results.json").read_text())
    assert data == json.loads(json.dumps(results))
    assert data["quick"] is True
    assert data["scm_rights_limit"] == {"253": "ok", "254": "EINVAL"}
    assert set(data["round_trip"]["no_descriptor"]) == set(bench.ROUND_TRIP_VARIANTS)
    assert data["round_trip"]["one_descriptor"]["os_pipe"]["skipped"]
    assert set(data["fds_per_second"]) == {"1", "16", "253"}
    for name in ("round_trip_cdf.png", "fds_per_second.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert name in data["figures"]
    assert "extra.png" in data["figures"]
    assert calls == [(tmp_path, True, False)]
    assert data["sections"]["extra"]["value"] == 1

    for row in data["ratios"]:
        if row["ratio"] is not None:
            assert row["ratio"] == pytest.approx(row["subject_median"] / row["reference_median"])
            assert row["ratio"] > 0
    targets = [r for r in data["ratios"] if r["target"]]
    assert len(targets) == len(bench.TARGETS)
    assert data["machine"]["cores"] >= 1 and data["duration_s"] > 0

    assert "ngxlab bench on" in printed and data["machine_line"] in printed
    assert "an extra section" in printed and "253 descriptors ok" in printed
