"""Channel traffic as events: decode ``strace`` output of nginx's (or ngxlab's) channels.

The shared event type is :class:`ChannelMessage`: one 32-byte ``ngx_channel_t``
as it was sent (``sendmsg``) or received (``recvmsg``), with the descriptors
that travelled with it as ``SCM_RIGHTS``.  ngxlab's own instruments produce the
same type, so a run of ngxlab and a run of nginx can be compared message by
message with :func:`sequence` and :func:`diff_sequences`.

Reading a trace::

    trace = parse_trace("strace.txt")      # or the text itself
    for m in trace.sends():
        print(m)
    sequence(trace.messages)               # [("OPEN_CHANNEL", 1, 0, True), ...]

The trace must come from ``strace -f`` with ``-xx`` (every byte of the payload
as a hex escape) and timestamps (``-tt`` or ``-ttt``); :func:`ngxlab.lab.runner.strace_command`
is the right command line, and :func:`trace_run` runs nginx or ngxlab under it.  Besides the messages, :func:`parse_trace`
keeps the other system calls it finds (socketpair, clone/fork, kill, close,
ioctl, fcntl), the signals delivered and the exits, as :class:`SyscallEvent`,
for sequence diagrams.

Which channel a message went through.  A trace knows descriptors, not slots.
The master's socketpair results, in order of creation, and the fork that
follows each one give every pair its child; the slot comes from the messages
themselves (an OPEN_CHANNEL carries the slot and the master's ``channel[0]``
number of the process it announces, a CLOSE_CHANNEL the slot and pid of the
one that died), and otherwise from nginx's allocation rule (a respawn right
after the master closed a pair reuses that pair's slot; any other spawn takes
the lowest free slot).  A ``sendmsg`` on the master's descriptor f then went to
the slot whose ``channel[0]`` was f at that moment: that is ``target_slot``.
"""

from __future__ import annotations

import difflib
import os
import re
import struct
import time as _time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Sequence

from ngxlab import __version__, channel, process

__all__ = [
    "CHANNEL_FORMAT", "CHANNEL_SIZE", "COMMANDS", "ChannelMessage", "SeqItem", "SyscallEvent",
    "Trace", "TraceRun", "TracedChannel", "command_name", "count_commands", "decode_channel",
    "diff_sequences", "parse_strace", "parse_syscalls", "parse_trace", "record_channel", "sequence",
    "trace_run", "ACTIONS",
]

CHANNEL_FORMAT = "@Lili0l"   # command u64 @0, pid i32 @8, slot i64 @16, fd i32 @24 (LP64)
CHANNEL_SIZE = struct.calcsize(CHANNEL_FORMAT)
COMMANDS = {1: "OPEN_CHANNEL", 2: "CLOSE_CHANNEL", 3: "QUIT", 4: "TERMINATE", 5: "REOPEN"}


def command_name(command: int) -> str:
    """``OPEN_CHANNEL`` ... ``REOPEN`` for 1..5, ``UNKNOWN(n)`` otherwise."""
    return COMMANDS.get(command, f"UNKNOWN({command})")


def decode_channel(data: bytes) -> tuple[int, int, int, int]:
    """(command, pid, slot, fd) from the first 32 bytes of a channel message."""
    if len(data) < CHANNEL_SIZE:
        raise ValueError(f"a channel message has {CHANNEL_SIZE} bytes, got {len(data)}")
    return struct.unpack(CHANNEL_FORMAT, data[:CHANNEL_SIZE])


# -- the event types -----------------------------------------------------------


