"""Reporting measurements: the machine they ran on, progress while they run,
and the tables they print.

:func:`machine_info` says what the numbers were measured on (CPU, cores,
kernel, Python and whether it wrote ``.pyc`` files, nginx, the C compiler,
the load average, the date); :func:`print_rows` prints rows made by
:func:`ngxlab.lab.compare.row` under that line; :func:`bar` is a progress
bar when tqdm is installed (the ``bench`` extra) and a silent one when not;
:func:`readme_table` renders a saved run as the README's Markdown table.

Not a mirror of nginx: nothing here has an ``ngx_`` name.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import importlib.util
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ngxlab.lab import _cbuild
from ngxlab.lab.compare import format_value

try:                        # optional: ``pip install ngxlab[bench]``
    from tqdm import tqdm as _tqdm
except ImportError:
    _tqdm = None

__all__ = ["MachineInfo", "machine_info", "loadavg", "bar", "progress_bar", "print_rows",
           "readme_table", "readme_block", "write_recording", "update_readme", "SAVED", "SAVED_SCALE", "interpreter_line", "pyc_state"]

SAVED = Path(__file__).resolve().parent / "data" / "bench.json"   # the runs kept in the repository
# the run of ``ngxlab bench --only scale`` kept beside them
SAVED_SCALE = SAVED.with_name("bench-scale.json")
README_START = "<!-- bench table: generated from ngxlab/lab/data/bench.json -->\n"
README_END = "<!-- end of bench table -->\n"


@dataclass
class MachineInfo:
    """What the numbers were measured on."""

    cpu_model: str
    cores: int
    usable_cores: int
    kernel: str
    python: str
    nginx: str | None
    compiler: str | None
    loadavg: tuple[float, float, float] | None
    date: str
    pyc: str | None = None      # whether Python read and wrote .pyc files (None: not recorded)

    @classmethod
    def from_dict(cls, d: dict) -> "MachineInfo":
        """The inverse of ``dataclasses.asdict`` (a run recorded as JSON)."""
        d = dict(d)
        if d.get("loadavg") is not None:
            d["loadavg"] = tuple(d["loadavg"])
        return cls(**d)

    def line(self) -> str:
        """One line for a title or a table heading."""
        parts = [f"{self.cpu_model}, {self.usable_cores} of {self.cores} cores"
                 if self.usable_cores != self.cores else f"{self.cpu_model}, {self.cores} cores",
                 f"{platform.system()} {self.kernel}",
                 f"Python {self.python}" + (f" ({self.pyc})" if self.pyc else "")]
        if self.nginx:
            parts.append(f"nginx {self.nginx}")
        if self.compiler:
            parts.append(self.compiler)
        if self.loadavg is not None:
            parts.append(f"load {self.loadavg[0]:.2f}")
        parts.append(self.date[:10])
        return ", ".join(parts)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "cpu model", "Hardware"):
                    return re.sub(r"\s+", " ", value.strip())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _nginx_version() -> str | None:
    candidates = (shutil.which("nginx"), "/usr/sbin/nginx", "/usr/local/nginx/sbin/nginx")
    if "NGXLAB_NGINX" in os.environ:         # as ngxlab.lab.nginx.find_nginx reads it
        candidates = (os.environ["NGXLAB_NGINX"] or None,)
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            try:
                done = subprocess.run([path, "-v"], capture_output=True, text=True, timeout=10,
                                      stdin=subprocess.DEVNULL)
            except (OSError, subprocess.TimeoutExpired):
                continue
            m = re.search(r"nginx/(\S+)", done.stderr + done.stdout)
            if m:
                return m.group(1)
    return None


def _compiler_version() -> str | None:
    cc = _cbuild.compiler()
    if cc is None:
        return None
    try:
        done = subprocess.run([*cc, "--version"], capture_output=True, text=True, timeout=10,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = done.stdout
    first = text.splitlines()[0] if text else ""
    version = re.findall(r"\b(\d+\.\d+(?:\.\d+)?)\b", first)
    name = ("clang" if "clang" in text else
            "gcc" if "Free Software Foundation" in text or "gcc" in first else
            os.path.basename(cc[0]))
    return f"{name} {version[-1]}" if version else (first or None)


def loadavg() -> tuple[float, float, float] | None:
    try:
        return tuple(round(x, 2) for x in os.getloadavg())
    except OSError:
        return None


def machine_info() -> MachineInfo:
    """Cores, CPU model, kernel, Python, nginx (``nginx -v``, if installed),
    the C compiler, the load average and the date (UTC)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    return MachineInfo(
        cpu_model=_cpu_model(), cores=os.cpu_count() or 1, usable_cores=usable,
        kernel=platform.release(),
        python=f"{platform.python_version()}"
               + ("" if platform.python_implementation() == "CPython"
                  else f" ({platform.python_implementation()})"),
        nginx=_nginx_version(), compiler=_compiler_version(), loadavg=loadavg(),
        date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        pyc=_pyc(),
    )


