"""One real nginx and one ngxlab, side by side: their censuses and their channel messages.

:func:`side_by_side`
    One real nginx and one ngxlab with the same N, looked at from outside:
    the census of each (:class:`CensusView`, descriptors described without
    machine paths) and the channel messages of each through start-up and a
    list of actions (reopen, SIGKILL of a worker, reload, quit), decoded from
    strace and normalised with :func:`ngxlab.lab.trace.sequence`, to compare
    with :meth:`SideBySide.diff`.

:func:`record_side_by_side` writes what the chapter "Side by side with
nginx" shows, from a real run, as ``ngxlab/lab/data/recorded_side_by_side.json``,
which the chapter shows (labelled as recorded) where nginx or strace is missing.

Not a mirror of nginx: nothing here has an ``ngx_`` name.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

from ngxlab.lab.census import Census
from ngxlab.lab.nginx import Nginx, nginx_available
from ngxlab.lab.report import MachineInfo, machine_info, write_recording
from ngxlab.lab.run import MasterProcess
from ngxlab.lab.runner import strace_available
from ngxlab.lab.trace import ACTIONS, SeqItem, diff_sequences, sequence, trace_run

__all__ = ["SideBySideError", "CensusView", "SideBySide", "SIDE_BY_SIDE_ACTIONS",
           "side_by_side", "record_side_by_side"]


class SideBySideError(RuntimeError):
    """A side-by-side run is not possible here (no nginx, or no strace)."""


SIDE_BY_SIDE_ACTIONS = ACTIONS


def _what(f) -> str:
    """A descriptor described briefly and without machine paths (a file by
    its name only)."""
    if f.kind in ("file", "dir", "fifo", "char", "block", "other") and f.target.startswith("/"):
        return f"{f.kind} {os.path.basename(f.target)}"
    if f.kind == "devnull":
        return "/dev/null"
    if f.kind == "unix":
        return f"channel {f.label}" if f.label else "unix socket"
    if f.kind.startswith("tcp") or f.kind.startswith("udp"):
        addr, _, state = f.detail.partition(" ")
        return f"{f.kind} {state.lower() or 'socket'} :{addr.rsplit(':', 1)[-1]}"
    if f.kind == "eventpoll":
        return f"epoll ({len(f.epoll_targets)} in its set)"
    return f.kind


@dataclass
class CensusView:
    """A census reduced to what a page may show: per process its role,
    slot, channel and total counts, and every descriptor as (number, kind,
    channel label, description without machine paths)."""

    system: str
    table: str                      # Census.table(), as printed
    processes: list[dict]           # role, slot, channel, total, fds: [[fd, kind, label, what]]

    @classmethod
    def of(cls, system: str, c: Census) -> "CensusView":
        order = {"master": 0, "worker": 1, "other": 2}
        procs = sorted(c.processes, key=lambda p: (order.get(p.role, 3),
                                                   p.slot if p.slot is not None else -1))
        return cls(system=system, table=c.table(), processes=[
            dict(role=p.role, slot=p.slot, channel=p.channel_fds, total=p.total_fds,
                 fds=[[f.fd, f.kind, f.label, _what(f)] for f in p.fds]) for p in procs])

    def process(self, role: str, slot: int | None = None) -> dict:
        for p in self.processes:
            if p["role"] == role and (slot is None or p["slot"] == slot):
                return p
        raise KeyError(f"{self.system}: no {role} {'' if slot is None else slot}")

    def kinds(self, role: str = "worker", slot: int | None = 0) -> dict[str, int]:
        """{kind: count} of one process's descriptors (channel ends as "channel")."""
        out: dict[str, int] = {}
        for fd, kind, label, _what_ in self.process(role, slot)["fds"]:
            k = "channel" if label else kind
            out[k] = out.get(k, 0) + 1
        return out

    def counts(self) -> list[tuple[str, int | None, int, int]]:
        """(role, slot, channel descriptors, all descriptors) per process."""
        return [(p["role"], p["slot"], p["channel"], p["total"]) for p in self.processes]


def _seq_lists(messages) -> list[list]:
    return [list(x) for x in sequence(messages)]