@dataclass(frozen=True)
class ChannelMessage:
    """One channel message, sent or received.

    ``sender`` is the pid that called ``sendmsg`` (for a received message: the
    process that owns the other end, 0 if the trace does not say); ``fd`` is the
    descriptor the system call used, in the numbering of the process that made
    it (the sender's for "send", the receiver's for "recv"); ``ch_fd`` is the
    ``fd`` field inside the message; ``scm_fds`` are the descriptors attached as
    SCM_RIGHTS, numbered like ``fd``.  ``target_slot`` is the slot whose channel
    carried the message, when known.
    """

    time: float
    sender: int
    fd: int
    command: int
    command_name: str
    pid: int
    slot: int
    ch_fd: int
    scm_fds: tuple[int, ...] = ()
    direction: str = "send"
    receiver: int | None = None
    target_slot: int | None = None

    @classmethod
    def from_bytes(cls, data: bytes, *, time: float = 0.0, sender: int = 0, fd: int = -1,
                   scm_fds: Iterable[int] = (), direction: str = "send",
                   receiver: int | None = None, target_slot: int | None = None) -> "ChannelMessage":
        command, pid, slot, ch_fd = decode_channel(data)
        return cls(time=time, sender=sender, fd=fd, command=command,
                   command_name=command_name(command), pid=pid, slot=slot, ch_fd=ch_fd,
                   scm_fds=tuple(scm_fds), direction=direction, receiver=receiver,
                   target_slot=target_slot)

    def to_bytes(self) -> bytes:
        """The 32 bytes on the wire (padding zeroed)."""
        return struct.pack(CHANNEL_FORMAT, self.command, self.pid, self.slot, self.ch_fd)

    @property
    def has_fd(self) -> bool:
        return bool(self.scm_fds)

    def __str__(self) -> str:
        arrow = (f"{self.sender} fd {self.fd} ->" if self.direction == "send"
                 else f"{self.receiver} fd {self.fd} <-")
        to = f" (slot {self.target_slot})" if self.target_slot is not None else ""
        rights = f" SCM_RIGHTS{list(self.scm_fds)}" if self.scm_fds else ""
        return (f"{self.time:10.6f} {arrow}{to} {self.command_name} pid={self.pid} "
                f"slot={self.slot} fd={self.ch_fd}{rights}")


@dataclass(frozen=True)
class SyscallEvent:
    """Any other line of the trace: a system call, a delivered signal (``name="signal"``)
    or an exit (``name="exit"``).  ``args`` is strace's text; ``result`` the return
    value (None when strace shows ``?``), ``error`` the errno name on failure."""

    time: float
    pid: int
    name: str
    args: str
    result: int | None
    error: str | None = None

    @property
    def signal(self) -> str | None:
        """For ``signal`` events the signal name, for ``kill`` the signal sent."""
        if self.name == "signal":
            return self.args.split()[0]
        if self.name in ("kill", "tgkill", "tkill"):
            m = re.search(r"(SIG\w+)", self.args)
            return m.group(1) if m else None
        return None

    @property
    def from_pid(self) -> int | None:
        """For ``signal`` events: the sending pid (``si_pid``), when there is one."""
        m = re.search(r"si_pid=(\d+)", self.args)
        return int(m.group(1)) if m else None

    @property
    def fds(self) -> tuple[int, ...]:
        """For ``socketpair``: the two descriptors; for ``close``/``ioctl``/``fcntl``: the first argument."""
        if self.name == "socketpair":
            m = re.search(r"\[(\d+),\s*(\d+)\]", self.args)
            return (int(m.group(1)), int(m.group(2))) if m else ()
        m = re.match(r"\s*(\d+)", self.args)
        return (int(m.group(1)),) if m else ()

    def __str__(self) -> str:
        res = "" if self.name in ("signal", "exit") else f" = {'?' if self.result is None else self.result}"
        err = f" {self.error}" if self.error else ""
        return f"{self.time:10.6f} {self.pid} {self.name}({self.args}){res}{err}"


@dataclass(frozen=True)
class TracedChannel:
    """One socketpair made by a process that then forked: a channel candidate."""

    creator: int
    fds: tuple[int, int]          # (channel[0], channel[1]) in the creator's numbering
    created: float
    child: int | None = None      # the process forked right after it
    slot: int | None = None
    slot_source: str | None = None  # "message" or "allocation"
    closed: tuple[float | None, float | None] = (None, None)  # when the creator closed each end


