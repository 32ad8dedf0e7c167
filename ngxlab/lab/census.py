"""The descriptor census: who holds which descriptor, and which are nginx channels.

``census(pids)`` reads ``/proc/<pid>/fd`` of every process, classifies each
descriptor (Unix socket, TCP/UDP socket with its local address, pipe, epoll
instance, pidfd, regular file, character device, ...), pairs every Unix socket
with its peer by inode (``NETLINK_SOCK_DIAG`` with ``UNIX_DIAG_PEER``, the
same source ``ss -xp`` uses), and from that pairing recognises the channel
pairs nginx builds in ``ngx_spawn_process``:

* the master holds **both** ends of every pair;
* ``channel[1]`` of slot k is held by the master and by exactly one child,
  worker k, which reads it;
* ``channel[0]`` of slot k is held by the master (which writes it) and,
  once the OPEN_CHANNEL messages have arrived, by every other child.

Slots.  ngxlab's own master knows its process table and passes it as
``slots={slot: pid}`` (the one orientation of ``slots`` everywhere in
``ngxlab.lab``).  For a real nginx the table is inside the master, so
the census infers it: workers are numbered in spawn order (start time, field
22 of ``/proc/<pid>/stat``, then pid).  That is exact right after startup, and
while a reload's two generations are both alive; it is *not* what nginx does
after a respawn (the new worker takes the dead one's slot) or after the old
generation of a reload has gone (the new workers keep slots N..2N-1).
Inferred slots are marked as such (``Census.slot_source``);
:class:`ngxlab.lab.nginx.Nginx` keeps a model of nginx's slot table and
passes it in.

Nothing here changes the processes it looks at: it only reads ``/proc`` and
asks the kernel for the socket table.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import textwrap
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from typing import Iterable, Mapping

from ngxlab.lab import proc
from ngxlab.lab._netlink import NetlinkError, UnixSocketInfo, inet_sockets, unix_sockets

__all__ = [
    "Census", "CensusError", "CensusPermissionError", "ChannelPair", "Fd",
    "ProcessCensus", "census", "census_master", "children_of",
]


class CensusError(ProcessLookupError):
    """A process of the census does not exist (any more), or is a zombie."""

    def __init__(self, pid: int, message: str):
        super().__init__(errno.ESRCH, f"pid {pid}: {message}")
        self.pid = pid


class CensusPermissionError(CensusError, PermissionError):
    """The census may not read a process's descriptors (run as its user or root)."""

    def __init__(self, pid: int, message: str):
        super().__init__(pid, message)
        self.errno = errno.EACCES


# How wide Census.table() gets: the book's column holds about 88 characters.
TABLE_WIDTH = 80


# -- the dataclasses ---------------------------------------------------------


@dataclass(frozen=True)
class Fd:
    """One descriptor of one process."""

    fd: int
    kind: str                     # unix, tcp, tcp6, udp, udp6, netlink, socket, pipe, eventpoll,
                                  # eventfd, signalfd, timerfd, inotify, pidfd, anon_inode,
                                  # file, dir, devnull, char, block, fifo, other
    target: str                   # what readlink(/proc/<pid>/fd/<fd>) says
    inode: int | None = None
    detail: str = ""              # local address, path, socket state, ...
    peer_inode: int | None = None  # Unix sockets: the inode at the other end
    slot: int | None = None       # channel ends: the slot of their pair
    end: int | None = None        # channel ends: 0 (master writes) or 1 (worker reads)
    epoll_targets: tuple[int, ...] = ()  # eventpoll: the descriptors in its set

    @property
    def is_channel(self) -> bool:
        return self.end is not None

    @property
    def label(self) -> str:
        """``"slot:end"`` for a channel end (``"?:0"`` when the slot is unknown), else ``""``."""
        if self.end is None:
            return ""
        return f"{'?' if self.slot is None else self.slot}:{self.end}"


