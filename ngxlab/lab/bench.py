"""``ngxlab bench``: every measurement side by side in one run, its results saved.

Measurements, not tests: nothing here asserts a speed. :func:`run` measures,
in this order, interleaved inside each measurement:

- what a channel message costs (:mod:`ngxlab.lab.cost`: round trips beside
  raw Python, C and ``multiprocessing``; forks beside C) and how many
  descriptors pass per second (:mod:`ngxlab.lab.fdpass`);
- how the mesh forms and goes with N beside a real nginx and beside the
  Python floor (:mod:`ngxlab.lab.floor`: only the mesh's system calls, in
  Python), all in one interleaved run (:mod:`ngxlab.lab.timing`: ngxlab /
  floor is ours to close, floor / nginx is Python's), and how many descriptors each process holds
  (:mod:`ngxlab.lab.descriptors`); without nginx its side is reported as
  skipped, with the reason, never estimated;
- under fire (:mod:`ngxlab.lab.fire`): the same bounded load on ngxlab and
  on nginx while each is reloaded 20 times, and while its binary is
  upgraded (failed requests by kind, the request-rate timeline); 1,000
  SIGKILLs of a random worker (respawn times, descriptor counts, zombies,
  the census at the end); SIGKILL of the master (do the workers go?);

Each of the three is a section (``SECTIONS``: ``cost``, ``mesh``,
``under-fire``); ``ngxlab bench --only SECTION`` runs one. ``--quick``
runs every section in a short form (``QUICK``, and
:data:`ngxlab.lab.fire.QUICK`). A fourth, slow section runs only when asked
for (``--only scale``, several minutes): a reload and a QUIT of 400 workers,
ngxlab beside nginx, three times interleaved (:mod:`ngxlab.lab.scale`; 50
workers once with ``--quick``).

It then writes ``results.json`` (every median, the machine it ran on, which
Python ran and whether ngxlab's ``.pyc`` files were current, the
command), prints the ratios beside the targets the book tracks
(:data:`TARGETS`; a missed target says NO), and draws the figures
(:mod:`ngxlab.lab.figures`) when matplotlib is installed; without it the
figures are skipped, and the run says so and how to get them.

:func:`save` keeps runs in the repository (``ngxlab/lab/data/bench.json``),
from which :func:`ngxlab.lab.report.readme_table` renders the README's
table, the median of each ratio over the runs beside every run's value: no
figure there is typed by hand (``python -m ngxlab.lab.report README.md --keep
RESULTS.json...``).

Not a mirror of nginx: nothing here has an ``ngx_`` name.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ngxlab.lab import cost, descriptors, fdpass, fire, quitting, report, scale, timing
from ngxlab.lab.compare import row
from ngxlab.lab.nginx import nginx_available
from ngxlab.lab.report import loadavg, machine_info

__all__ = ["TARGETS", "DEFAULT_TARGETS", "FULL", "QUICK", "SECTIONS", "DEFAULT_SECTIONS", "SAVED", "run", "save", "saved",
           "record_mesh"]

TARGETS = cost.TARGETS + timing.TARGETS + scale.TARGETS
# the targets measured by a run of DEFAULT_SECTIONS (scale's need --only scale)
DEFAULT_TARGETS = cost.TARGETS + timing.TARGETS

# How run() sizes things: full and quick.
FULL = dict(n=20_000, batch=20, rounds=10, fd_seconds=2.0, fd_rounds=5, fd_interval=0.1,
            forks=50, fork_rounds=5, ns=timing.DEFAULT_NS, repeats=5, target_repeats=11)
QUICK = dict(n=400, batch=10, rounds=4, fd_seconds=0.12, fd_rounds=2, fd_interval=0.02,
             forks=10, fork_rounds=2, ns=timing.QUICK_NS, repeats=1, target_repeats=None)

SECTIONS = ("cost", "mesh", "under-fire", "scale")
# what runs without --only: scale takes minutes
DEFAULT_SECTIONS = ("cost", "mesh", "under-fire")

SAVED = report.SAVED


def run(out_dir, quick: bool = False, progress: bool = True,
        sections=DEFAULT_SECTIONS) -> dict:
    """Run the measurements of ``sections`` (``DEFAULT_SECTIONS`` by
    default: every one of ``SECTIONS`` but the slow ``scale``), write
    ``results.json`` (and the PNG figures, with matplotlib)
    into ``out_dir``, print the ratios against their references and targets
    with the machine, and return the results (the content of
    ``results.json``). ``quick``: small samples, for a smoke run; the
    numbers are then rough."""
    sections = tuple(sections)
    unknown = set(sections) - set(SECTIONS)
    if unknown or not sections:
        raise ValueError(f"sections must be among {SECTIONS}, not {sorted(unknown)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    p = QUICK if quick else FULL
    started = time.monotonic()
    machine = machine_info()
    results: dict[str, Any] = {
        "machine": asdict(machine),
        "machine_line": machine.line(),
        "interpreter": report.interpreter_line(),
        "quick": quick,
        "command": "ngxlab bench" + (" --quick" if quick else "")
                   + ("" if sections == DEFAULT_SECTIONS else " --only " + " ".join(sections)),
        "sections": list(sections),
        "params": {k: list(v) if isinstance(v, tuple) else v for k, v in p.items()},
        "ratios": [],
        "targets": [asdict(t) for t in TARGETS],
        "figures": [],
        "figures_skipped": None,
    }
    rows = results["ratios"]
    drawn = []          # (file name, function of the figures module, its arguments, keywords)
    printed = []

    if "cost" in sections:
        steps = (p["rounds"] * len(cost.ROUND_TRIP_VARIANTS) * 2
                 + p["fd_rounds"] * 2 * len(fdpass.FDS_PER_MESSAGE) + p["fork_rounds"] * 2)
        with report.progress_bar(progress, steps, "ngxlab bench") as bar:
            common = dict(n=p["n"], batch=p["batch"], rounds=p["rounds"], reference="raw",
                          placement=cost.ROUND_TRIP_PLACEMENT, progress=bar)
            no_fd = cost.round_trips(cost.ROUND_TRIP_VARIANTS, with_fd=False, **common)
            one_fd = cost.round_trips(cost.ROUND_TRIP_VARIANTS, with_fd=True, **common)
            fds = [fdpass.fds_per_second(k, seconds=p["fd_seconds"], rounds=p["fd_rounds"],
                                         interval=p["fd_interval"],
                                         placement=fdpass.FDS_PLACEMENT, progress=bar)
                   for k in fdpass.FDS_PER_MESSAGE]
            forks = cost.fork_rate(forks=p["forks"], rounds=p["fork_rounds"], progress=bar)
        limit = fdpass.scm_rights_limit()
        rows += cost.ratio_table([no_fd, one_fd], fds)
        rows.append(report_row(forks))
        results.update({
            "round_trip": {"no_descriptor": {k: s.to_dict() for k, s in no_fd.items()},
                           "one_descriptor": {k: s.to_dict() for k, s in one_fd.items()}},
            "fds_per_second": {str(s.params["per_message"]): s.to_dict() for s in fds},
            "forks": forks.to_dict(),
            "scm_rights_limit": {str(k): v for k, v in limit.items()},
        })
        drawn += [("round_trip_cdf.png", "plot_round_trips", ([no_fd, one_fd], machine), {}),
                  ("fds_per_second.png", "plot_fds_per_second", (fds, machine), {})]
        printed += [f"round trips: {no_fd['raw'].params['placement']}; "
                    f"descriptors per second: {fds[0].params['placement']}",
                    f"SCM_RIGHTS: {', '.join(f'{k} descriptors {v}' for k, v in limit.items())}"]

    if "mesh" in sections:
        startup = timing.startup_to_mesh(p["ns"], p["repeats"], quick=quick, measure_quit=True,
                                          target_repeats=p["target_repeats"], progress=progress)
        quit_ = quitting.quit_to_exit(reuse=startup)
        desc = descriptors.descriptors_vs_n(p["ns"], quick=quick, progress=progress)
        rows += startup.ratios() + quit_.ratios()
        results.update({"startup_to_mesh": startup.to_dict(), "quit_to_exit": quit_.to_dict(),
                        "descriptors_vs_n": desc.to_dict()})
        drawn += [("startup_to_mesh.png", "plot_startup", (startup,), {}),
                  ("quit_to_exit.png", "plot_quit", (quit_,), {}),
                  ("descriptors_vs_n.png", "plot_descriptors", (desc,), {})]
        printed = [startup.table(), quit_.table(), desc.table()] + printed

    if "under-fire" in sections:
        uf = fire.under_fire(**(fire.QUICK if quick else fire.FULL), progress=progress)
        rows += uf.ratios()
        results["under_fire"] = uf.to_dict()
        drawn += [("reload_under_load.png", "plot_under_load", (uf.reload,),
                   dict(title=f"{uf.params['reloads']} reloads (HUP)", machine=uf.machine)),
                  ("upgrade_under_load.png", "plot_under_load", (uf.upgrade,),
                   dict(title="binary upgrade (USR2, WINCH, QUIT)", machine=uf.machine)),
                  ("kill_storm.png", "plot_storm", (uf.storm,), {}),
                  ("master_kill.png", "plot_master_kill", (uf.master_kill,), {})]
        printed.append(uf.table())

    if "scale" in sections:
        sc = scale.scale(scale.QUICK_WORKERS if quick else scale.FULL_WORKERS,
                         repeats=scale.QUICK_REPEATS if quick else scale.FULL_REPEATS)
        rows += sc.ratios()
        results["scale"] = sc.to_dict()
        printed.append(sc.table())

    try:
        # imported only now, after the measurements: matplotlib would make this
        # process several times bigger, and every fork measured above slower;
        # and it is optional (pip install 'ngxlab[bench]')
        from ngxlab.lab import figures
    except ImportError as e:
        figures = None
        results["figures_skipped"] = (f"figures skipped: {e} (pip install 'ngxlab[bench]' "
                                      f"installs matplotlib)")
    if figures is not None:
        for name, func, args, kwargs in drawn:
            getattr(figures, func)(*args, **kwargs).savefig(out / name, dpi=110)
            results["figures"].append(name)
    results["duration_s"] = round(time.monotonic() - started, 3)
    results["loadavg_end"] = loadavg()
    with open(out / "results.json", "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")

    report.print_rows(rows, machine)
    for text in printed:
        print(text)
    if results["figures_skipped"]:
        print(results["figures_skipped"], file=sys.stderr)
    print(f"took {results['duration_s']:.1f} s; results.json"
          f"{' and figures' if results['figures'] else ''} in {out}")
    return results


def report_row(forks) -> dict:
    """The forks' row: one fork, exit and reap of this interpreter against C's."""
    return row(forks.measure, forks.variant, forks.reference, forks.median,
                    forks.reference_median, forks.unit, TARGETS)


def _trimmed(results: dict) -> dict:
    """A run without its per-sample lists (medians, p10 and p90 stay)."""
    kept = copy.deepcopy(results)

    def trim(d):
        if isinstance(d, dict):
            for key in ("values", "reference_values"):
                if isinstance(d.get(key), list):
                    d[key + "_count"] = len(d.pop(key))
            for v in d.values():
                trim(v)
        elif isinstance(d, list):
            for v in d:
                trim(v)

    trim(kept)
    for r in kept.get("startup_to_mesh", {}).get("runs", []):
        r["detail"] = ""            # the census summary of each run: long
    for st in kept.get("under_fire", {}).get("storm", {}).values():
        for key in ("replaced_ms", "whole_ms", "master_fds", "worker_fds_min",
                    "worker_fds_max", "zombies"):
            if isinstance(st.get(key), list):
                st[key + "_count"] = len(st.pop(key))   # per kill: the summary stays
    return kept


def save(results: dict | list[dict], path: str | Path | None = None) -> list[dict]:
    """Keep runs in the repository: one ``results.json`` of ``ngxlab bench``
    or a list of them (the README's table shows the median of each ratio
    over the runs, and every run's value), without the per-sample lists, as
    JSON at ``path`` (by default ``ngxlab/lab/data/bench.json``). Returns
    what was kept."""
    runs = [_trimmed(r) for r in (results if isinstance(results, list) else [results])]
    if not runs:
        raise ValueError("no run to keep")
    with open(SAVED if path is None else path, "w") as f:
        json.dump({"runs": runs}, f, indent=0, separators=(",", ":"))
        f.write("\n")
    return runs


def saved(path: str | Path | None = None) -> list[dict]:
    """The runs kept in the repository (:func:`save`), in the order run."""
    data = json.loads(Path(SAVED if path is None else path).read_text())
    return data["runs"] if "runs" in data else [data]


def record_mesh(path, *, ns=timing.QUICK_NS, repeats: int = 5,
                descriptor_ns=timing.DEFAULT_NS) -> dict:
    """Measure what the chapter "How the mesh grows" measures, with more
    repeats, against a real nginx, and write it as JSON to ``path`` (what the
    chapter shows, labelled as recorded, where nginx is missing). Raises
    :class:`~ngxlab.lab.timing.TimingError` when nginx is not available: a
    recording is always of a real run."""
    binary, why = nginx_available()
    if binary is None:
        raise timing.TimingError(f"cannot record without nginx: {why}")
    startup = timing.startup_to_mesh(ns, repeats, measure_quit=True)
    desc = descriptors.descriptors_vs_n(descriptor_ns)
    if not (startup.all_confirmed and desc.all_match):
        raise timing.TimingError("the run did not confirm the mesh; not recorded")
    data = startup.to_dict()
    for r in data["runs"]:
        if r["confirmed"]:
            r["detail"] = ""            # the census summary: long, and says "full mesh"
    return report.write_recording(
        path, f"ngxlab.lab.bench.record_mesh(ns={tuple(ns)}, repeats={repeats}, "
        f"descriptor_ns={tuple(descriptor_ns)})", startup.machine, startup.machine.nginx,
        startup_to_mesh=data, descriptors_vs_n=desc.to_dict())