@dataclass(frozen=True)
class Trace:
    """Everything decoded from one strace output."""

    messages: tuple[ChannelMessage, ...]
    events: tuple[SyscallEvent, ...]
    channels: tuple[TracedChannel, ...]
    start: float = 0.0          # absolute time of the first line (epoch seconds with -ttt)
    epoch: bool = False         # whether ``start`` is in epoch seconds

    @property
    def masters(self) -> tuple[int, ...]:
        """The pids that made channels and forked children onto them."""
        return tuple(sorted({c.creator for c in self.channels if c.child is not None}))

    def sends(self) -> list[ChannelMessage]:
        return [m for m in self.messages if m.direction == "send"]

    def recvs(self) -> list[ChannelMessage]:
        return [m for m in self.messages if m.direction == "recv"]

    def syscalls(self, *names: str) -> list[SyscallEvent]:
        return [e for e in self.events if not names or e.name in names]

    def window(self, t0: float | None = None, t1: float | None = None, *,
               absolute: bool = True) -> "Trace":
        """The part of the trace from ``t0`` (inclusive) to ``t1`` (exclusive); times are
        absolute (e.g. ``time.time()`` values for an ``-ttt`` trace) unless ``absolute=False``."""
        off = self.start if absolute else 0.0
        lo = float("-inf") if t0 is None else t0 - off
        hi = float("inf") if t1 is None else t1 - off
        return Trace(messages=tuple(m for m in self.messages if lo <= m.time < hi),
                     events=tuple(e for e in self.events if lo <= e.time < hi),
                     channels=self.channels, start=self.start, epoch=self.epoch)


# -- parsing -------------------------------------------------------------------

_LINE = re.compile(
    r"^(?:\[pid\s+(?P<bpid>\d+)\]\s+|(?P<pid>\d+)\s+)?"
    r"(?:(?P<ts>\d+:\d+:\d+(?:\.\d+)?|\d+\.\d+)\s+)?"
    r"(?P<body>.*)$")
_CALL = re.compile(r"^(?P<name>\w+)\((?P<args>.*)\)\s+=\s+(?P<res>-?\d+|0x[0-9a-fA-F]+|\?)(?P<rest>.*)$")
_RESUMED = re.compile(r"^<\.\.\.\s+(?P<name>\w+)\s+resumed>\s?(?P<rest>.*)$")
_SIGNAL = re.compile(r"^---\s+(?P<sig>SIG\w+|\d+)\s*(?P<info>.*?)\s*---$")
_EXIT = re.compile(r"^\+\+\+\s+(?P<what>.*?)\s+\+\+\+$")
_IOV = re.compile(r'iov_base="((?:[^"\\]|\\.)*)"')
_SCM = re.compile(r"cmsg_type=(?:SCM_RIGHTS|0x1)\s*,\s*cmsg_data=\[([^\]]*)\]")
_UNFINISHED = "<unfinished ...>"
_ESCAPES = {"n": 10, "t": 9, "r": 13, "v": 11, "f": 12, "a": 7, "b": 8, "\\": 92, '"': 34, "'": 39}


def _unescape(text: str) -> bytes:
    """strace's C-style string (``\\xNN``, ``\\n``, octal, plain characters) to bytes."""
    out = bytearray()
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c != "\\" or i + 1 >= n:
            out += c.encode("latin-1", "replace")
            i += 1
            continue
        d = text[i + 1]
        if d == "x":
            out.append(int(text[i + 2:i + 4], 16))
            i += 4
        elif d in "01234567":
            j = i + 1
            while j < n and j < i + 4 and text[j] in "01234567":
                j += 1
            out.append(int(text[i + 1:j], 8) & 0xFF)
            i = j
        else:
            out.append(_ESCAPES.get(d, ord(d) & 0xFF))
            i += 2
    return bytes(out)


def _timestamp(ts: str | None) -> float | None:
    if ts is None:
        return None
    if ":" in ts:
        h, m, s = ts.split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)
    return float(ts)


def _read_source(src) -> str:
    if isinstance(src, Path):
        return src.read_text(errors="replace")
    if isinstance(src, bytes):
        return src.decode(errors="replace")
    if isinstance(src, str) and "\n" not in src and "(" not in src and os.path.exists(src):
        return Path(src).read_text(errors="replace")
    return str(src)


