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
           "readme_table", "update_readme", "SAVED", "interpreter_line", "pyc_state"]

SAVED = Path(__file__).resolve().parent / "data" / "bench.json"   # the run kept in the repository
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
    for path in (shutil.which("nginx"), "/usr/sbin/nginx", "/usr/local/nginx/sbin/nginx"):
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


def readme_table(results: dict) -> str:
    """The README's table of the targets, from a saved ``ngxlab bench`` run
    (its ``results.json``, or the copy kept in ``ngxlab/lab/data``): the
    measured ratio of each target, "missed" where the run missed it, with
    the line saying when and on what the run was made. The README's table
    is this text, and a test checks that it still is."""
    m = results["machine"]
    lines = [f"Measured by `ngxlab bench` on {m['date'][:10]}: {results['machine_line']}"
             f" (load {', '.join(f'{x:.2f}' for x in m['loadavg'] or ())} at the start,"
             f" {', '.join(f'{x:.2f}' for x in results.get('loadavg_end') or ())} at the end).",
             "", "| measure | target | measured |", "|---|---|---|"]
    for r in results["ratios"]:
        if not r["target"]:
            continue
        what = f"{r['measure']}, {r['subject']} / {r['reference']}"
        if r["ratio"] is None:
            value = "not measured"
        else:
            value = f"{r['ratio']:.2f}" + ("" if r["met"] else " (missed)")
        lines.append(f"| {what} | {r['target']} | {value} |")
    return "\n".join(lines) + "\n"


def update_readme(path: str | os.PathLike, saved: str | os.PathLike | None = None) -> str:
    """Put :func:`readme_table` of the saved run (by default
    ``ngxlab/lab/data/bench.json``) between the README's two marker lines;
    returns the table."""
    table = readme_table(json.loads(Path(SAVED if saved is None else saved).read_text()))
    text = Path(path).read_text()
    head, rest = text.split(README_START, 1)
    _old, tail = rest.split(README_END, 1)
    Path(path).write_text(head + README_START + table + README_END + tail)
    return table


if __name__ == "__main__":
    print(update_readme(sys.argv[1] if len(sys.argv) > 1 else "README.md"), end="")