@dataclass(frozen=True)
class ProcessCensus:
    """One process: its role in the master/worker tree and all its descriptors."""

    pid: int
    role: str                     # "master", "worker", "other"
    slot: int | None
    name: str
    fds: tuple[Fd, ...]
    ppid: int = 0
    start_time: int = 0           # clock ticks after boot, /proc/<pid>/stat field 22

    @property
    def channel_fds(self) -> int:
        """How many channel ends this process holds."""
        return sum(1 for f in self.fds if f.is_channel)

    @property
    def total_fds(self) -> int:
        return len(self.fds)

    @property
    def channel_ends(self) -> tuple[str, ...]:
        """The ``slot:end`` labels of the channel ends held, sorted by slot then end."""
        ends = [f for f in self.fds if f.is_channel]
        ends.sort(key=lambda f: (f.slot is None, f.slot if f.slot is not None else 0, f.end, f.fd))
        return tuple(f.label for f in ends)

    def fd(self, number: int) -> Fd:
        for f in self.fds:
            if f.fd == number:
                return f
        raise KeyError(f"pid {self.pid} has no descriptor {number}")


@dataclass(frozen=True)
class ChannelPair:
    """One nginx channel: a socketpair whose both ends the master holds."""

    slot: int | None
    worker_pid: int | None        # the child that holds channel[1]
    inodes: tuple[int, int]       # (channel[0], channel[1])
    master_fds: tuple[int, int]   # the master's descriptor numbers for (channel[0], channel[1])
    holders: tuple[tuple[int, int, int], ...]  # (pid, fd, end) for every descriptor of the pair
    slot_inferred: bool = False

    def holders_of(self, end: int) -> tuple[int, ...]:
        """The pids holding ``channel[end]`` (the master included)."""
        return tuple(sorted({pid for pid, _fd, e in self.holders if e == end}))