@dataclass
class _Call:
    time: float          # when it started
    end: float           # when it returned
    pid: int
    name: str
    args: str
    result: int | None
    error: str | None


def _calls(text: str, default_pid: int):
    """Yield _Call / SyscallEvent-ish tuples in trace order, joining unfinished/resumed halves."""
    pending_by_pid: dict[int, tuple[float, str, str]] = {}
    clock_base = None
    clock_announced = False
    last_abs = None
    day = 0.0
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line:
            continue
        m = _LINE.match(line)
        if not m:
            continue
        pid = int(m.group("bpid") or m.group("pid") or default_pid)
        ts = _timestamp(m.group("ts"))
        body = m.group("body")
        if ts is not None:
            if m.group("ts") and ":" in m.group("ts"):
                # -tt wraps at midnight
                if last_abs is not None and ts + day < last_abs - 43200:
                    day += 86400.0
                ts += day
            last_abs = ts
            if clock_base is None:
                clock_base = ts
        else:
            ts = last_abs if last_abs is not None else 0.0
        if not clock_announced and (clock_base is not None):
            clock_announced = True
            yield ("clock", clock_base, ":" not in m.group("ts"))
        if body.endswith(_UNFINISHED):
            part = body[: -len(_UNFINISHED)].rstrip()
            name_m = re.match(r"(\w+)\(", part)
            if name_m:
                pending_by_pid[pid] = (ts, name_m.group(1), part)
            continue
        rm = _RESUMED.match(body)
        if rm:
            started = pending_by_pid.pop(pid, None)
            if started is None or started[1] != rm.group("name"):
                continue  # the trace began in the middle of this call
            body = started[2] + rm.group("rest")
            t_start = started[0]
        else:
            t_start = ts
        cm = _CALL.match(body)
        if cm:
            res_s = cm.group("res")
            result = None if res_s == "?" else int(res_s, 0)
            rest = cm.group("rest").strip()
            err_m = re.match(r"([A-Z][A-Z0-9_]+)", rest)
            error = err_m.group(1) if (err_m and result is not None and result < 0) else None
            if res_s == "?" and rest:
                error = rest.split()[0]
            yield ("call", _Call(t_start, ts, pid, cm.group("name"), cm.group("args"), result, error))
            continue
        sm = _SIGNAL.match(body)
        if sm:
            yield ("signal", _Call(ts, ts, pid, "signal", f"{sm.group('sig')} {sm.group('info')}".strip(),
                                   None, None))
            continue
        em = _EXIT.match(body)
        if em:
            what = em.group("what")
            code = re.match(r"exited with (\d+)", what)
            yield ("exit", _Call(ts, ts, pid, "exit", what, int(code.group(1)) if code else None, None))
            continue


_THREAD = re.compile(r"CLONE_THREAD")