def _pyc_current(source: str) -> bool:
    """Whether ``source`` has a .pyc that Python would use: one in
    ``__pycache__`` for this interpreter whose header records the source's
    modification time and size (a stale one is compiled again)."""
    try:
        st = os.stat(source)
        with open(importlib.util.cache_from_source(source), "rb") as f:
            head = f.read(16)
    except (OSError, NotImplementedError):
        return False
    if len(head) < 16 or head[:4] != importlib.util.MAGIC_NUMBER:
        return False
    flags = int.from_bytes(head[4:8], "little")
    if flags & 1:                       # hash-based: checked or not, it is used
        return True
    return (int.from_bytes(head[8:12], "little") == int(st.st_mtime) & 0xFFFFFFFF
            and int.from_bytes(head[12:16], "little") == st.st_size & 0xFFFFFFFF)


def pyc_state() -> tuple[int, int]:
    """(modules with a current .pyc, modules) for ngxlab's mirrors and
    command line (``ngxlab/*.py``: what ``python -m ngxlab run`` imports)."""
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sources = sorted(os.path.join(pkg, f) for f in os.listdir(pkg) if f.endswith(".py"))
    return sum(_pyc_current(s) for s in sources), len(sources)


def _pyc() -> str:
    """Whether this interpreter writes .pyc files, and whether ngxlab's
    mirrors have current ones to read (a program started with ``python -m
    ngxlab`` imports faster from them: without, every start compiles them)."""
    cached, total = pyc_state()
    writes = not sys.dont_write_bytecode
    return (("writes .pyc" if writes else "no .pyc written")
            + (", ngxlab's cached" if cached == total else ", ngxlab's not cached"
               if cached == 0 else f", ngxlab's cached for {cached} of {total} modules"))


def interpreter_line() -> str:
    """Which Python ran and whether ngxlab's .pyc files were used, in one
    line: version, implementation, virtual environment or not, the
    executable's name, and :func:`pyc_state`."""
    cached, total = pyc_state()
    venv = sys.prefix != sys.base_prefix
    return (f"{platform.python_implementation()} {platform.python_version()} "
            f"({os.path.basename(sys.executable)}{', in a virtual environment' if venv else ''}); "
            f".pyc: {cached} of {total} of ngxlab's modules current"
            f"{'' if cached == total else ' (the rest are compiled at every start)'}; "
            f"PYTHONDONTWRITEBYTECODE {'set' if sys.dont_write_bytecode else 'not set'}")




class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_description_str(self, desc: str) -> None:
        pass

    def close(self) -> None:
        pass


def bar(total: int, desc: str, enabled: bool):
    """A tqdm bar that appears only after a second; a do-nothing bar when
    disabled or when tqdm is not installed."""
    if not enabled or _tqdm is None:
        return _NoBar()
    return _Bar(total=total, desc=desc, delay=1.0, leave=False, file=sys.stderr,
                dynamic_ncols=True)


@contextlib.contextmanager
def progress_bar(progress, total: int, desc: str):
    """``progress`` is a bool, or a bar made by the caller (run() shares one)."""
    if isinstance(progress, bool) or progress is None:
        made = bar(total, desc, bool(progress))
        try:
            yield made
        finally:
            made.close()
    else:
        progress.set_description_str(desc)
        yield progress




if _tqdm is not None:
    class _Bar(_tqdm):
        monitor_interval = 0   # no monitor thread: the benchmark forks


def print_rows(rows: list[dict], machine: MachineInfo, title: str = "ngxlab bench",
               file=None) -> None:
    """The rows of :func:`ngxlab.lab.compare.row` as a table under one line
    naming the machine: medians, ratio, target and whether it was met."""
    file = file or sys.stdout
    print(f"{title} on {machine.line()}", file=file)
    print(f"Python: {interpreter_line()}", file=file)
    head = f"{'measure':<52} {'subject':>26} {'reference':>22} {'ratio':>7} {'target':>8}  met"
    print(head, file=file)
    print("-" * len(head), file=file)
    for r in rows:
        subject = f"{r['subject']} {format_value(r['subject_median'], r['unit'])}"
        reference = f"{r['reference']} {format_value(r['reference_median'], r['unit'])}"
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.3f}"
        met = {True: "yes", False: "NO", None: ""}[r["met"]]
        print(f"{r['measure']:<52} {subject:>26} {reference:>22} {ratio:>7} "
              f"{r['target'] or '':>8}  {met}", file=file)


