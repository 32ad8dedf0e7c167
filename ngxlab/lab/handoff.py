"""Drive and measure the connection handoff of ``ngxlab.beyond`` (an
instrument, not a mirror).

``HandoffMaster`` is a ``lab.Master`` that listens on 127.0.0.1 and has
``ngxlab.beyond`` installed before it forks its workers, so every worker
routes the connections it accepts by the key in the request line and hands
them to the key's owner over the mesh::

    from ngxlab.lab.handoff import HandoffMaster

    with HandoffMaster(workers=3) as h:
        print(h.get(h.path_for(2)))       # Reply(slot=2, ...): slot 2 owns it
        print(h.reports()[0]["stats"])    # what worker 0 did

``request()`` (one HTTP/1.0 exchange), ``send_request()`` and
``read_reply()`` (the same in two halves, for a request that must be in
flight while something else happens) and ``load()`` (a bounded loop of
concurrent requests) are the client: standard library sockets, 127.0.0.1
only. ``measure()`` is one run of the measurements of the book's chapter
"A worker hands a connection to another": latency served directly and
handed off, handoffs per second, and every process's descriptors before and
after. ``python -m ngxlab.lab.handoff`` prints them.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import random
import re
import selectors
import signal
import socket
import statistics
import struct
import tempfile
import termios
import time
from dataclasses import dataclass, field

from ngxlab import beyond
from ngxlab.lab import Master, MasterError, proc

__all__ = ["HandoffMaster", "Reply", "NoAnswer", "InFlight", "request",
           "send_request", "read_reply", "load", "LoadResult", "measure", "HandoffRun",
           "percentile"]

_ANSWER = re.compile(rb"slot (\d+) pid (\d+) generation (\d+)")
_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.I)


# -- the client -------------------------------------------------------------------


class NoAnswer(ConnectionError):
    """The server closed the connection (or reset it) without an answer."""


@dataclass(frozen=True)
class Reply:
    """One HTTP answer: the worker that served it, and how long it took
    from connect() to the last byte of the body, in seconds."""
    status: int
    slot: int
    pid: int
    generation: int
    elapsed: float


def _request_bytes(path):
    return f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode("latin-1")


def _complete(buf):
    """The body's end offset once the head and Content-Length bytes are in
    ``buf``, else None."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    m = _LENGTH.search(buf, 0, end + 2)
    if m is None:
        return None
    total = end + 4 + int(m.group(1))
    return total if len(buf) >= total else None


def _parse(buf, elapsed):
    line = buf.split(b"\r\n", 1)[0].split()
    m = _ANSWER.search(buf)
    if len(line) < 2 or not line[1].isdigit() or m is None:
        raise ValueError(f"not an ngxlab answer: {bytes(buf[:200])!r}")
    return Reply(int(line[1]), int(m.group(1)), int(m.group(2)),
                 int(m.group(3)), elapsed)


@dataclass
class InFlight:
    """A request sent and not yet answered (``send_request``)."""
    sock: socket.socket
    start: float

    def fileno(self):
        return self.sock.fileno()


def send_request(port, path="/", timeout=5.0):
    """Connect to 127.0.0.1:port and send ``GET path``; return the request
    in flight (pass it to ``read_reply``, which closes its socket)."""
    start = time.perf_counter()
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(_request_bytes(path))
    except BaseException:
        s.close()
        raise
    return InFlight(s, start)


def read_reply(inflight, timeout=5.0):
    """Read the answer to ``send_request`` up to the end of its body (by
    Content-Length), close the socket, return a ``Reply``. Raises
    ``NoAnswer`` when the server closes or resets the connection first,
    ``TimeoutError`` after ``timeout``."""
    s = inflight.sock
    buf = bytearray()
    try:
        s.settimeout(timeout)
        while _complete(buf) is None:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError as e:
                raise NoAnswer(f"connection reset after {len(buf)} bytes") from e
            if not chunk:
                raise NoAnswer(f"connection closed after {len(buf)} bytes")
            buf += chunk
        return _parse(buf, time.perf_counter() - inflight.start)
    finally:
        s.close()


def request(port, path="/", timeout=5.0):
    """One HTTP/1.0 exchange with 127.0.0.1:port; a ``Reply``."""
    return read_reply(send_request(port, path, timeout), timeout)


@dataclass
class LoadResult:
    """What ``load`` did: per finished request ``(path, seconds)``, the
    failures by reason, and the wall-clock time it ran."""
    done: list = field(default_factory=list)
    failed: dict = field(default_factory=dict)
    elapsed: float = 0.0

    @property
    def rate(self):
        return len(self.done) / self.elapsed if self.elapsed else 0.0