def parse_trace(src, *, default_pid: int = 0) -> Trace:
    """Decode a whole strace output (a path, or the text): channel messages, other
    system calls, signals, exits, and the channel pairs with their slots.

    Lines may carry ``PID`` or ``[pid N]`` prefixes (``-f``; a line without one is
    ``default_pid``), ``-t``/``-tt``/``-ttt`` timestamps, and ``<unfinished ...>`` /
    ``<... resumed>`` halves.  Every ``sendmsg``/``recvmsg`` that moved exactly 32
    bytes is decoded as a channel message (nginx and ngxlab send nothing else of that
    size over a socket); its time is when a send started or a receive returned,
    in seconds from the first line of the trace.
    """
    text = _read_source(src)
    start = None
    epoch = False
    calls: list[_Call] = []
    raw_msgs: list[tuple[_Call, bytes, tuple[int, ...], str]] = []
    for kind, item, *more in _calls(text, default_pid):
        if kind == "clock":
            if start is None:
                start = item
                epoch = bool(more and more[0]) and item > 10 ** 8
            continue
        call = item
        if call.name in ("sendmsg", "recvmsg") and call.result == CHANNEL_SIZE:
            data = b"".join(_unescape(s) for s in _IOV.findall(call.args))
            if len(data) < CHANNEL_SIZE:
                continue
            scm: tuple[int, ...] = ()
            sm = _SCM.search(call.args)
            if sm:
                scm = tuple(int(x) for x in re.findall(r"(\d+)(?:<[^>]*>)?", sm.group(1)))
            raw_msgs.append((call, data[:CHANNEL_SIZE], scm,
                             "send" if call.name == "sendmsg" else "recv"))
            continue
        if call.name in ("sendmsg", "recvmsg"):
            continue
        calls.append(call)
    start = start or 0.0

    channels = _channels(calls, raw_msgs)

    def rel(t: float) -> float:
        return round(t - start, 6)

    messages = []
    for call, data, scm, direction in raw_msgs:
        fd_m = re.match(r"\s*(\d+)", call.args)
        fd = int(fd_m.group(1)) if fd_m else -1
        if direction == "send":
            ch = _channel_at(channels, call.pid, fd, call.time, end=0)
            messages.append(ChannelMessage.from_bytes(
                data, time=rel(call.time), sender=call.pid, fd=fd, scm_fds=scm, direction="send",
                receiver=ch.child if ch else None, target_slot=ch.slot if ch else None))
        else:
            ch = _channel_of_child(channels, call.pid, fd, call.end)
            messages.append(ChannelMessage.from_bytes(
                data, time=rel(call.end), sender=ch.creator if ch else 0, fd=fd, scm_fds=scm,
                direction="recv", receiver=call.pid, target_slot=ch.slot if ch else None))
    messages.sort(key=lambda m: m.time)

    events = [SyscallEvent(time=rel(c.time), pid=c.pid, name=c.name, args=c.args, result=c.result,
                           error=c.error) for c in calls]
    chans = tuple(replace(c, created=rel(c.created),
                          closed=tuple(None if t is None else rel(t) for t in c.closed))
                  for c in channels)
    return Trace(messages=tuple(messages), events=tuple(events), channels=chans,
                 start=start, epoch=epoch)


def parse_strace(src, *, default_pid: int = 0) -> list[ChannelMessage]:
    """The channel messages (sent and received) of a strace output, in time order."""
    return list(parse_trace(src, default_pid=default_pid).messages)


def parse_syscalls(src, *, default_pid: int = 0) -> list[SyscallEvent]:
    """The other events of a strace output: socketpair, fork/clone, kill, close, ...,
    delivered signals (``name="signal"``) and exits (``name="exit"``)."""
    return list(parse_trace(src, default_pid=default_pid).events)


# -- channel reconstruction ----------------------------------------------------


@dataclass
class _Chan:
    creator: int
    fds: tuple[int, int]
    created: float
    child: int | None = None
    slot: int | None = None
    slot_source: str | None = None
    closed: list = field(default_factory=lambda: [None, None])


def _channels(calls: list[_Call], raw_msgs) -> list[TracedChannel]:
    chans: list[_Chan] = []
    by_creator: dict[int, list[_Chan]] = {}
    for c in calls:
        if c.name == "socketpair" and c.result == 0:
            m = re.search(r"\[(\d+),\s*(\d+)\]", c.args)
            if not m:
                continue
            a, b = int(m.group(1)), int(m.group(2))
            for old in by_creator.get(c.pid, []):   # a reused number ends any older pair
                for end in (0, 1):
                    if old.fds[end] in (a, b) and old.closed[end] is None:
                        old.closed[end] = c.end
            ch = _Chan(creator=c.pid, fds=(a, b), created=c.end)
            chans.append(ch)
            by_creator.setdefault(c.pid, []).append(ch)
        elif c.name in ("clone", "clone3", "fork", "vfork") and c.result and c.result > 0:
            if _THREAD.search(c.args):
                continue
            for ch in reversed(by_creator.get(c.pid, [])):
                if ch.child is None and ch.closed == [None, None]:
                    ch.child = c.result
                    break
        elif c.name == "close" and c.result == 0:
            m = re.match(r"\s*(\d+)", c.args)
            if not m:
                continue
            fd = int(m.group(1))
            for ch in by_creator.get(c.pid, []):
                for end in (0, 1):
                    if ch.fds[end] == fd and ch.closed[end] is None and ch.created <= c.time:
                        ch.closed[end] = c.time
        elif c.name == "exit":
            for ch in by_creator.get(c.pid, []):
                for end in (0, 1):
                    if ch.closed[end] is None:
                        ch.closed[end] = c.time
    # only pairs that got a child are channels (a pair made and closed by one process is not)
    chans = [ch for ch in chans if ch.child is not None]
    _resolve_slots(chans, raw_msgs, [c for c in calls if c.name == "signal"])
    return [TracedChannel(creator=ch.creator, fds=ch.fds, created=ch.created, child=ch.child,
                          slot=ch.slot, slot_source=ch.slot_source, closed=tuple(ch.closed))
            for ch in chans]