def table_text(lines: list[str], nginx_skipped: str | None) -> str:
    """A measurement's table as text: its ``lines``, then, when nginx did not
    run, one line that says why, worded the same in every table."""
    if nginx_skipped:
        lines = [*lines, f"nginx: skipped ({nginx_skipped})"]
    return "\n".join(lines)


def write_recording(path, what: str, machine: MachineInfo, nginx: str | None,
                    **parts) -> dict:
    """Write a run that a chapter shows, labelled as recorded, where a tool
    is missing: ``what`` made it (the call), its date, nginx's version and
    the machine, then ``parts`` (each a measurement's ``to_dict()``), as
    compact JSON at ``path``. Returns what was written."""
    rec = {"what": what, "date": machine.date[:10], "nginx": nginx,
           "machine": machine.line(), **parts}
    with open(path, "w") as f:
        json.dump(rec, f, separators=(",", ":"))
        f.write("\n")
    return rec


def _met(target: str, ratio: float) -> bool:
    """Whether ``ratio`` meets a target as rows print it (``"<= 1.15"``)."""
    op, bound = target.split()
    return {"<=": ratio <= float(bound), "<": ratio < float(bound),
            ">=": ratio >= float(bound), ">": ratio > float(bound)}[op]


# the references that split a targeted ratio in two (see readme_table)
_SPLITS = {"floor", "raw_fields"}


def readme_table(runs: dict | list[dict]) -> str:
    """The README's table of the targets, from saved ``ngxlab bench`` runs
    (their ``results.json``, or the copy kept in ``ngxlab/lab/data``): for
    each target the median of its ratio over the runs, "missed" where the
    median misses it, and every run's ratio; where the Python floor ran, a
    targeted measure's floor / nginx and ngxlab / floor (no target: they say
    which part of the gap is Python's), and where ``raw_fields`` ran, ngxlab /
    raw_fields and raw_fields / raw, follow it; all under the line saying when and
    on what the runs were made. The README's table is this text, and a test
    checks that it still is."""
    runs = runs if isinstance(runs, list) else [runs]
    first, last = runs[0], runs[-1]
    m = first["machine"]
    dates = sorted({r["machine"]["date"][:10] for r in runs})

    def load(x):
        return ", ".join(f"{v:.2f}" for v in x or ())

    if len(runs) == 1:
        when = (f"Measured by `ngxlab bench` on {m['date'][:10]}: {first['machine_line']}"
                f" (load {load(m['loadavg'])} at the start,"
                f" {load(first.get('loadavg_end'))} at the end).")
    else:
        starts = "; ".join(load(r["machine"]["loadavg"][:1]) for r in runs)
        when = (f"Measured by `ngxlab bench`, {len(runs)} runs one after the other on "
                f"{' to '.join(dates)}: {first['machine_line']} (1-minute load at the start "
                f"of each run: {starts}; at the end of the last: "
                f"{load((last.get('loadavg_end') or ())[:1])}).")
    head = "| measure | target | measured |" if len(runs) == 1 else \
        "| measure | target | median | runs |"
    lines = [when, "", head, "|---|---|---|" + ("" if len(runs) == 1 else "---|")]
    # the targets, and the split of a targeted measure where its run has one:
    # ngxlab / floor (ngxlab's own) and floor / nginx (Python's); ngxlab /
    # raw_fields (the mirror's own) and raw_fields / raw (fields from bytes)
    targeted = {r["measure"] for r in first["ratios"] if r["target"]}
    for r in first["ratios"]:
        if not r["target"] and not (r["measure"] in targeted
                                    and _SPLITS & {r["subject"], r["reference"]}):
            continue
        key = (r["measure"], r["subject"], r["reference"])
        ratios = [x["ratio"] for run in runs for x in run["ratios"]
                  if (x["measure"], x["subject"], x["reference"]) == key]
        what = f"{r['measure']}, {r['subject']} / {r['reference']}"
        measured = [x for x in ratios if x is not None]
        if len(measured) < len(runs):
            value = "not measured" + ("" if not measured else
                                      f" in {len(runs) - len(measured)} of {len(runs)} runs")
        else:
            med = statistics.median(measured)
            met = _met(r["target"], med) if r["target"] else True
            shown = f"{med:.2f}"
            if r["target"] and _met(r["target"], float(shown)) != met:
                shown = f"{med:.3f}"      # 1.152 against <= 1.15, not "1.15 (missed)"
            value = shown + ("" if met else " (missed)")
        target = r["target"] or "-"
        if len(runs) == 1:
            lines.append(f"| {what} | {target} | {value} |")
        else:
            each = ", ".join("-" if x is None else f"{x:.2f}" for x in ratios)
            lines.append(f"| {what} | {target} | {value} | {each} |")
    return "\n".join(lines) + "\n"