def load(port, paths, *, concurrency=8, duration=2.0, limit=100_000,
         timeout=5.0):
    """Keep ``concurrency`` requests in flight to 127.0.0.1:port, cycling
    through ``paths``, for ``duration`` seconds or ``limit`` requests,
    whichever comes first (then let the ones in flight finish, each within
    ``timeout``). One thread, non-blocking sockets."""
    sel = selectors.DefaultSelector()
    result = LoadResult()
    started = 0
    t0 = time.perf_counter()
    stop = t0 + duration

    def fail(reason):
        result.failed[reason] = result.failed.get(reason, 0) + 1

    def start():
        nonlocal started
        path = paths[started % len(paths)]
        started += 1
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex(("127.0.0.1", port))
        if err not in (0, 115):                 # EINPROGRESS
            s.close()
            fail(os.strerror(err))
            return
        state = {"path": path, "t": time.perf_counter(), "buf": bytearray(),
                 "sent": False}
        sel.register(s, selectors.EVENT_WRITE, state)

    def finish(s, state):
        sel.unregister(s)
        s.close()

    try:
        while True:
            now = time.perf_counter()
            while len(sel.get_map()) < concurrency and now < stop \
                    and started < limit:
                start()
            if not sel.get_map():
                break
            for key, _ in sel.select(0.05):
                s, state = key.fileobj, key.data
                try:
                    if not state["sent"]:
                        s.send(_request_bytes(state["path"]))
                        state["sent"] = True
                        sel.modify(s, selectors.EVENT_READ, state)
                        continue
                    chunk = s.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as e:
                    finish(s, state)
                    fail(type(e).__name__)
                    continue
                if not chunk:
                    finish(s, state)
                    fail("closed without an answer")
                    continue
                state["buf"] += chunk
                if _complete(state["buf"]) is not None:
                    result.done.append((state["path"],
                                        time.perf_counter() - state["t"]))
                    finish(s, state)
            now = time.perf_counter()
            for key in list(sel.get_map().values()):
                if now - key.data["t"] > timeout:
                    finish(key.fileobj, key.data)
                    fail("timeout")
    finally:
        for key in list(sel.get_map().values()):
            key.fileobj.close()
        sel.close()
    result.elapsed = time.perf_counter() - t0
    return result


