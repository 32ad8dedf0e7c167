"""What the chapters' cells use besides the runners, written once.

- :func:`operator`: run ``python -m ngxlab ARGS --prefix DIR`` as an operator
  types it, and show what it printed and its exit status;
- :class:`LogClock`: stamp every line appended to an error log with when it
  appeared, in ms (nginx's timestamps are whole seconds);
- :func:`strace_attached`: ``strace -f -p PID`` for the length of a block;
- :func:`wait_until`: poll a condition with a deadline;
- :func:`state` and :func:`alive`: what ``/proc`` says of a pid
  (:mod:`ngxlab.lab.proc`);
- :func:`show_source`: a function's or class's source, read from the library
  when the cell runs, as a highlighted code block in the built book and in
  JupyterLab alike (how the chapters show the mirrors).
- :func:`glue`: MyST-NB's ``glue``, which also shows the value under its name
  when a chapter runs as a notebook outside the book's build (JupyterLab
  cannot put a glued value into the prose: it shows the name); with
  ``zh=``, it also glues the value's Chinese wording for the Chinese pages.

Each is shown in the chapter that first uses it and imported in the others.

Not a mirror of nginx: nothing here has an ``ngx_`` name.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import shutil
import textwrap
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from ngxlab.lab.proc import alive, state
from ngxlab.lab.runner import ngxlab_env

__all__ = ["operator", "LogClock", "strace_attached", "wait_until", "state", "alive",
           "show_source", "Source", "glue"]


def operator(*args: str, prefix, show: bool = True) -> subprocess.CompletedProcess:
    """Run ``python -m ngxlab ARGS --prefix DIR`` and, with ``show``, print it
    as typed, what it printed (the prefix shown as ``DIR``) and its exit status."""
    r = subprocess.run([sys.executable, "-m", "ngxlab", *args, "--prefix", str(prefix)],
                       capture_output=True, text=True, timeout=30, env=ngxlab_env(),
                       stdin=subprocess.DEVNULL)
    if show:
        print(f"$ ngxlab {' '.join(args)} --prefix DIR")
        print((r.stdout + r.stderr).replace(str(prefix), "DIR"), end="")
        print(f"(exit status {r.returncode})")
    return r


class LogClock:
    """Stamp every line appended to a log file with when it appeared, in ms."""

    def __init__(self, path, interval=0.0005):
        self.path, self.interval = path, interval
        self.lines = []                      # (ms since start, line)
        self._stop = threading.Event()

    def now(self):
        return (time.monotonic() - self.t0) * 1000

    def at(self, epoch):
        """A time.time() value (an strace -ttt stamp) on this clock, in ms."""
        return (epoch - self.epoch0) * 1000

    def __enter__(self):
        self._file = open(self.path, "rb")
        self._file.seek(0, os.SEEK_END)
        self._rest = b""
        self.t0, self.epoch0 = time.monotonic(), time.time()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        data = self._file.read()
        if data:
            t = self.now()
            *done, self._rest = (self._rest + data).split(b"\n")
            self.lines += [(t, line.decode()) for line in done]

    def _run(self):
        while not self._stop.is_set():
            self._poll()
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._poll()
        self._file.close()


@contextmanager
def strace_attached(pid, out, calls="sendmsg,kill") -> Iterator[str | None]:
    """`strace -f -p PID` while the block runs; yields the output path, or None."""
    proc = None
    if shutil.which("strace") is None:
        print("(strace is not installed: no system-call trace)")
    else:
        proc = subprocess.Popen(["strace", "-f", "-xx", "-ttt", "-e", f"trace={calls}",
                                 "-o", out, "-p", str(pid)],
                                stderr=subprocess.PIPE, text=True)
        first = proc.stderr.readline()       # "strace: Process N attached"
        if "attached" not in first:
            print(f"(strace could not attach: {first.strip()})")
    try:
        yield out if proc is not None and proc.poll() is None else None
    finally:
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)          # detach
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stderr.close()


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Poll predicate() until it is true; raise TimeoutError after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(getattr(predicate, "__name__", "condition"))
        time.sleep(0.002)
    return value


class Source:
    """Source code that displays as highlighted code blocks, one per object.

    Two rich forms, one for each place a chapter is read. ``text/markdown``
    is a fenced ``python`` block per object: the book's build (which is
    configured to prefer it, see ``_config.yml``) turns it into the same
    highlighted block, copy button included, as any code on the page.
    ``text/html`` is the same code highlighted by Pygments with inline
    colours, which JupyterLab prefers and shows as it is (it does not colour
    code in a Markdown output). The plain form is the code itself."""

    def __init__(self, blocks: list[str], names: tuple[str, ...] = ()):
        self.blocks, self.names = blocks, names

    @property
    def code(self) -> str:
        return "\n\n".join(b.rstrip() + "\n" for b in self.blocks)

    def _repr_markdown_(self) -> str:
        out = []
        for block in self.blocks:
            longest = max((len(m) for m in re.findall(r"`+", block)), default=0)
            fence = "`" * max(3, longest + 1)
            out.append(f"{fence}python\n{block.rstrip()}\n{fence}\n")
        return "\n".join(out)

    def _repr_html_(self) -> str | None:
        try:
            from pygments import highlight
            from pygments.formatters import HtmlFormatter
            from pygments.lexers import PythonLexer
        except ImportError:                  # the library itself needs only the stdlib
            return None
        formatter = HtmlFormatter(noclasses=True, style="default")
        return highlight(self.code, PythonLexer(), formatter)     # one block, blank lines kept

    def __repr__(self) -> str:
        return self.code.rstrip()

    def __str__(self) -> str:
        return self.code


def _resolve(target):
    """``"ngxlab.process.ngx_spawn_process"`` (or the object itself) -> the object."""
    if not isinstance(target, str):
        return target
    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for part in parts[cut:]:
            obj = getattr(obj, part)
        return obj
    raise ImportError(f"show_source: no module in {target!r}")


def _cut(code: str, start_at: str | None, end_before: str | None, name: str) -> str:
    lines = code.splitlines(keepends=True)
    first, last = 0, len(lines)
    if start_at is not None:
        first = next((i for i, line in enumerate(lines) if start_at in line), None)
        if first is None:
            raise ValueError(f"show_source: {start_at!r} is not in {name}")
    if end_before is not None:
        last = next((i for i in range(first + 1, len(lines)) if end_before in lines[i]), None)
        if last is None:
            raise ValueError(f"show_source: {end_before!r} is not in {name} after {start_at!r}")
    return textwrap.dedent("".join(lines[first:last]))


def show_source(*targets, start_at: str | None = None, end_before: str | None = None) -> Source:
    """The source of one or more functions or classes, as a :class:`Source`.

    Each target is a dotted name (``"ngxlab.process.ngx_spawn_process"``) or
    the object itself. The code is read from the module's file when this
    runs, so what a page shows is what the library holds. ``start_at`` and
    ``end_before`` (one target only) keep the lines from the first that
    contains ``start_at`` up to, not including, the next that contains
    ``end_before``, dedented."""
    if not targets:
        raise TypeError("show_source: name at least one function or class")
    if (start_at or end_before) and len(targets) != 1:
        raise TypeError("show_source: start_at and end_before take one target")
    blocks, names = [], []
    for target in targets:
        obj = _resolve(target)
        name = f"{obj.__module__}.{obj.__qualname__}"
        code = textwrap.dedent(inspect.getsource(obj))
        if start_at is not None or end_before is not None:
            code = _cut(code, start_at, end_before, name)
        blocks.append(code)
        names.append(name)
    return Source(blocks, tuple(names))


def source_calls(text: str) -> list[tuple[str, dict]]:
    """Every ``show_source(...)`` call in a chapter's text, as (dotted name,
    keyword arguments) per target, read without running anything: what the
    map, the sync test and the Makefile's cache key use to know which
    functions a chapter shows."""
    import ast

    calls = []
    for m in re.finditer(r"\bshow_source\(", text):
        start, node = m.start(), None
        for end in (i + 1 for i, ch in enumerate(text[m.end():], m.end()) if ch == ")"):
            try:
                node = ast.parse(text[start:end], mode="eval").body
                break
            except SyntaxError:
                continue
        if not isinstance(node, ast.Call) or text[:start].rstrip().endswith("def"):
            continue
        kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
        for arg in node.args:
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                calls.append((arg.value, kwargs))
    return calls


def glue(name: str, value: Any, display: bool = False, *, zh: str | None = None) -> None:
    """``myst_nb.glue(name, value, display)``: the book's build puts ``value``
    where the prose says ``{glue:text}`name```.

    Opened as a notebook (JupyterLab, or any run outside ``make book``, which
    sets ``NGXLAB_BOOK=1``), the prose shows only the name; the value is then
    also shown under the cell that computed it, as ``name = value`` (a figure
    as itself), so that a reader finds it just above the sentence that uses
    it.

    ``zh``: the same value in Chinese, for a value that is a word or a
    sentence (a number is shared by both editions under one name). It is
    glued as ``name + "_zh"``, never displayed, and the Chinese page says
    ``{glue:text}`name_zh```; the English page's cell computes both from the
    same data, so both editions' prose come from one run. Outside the book's
    build only the English value is shown."""
    from myst_nb import glue as myst_glue

    myst_glue(name, value, display=display)
    if zh is not None:
        myst_glue(name + "_zh", zh, display=False)
    if display or os.environ.get("NGXLAB_BOOK"):
        return
    from IPython.display import display as show

    if isinstance(value, (str, int, float)):
        show({"text/plain": f"{name} = {value}"}, raw=True)
    else:
        show(value)
