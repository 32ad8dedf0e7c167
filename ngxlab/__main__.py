"""The ngxlab command line: ``python -m ngxlab`` (also installed as
``ngxlab``).

    ngxlab run --workers 4 --prefix DIR [--listen 127.0.0.1:PORT] [--daemon]
    ngxlab signal {stop,quit,reopen,reload} --prefix DIR
    ngxlab topology --pid PID [--json]
    ngxlab bench [--quick] [--out DIR] [--only cost|mesh|under-fire ...]

Exit status: 0 on success, 1 when the thing asked for failed (a port in
use, no pid file, a signal that could not be sent), 2 for a usage error.
Every error is one line, never a traceback.

Deviations (from ``nginx`` and ``nginx -s``):

- ``--workers`` takes 1 to 512, half of ``NGX_MAX_PROCESSES``: a reload runs
  two generations side by side. nginx takes any ``worker_processes`` and
  spawns what fits ("no more than 1024 processes can be spawned").
- Numbers (``--workers``, the port of ``--listen``, ``--pid``) are ASCII
  digits only, as ``ngx_atoi`` reads them; ``int()`` would also take "+4",
  "4_0" and the digits of other scripts.
- ``--prefix ''`` is refused (nginx's ``-p ''`` means the current
  directory).
- ``signal`` refuses a pid file that is not a regular file, a pid that is
  not a running ngxlab master (a zombie included) and a master that serves
  another prefix; ``nginx -s`` signals whatever pid the file names (see
  ``ngxlab.cycle``). ``run`` refuses a prefix whose master is alive (see
  ``ngxlab.nginx``).
"""

from __future__ import annotations

import os
import sys

from ngxlab import __version__

# argparse is imported by _parser() only: a plain `ngxlab run` command line
# is read without it (see _plain_run)

SIGNALS = ("stop", "quit", "reopen", "reload")
LOG_LEVELS = ("debug", "info", "notice", "warn", "error", "crit", "alert",
              "emerg")


def _invalid(message):
    """argparse's ArgumentTypeError (the checks below run without argparse
    for a plain `ngxlab run`)."""
    import argparse
    return argparse.ArgumentTypeError(message)


def _number(text):
    """An int from ASCII digits with an optional "-" (as nginx's ngx_atoi
    reads a number; int() would also take "+4", " 4", "4_0" and the digits
    of every script), else None."""
    from ngxlab.cycle import ascii_number
    n = ascii_number(text[1:] if text.startswith("-") else text)
    return None if n is None else (-n if text.startswith("-") else n)


def _workers(text):
    from ngxlab.cycle import MAX_WORKER_PROCESSES
    from ngxlab.process import NGX_MAX_PROCESSES
    n = _number(text)
    if n is None:
        raise _invalid(f"not a number: {text!r}")
    if not 1 <= n <= MAX_WORKER_PROCESSES:
        raise _invalid(
            f"{n} workers: must be from 1 to {MAX_WORKER_PROCESSES} (a reload "
            f"runs two generations in the {NGX_MAX_PROCESSES}-slot process "
            f"table)")
    return n


def _listen(text):
    host, sep, port = text.rpartition(":")
    n = _number(port) if sep else None
    if n is None or not 0 <= n <= 65535:
        raise _invalid(f"expected 127.0.0.1:PORT, not {text!r}")
    if host != "127.0.0.1":
        raise _invalid(
            f"ngxlab listens on 127.0.0.1 only, not {host!r}")
    return (host, n)


def _pid(text):
    pid = _number(text)
    if pid is None or pid <= 0:
        raise _invalid(f"not a pid: {text!r}")
    return pid


def _prefix(text):
    if not text:
        raise _invalid(
            "an empty prefix: name a directory (\".\" for this one)")
    if "\0" in text:
        raise _invalid(f"not a path: {text!r}")
    return text