def percentile(values, q):
    """The q-th percentile (0 to 100) of ``values``, nearest rank."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


# -- the master ---------------------------------------------------------------------


def _queued(fd):
    """Bytes waiting to be read on socket ``fd`` (FIONREAD)."""
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]


class HandoffMaster:
    """A ``lab.Master`` on 127.0.0.1 whose workers route connections by
    key (``ngxlab.beyond``). A context manager.

    ``workers``: how many. ``acknowledge``: the sender keeps its copy of a
    handed-off connection until the receiver answers (``False``: it closes
    it at once). ``nginx_quirks``: the workers read their channel by
    nginx's rules. ``record``: each worker remembers the request targets it
    handed off (``reports()``). ``log_path``, ``log_level``: as for
    ``Master``."""

    def __init__(self, workers=3, *, acknowledge=True, nginx_quirks=False,
                 record=False, log_path=None, log_level="notice"):
        self.n = workers
        self._acknowledge = acknowledge
        self._record = record
        self._tmp = tempfile.TemporaryDirectory(prefix="ngxlab-handoff-")
        self.reports_dir = self._tmp.name
        self.master = Master(workers, listen=("127.0.0.1", 0), start=False,
                             nginx_quirks=nginx_quirks, log_path=log_path,
                             log_level=log_level)
        self._paused = set()
        self._entered = False

    def __enter__(self):
        self.master.__enter__()
        self._entered = True
        try:
            beyond.install(self.master.cycle, acknowledge=self._acknowledge,
                           record=self._record, reports=self.reports_dir)
            self.master.spawn()
            self.master.wait_mesh()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        """Let paused workers go on, stop everything (``Master.close``),
        undo ``beyond.install`` here and remove the reports."""
        if not self._entered:
            return
        self._entered = False
        try:
            for slot in list(self._paused):
                self.resume(slot)
            self.master.close()
        finally:
            beyond.uninstall(self.master.cycle)
            self.master.cleanup()
            self._tmp.cleanup()

    # -- looking ----------------------------------------------------------------

    @property
    def port(self):
        return self.master.cycle.listening[0].sockaddr[1]

    @property
    def slots(self):
        """``{slot: pid}`` of the live workers."""
        return {w.slot: w.pid for w in self.master.workers}

    def path_for(self, slot, i=0):
        """A request target whose key ``slot`` owns: ``/shard/KEY/i``."""
        return f"/shard/{self.key_for(slot)}/{i}"

    def key_for(self, slot, nth=0):
        """The ``nth`` key (``k0``, ``k1``, ...) that ``slot`` owns."""
        found = -1
        for j in range(100_000):
            key = f"k{j}"
            if beyond.owner(key.encode(), self.n) == slot:
                found += 1
                if found == nth:
                    return key
        raise ValueError(f"no key for slot {slot}")

    def census(self):
        return self.master.census()

    def log_lines(self):
        return self.master.log_lines()

    def queued(self, slot):
        """Bytes waiting unread in the channel of ``slot`` (its
        ``channel[1]``, of which the master holds a copy)."""
        chan = {w.slot: w.channel for w in self.master.workers}[slot]
        return _queued(chan[1])

    def reports(self, slots=None, timeout=5.0):
        """Ask every worker (or those of ``slots``) for ``beyond.report()``
        (a REOPEN from the master makes each write it) and return
        ``{slot: report}``."""
        want = {s: p for s, p in self.slots.items()
                if (slots is None or s in slots) and s not in self._paused}
        for pid in want.values():
            try:
                os.unlink(self._report_path(pid))
            except FileNotFoundError:
                pass
        self.master.signal("reopen")
        deadline = time.monotonic() + timeout
        out = {}
        while True:
            for slot, pid in want.items():
                if slot not in out:
                    try:
                        with open(self._report_path(pid)) as f:
                            out[slot] = json.load(f)
                    except (FileNotFoundError, ValueError):
                        pass
            if len(out) == len(want):
                return out
            if time.monotonic() > deadline:
                raise MasterError(f"no handoff report from slots "
                                  f"{sorted(set(want) - set(out))} in {timeout} s")
            time.sleep(0.005)

    def _report_path(self, pid):
        return os.path.join(self.reports_dir, f"handoff-{pid}.json")

    # -- acting -------------------------------------------------------------------

    def get(self, path="/", timeout=5.0):
        """One request to the workers; a ``Reply``."""
        return request(self.port, path, timeout)

    def pause(self, slot):
        """SIGSTOP the worker in ``slot`` (it neither accepts nor reads its
        channel) and wait until it is stopped."""
        pid = self.slots[slot]
        os.kill(pid, signal.SIGSTOP)
        self._paused.add(slot)
        proc.wait_state(pid, "T")
        return pid

    def resume(self, slot):
        pid = self.slots.get(slot)
        self._paused.discard(slot)
        if pid is not None:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def kill_worker(self, slot):
        """SIGKILL the worker in ``slot`` and reap it as the master does
        (its pair closed, CLOSE_CHANNEL to the others, a new worker in the
        same slot, OPEN_CHANNEL); return the victim's pid, as every
        runner's ``kill_worker`` does (``slots[slot]`` is the new one)."""
        self._paused.discard(slot)
        old = self.master.kill_worker(slot)
        self.master.wait_mesh()
        return old


# -- one run of measurements -------------------------------------------------------


@dataclass
class HandoffRun:
    """What ``measure`` found. Latencies in seconds."""
    workers: int
    direct: list                 # latencies of requests served where accepted
    handed: list                 # latencies of requests handed off
    direct_rate: float           # requests/s, concurrent, no key
    keyed_rate: float            # requests/s, concurrent, keyed
    handoff_rate: float          # handoffs/s during the keyed phase
    handoff_share: float         # handoffs per keyed request in that phase
    concurrency: int
    failed: dict                 # failures by reason, both concurrent phases
    fds_before: dict             # {"master" | "slot N": descriptors}
    fds_after: dict
    stats: dict                  # {slot: beyond's counters}, at the end
    settle: float = 0.0          # seconds the descriptors took to come back

    def median(self, kind):
        return statistics.median(getattr(self, kind))

    def p99(self, kind):
        return percentile(getattr(self, kind), 99)

    @property
    def leaked(self):
        """``{process: after - before}`` for every process whose count
        changed (empty: nothing leaked)."""
        return {k: self.fds_after.get(k, 0) - v for k, v in self.fds_before.items()
                if self.fds_after.get(k, 0) != v}