@dataclass(frozen=True)
class Census:
    """The result of :func:`census`: every process and every channel pair."""

    processes: tuple[ProcessCensus, ...]
    pairs: tuple[ChannelPair, ...]
    master_pid: int | None = None
    slot_source: str | None = None  # "given", "spawn order", or None (no workers)
    time: float = field(default_factory=time.time)

    # -- lookups --
    @property
    def master(self) -> ProcessCensus | None:
        for p in self.processes:
            if p.role == "master":
                return p
        return None

    @property
    def workers(self) -> tuple[ProcessCensus, ...]:
        ws = [p for p in self.processes if p.role == "worker"]
        ws.sort(key=lambda p: (p.slot is None, p.slot if p.slot is not None else 0, p.pid))
        return tuple(ws)

    @property
    def worker_pids(self) -> tuple[int, ...]:
        return tuple(p.pid for p in self.workers)

    @property
    def slots(self) -> dict[int, int]:
        """``{slot: worker pid}``."""
        return {p.slot: p.pid for p in self.workers if p.slot is not None}

    @property
    def slots_inferred(self) -> bool:
        return self.slot_source == "spawn order"

    @property
    def channel_fds(self) -> int:
        """Channel descriptors in all processes together (N² + 2N for a settled nginx)."""
        return sum(p.channel_fds for p in self.processes)

    def process(self, pid: int) -> ProcessCensus:
        for p in self.processes:
            if p.pid == pid:
                return p
        raise KeyError(f"pid {pid} is not in this census")

    def pair(self, slot: int) -> ChannelPair:
        for p in self.pairs:
            if p.slot == slot:
                return p
        raise KeyError(f"no channel pair for slot {slot}")

    def is_full_mesh(self, n: int | None = None) -> bool:
        """True when the channels are complete: n pairs, each with its worker,
        2n ends in the master and n in every worker (n defaults to the number of workers)."""
        workers = self.workers
        if n is None:
            n = len(workers)
        master = self.master
        if master is None or len(workers) != n or len(self.pairs) != n:
            return False
        if any(p.worker_pid is None or p.slot is None for p in self.pairs):
            return False
        if len({p.slot for p in self.pairs}) != n:
            return False
        if master.channel_fds != 2 * n:
            return False
        if any(w.channel_fds != n for w in workers):
            return False
        # every worker holds one end of every pair: its own channel[1], the others' channel[0]
        for w in workers:
            ends = {(f.slot, f.end) for f in w.fds if f.is_channel}
            if len(ends) != n or (w.slot, 1) not in ends:
                return False
        return True

    # -- reports --
    def counts_by_role(self) -> dict:
        """``{"master": {"pid", "channel", "total"}, "worker": [{"pid", "slot", "channel", "total"}...],
        "other": [...]}``."""
        out: dict = {"master": None, "worker": [], "other": []}
        for p in self.processes:
            entry = {"pid": p.pid, "slot": p.slot, "channel": p.channel_fds, "total": p.total_fds}
            if p.role == "master":
                out["master"] = {"pid": p.pid, "channel": p.channel_fds, "total": p.total_fds}
            else:
                out[p.role].append(entry)
        out["worker"].sort(key=lambda e: (e["slot"] is None, e["slot"] or 0, e["pid"]))
        return out

    def summary(self) -> str:
        master = self.master
        workers = self.workers
        parts = []
        if master is not None:
            parts.append(f"master {master.pid}: {master.channel_fds} channel fds of {master.total_fds}")
        if workers:
            per = sorted({w.channel_fds for w in workers})
            per_s = "/".join(str(x) for x in per)
            parts.append(f"{len(workers)} worker{'s' if len(workers) != 1 else ''}: {per_s} channel fds each")
        others = [p for p in self.processes if p.role == "other"]
        if others:
            parts.append(f"{len(others)} other process{'es' if len(others) != 1 else ''}")
        parts.append(f"{len(self.pairs)} channel pair{'s' if len(self.pairs) != 1 else ''}")
        parts.append(f"{self.channel_fds} channel descriptors")
        if workers and self.slot_source:
            parts.append(f"slots {self.slot_source}")
        if self.pairs:
            parts.append("full mesh" if self.is_full_mesh() else "not a full mesh")
        return "; ".join(parts)

    def table(self) -> str:
        rows = [("pid", "role", "slot", "channel", "total", "channel ends")]
        order = {"master": 0, "worker": 1, "other": 2}
        procs = sorted(self.processes, key=lambda p: (order.get(p.role, 3),
                                                      p.slot if p.slot is not None else 1 << 30, p.pid))
        for p in procs:
            slot = "-" if p.slot is None else str(p.slot)
            if p.role == "worker" and self.slots_inferred:
                slot += "*"
            rows.append((str(p.pid), p.role, slot, str(p.channel_fds), str(p.total_fds),
                         " ".join(p.channel_ends)))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = []
        for r in rows:
            cells = [r[0].rjust(widths[0]), r[1].ljust(widths[1]), r[2].ljust(widths[2]),
                     r[3].rjust(widths[3]), r[4].rjust(widths[4])]
            head = "  ".join(cells) + "  "
            # the channel ends of a large mesh continue under their column
            ends = textwrap.wrap(r[5], max(TABLE_WIDTH - len(head), 20)) or [""]
            lines.append((head + ends[0]).rstrip())
            lines.extend(" " * len(head) + more for more in ends[1:])
        # the summary's parts, as many to a line as fit (a part is never split)
        line = ""
        for part in self.summary().split("; "):
            if line and len(line) + 2 + len(part) > TABLE_WIDTH:
                lines.append(line + ";")
                line = part
            else:
                line = f"{line}; {part}" if line else part
        lines.append(line)
        if self.slots_inferred:
            lines.append("* slot inferred from spawn order")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def as_dict(self) -> dict:
        return {
            "time": self.time,
            "master_pid": self.master_pid,
            "slot_source": self.slot_source,
            "processes": [asdict(p) | {"channel_fds": p.channel_fds, "total_fds": p.total_fds,
                                       "channel_ends": list(p.channel_ends)}
                          for p in self.processes],
            "pairs": [asdict(p) for p in self.pairs],
            "counts": self.counts_by_role(),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.as_dict(), indent=indent)


# -- /proc readers (ngxlab.lab.proc), with the census's errors ----------------


def _read(read, pid: int, denied: str):
    """``read(pid)`` (a reader of :mod:`ngxlab.lab.proc`) with its failures as
    the census's errors: ``denied`` when /proc refuses, no such process when
    the reader finds none."""
    try:
        value = read(pid)
    except PermissionError:
        raise CensusPermissionError(pid, denied) from None
    if value is None:
        raise CensusError(pid, "no such process")
    return value


def _read_stat(pid: int) -> proc.Stat:
    return _read(proc.stat, pid, "permission denied reading /proc/<pid>/stat")