def _parser():
    import argparse
    parser = argparse.ArgumentParser(
        prog="ngxlab",
        description="nginx's master/worker inter-process communication, "
                    "re-implemented in Python, one nginx function at a time.")
    parser.add_argument("--version", action="version",
                        version=f"ngxlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run", help="run a master and its workers, as nginx does",
        description="Run a master that forks WORKERS workers, each with a "
                    "socketpair channel, all accepting on one listening "
                    "socket on 127.0.0.1. The pid file is DIR/logs/ngxlab.pid,"
                    " the error log DIR/logs/error.log, the configuration "
                    "DIR/conf/ngxlab.conf (edit it, then `ngxlab signal "
                    "reload`).")
    run.add_argument("--workers", type=_workers, default=1, metavar="N",
                     help="worker processes, 1 to 512 (default 1; a reload "
                          "needs room for two generations)")
    run.add_argument("--prefix", type=_prefix, required=True, metavar="DIR",
                     help="directory for conf/ and logs/ (created)")
    run.add_argument("--listen", type=_listen, default=("127.0.0.1", 0),
                     metavar="127.0.0.1:PORT",
                     help="address to listen on (default: a free port; the "
                          "log says which)")
    run.add_argument("--daemon", action="store_true",
                     help="detach as nginx does with `daemon on` (needed for "
                          "a binary upgrade with SIGUSR2)")
    run.add_argument("--nginx-orphans", action="store_true",
                     help="workers outlive a killed master, as nginx's do "
                          "(by default they exit within a second)")
    run.add_argument("--nginx-quirks", action="store_true",
                     help="nginx's behaviour where ngxlab's safe default "
                          "differs: messages lost on a full channel, "
                          "announcements after a failed spawn, descriptors "
                          "leaked (the mirrors' Deviations say which)")
    run.add_argument("--log-level", default="notice",
                     choices=LOG_LEVELS,
                     help="error log level (default notice)")
    run.add_argument("--quiet", action="store_true",
                     help="do not echo the error log to stderr")
    run.add_argument("--die-with-parent", action="store_true",
                     help="fast shutdown when the starting process dies "
                          "(used by notebooks and tests)")

    sig = sub.add_parser(
        "signal", help="signal a running master, like nginx -s",
        description="Read DIR/logs/ngxlab.pid and send the signal nginx -s "
                    "sends: stop (TERM), quit (QUIT), reopen (USR1), reload "
                    "(HUP). Refuses a pid that is not an ngxlab master.")
    sig.add_argument("signal", choices=SIGNALS, metavar="{stop,quit,reopen,reload}")
    sig.add_argument("--prefix", type=_prefix, required=True, metavar="DIR")

    top = sub.add_parser(
        "topology", help="census of a master's descriptors (ngxlab or nginx)",
        description="Classify every descriptor of a master and its workers, "
                    "match the socketpairs and label each channel end with "
                    "its slot. Works on an ngxlab master and on a real nginx "
                    "master alike.")
    who = top.add_mutually_exclusive_group(required=True)
    who.add_argument("--pid", type=_pid, help="the master's pid")
    who.add_argument("--prefix", type=_prefix, metavar="DIR",
                     help="an ngxlab prefix (reads its pid file)")
    top.add_argument("--json", action="store_true", help="print JSON")

    bench = sub.add_parser(
        "bench", help="measure ngxlab beside raw Python, C and real nginx",
        description="Run the benchmarks side by side in one run and print "
                    "ratios against their references; write results.json and "
                    "PNG figures into --out.")
    bench.add_argument("--quick", action="store_true",
                       help="a few seconds, small samples (what CI runs)")
    bench.add_argument("--out", default="bench-out", metavar="DIR",
                       help="output folder (default bench-out)")
    bench.add_argument("--no-progress", action="store_true",
                       help="no progress bar")
    bench.add_argument("--only", nargs="+", metavar="SECTION",
                       choices=("cost", "mesh", "under-fire", "scale"),
                       help="run only these sections: cost (a channel message, descriptors "
                            "per second, forks), mesh (start-up, quit and descriptors against "
                            "N, beside nginx), under-fire (reloads and a binary upgrade under "
                            "load, a kill storm, the master's death, beside nginx), scale (a "
                            "reload and a QUIT of 400 workers beside nginx: minutes); "
                            "default: the first three")
    return parser


# `ngxlab run`'s options for _plain_run: those that take a value, with the
# check argparse applies to it, and the flags
_RUN_VALUES = {"--workers": _workers, "--prefix": _prefix,
               "--listen": _listen, "--log-level": None}
_RUN_FLAGS = ("--daemon", "--nginx-orphans", "--nginx-quirks", "--quiet",
              "--die-with-parent")


class _RunArgs:
    """The parsed arguments of `ngxlab run`, as argparse's Namespace has them."""

    def __init__(self):
        self.command = "run"
        self.workers = 1
        self.prefix = None
        self.listen = ("127.0.0.1", 0)
        self.log_level = "notice"
        for flag in _RUN_FLAGS:
            setattr(self, flag[2:].replace("-", "_"), False)