def _fd_counts(census):
    out = {"master": census.master.total_fds}
    for w in census.workers:
        out[f"slot {w.slot}"] = w.total_fds
    return out


def measure(workers=3, *, requests=1000, concurrency=8, duration=1.5, rounds=5,
            seed=1, progress=None):
    """One run: ``requests`` sequential requests, half without a key
    (served where accepted) and half keyed to a random owner (handed off
    unless the acceptor owns the key), in random order, classified by what
    the workers report; then ``concurrency`` requests in flight for
    ``duration`` seconds without a key and as long with keys, in
    ``rounds`` alternating bursts; the descriptors of every process before
    and after. Returns a ``HandoffRun``."""
    rng = random.Random(seed)
    say = progress or (lambda text: None)
    with HandoffMaster(workers, record=True) as h:
        before = _fd_counts(h.census())
        say("sequential requests")
        paths = []
        for i in range(requests):
            if i % 2:
                paths.append(f"/direct/{i}")
            else:
                paths.append(f"/shard/{h.key_for(rng.randrange(workers), rng.randrange(50))}/{i}")
        rng.shuffle(paths)
        latency = {}
        for path in paths:
            latency[path] = h.get(path).elapsed
        handed_paths = set()
        for rep in h.reports().values():
            handed_paths.update(rep["handed"])
        direct = [t for p, t in latency.items() if p not in handed_paths]
        handed = [t for p, t in latency.items() if p in handed_paths]

        say("concurrent requests")
        # the two kinds in alternating bursts, so that whatever else the
        # machine does falls on both alike
        plain_paths = [f"/direct/{i}" for i in range(64)]
        keyed_paths = [f"/shard/{h.key_for(s, j)}/c"
                       for j in range(16) for s in range(workers)]
        counted = sum(r["stats"].get("handed_off", 0) for r in h.reports().values())
        plain, keyed = LoadResult(), LoadResult()
        for _ in range(rounds):
            for paths_, into in ((plain_paths, plain), (keyed_paths, keyed)):
                burst = load(h.port, paths_, concurrency=concurrency,
                             duration=duration / rounds)
                into.done += burst.done
                into.elapsed += burst.elapsed
                for k, v in burst.failed.items():
                    into.failed[k] = into.failed.get(k, 0) + v
        reports = h.reports()
        handoffs = sum(r["stats"].get("handed_off", 0) for r in reports.values()) - counted

        say("descriptors after")
        t0 = time.monotonic()
        after = _fd_counts(h.census())
        while after != before and time.monotonic() - t0 < 5.0:
            time.sleep(0.02)
            after = _fd_counts(h.census())
        settle = time.monotonic() - t0
        stats = {s: r["stats"] for s, r in sorted(h.reports().items())}

    failed = dict(plain.failed)
    for k, v in keyed.failed.items():
        failed[k] = failed.get(k, 0) + v
    return HandoffRun(workers, direct, handed, plain.rate, keyed.rate,
                      handoffs / keyed.elapsed if keyed.elapsed else 0.0,
                      handoffs / len(keyed.done) if keyed.done else 0.0,
                      concurrency, failed, before, after, stats, settle)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m ngxlab.lab.handoff",
        description="Measure ngxlab.beyond's connection handoff in one run: "
                    "latency served directly vs handed off, handoffs per "
                    "second, descriptors before and after.")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=1.5)
    args = parser.parse_args(argv)
    run = measure(args.workers, requests=args.requests,
                  concurrency=args.concurrency, duration=args.duration)
    us = 1e6
    print(f"{args.workers} workers, {args.requests} sequential requests:")
    for kind in ("direct", "handed"):
        print(f"  {kind:7} n={len(getattr(run, kind)):5}  median "
              f"{run.median(kind) * us:7.0f} us  p99 {run.p99(kind) * us:7.0f} us")
    print(f"  handed off / direct, median: "
          f"{run.median('handed') / run.median('direct'):.2f}")
    print(f"concurrency {run.concurrency}: {run.direct_rate:.0f} requests/s without "
          f"a key, {run.keyed_rate:.0f} with keys ({run.handoff_rate:.0f} handoffs/s, "
          f"{run.handoff_share:.2f} per request); failed: {run.failed or 0}")
    print("descriptors before -> after: " + ", ".join(
        f"{k} {run.fds_before[k]} -> {run.fds_after.get(k)}" for k in run.fds_before))
    print("leaked: " + (str(run.leaked) if run.leaked else "nothing"))
    return 0 if not run.leaked and not run.failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
