"""A full channel, live: what nginx's ``TODO: NGX_AGAIN`` loses, and what
ngxlab's write queue keeps.

nginx's master writes OPEN_CHANNEL and CLOSE_CHANNEL into non-blocking
channels and ignores the result. A worker that does not read (here: stopped
with SIGSTOP) lets its channel fill up; every message after that meets
EAGAIN and is lost, so once the worker reads again its table misses the
peers announced meanwhile, for good. ngxlab's default keeps those messages
in a queue (``ngxlab._pending``) and writes them when there is room;
``--nginx-quirks`` loses them as nginx does.

:func:`full_channel` runs the same experiment on each system, each as its
own process looked at from outside (a real nginx with
:class:`~ngxlab.lab.nginx.Nginx`, ``ngxlab run`` with
:class:`~ngxlab.lab.run.MasterProcess`):

1. start ``workers`` workers and wait for the full mesh;
2. SIGSTOP the worker in ``stopped_slot``;
3. SIGKILL the worker in ``victim_slot`` and wait for the master to respawn
   it, ``respawns`` times: each respawn writes a CLOSE_CHANNEL and an
   OPEN_CHANNEL into the stopped worker's channel, which holds
   :func:`channel_capacity` messages;
4. with the channel full, SIGKILL the victim once more and at once send the
   master SIGUSR1, and time how long the master takes to log "reopening
   logs" (it has a full channel to write to while it answers);
5. read how many bytes wait in the stopped worker's channel (``sock_diag``),
   SIGCONT it, and census until the mesh is complete or ``settle`` seconds
   have passed.

:func:`record` writes the result of a run on this machine to
``ngxlab/lab/data/recorded_full_channel.json`` (what the book shows,
labelled as recorded, where nginx is missing); :func:`recorded` reads it.
``python -m ngxlab.lab.fullchannel`` prints a run's table;
``python -m ngxlab.lab.fullchannel --record`` also writes the file.
"""

from __future__ import annotations

import argparse
import array
import json
import os
import re
import signal
import socket
import sys
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from ngxlab.lab import proc, report
from ngxlab.lab.census import Census

__all__ = ["SYSTEMS", "FullChannelRun", "FullChannelResult", "channel_capacity",
           "run_one", "full_channel", "record", "recorded", "RECORDED"]

SYSTEMS = ("nginx", "ngxlab", "ngxlab --nginx-quirks")
RECORDED = "recorded_full_channel.json"
_MESSAGE = 32           # sizeof(ngx_channel_t) on LP64