def _resolve_slots(chans: list[_Chan], raw_msgs, signals: list[_Call]) -> None:
    # 1. the messages say it: OPEN_CHANNEL {pid, slot, fd = the master's channel[0]},
    #    CLOSE_CHANNEL {pid, slot} of a dead child
    for call, data, _scm, direction in raw_msgs:
        if direction != "send":
            continue
        command, pid, slot, ch_fd = decode_channel(data)
        if command not in (1, 2):
            continue
        for ch in chans:
            if ch.creator != call.pid or ch.slot is not None:
                continue
            if ch.child == pid and (command == 2 or ch.fds[0] == ch_fd):
                ch.slot, ch.slot_source = slot, "message"
    # 2. nginx's allocation rule for the rest, replayed in time order per creator
    for creator in {ch.creator for ch in chans}:
        mine = sorted((ch for ch in chans if ch.creator == creator), key=lambda ch: ch.created)
        # a signal to the master between a close and the next spawn (SIGHUP) means
        # that spawn is not the respawn of the closed one
        events = [(c.time, 2, None) for c in signals if c.pid == creator]
        for ch in mine:
            events.append((ch.created, 1, ch))
            end = max((t for t in ch.closed if t is not None), default=None)
            if end is not None and all(t is not None for t in ch.closed):
                events.append((end, 0, ch))
        events.sort(key=lambda e: (e[0], e[1] if e[1] != 2 else -1))
        occupied: dict[int, _Chan] = {}
        just_freed: int | None = None
        for _t, kind, ch in events:
            if kind == 2:
                just_freed = None
                continue
            if kind == 0:   # the master closed this pair: its slot is free again
                if ch.slot is not None and occupied.get(ch.slot) is ch:
                    del occupied[ch.slot]
                    just_freed = ch.slot
                continue
            if ch.slot is None:
                if just_freed is not None and just_freed not in occupied:
                    ch.slot = just_freed            # respawn into the dead child's slot
                else:
                    s = 0
                    while s in occupied:
                        s += 1
                    ch.slot = s                     # first free slot
                ch.slot_source = "allocation"
            occupied[ch.slot] = ch
            just_freed = None


def _channel_at(chans: Sequence[TracedChannel], creator: int, fd: int, t: float,
                end: int) -> TracedChannel | None:
    best = None
    for ch in chans:
        if ch.creator != creator or ch.fds[end] != fd or ch.created > t:
            continue
        closed = ch.closed[end]
        if closed is not None and closed <= t:
            continue
        if best is None or ch.created > best.created:
            best = ch
    return best


def _channel_of_child(chans: Sequence[TracedChannel], child: int, fd: int,
                      t: float) -> TracedChannel | None:
    for ch in chans:
        if ch.child == child and ch.fds[1] == fd and ch.created <= t:
            return ch
    return None


# -- comparing runs --------------------------------------------------------------


class SeqItem(NamedTuple):
    """One message reduced to what two runs must share: no pids, no descriptor numbers."""

    command_name: str
    slot: int
    target_slot: int | None
    has_fd: bool

    def __str__(self) -> str:
        target = "?" if self.target_slot is None else self.target_slot
        return (f"{self.command_name}(slot {self.slot}{', +fd' if self.has_fd else ''})"
                f" -> slot {target}")