def _process_name(pid: int) -> str:
    try:
        name = proc.cmdline(pid)
    except PermissionError:
        return "?"
    if name is None:
        raise CensusError(pid, "vanished during the census")
    return name or proc.comm(pid)


def children_of(pid: int) -> list[int]:
    """Live (non-zombie) children of ``pid``, in pid order. Raises
    :class:`CensusError` when ``pid`` does not exist."""
    return _read(proc.children, pid, "permission denied listing its tasks")


_ANON_KINDS = {"eventpoll": "eventpoll", "pidfd": "pidfd", "eventfd": "eventfd",
               "signalfd": "signalfd", "timerfd": "timerfd", "inotify": "inotify"}


def _bracket_inode(target: str) -> int | None:
    if target.endswith("]") and "[" in target:
        try:
            return int(target[target.index("[") + 1:-1])
        except ValueError:
            return None
    return None


def _hex_ipv4(h: str) -> str:
    return socket.inet_ntop(socket.AF_INET, bytes.fromhex(h)[::-1])


def _hex_ipv6(h: str) -> str:
    raw = bytes.fromhex(h)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


_TCP_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
               "05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
               "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING"}


class _InetTable:
    """inode -> (kind, "addr:port STATE"), per network namespace.

    In the caller's own namespace the kernel is asked with sock_diag, the
    listening sockets first (a short walk) and every socket only when an
    inode is not among them; in another namespace, from
    /proc/<pid>/net/{tcp,tcp6,udp,udp6,netlink}. (After a load test the
    namespace holds tens of thousands of TIME_WAIT sockets: reading
    /proc/net/tcp then takes tens of milliseconds per census.)
    """

    def __init__(self) -> None:
        self._by_ns: dict[str, dict[int, tuple[str, str]]] = {}
        self._complete: set[str] = set()
        try:
            self._own = os.readlink("/proc/self/ns/net")
        except OSError:
            self._own = None

    def lookup(self, pid: int, inode: int) -> tuple[str, str] | None:
        try:
            ns = os.readlink(f"/proc/{pid}/ns/net")
        except OSError:
            ns = f"pid:{pid}"
        table = self._by_ns.get(ns)
        if table is None:
            table = self._by_ns[ns] = self._first(pid, ns)
        if inode not in table and ns not in self._complete:
            table.update(self._all(pid, ns))
        return table.get(inode)

    def _first(self, pid: int, ns: str) -> dict[int, tuple[str, str]]:
        if ns == self._own:
            try:
                table = inet_sockets(listening_only=True)
                table.update(self._netlink_sockets(pid))
                return table
            except NetlinkError:
                pass
        self._complete.add(ns)
        return self._load(pid)

    def _all(self, pid: int, ns: str) -> dict[int, tuple[str, str]]:
        self._complete.add(ns)
        try:
            return inet_sockets()
        except NetlinkError:
            return self._load(pid)

    @staticmethod
    def _netlink_sockets(pid: int) -> dict[int, tuple[str, str]]:
        table: dict[int, tuple[str, str]] = {}
        try:
            with open(f"/proc/{pid}/net/netlink") as f:
                for line in f.read().splitlines()[1:]:
                    cols = line.split()
                    if len(cols) >= 10:
                        table[int(cols[-1])] = ("netlink", f"protocol {cols[1]}")
        except OSError:
            pass
        return table

    @staticmethod
    def _load(pid: int) -> dict[int, tuple[str, str]]:
        table: dict[int, tuple[str, str]] = {}
        for kind in ("tcp", "tcp6", "udp", "udp6"):
            try:
                with open(f"/proc/{pid}/net/{kind}") as f:
                    lines = f.read().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                cols = line.split()
                if len(cols) < 10 or cols[9] == "0":
                    continue        # no inode: TIME_WAIT and the like
                addr, port = cols[1].split(":")
                try:
                    host = _hex_ipv6(addr) if kind.endswith("6") else _hex_ipv4(addr)
                except (ValueError, OSError):
                    host = addr
                shown = f"[{host}]" if kind.endswith("6") else host
                state = _TCP_STATES.get(cols[3], cols[3]) if kind.startswith("tcp") else ""
                detail = f"{shown}:{int(port, 16)}" + (f" {state}" if state else "")
                table[int(cols[9])] = (kind, detail)
        table.update(_InetTable._netlink_sockets(pid))
        return table