def _plain_run(argv):
    """The arguments of a plain `ngxlab run` command line, read without
    argparse: importing it and building the parser was a third of what the
    master did before its first fork. Plain: every option spelt out in full
    (no abbreviation, no "--opt=value"), each value a word of its own that
    does not start with "-" and passes the option's check. Anything else
    (help, an error, another command) returns None, and argparse reads the
    command line and says what is wrong in its own words; what this accepts,
    argparse parses to the same values (tests/test_cli.py holds them
    together)."""
    if argv[:1] != ["run"]:
        return None
    args = _RunArgs()
    i = 1
    while i < len(argv):
        word = argv[i]
        if word in _RUN_FLAGS:
            setattr(args, word[2:].replace("-", "_"), True)
            i += 1
            continue
        if word not in _RUN_VALUES or i + 1 == len(argv) \
                or argv[i + 1].startswith("-"):
            return None
        value = argv[i + 1]
        check = _RUN_VALUES[word]
        if check is None:
            if value not in LOG_LEVELS:
                return None
        else:
            try:
                value = check(value)
            except Exception:       # argparse says what is wrong with it
                return None
        setattr(args, word[2:].replace("-", "_"), value)
        i += 2
    return args if args.prefix is not None else None


def _run(args, argv):
    from ngxlab import nginx

    prefix = os.path.abspath(args.prefix)
    try:
        nginx.prepare_prefix(prefix)
    except OSError as e:
        print(f"ngxlab run: cannot use prefix {prefix!r}: "
              f"{e.strerror or e}", file=sys.stderr)
        return 1

    exec_argv = [sys.executable, "-m", "ngxlab"] + list(argv)
    return nginx.main(exec_argv, prefix, args.workers, listen=args.listen,
                      daemon=args.daemon, watch_master=not args.nginx_orphans,
                      nginx_quirks=args.nginx_quirks,
                      log_level=args.log_level,
                      echo=None if args.quiet or args.daemon else sys.stderr,
                      die_with_parent=args.die_with_parent)


def _signal(args):
    from ngxlab import cycle as cy, process_cycle as pc
    from ngxlab.core import ngx_log_t

    prefix = os.path.abspath(args.prefix)
    pc.ngx_process = pc.NGX_PROCESS_SIGNALLER
    cycle = cy.ngx_cycle_t(
        prefix=prefix, log=ngx_log_t(sys.stderr, "error"),
        conf=cy.ngx_core_conf_t(
            pid=os.path.join(prefix, cy.NGX_PID_PATH)))
    return cy.ngx_signal_process(cycle, args.signal)


def _topology(args):
    from ngxlab import cycle as cy
    from ngxlab.lab import census as lab_census

    pid = args.pid
    slots = None
    prefix = args.prefix
    if prefix is not None:
        path = os.path.join(prefix, cy.NGX_PID_PATH)
        try:
            text = cy.read_pidfile(path)
        except OSError as e:
            print(f"ngxlab topology: no pid in {path!r}: {e.strerror}",
                  file=sys.stderr)
            return 1
        pid = cy.ascii_number(text)
        if not pid:
            print(f"ngxlab topology: no pid in {path!r}: "
                  f"{text.decode(errors='replace')!r}", file=sys.stderr)
            return 1
    elif cy.is_ngxlab_master(pid):
        prefix = cy.master_prefix(pid)
    channels = None
    if prefix is not None:
        table = read_table(prefix, pid)
        if table is not None:
            slots = {s["slot"]: s["pid"] for s in table}
            channels = {s["slot"]: tuple(s["channel"]) for s in table}
    try:
        c = lab_census.census_master(pid, slots=slots, channels=channels)
    except lab_census.CensusError as e:
        print(f"ngxlab topology: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(c.to_json())
    else:
        print(c)
    return 0


def read_table(prefix, pid=None):
    """The live slots (dicts with slot, pid, channel, flags) from an ngxlab
    master's ``logs/ngxlab.slots`` (or, for an old master while a new binary
    runs, ``logs/ngxlab.slots.oldbin``): the table written by master ``pid``
    when it is given."""
    import json
    for name in ("ngxlab.slots", "ngxlab.slots.oldbin"):
        try:
            with open(os.path.join(prefix, "logs", name)) as f:
                table = json.load(f)
        except (OSError, ValueError):
            continue
        if pid is None or table.get("master") == pid:
            return table.get("slots", [])
    return None


def _bench(args):
    from ngxlab.lab import bench
    bench.run(args.out, quick=args.quick, progress=not args.no_progress,
              sections=args.only or bench.DEFAULT_SECTIONS)
    return 0


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    args = _plain_run(argv)
    if args is not None:
        return _run(args, argv)
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "run":
        return _run(args, argv)
    if args.command == "signal":
        return _signal(args)
    if args.command == "topology":
        return _topology(args)
    if args.command == "bench":
        return _bench(args)
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