@dataclass
class SideBySide:
    """One real nginx and one ngxlab (``python -m ngxlab run``) with the same
    N: the census of each after start-up (:class:`CensusView`), and the
    channel messages of each, decoded from strace and normalised with
    :func:`ngxlab.lab.trace.sequence` (command, slot, target slot, whether a
    descriptor travelled), per phase: start-up, then each action."""

    n: int
    actions: list[str]
    nginx_version: str
    machine: MachineInfo
    census: dict[str, CensusView]
    sequences: dict[str, dict[str, list[list]]]     # system -> phase -> [[cmd, slot, target, fd?]]

    @property
    def phases(self) -> list[str]:
        return list(self.sequences["nginx"])

    def sequence(self, system: str, phase: str):
        return [SeqItem(*x) for x in self.sequences[system][phase]]

    def diff(self, phase: str, *, without: Iterable[str] = ()) -> list[str]:
        """:func:`ngxlab.lab.trace.diff_sequences` of nginx's and ngxlab's
        messages in ``phase``, leaving out the commands in ``without``."""
        skip = set(without)
        a = [x for x in self.sequence("nginx", phase) if x.command_name not in skip]
        b = [x for x in self.sequence("ngxlab", phase) if x.command_name not in skip]
        return diff_sequences(a, b, names=("nginx", "ngxlab"))

    def counts(self, system: str, phase: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for x in self.sequences[system][phase]:
            out[x[0]] = out.get(x[0], 0) + 1
        return out

    def to_dict(self) -> dict:
        return {"n": self.n, "actions": list(self.actions), "nginx_version": self.nginx_version,
                "machine": asdict(self.machine), "machine_line": self.machine.line(),
                "census": {k: asdict(v) for k, v in self.census.items()},
                "sequences": self.sequences}

    @classmethod
    def from_dict(cls, d: dict) -> "SideBySide":
        return cls(n=d["n"], actions=list(d["actions"]), nginx_version=d["nginx_version"],
                   machine=MachineInfo.from_dict(d["machine"]),
                   census={k: CensusView(**v) for k, v in d["census"].items()},
                   sequences=d["sequences"])


def side_by_side(n: int = 4, actions: Sequence[str] = SIDE_BY_SIDE_ACTIONS, *,
                 nginx_binary=None, timeout: float = 10.0) -> SideBySide:
    """Start a real nginx and ngxlab with ``n`` workers each and take both
    censuses; then run each under strace through start-up and ``actions``
    (see :func:`ngxlab.lab.trace.trace_run`) and decode their channel
    messages. Raises :class:`SideBySideError` when nginx or strace is missing."""
    binary, why = nginx_available(nginx_binary)
    if binary is None:
        raise SideBySideError(why)
    strace, why = strace_available()
    if strace is None:
        raise SideBySideError(why)
    machine = machine_info()
    with Nginx(workers=n, binary=binary, start_timeout=timeout) as ngx:
        c_nginx = CensusView.of("nginx", ngx.wait_mesh(n, timeout=timeout))
        version = ngx.version
    with MasterProcess(workers=n, start_timeout=timeout) as mp:
        c_ngxlab = CensusView.of("ngxlab", mp.wait_mesh(n, timeout=timeout))
    sequences = {}
    for system, runner in (("nginx", Nginx(n, binary=binary, start_timeout=timeout)),
                           ("ngxlab", MasterProcess(n, start_timeout=timeout))):
        run = trace_run(runner, actions, timeout=timeout)
        sequences[system] = {phase: _seq_lists(msgs) for phase, msgs in run.phases.items()}
    return SideBySide(n=n, actions=list(actions), nginx_version=version, machine=machine,
                      census={"nginx": c_nginx, "ngxlab": c_ngxlab},
                      sequences=sequences)


def record_side_by_side(path, n: int = 4) -> dict:
    """Run :func:`side_by_side` and write it as JSON to ``path``, with the
    date, the nginx version and the machine (what the chapter "Side by side
    with nginx" shows, labelled as recorded, where nginx or strace is
    missing)."""
    sbs = side_by_side(n)
    return write_recording(
        path, f"ngxlab.lab.side_by_side.record_side_by_side(n={n})", sbs.machine,
        sbs.nginx_version, side_by_side=sbs.to_dict())