def _classify(pid: int, fd: int, target: str, unix: Mapping[int, UnixSocketInfo],
              inet: _InetTable) -> Fd:
    inode = _bracket_inode(target)
    if target.startswith("socket:"):
        info = unix.get(inode) if inode is not None else None
        if info is not None:
            bits = [info.type, info.state]
            if info.name:
                bits.append(info.name)
            return Fd(fd, "unix", target, inode, " ".join(bits), info.peer)
        found = inet.lookup(pid, inode) if inode is not None else None
        if found is not None:
            return Fd(fd, found[0], target, inode, found[1])
        return Fd(fd, "socket", target, inode)
    if target.startswith("pipe:"):
        return Fd(fd, "pipe", target, inode)
    if target.startswith("pidfd:"):
        return Fd(fd, "pidfd", target, inode)
    if target.startswith("anon_inode:"):
        name = target[len("anon_inode:"):].strip("[]")
        kind = _ANON_KINDS.get(name, "anon_inode")
        targets = (proc.epoll_set(pid, fd) or ()) if kind == "eventpoll" else ()
        return Fd(fd, kind, target, None, name, epoll_targets=targets)
    if target == "/dev/null":
        return Fd(fd, "devnull", target, None, target)
    if target.startswith("/"):
        try:
            st = os.stat(f"/proc/{pid}/fd/{fd}")
        except OSError:
            return Fd(fd, "other", target, None, target)
        mode = st.st_mode
        if stat.S_ISREG(mode):
            kind = "file"
        elif stat.S_ISDIR(mode):
            kind = "dir"
        elif stat.S_ISCHR(mode):
            kind = "char"
        elif stat.S_ISBLK(mode):
            kind = "block"
        elif stat.S_ISFIFO(mode):
            kind = "fifo"
        else:
            kind = "other"
        return Fd(fd, kind, target, st.st_ino, target)
    return Fd(fd, "other", target, inode, target)


def _read_fds(pid: int, unix: Mapping[int, UnixSocketInfo], inet: _InetTable) -> list[Fd]:
    base = f"/proc/{pid}/fd"
    try:
        names = os.listdir(base)
    except FileNotFoundError:
        raise CensusError(pid, "no such process") from None
    except PermissionError:
        raise CensusPermissionError(pid, f"permission denied reading {base}") from None
    fds = []
    for name in names:
        try:
            target = os.readlink(f"{base}/{name}")
        except FileNotFoundError:
            if not os.path.exists(f"/proc/{pid}"):
                raise CensusError(pid, "vanished during the census") from None
            continue  # that descriptor was closed between listdir and readlink
        except PermissionError:
            raise CensusPermissionError(pid, f"permission denied reading {base}") from None
        fds.append(_classify(pid, int(name), target, unix, inet))
    fds.sort(key=lambda f: f.fd)
    return fds


# -- the census --------------------------------------------------------------


@dataclass
class _Raw:
    pid: int
    ppid: int
    start: int
    name: str
    fds: list[Fd]


def _choose_master(raws: dict[int, _Raw]) -> int | None:
    best, best_n = None, 0
    for pid in raws:
        n = sum(1 for r in raws.values() if r.ppid == pid)
        if n > best_n:
            best, best_n = pid, n
    return best


