"""Execute the book's chapters, several at a time, into Jupyter Book's cache.

``make book`` runs this before ``jupyter-book build``. Jupyter Book 1.x
executes the chapters one after the other (its command line has no option for
Sphinx's parallel reading), and most of a chapter's time is its kernel
waiting on its own forks, pipes and timers. On two cores, two chapters at a
time still left about a quarter of the CPU idle: in one clone on 2026-12-03,
the 26 chapters took 86 and 88 s two at a time, 67 and 76 s three at a time,
66 s four at a time. So the default is one more than the cores, at most
three. The chapters of ``ALONE`` run after the others, one at a time: a cell
of theirs must act within a few milliseconds, which a shared machine can make
it miss. The build then finds every chapter in the cache and executes nothing.

Each chapter is read exactly as MyST-NB reads it (its own reader, so the
cache key is the one the build looks up), executed with Jupyter Cache's own
function in the chapter's directory, and stored in the cache by this process
alone, once its kernel is gone (the cache is a SQLite file: one writer).
A chapter already in the cache is not run. A chapter that fails is not
stored: the build executes it again, one at a time, and reports the failure
with its traceback as it always does, so ``-W`` still fails on it.

    python tools/execute_chapters.py [--jobs 3] [--timeout 180] CACHE_DIR CHAPTER.md...

With ``--cached-only`` it executes nothing: it names each chapter that is not
in the cache and exits 1 if there is one. ``make book`` checks the Chinese
edition so before building it: a Chinese page's code cells are its English
page's, so it is always in the cache once the English edition is built, and
is never executed a second time (nor in book/zh, where a chapter would run
with another working directory than book/).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path


# Chapters executed after the others, one at a time: a cell of theirs must
# act within a few milliseconds of something the machine does, and three
# chapters sharing two cores can make it miss. reload.md's sampler must take a
# census in the ~100 ms that two generations of workers live together; run
# beside two other chapters on a busy host it missed them in three builds in a
# row (2026-12-03), and each time the build's own second run, alone, passed.
ALONE = ("reload.md",)


def _read(path: Path):
    """The chapter as MyST-NB's Sphinx parser reads it."""
    from myst_nb.core.read import is_myst_markdown_notebook, read_myst_markdown_notebook
    from myst_parser.config.main import MdParserConfig

    text = path.read_text()
    if not is_myst_markdown_notebook(text):
        return None
    return read_myst_markdown_notebook(text, config=MdParserConfig(),
                                       add_source_map=True, path=str(path))


def _execute(path: str, timeout: int):
    """Run in a worker process: execute one chapter in its own directory."""
    from jupyter_cache.executors.utils import single_nb_execution
    from jupyter_client import AsyncKernelManager

    nb = _read(Path(path))
    # The kernel talks to this process over Unix sockets in a directory of its
    # own, not over TCP: a TCP kernel takes five ports found free by binding
    # port 0 and closing it, and binds them again when it starts; a chapter
    # running beside it (a load test opens thousands of connections, each from
    # an ephemeral port) can take one in between, and the kernel dies with
    # "Address already in use" while nbclient waits for it until
    # startup_timeout.
    # startup_timeout: nbclient waits 60 s for a new kernel's first reply by
    # default, and a kernel started beside another chapter's forking run on a
    # loaded 2-core machine once took longer (the build then ran the chapter
    # again, serially); give it the cells' timeout
    kernel = nb.metadata.get("kernelspec", {}).get("name", "python3")
    with tempfile.TemporaryDirectory(prefix="ngxlab-kernel-") as sockets:
        km = AsyncKernelManager(kernel_name=kernel, transport="ipc",
                                ip=os.path.join(sockets, "kernel"))
        result = single_nb_execution(nb, cwd=str(Path(path).parent.resolve()),
                                     timeout=timeout, allow_errors=False, meta_override=True,
                                     startup_timeout=timeout, km=km)
    return nb, result.time, (result.exc_string if result.err is not None else None)


def _store(cache, path: Path, future) -> bool:
    """Store an executed chapter in the cache and say so; or say why it
    failed (it is not stored). Returns whether it was stored."""
    from jupyter_cache.base import CacheBundleIn

    try:
        nb, seconds, error = future.result()
    except Exception as exc:  # the worker itself failed: leave it to the build
        nb, seconds, error = None, 0.0, f"{type(exc).__name__}: {exc}"
    if error is not None:
        # the end of the traceback too: when the build's second run passes,
        # this is the only record of why the first failed
        lines = error.strip().splitlines() or [""]
        print(f"{path}: failed ({lines[-1]}); the build runs it again and reports it",
              flush=True)
        print("\n".join("    " + line for line in lines[-12:]), flush=True)
        return False
    cache.cache_notebook_bundle(
        CacheBundleIn(nb, str(path.resolve()), data={"execution_seconds": seconds}),
        check_validity=False, overwrite=True)
    print(f"{path}: executed in {seconds:.2f} s", flush=True)
    return True


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cache", help="Jupyter Book's execution cache (e.g. _build/.jupyter_cache)")
    p.add_argument("chapters", nargs="+", type=Path)
    p.add_argument("--jobs", type=int, default=min(3, (os.cpu_count() or 1) + 1))
    p.add_argument("--timeout", type=int, default=180)
    p.add_argument("--cached-only", action="store_true",
                   help="execute nothing; fail if a chapter is not in the cache")
    args = p.parse_args(argv)

    from jupyter_cache import get_cache

    cache = get_cache(args.cache)
    todo = []
    for path in args.chapters:
        nb = _read(path)
        if nb is None:
            continue
        try:
            cache.match_cache_notebook(nb)
        except KeyError:
            todo.append(path)
    if args.cached_only:
        for path in todo:
            print(f"{path}: not in the execution cache (are its code cells its English "
                  f"page's? tests/test_zh_pages.py compares them)", flush=True)
        return 1 if todo else 0
    if not todo:
        return 0
    # The longest chapters first, so that those running together end together: a
    # chapter's size is a rough guide to how long it runs.
    todo.sort(key=lambda p: p.stat().st_size, reverse=True)
    alone = [p for p in todo if p.name in ALONE]
    together = [p for p in todo if p.name not in ALONE]
    print(f"== executing {len(todo)} chapters, {args.jobs} at a time"
          + (f", then {', '.join(p.name for p in alone)} alone" if alone else ""), flush=True)
    start = time.monotonic()
    failed = 0
    # "spawn": each worker is a fresh interpreter, not a fork of this one.
    for paths, jobs in ((together, args.jobs), (alone, 1)):
        if not paths:
            continue
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(_execute, str(path), args.timeout): path for path in paths}
            for future in as_completed(futures):
                failed += not _store(cache, futures[future], future)
    print(f"== {len(todo) - failed} of {len(todo)} chapters executed in "
          f"{time.monotonic() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
