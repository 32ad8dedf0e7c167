"""Compile ngxlab's own C helpers (``ngxlab/lab/csrc/*.c``) at run time.

``build("floor")`` compiles ``csrc/floor.c`` with ``cc -O2`` once and returns
the path of the program. The program is cached under ``$XDG_CACHE_HOME/ngxlab``
(``~/.cache/ngxlab``; a per-user directory in the system's temporary directory
when that is not writable), named after a hash of the source, the compiler
and its flags: editing the source or changing compilers builds anew, and two
processes building at once do not see each other's half-written file.

``CompilerNotFound`` means there is no C compiler (``$CC``, ``cc``, ``gcc`` or
``clang``): callers report the C variants as skipped, never faked.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["CBuildError", "CompilerNotFound", "build", "compiler", "source_path"]

CSRC = Path(__file__).resolve().parent / "csrc"
CFLAGS = ("-O2", "-Wall")

_built: dict[str, tuple[bytes, Path]] = {}   # name -> (source, program), this process


class CBuildError(RuntimeError):
    """The C compiler failed; the message ends with its error output."""


class CompilerNotFound(CBuildError, FileNotFoundError):
    """No C compiler on this machine."""


def compiler() -> list[str] | None:
    """The compiler command: ``$CC`` (split like a shell word list), else the
    first of cc, gcc, clang on PATH; ``None`` when there is none."""
    env = os.environ.get("CC", "").strip()
    if env:
        words = shlex.split(env)
        if words and shutil.which(words[0]):
            return [shutil.which(words[0]), *words[1:]]
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return [path]
    return None


def source_path(name: str) -> Path:
    """``csrc/<name>.c``."""
    return CSRC / f"{name}.c"


def _cache_dirs() -> list[Path]:
    dirs = []
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        dirs.append(Path(xdg) / "ngxlab")
    home = os.path.expanduser("~")
    if home and home != "~":
        dirs.append(Path(home) / ".cache" / "ngxlab")
    dirs.append(Path(tempfile.gettempdir()) / f"ngxlab-{os.getuid()}")
    return dirs


def _writable_dir() -> Path:
    for d in _cache_dirs():
        try:
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError:
            continue
        if os.access(d, os.W_OK | os.X_OK):
            return d
    raise CBuildError("no writable cache directory for compiled C helpers")


def _compiler_identity(cc: list[str]) -> str:
    try:
        done = subprocess.run([*cc, "--version"], capture_output=True, text=True,
                              timeout=30, stdin=subprocess.DEVNULL)
        return done.stdout.splitlines()[0] if done.stdout else cc[0]
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return cc[0]


def build(name: str = "floor") -> Path:
    """Compile ``csrc/<name>.c`` (once; cached) and return the program's path.

    Raises :class:`CompilerNotFound` when there is no compiler and
    :class:`CBuildError` when compiling fails.
    """
    source = source_path(name)
    text = source.read_bytes()
    built = _built.get(name)
    if built is not None and built[0] == text and built[1].is_file():
        return built[1]
    cc = compiler()
    if cc is None:
        raise CompilerNotFound(
            "no C compiler found (cc, gcc, clang or $CC); install one, e.g. apt-get install gcc")
    key = hashlib.sha256(b"\0".join(
        [text, _compiler_identity(cc).encode(), " ".join([*cc, *CFLAGS]).encode()])).hexdigest()[:16]
    for d in _cache_dirs():
        cached = d / f"{name}-{key}"
        if cached.is_file() and os.access(cached, os.X_OK):
            _built[name] = (text, cached)
            return cached

    target = _writable_dir() / f"{name}-{key}"
    fd, tmp = tempfile.mkstemp(prefix=f".{name}-", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run([*cc, *CFLAGS, "-o", tmp, str(source)], capture_output=True,
                              text=True, timeout=120, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise CBuildError(f"{' '.join([*cc, *CFLAGS])} {source.name} failed "
                              f"(exit {done.returncode}):\n{done.stderr.strip()[-2000:]}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _built[name] = (text, target)
    return target