def sequence(messages: Iterable[ChannelMessage], *, direction: str = "send",
             commands: Iterable[str] | None = None) -> list[SeqItem]:
    """The normalised form of a run: ``(command_name, slot, target_slot, has_fd)`` per
    message, in time order, identical for two runs that differ only in pids and
    descriptor numbers.  By default only sent messages count (each message once);
    ``commands`` keeps only those command names."""
    keep = set(commands) if commands is not None else None
    msgs = sorted((m for m in messages if direction is None or m.direction == direction),
                  key=lambda m: m.time)
    return [SeqItem(m.command_name, m.slot, m.target_slot, bool(m.scm_fds)) for m in msgs
            if keep is None or m.command_name in keep]


def count_commands(messages: Iterable[ChannelMessage], *, direction: str = "send") -> Counter:
    """How many messages of each command (sent ones by default)."""
    return Counter(m.command_name for m in messages if direction is None or m.direction == direction)


def diff_sequences(a: Sequence, b: Sequence, *, names: tuple[str, str] = ("a", "b")) -> list[str]:
    """Human-readable differences between two sequences (empty when they are equal)."""
    a = [SeqItem(*x) for x in a]
    b = [SeqItem(*x) for x in b]
    if a == b:
        return []
    na, nb = names
    out = []
    sm = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    for op, i1, i2, j1, j2 in sm.get_opcodes():
        if op == "equal":
            continue
        if op in ("replace", "delete"):
            for i in range(i1, i2):
                out.append(f"{na}[{i}] {a[i]}: not in {nb}" if op == "delete"
                           else f"{na}[{i}] {a[i]}: {nb} has something else there")
        if op in ("replace", "insert"):
            for j in range(j1, j2):
                out.append(f"{nb}[{j}] {b[j]}: not in {na}" if op == "insert"
                           else f"{nb}[{j}] {b[j]}: {na} has something else there")
    ca, cb = Counter(x.command_name for x in a), Counter(x.command_name for x in b)
    if ca != cb:
        counts = ", ".join(f"{k} {ca.get(k, 0)}/{cb.get(k, 0)}" for k in sorted(set(ca) | set(cb))
                           if ca.get(k, 0) != cb.get(k, 0))
        out.append(f"counts differ ({na}/{nb}): {counts}")
    return out


# -- recording ngxlab's own master ---------------------------------------------------


@contextmanager
def record_channel() -> Iterator[list[ChannelMessage]]:
    """Record every message this process writes with ``ngx_write_channel`` while the
    block runs, as :class:`ChannelMessage` (direction "send"), with the target slot and
    receiver looked up in this process's ``ngx_processes`` table at the time of the
    write, so that ``sequence()`` of an ngxlab master compares with one of nginx::

        with record_channel() as sent:
            ...                        # start workers, signal them
        sequence(sent)
    """
    sent: list[ChannelMessage] = []
    t0 = _time.time()

    def observe(s, ch, size):
        target = receiver = None
        for i, p in enumerate(process.ngx_processes[:process.ngx_last_process]):
            if p.pid > 0 and p.channel[0] == s:
                target, receiver = i, p.pid
                break
        sent.append(ChannelMessage(
            time=round(_time.time() - t0, 6), sender=os.getpid(), fd=s, command=ch.command,
            command_name=command_name(ch.command), pid=ch.pid, slot=ch.slot, ch_fd=ch.fd,
            scm_fds=() if ch.fd == -1 else (ch.fd,), direction="send", receiver=receiver,
            target_slot=target))

    channel._observers.append(observe)
    try:
        yield sent
    finally:
        channel._observers.remove(observe)


# -- tracing a run, nginx's or ngxlab's ------------------------------------------


ACTIONS = ("reopen", "kill_worker:1", "reload", "quit")