def channel_capacity(with_fd: bool = False) -> int:
    """How many 32-byte messages a fresh non-blocking unix stream socketpair
    takes before ``sendmsg()`` fails with EAGAIN (the kernel's default send
    buffer decides). ``with_fd``: every message carries a descriptor."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        a.setblocking(False)
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                array.array("i", [b.fileno()]).tobytes())] if with_fd else []
        n = 0
        while True:
            try:
                a.sendmsg([bytes(_MESSAGE)], anc)
            except BlockingIOError:
                return n
            n += 1
    finally:
        a.close()
        b.close()


@dataclass(frozen=True)
class FullChannelRun:
    """One system through the experiment (see the module's docstring)."""

    system: str                 # one of SYSTEMS
    version: str                # nginx's version, or ngxlab's
    workers: int
    stopped_slot: int
    victim_slot: int
    respawns: int               # of the victim while the worker was stopped (the timed one included)
    capacity: int               # messages one channel holds (channel_capacity())
    queued_messages: int        # waiting in the stopped worker's channel when it was resumed
    signal_ms: float            # kill(master, SIGUSR1) -> the master's "reopening logs"
    complete: bool              # the full mesh, once the stopped worker had read
    settle_ms: float            # SIGCONT -> full mesh (or -> the deadline, when not complete)
    missing: tuple[int, ...]    # slots whose live channel[0] the resumed worker does not hold
    stale: int                  # channel descriptors it holds of workers that are gone
    table: str                  # the last census, as a table

    def outcome(self, zh: bool = False) -> str:
        """One line: what the resumed worker ended with (in Chinese with
        ``zh``, for the Chinese edition's prose)."""
        if self.complete:
            return "全连接完整" if zh else "full mesh"
        parts = []
        if self.missing:
            slots = ", ".join(map(str, self.missing))
            parts.append(f"没有槽位 {slots} 的通道" if zh else f"no channel for slot {slots}")
        if self.stale:
            parts.append(f"持有 {self.stale} 个已退出工作进程的通道" if zh
                         else f"{self.stale} channel(s) of dead workers")
        if zh:
            return "不完整：" + "；".join(parts or ["不是全连接"])
        return "incomplete: " + "; ".join(parts or ["not a full mesh"])


@dataclass
class FullChannelResult:
    """The runs of one :func:`full_channel` call, and where they ran."""

    runs: dict[str, FullChannelRun]
    machine: str
    date: str
    nginx_skipped: str | None = None      # why nginx did not run here
    nginx_version: str | None = None
    what: str = ""

    def table(self) -> str:
        lines = [f"{'system':22} {'respawns':>8} {'queued':>7} {'signal ms':>9}  after SIGCONT"]
        for name, r in self.runs.items():
            lines.append(f"{name:22} {r.respawns:>8} {r.queued_messages:>7} "
                         f"{r.signal_ms:>9.1f}  {r.outcome()}")
        return report.table_text(lines, self.nginx_skipped)

    def to_dict(self) -> dict:
        return {"what": self.what, "date": self.date, "machine": self.machine,
                "nginx": self.nginx_version, "nginx_skipped": self.nginx_skipped,
                "runs": {k: asdict(v) for k, v in self.runs.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "FullChannelResult":
        runs = {k: FullChannelRun(**{**v, "missing": tuple(v["missing"])})
                for k, v in d["runs"].items()}
        return cls(runs=runs, machine=d["machine"], date=d["date"],
                   nginx_skipped=d.get("nginx_skipped"), nginx_version=d.get("nginx"),
                   what=d.get("what", ""))


# -- the two kinds of runner, seen alike --------------------------------------


class _Runner:
    def __init__(self, system: str, workers: int):
        self.system = system
        if system == "nginx":
            from ngxlab.lab.nginx import Nginx
            self.r = Nginx(workers=workers)
        else:
            from ngxlab.lab.run import MasterProcess
            self.r = MasterProcess(workers=workers,
                                   nginx_quirks=system.endswith("--nginx-quirks"))

    def __enter__(self):
        self.r.start()
        return self

    def __exit__(self, *exc):
        self.r.stop()

    @property
    def version(self) -> str:
        if self.system == "nginx":
            return self.r.version
        import ngxlab
        return ngxlab.__version__

    @property
    def master(self) -> int:
        return self.r.master_pid

    def slots(self) -> dict[int, int]:
        return self.r.slots

    def census(self) -> Census:
        return self.r.census()

    def wait_respawn(self, slot: int, old: int, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while True:
            pid = self.slots().get(slot)
            if pid not in (None, old) and proc.state(pid) not in (None, "Z"):
                return pid
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.system}: slot {slot} not respawned within {timeout} s")
            time.sleep(0.002)

    @property
    def log_path(self) -> Path:
        return Path(self.r.log_path)

    def wait_master_line(self, text: str, since: int, timeout: float = 30.0) -> None:
        """Poll the error log every millisecond (the runners' own waits poll
        more slowly) until the master has logged ``text``."""
        rx = re.compile(rf"\] {self.master}#\d+: {re.escape(text)}$", re.M)
        deadline = time.monotonic() + timeout
        with open(self.log_path, "rb") as f:
            while True:
                f.seek(since)
                if rx.search(f.read().decode(errors="replace")):
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.system}: the master did not log {text!r} "
                                       f"within {timeout} s")
                time.sleep(0.001)


def _queued_bytes(c: Census, slot: int) -> int:
    """Bytes waiting to be read in the channel of ``slot`` (sock_diag)."""
    from ngxlab.lab._netlink import unix_sockets
    info = unix_sockets().get(c.pair(slot).inodes[1])
    return 0 if info is None or info.rqueue is None else info.rqueue


def _held(c: Census, pid: int, slot: int) -> tuple[tuple[int, ...], int]:
    """(slots whose live channel[0] the worker ``pid`` in ``slot`` lacks,
    how many other unix sockets it holds: channels of dead workers)."""
    live = {p.slot: p.inodes[0] for p in c.pairs if p.slot is not None}
    own = c.pair(slot).inodes[1]
    held = {f.inode for f in c.process(pid).fds if f.kind == "unix"}
    missing = tuple(s for s, ino in sorted(live.items()) if s != slot and ino not in held)
    stale = len(held - set(live.values()) - {own})
    return missing, stale


def run_one(system: str, *, workers: int = 3, respawns: int | None = None,
            stopped_slot: int = 0, victim_slot: int = 1, settle: float = 2.0) -> FullChannelRun:
    """The experiment on one system (``"nginx"``, ``"ngxlab"`` or ``"ngxlab
    --nginx-quirks"``). ``respawns`` (default: enough to fill the channel,
    and ten more) counts the respawns before the timed one."""
    if system not in SYSTEMS:
        raise ValueError(f"system must be one of {SYSTEMS}, not {system!r}")
    if workers < 2 or stopped_slot == victim_slot or not (0 <= stopped_slot < workers
                                                          and 0 <= victim_slot < workers):
        raise ValueError("need at least two workers and two different slots below `workers`")
    capacity = channel_capacity()
    if respawns is None:
        respawns = capacity // 2 + 10      # two messages per respawn
    with _Runner(system, workers) as r:
        stopped = r.slots()[stopped_slot]
        os.kill(stopped, signal.SIGSTOP)
        try:
            proc.wait_state(stopped, "T")
            for _ in range(respawns):
                old = r.slots()[victim_slot]
                os.kill(old, signal.SIGKILL)
                r.wait_respawn(victim_slot, old)
            # a respawn pending and a full channel: how soon does a signal get answered?
            old = r.slots()[victim_slot]
            since = r.r.log_offset()
            t0 = time.perf_counter()
            os.kill(old, signal.SIGKILL)
            os.kill(r.master, signal.SIGUSR1)
            r.wait_master_line("reopening logs", since)
            signal_ms = (time.perf_counter() - t0) * 1000
            r.wait_respawn(victim_slot, old)
            queued = _queued_bytes(r.census(), stopped_slot) // _MESSAGE
        finally:
            t1 = time.perf_counter()
            os.kill(stopped, signal.SIGCONT)
        deadline = time.monotonic() + settle
        while True:
            c = r.census()
            if c.is_full_mesh(workers) or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        settle_ms = (time.perf_counter() - t1) * 1000
        complete = c.is_full_mesh(workers)
        missing, stale = _held(c, stopped, stopped_slot)
        return FullChannelRun(
            system=system, version=r.version, workers=workers, stopped_slot=stopped_slot,
            victim_slot=victim_slot, respawns=respawns + 1, capacity=capacity,
            queued_messages=queued, signal_ms=round(signal_ms, 2), complete=complete,
            settle_ms=round(settle_ms, 1), missing=missing, stale=stale,
            table=c.table())


def full_channel(systems=SYSTEMS, **kw) -> FullChannelResult:
    """:func:`run_one` for each system, one after the other; nginx is
    skipped, with the reason, where it cannot run."""
    from ngxlab.lab.nginx import nginx_available
    from ngxlab.lab.report import machine_info
    runs, skipped, version = {}, None, None
    for system in systems:
        if system == "nginx":
            path, why = nginx_available()
            if path is None:
                skipped = why
                continue
        runs[system] = run_one(system, **kw)
        if system == "nginx":
            version = runs[system].version
    machine = machine_info()
    return FullChannelResult(runs=runs, machine=machine.line(), date=machine.date[:10],
                             nginx_skipped=skipped, nginx_version=version,
                             what=f"ngxlab.lab.fullchannel.full_channel({', '.join(f'{k}={v!r}' for k, v in kw.items())})")


def record(path: str | os.PathLike | None = None, **kw) -> FullChannelResult:
    """Run :func:`full_channel` (nginx must run here) and write it as JSON to
    ``path`` (default: the package's ``data/recorded_full_channel.json``)."""
    result = full_channel(**kw)
    if "nginx" not in result.runs:
        raise RuntimeError(f"nginx did not run, nothing recorded: {result.nginx_skipped}")
    if path is None:
        path = Path(__file__).resolve().parent / "data" / RECORDED
    Path(path).write_text(json.dumps(result.to_dict(), indent=1) + "\n")
    return result


def recorded() -> FullChannelResult:
    """The result kept in ``ngxlab/lab/data`` (see :func:`record`)."""
    text = resources.files("ngxlab.lab").joinpath("data/" + RECORDED).read_text()
    return FullChannelResult.from_dict(json.loads(text))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ngxlab.lab.fullchannel",
                                description="Stop a worker, fill its channel with respawns, "
                                            "resume it: nginx beside ngxlab and ngxlab "
                                            "--nginx-quirks.")
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--record", action="store_true",
                   help=f"also write ngxlab/lab/data/{RECORDED}")
    args = p.parse_args(argv)
    result = (record if args.record else full_channel)(workers=args.workers)
    print(f"{result.date}, {result.machine}")
    print(result.table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