def _runs(path) -> list[dict]:
    data = json.loads(Path(path).read_text())
    return data["runs"] if "runs" in data else [data]


def readme_block(saved: str | os.PathLike | None = None,
                 saved_scale: str | os.PathLike | None = None) -> str:
    """What goes between the README's marker lines: :func:`readme_table` of
    the runs kept (``ngxlab/lab/data/bench.json``), then, where a run of
    ``ngxlab bench --only scale`` is kept (``bench-scale.json``), its
    table."""
    text = readme_table(_runs(SAVED if saved is None else saved))
    scale_path = Path(SAVED_SCALE if saved_scale is None else saved_scale)
    if scale_path.exists():
        runs = _runs(scale_path)
        text += ("\nAt scale, `ngxlab bench --only scale` (three reloads and QUITs of "
                 "each, interleaved), kept in `ngxlab/lab/data/bench-scale.json`:\n\n"
                 + readme_table(runs) + _wake_line(runs[0]))
    return text


def _wake_line(run: dict) -> str:
    """The CPU of one wake of an old worker in that reload, each system's
    median, from the scale run's rows ("" when it has none)."""
    wake = {}
    for r in run["ratios"]:
        if r["measure"].endswith("CPU per wake of an old worker") and r["unit"] == "us":
            wake.setdefault(r["reference"], r["reference_median"])
            wake.setdefault(r["subject"], r["subject_median"])
    if not wake:
        return ""
    each = ", ".join(f"{name} {us:.1f} µs" for name, us in sorted(wake.items(),
                                                                   key=lambda x: x[1]))
    return f"\nCPU per wake of an old worker in the reload, medians: {each}.\n"


def update_readme(path: str | os.PathLike, saved: str | os.PathLike | None = None,
                  saved_scale: str | os.PathLike | None = None) -> str:
    """Put :func:`readme_block` of the runs kept (by default
    ``ngxlab/lab/data/bench.json`` and ``bench-scale.json``) between the
    README's two marker lines; returns it."""
    table = readme_block(saved, saved_scale)
    text = Path(path).read_text()
    head, rest = text.split(README_START, 1)
    _old, tail = rest.split(README_END, 1)
    Path(path).write_text(head + README_START + table + README_END + tail)
    return table


def main(argv: list[str] | None = None) -> int:
    """``python -m ngxlab.lab.report [README.md] [--keep RESULTS.json ...]
    [--keep-scale RESULTS.json]``: with ``--keep``, first keep those runs of
    ``ngxlab bench`` in the repository (``ngxlab.lab.bench.save``), with
    ``--keep-scale`` a run of ``ngxlab bench --only scale``; then regenerate
    the README's tables from the runs kept."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m ngxlab.lab.report",
                                description="the README's table from the bench runs kept")
    p.add_argument("readme", nargs="?", default="README.md",
                   help="the README whose table is regenerated (default README.md)")
    p.add_argument("--keep", nargs="+", metavar="RESULTS.json",
                   help="results.json files of ngxlab bench runs to keep, in the order run")
    p.add_argument("--keep-scale", metavar="RESULTS.json",
                   help="the results.json of an ngxlab bench --only scale run to keep")
    args = p.parse_args(argv)

    def load(f):
        try:
            return json.loads(Path(f).read_text())
        except (OSError, ValueError) as e:
            p.error(f"{f}: not a results.json of ngxlab bench ({e})")
    if args.keep:
        from ngxlab.lab import bench

        runs = [load(f) for f in args.keep]
        for f, r in zip(args.keep, runs):
            if r.get("quick") or r.get("command") != "ngxlab bench":
                p.error(f"{f}: not a full run of `ngxlab bench` ({r.get('command')!r})")
        bench.save(runs)
    if args.keep_scale:
        from ngxlab.lab import bench

        r = load(args.keep_scale)
        if r.get("quick") or r.get("command") != "ngxlab bench --only scale":
            p.error(f"{args.keep_scale}: not a full run of `ngxlab bench --only scale` "
                    f"({r.get('command')!r})")
        bench.save(r, SAVED_SCALE)
    print(update_readme(args.readme), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
