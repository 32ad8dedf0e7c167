"""`ngxlab bench --quick` runs end to end (CI runs it so the command never
rots): it exits 0, prints the ratio table with the machine it ran on, and
writes results.json, whose every ratio is the ratio of the two medians it
records, and its figures; `--only` runs one section. No timing is
asserted."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

import pytest

from ngxlab.lab import bench, fire, scale


@pytest.mark.timeout(240)
def test_bench_quick_writes_results_and_figures(tmp_path, nginx_bin, cc):
    out = tmp_path / "bench"
    done = subprocess.run(
        [sys.executable, "-m", "ngxlab", "bench", "--quick", "--out", str(out),
         "--no-progress"], capture_output=True, text=True, timeout=230)
    assert done.returncode == 0, done.stderr[-2000:]
    text = done.stdout
    r = json.loads((out / "results.json").read_text())
    assert f"ngxlab bench on {r['machine_line']}" in text
    # which Python ran, and whether ngxlab's .pyc files were current
    assert r["interpreter"].startswith(("CPython", "PyPy")) and ".pyc:" in r["interpreter"]
    assert f"Python: {r['interpreter']}" in text
    m = r["machine"]
    assert m["cores"] >= 1 and m["nginx"] and m["compiler"] and m["pyc"] and m["kernel"]
    assert r["quick"] is True and r["command"] == "ngxlab bench --quick"

    # every target of the sections run has its row, measured here (nginx and
    # a compiler are present); the slow scale section runs only when asked
    assert r["sections"] == list(bench.DEFAULT_SECTIONS)
    targets = [row for row in r["ratios"] if row["target"]]
    assert sorted((t["measure"], t["subject"], t["reference"]) for t in targets) == \
        sorted((t.measure, t.subject, t.reference) for t in bench.TARGETS
               if t not in scale.TARGETS)
    for row in targets:
        assert row["ratio"] is not None and row["met"] in (True, False)
    assert ("  NO" in text) == (not all(t["met"] for t in targets))

    # the ratios are those of the medians of the samples the file records
    rt = r["round_trip"]["no_descriptor"]
    row = next(x for x in r["ratios"] if (x["measure"], x["subject"], x["reference"]) ==
               ("round trip, no descriptor", "ngxlab", "raw"))
    assert row["subject_median"] == pytest.approx(statistics.median(rt["ngxlab"]["values"]))
    assert row["ratio"] == pytest.approx(statistics.median(rt["ngxlab"]["values"])
                                         / statistics.median(rt["raw"]["values"]))
    fork = r["forks"]
    assert fork["ratio"] == pytest.approx(statistics.median(fork["values"])
                                          / statistics.median(fork["reference_values"]))
    runs = r["startup_to_mesh"]["runs"]
    for n in r["startup_to_mesh"]["ns"]:
        lab = [x["mesh_ms"] for x in runs if x["system"] == "ngxlab" and x["n"] == n]
        ngx = [x["mesh_ms"] for x in runs if x["system"] == "nginx" and x["n"] == n]
        row = next(x for x in r["ratios"] if x["measure"] == f"start-up to full mesh, N={n}")
        assert row["ratio"] == pytest.approx(statistics.median(lab) / statistics.median(ngx))
        assert all(x["confirmed"] for x in runs if x["n"] == n)
        # the Python floor, in the same interleaved run: ngxlab / floor and floor / nginx
        floor = [x["mesh_ms"] for x in runs if x["system"] == "floor" and x["n"] == n]
        assert len(floor) == len(lab)
        for subject, reference, a, b in (("ngxlab", "floor", lab, floor),
                                         ("floor", "nginx", floor, ngx)):
            row = next(x for x in r["ratios"] if (x["measure"], x["subject"], x["reference"])
                       == (f"start-up to full mesh, N={n}", subject, reference))
            assert row["ratio"] == pytest.approx(statistics.median(a) / statistics.median(b))
    assert "ngxlab/floor" in text and "floor/nginx" in text
    assert all(c["matches_formula"] for c in r["descriptors_vs_n"]["counts"])
    assert r["scm_rights_limit"] == {"253": "ok", "254": "EINVAL"}

    # under fire, in its short form: nothing lost, the storm flat, the ratios of its medians
    assert r["sections"] == list(bench.DEFAULT_SECTIONS)
    uf = r["under_fire"]
    assert uf["params"] == fire.QUICK and uf["nginx_skipped"] is None
    for action in ("reload", "upgrade"):
        for system in fire.SYSTEMS:
            assert uf[action][system]["load"]["summary"]["failed"] == 0, (action, system)
    for system in fire.SYSTEMS:
        st = uf["storm"][system]
        assert st["flat"] and st["max_zombies"] == 0 and st["census_full"]
    row = next(x for x in r["ratios"]
               if x["measure"] == "kill storm: respawn to a whole mesh, median")
    assert row["ratio"] == pytest.approx(
        statistics.median(uf["storm"]["ngxlab"]["whole_ms"])
        / statistics.median(uf["storm"]["nginx"]["whole_ms"]), rel=1e-2)
    assert uf["master_kill"]["ngxlab"]["alive_after"] == 0
    assert uf["master_kill"]["nginx"]["alive_after"] == fire.QUICK["n"]
    assert "kill storm" in text and "master SIGKILL" in text

    assert r["figures_skipped"] is None
    assert r["figures"] == ["round_trip_cdf.png", "fds_per_second.png", "startup_to_mesh.png",
                            "quit_to_exit.png", "descriptors_vs_n.png", "reload_under_load.png",
                            "upgrade_under_load.png", "kill_storm.png", "master_kill.png"]
    for png in r["figures"]:
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png


@pytest.mark.timeout(120)
def test_bench_only_one_section(tmp_path):
    out = tmp_path / "bench"
    done = subprocess.run(
        [sys.executable, "-m", "ngxlab", "bench", "--quick", "--only", "cost", "--out", str(out),
         "--no-progress"], capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stderr[-2000:]
    r = json.loads((out / "results.json").read_text())
    assert r["sections"] == ["cost"] and r["command"] == "ngxlab bench --quick --only cost"
    assert "round_trip" in r and "startup_to_mesh" not in r and "under_fire" not in r
    assert r["figures"] == ["round_trip_cdf.png", "fds_per_second.png"]


@pytest.mark.timeout(240)
def test_bench_scale_section_runs_only_when_asked(tmp_path, nginx_bin):
    # the slow section: a reload and a QUIT of many workers, beside nginx;
    # --quick runs it with fewer workers
    assert "scale" in bench.SECTIONS and "scale" not in bench.DEFAULT_SECTIONS
    out = tmp_path / "bench"
    done = subprocess.run(
        [sys.executable, "-m", "ngxlab", "bench", "--quick", "--only", "scale", "--out", str(out),
         "--no-progress"], capture_output=True, text=True, timeout=230)
    assert done.returncode == 0, done.stderr[-2000:]
    r = json.loads((out / "results.json").read_text())
    sc = r["scale"]
    assert r["sections"] == ["scale"] and sc["workers"] == scale.QUICK_WORKERS
    assert sorted(x["system"] for x in sc["runs"]) == ["floor", "nginx", "ngxlab"]
    assert all(x["settled"] for x in sc["runs"])
    times = {x["system"]: x for x in sc["runs"]}
    for what, key in (("reload", "reload_s"), ("QUIT", "quit_s")):
        line = next(x for x in r["ratios"] if x["measure"].startswith(what))
        assert f"{scale.QUICK_WORKERS} workers" in line["measure"]
        assert line["ratio"] == pytest.approx(times["ngxlab"][key] / times["nginx"][key])
        # the targets are the book's at 400 workers, not at the quick run's count
        assert line["target"] is None
        # and the Python floor splits it: ngxlab / floor, floor / nginx
        for subject, reference in (("ngxlab", "floor"), ("floor", "nginx")):
            split = next(x for x in r["ratios"] if x["measure"] == line["measure"]
                         and (x["subject"], x["reference"]) == (subject, reference))
            assert split["ratio"] == pytest.approx(times[subject][key] / times[reference][key])
    assert f"{scale.QUICK_WORKERS} workers" in done.stdout


def test_bench_refuses_an_unknown_section(tmp_path):
    with pytest.raises(ValueError, match="sections"):
        bench.run(tmp_path, quick=True, progress=False, sections=("cost", "nope"))
    done = subprocess.run([sys.executable, "-m", "ngxlab", "bench", "--only", "nope"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "invalid choice" in done.stderr