@dataclass(frozen=True)
class TraceRun:
    """A traced run, cut into phases: "startup", then one per action."""

    n: int
    version: str            # "1.22.1" for nginx, "ngxlab 0.1.0" for ngxlab
    trace: Trace
    phases: dict            # phase name -> tuple[ChannelMessage, ...] (sent and received)
    events: dict            # phase name -> tuple[SyscallEvent, ...]
    censuses: dict          # phase name -> Census after it settled (None after quit/stop)
    slots: dict             # phase name -> {slot: pid} after it settled

    def sends(self, phase: str) -> list[ChannelMessage]:
        return [m for m in self.phases[phase] if m.direction == "send"]

    def sequence(self, phase: str, **kw) -> list[SeqItem]:
        return sequence(self.phases[phase], **kw)

    def counts(self, phase: str) -> Counter:
        return count_commands(self.phases[phase])

    def table(self) -> str:
        """One line per phase: the commands sent, counted."""
        lines = []
        for name, msgs in self.phases.items():
            c = count_commands(msgs)
            lines.append(f"{name:16} " + (", ".join(f"{k} x{v}" for k, v in sorted(c.items())) or "-"))
        return "\n".join(lines)


def trace_run(runner, actions: Sequence[str] = ACTIONS, *, timeout: float = 10.0,
              settle: float = 0.05) -> TraceRun:
    """Start ``runner`` (an ``Nginx`` or a ``MasterProcess``, not started yet)
    under strace, perform ``actions`` one by one through the runners' common
    vocabulary, each time waiting until the master has settled (the full
    mesh again), and return the decoded messages per phase. Actions:
    ``reopen``, ``reload``, ``kill_worker:K`` (SIGKILL the worker in slot K),
    ``quit``, ``stop``, ``sleep:SECONDS``. The runner is always stopped at
    the end. (The in-process ``Master`` is this process, which strace cannot
    follow from the start: :func:`record_channel` records what it sends.)"""
    for a in actions:
        if a.partition(":")[0] not in ("reopen", "reload", "kill_worker", "quit", "stop", "sleep"):
            raise ValueError(f"unknown action {a!r}")
    runner.use_strace()
    n = runner.n
    boundaries: list[tuple[str, float]] = []
    censuses: dict = {}
    slots: dict = {}
    try:
        runner.start()
        _time.sleep(settle)
        censuses["startup"] = runner.census()
        slots["startup"] = runner.slots
        seen: Counter = Counter()
        for action in actions:
            name, _, arg = action.partition(":")
            seen[action] += 1
            phase = action if seen[action] == 1 else f"{action}#{seen[action]}"
            boundaries.append((phase, _time.time()))
            if name == "reopen":
                off = runner.log_offset()
                runner.signal("reopen")
                runner.wait_log(r"#\d+: reopening logs$", count=len(runner.worker_pids) + 1,
                                since=off, timeout=timeout)
            elif name == "reload":
                runner.signal("reload")
            elif name == "kill_worker":
                runner.kill_worker(int(arg or 0))
            elif name == "sleep":
                _time.sleep(float(arg or 0.1))
            elif name in ("quit", "stop"):
                runner.signal(name)
                runner.wait_exit(timeout)
                censuses[phase] = None
                slots[phase] = {}
                break
            runner.wait_mesh(n, timeout=timeout)
            _time.sleep(settle)   # let the last CLOSE_CHANNEL of a reap pass be written
            censuses[phase] = runner.census()
            slots[phase] = runner.slots
    finally:
        runner.stop()
    trace = parse_trace(runner.strace_text())
    if not trace.epoch:
        raise ValueError("the strace output has no epoch timestamps (-ttt)")
    phases: dict = {}
    events: dict = {}
    cuts = [("startup", None)] + boundaries
    for i, (phase, t0) in enumerate(cuts):
        t1 = cuts[i + 1][1] if i + 1 < len(cuts) else None
        part = trace.window(t0, t1)
        phases[phase] = part.messages
        events[phase] = part.events
    version = getattr(runner, "version", None) or f"ngxlab {__version__}"
    return TraceRun(n=n, version=version, trace=trace, phases=phases, events=events,
                    censuses=censuses, slots=slots)