def census(pids: Iterable[int], *, slots: Mapping[int, int] | None = None,
           master: int | None = None,
           channels: Mapping[int, tuple[int, int]] | None = None) -> Census:
    """Take the descriptor census of ``pids``.

    ``master`` is the process whose socketpairs are the channels; by default
    the pid of the set that is the parent of the most others.  ``slots`` is
    the master's process table, ``{slot: worker pid}``; without it slots
    are inferred from spawn order.  ``channels`` maps a slot to the master's
    descriptor numbers ``(channel[0], channel[1])`` of its pair: when given
    (an ngxlab master knows its table), each pair's ends and owner come from
    it rather than from who holds what, which stays right even when a worker
    has closed its own ``channel[1]``.  Raises :class:`CensusError` (a
    ``ProcessLookupError``) naming the pid when a process does not exist, is a
    zombie or vanishes during the census, and :class:`CensusPermissionError`
    when its descriptors cannot be read.
    """
    pid_list = list(dict.fromkeys(int(p) for p in pids))
    if not pid_list:
        raise ValueError("census() needs at least one pid")
    for pid in pid_list:
        if pid <= 0:
            raise CensusError(pid, "not a process id")
    if master is not None and master not in pid_list:
        pid_list.insert(0, master)

    stats = {}
    for pid in pid_list:
        st = _read_stat(pid)
        if st.state in ("Z", "X"):
            raise CensusError(pid, "is a zombie (it exited and was not reaped yet)")
        stats[pid] = (st.ppid, st.start)

    unix = unix_sockets()
    inet = _InetTable()
    raws: dict[int, _Raw] = {}
    for pid in pid_list:
        fds = _read_fds(pid, unix, inet)
        raws[pid] = _Raw(pid, stats[pid][0], stats[pid][1], _process_name(pid), fds)
    # a process that exited while we read the others would leave a half census
    for pid in pid_list:
        if _read_stat(pid).state in ("Z", "X"):
            raise CensusError(pid, "vanished during the census")

    if master is None:
        master = _choose_master(raws)
    return _build(raws, master, slots, channels)


def census_master(master_pid: int, *, slots: Mapping[int, int] | None = None,
                  channels: Mapping[int, tuple[int, int]] | None = None) -> Census:
    """Census of a master and its live children (workers, helpers, anything it forked)."""
    if _read_stat(master_pid).state in ("Z", "X"):
        raise CensusError(master_pid, "is a zombie (it exited and was not reaped yet)")
    kids = children_of(master_pid)
    last_error: CensusError | None = None
    for _attempt in range(3):
        try:
            return census([master_pid, *kids], slots=slots, master=master_pid,
                          channels=channels)
        except CensusError as e:
            if e.pid == master_pid or isinstance(e, CensusPermissionError):
                raise
            # a child exited between listing and reading: list the children again
            last_error = e
            kids = children_of(master_pid)
    assert last_error is not None
    raise last_error


def _build(raws: dict[int, _Raw], master: int | None, slots: Mapping[int, int] | None,
           channels: Mapping[int, tuple[int, int]] | None = None) -> Census:
    holders: dict[int, list[tuple[int, int]]] = defaultdict(list)  # unix inode -> [(pid, fd)]
    for r in raws.values():
        for f in r.fds:
            if f.kind == "unix" and f.inode is not None:
                holders[f.inode].append((r.pid, f.fd))

    found: list[dict] = []
    if master is not None:
        mraw = raws[master]
        mfd = {f.inode: f.fd for f in mraw.fds if f.kind == "unix"}
        seen: set[int] = set()
        for f in mraw.fds:
            if f.kind != "unix" or f.peer_inode is None or f.inode in seen:
                continue
            a, b = f.inode, f.peer_inode
            if b not in mfd:
                continue
            seen.update((a, b))
            others = {ino: {pid for pid, _ in holders[ino] if pid != master} for ino in (a, b)}
            if not others[a] and not others[b]:
                continue  # a socketpair private to the master is not a channel
            known = _from_table(mfd[a], mfd[b], channels, slots)
            if known is not None:
                (end_a, worker) = known
                ch0, ch1 = (a, b) if end_a == 0 else (b, a)
                if worker is None:
                    worker = _owner(others[ch1], others[ch0], raws)
            else:
                ch0, ch1 = _orient(a, b, others, mfd, raws)
                worker = _owner(others[ch1], others[ch0], raws)
            found.append({"ch0": ch0, "ch1": ch1, "worker": worker,
                          "master_fds": (mfd[ch0], mfd[ch1])})

    # slots
    worker_pids = [d["worker"] for d in found if d["worker"] is not None]
    slot_of: dict[int, int] = {}
    slot_source = None
    if worker_pids:
        if slots is not None:
            by_pid = {pid: int(slot) for slot, pid in slots.items()}
            slot_of = {p: by_pid[p] for p in worker_pids if p in by_pid}
            slot_source = "given"
        else:
            order = sorted(set(worker_pids), key=lambda p: (raws[p].start, p))
            slot_of = {p: i for i, p in enumerate(order)}
            slot_source = "spawn order"

    label: dict[int, tuple[int | None, int]] = {}
    pairs = []
    for d in sorted(found, key=lambda d: (slot_of.get(d["worker"], 1 << 30), d["master_fds"])):
        slot = slot_of.get(d["worker"]) if d["worker"] is not None else None
        label[d["ch0"]] = (slot, 0)
        label[d["ch1"]] = (slot, 1)
        held = []
        for end, ino in ((0, d["ch0"]), (1, d["ch1"])):
            for pid, fd in holders[ino]:
                held.append((pid, fd, end))
        held.sort()
        pairs.append(ChannelPair(slot=slot, worker_pid=d["worker"], inodes=(d["ch0"], d["ch1"]),
                                 master_fds=d["master_fds"], holders=tuple(held),
                                 slot_inferred=slot_source == "spawn order"))

    processes = []
    for r in raws.values():
        fds = tuple(
            replace(f, slot=label[f.inode][0], end=label[f.inode][1])
            if f.kind == "unix" and f.inode in label else f
            for f in r.fds)
        if r.pid == master:
            role, slot = "master", None
        elif r.pid in slot_of or r.pid in worker_pids:
            role, slot = "worker", slot_of.get(r.pid)
        else:
            role, slot = "other", None
        processes.append(ProcessCensus(pid=r.pid, role=role, slot=slot, name=r.name, fds=fds,
                                       ppid=r.ppid, start_time=r.start))
    return Census(processes=tuple(processes), pairs=tuple(pairs), master_pid=master,
                  slot_source=slot_source)


def _from_table(fd_a: int, fd_b: int, channels: Mapping[int, tuple[int, int]] | None,
                slots: Mapping[int, int] | None) -> tuple[int, int | None] | None:
    """With the master's table: (which end descriptor ``fd_a`` is, the owner's pid)."""
    if not channels:
        return None
    for slot, (fd0, fd1) in channels.items():
        if {fd_a, fd_b} == {fd0, fd1}:
            owner = None
            if slots:
                owner = slots.get(slot)
            return (0 if fd_a == fd0 else 1), owner
    return None


def _orient(a: int, b: int, others: dict[int, set[int]], mfd: dict[int, int],
            raws: dict[int, _Raw]) -> tuple[int, int]:
    """Which end is channel[0]?  (channel[0], channel[1])."""
    # Structure first, from the children that hold exactly one end of the pair: a
    # child that holds both got them by inheritance (it was forked after the pair
    # was made) and has not closed them yet, which says nothing.  Of those that
    # hold one end, only the worker itself keeps channel[1] alone; the others
    # keep channel[0] (received in OPEN_CHANNEL, or inherited with the other end
    # closed).  So the end with exactly one exclusive holder, where the other end
    # has a different number of them, is channel[1].
    only_a = len(others[a] - others[b])
    only_b = len(others[b] - others[a])
    if only_a == 1 and only_b != 1:
        return b, a
    if only_b == 1 and only_a != 1:
        return a, b
    # Tie (two workers, or a worker that has not closed its inherited ends yet): the
    # reader registers channel[1] in its epoll set; nobody reads channel[0].
    watched = {}
    for ino in (a, b):
        n = 0
        for pid in others[ino]:
            fds_by_inode = {f.inode: f.fd for f in raws[pid].fds if f.kind == "unix"}
            epolled = {t for f in raws[pid].fds for t in f.epoll_targets}
            if fds_by_inode.get(ino) in epolled:
                n += 1
        watched[ino] = n
    if watched[a] != watched[b]:
        return (b, a) if watched[a] > watched[b] else (a, b)
    # Last resort: socketpair(2) allocates sv[0] before sv[1], so in the master that made
    # the pair channel[0] has the lower descriptor number.
    return (a, b) if mfd[a] < mfd[b] else (b, a)


def _owner(ch1_holders: set[int], ch0_holders: set[int], raws: dict[int, _Raw]) -> int | None:
    """The worker of a pair: the child holding channel[1].  Right after a fork, children
    forked later still hold inherited copies of it; no child forked earlier ever
    holds it (OPEN_CHANNEL carries channel[0] only), so the owner is the earliest."""
    if not ch1_holders:
        return None
    if len(ch1_holders) == 1:
        return next(iter(ch1_holders))
    return min(ch1_holders, key=lambda p: (raws[p].start, p))
