"""A bounded HTTP load on 127.0.0.1 that counts every way a request can fail.

:class:`Load` runs the client in a process of its own (``python -m
ngxlab.lab.load``), so that the process which signals a master and polls
``/proc`` does not share an interpreter with it. The client is an open
loop: request ``i`` is due at ``i / rate`` seconds after the start, whatever
happened to the requests before it, so that two servers get the same
offered load and a server that stalls sees requests pile up instead of the
client politely waiting (a closed loop, which sends the next request only
when the last one is answered, would send fewer requests into a gap and so
hide it). At most ``concurrency`` requests are in flight; a request that
has to wait for a free place starts late, and how late (the *lag*) is
recorded, so that a run in which the client, not the server, was the
bottleneck says so.

Each request is one TCP connection: ``connect()``, ``GET / HTTP/1.0``, read
to the end of file, close. Every request therefore goes through the
listening socket and ``accept()``, which is what a reload and a binary
upgrade hand from one generation of processes to the next. Each ends in
exactly one of :data:`OUTCOMES`:

- ``ok``: status 200 and as many body bytes as ``Content-Length`` says;
- ``refused``: ``connect()`` failed with ECONNREFUSED: nothing listened on
  the port;
- ``reset``: ECONNRESET or EPIPE: the connection was taken, then dropped
  (e.g. a listening socket closed with connections in its queue);
- ``status``: an answer whose status is not 200;
- ``short``: end of file before a complete answer (no status line, a short
  body);
- ``timeout``: no complete answer within ``timeout`` seconds (a connection
  left in a queue that nobody accepts from);
- ``error``: any other error, counted by its errno name in ``errors``.

Times are ``time.monotonic()``, the same clock in every process of the
machine, so that the moments a caller signals a master (:meth:`Load.mark`)
fall on the client's timeline.

Not a mirror of nginx: nothing here has an ``ngx_`` name.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field

from ngxlab.lab.compare import percentile
from ngxlab.lab.runner import ngxlab_env

__all__ = ["OUTCOMES", "FAILURES", "LoadError", "LoadResult", "Load", "run_client", "probe"]

OUTCOMES = ("ok", "refused", "reset", "status", "short", "timeout", "error")
FAILURES = OUTCOMES[1:]
_OK, _REFUSED, _RESET, _STATUS, _SHORT, _TIMEOUT, _ERROR = range(len(OUTCOMES))

REQUEST = b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\nUser-Agent: ngxlab-load\r\n\r\n"


class LoadError(RuntimeError):
    """The client could not start or did not report."""


@dataclass
class LoadResult:
    """What the client saw. ``counts``: requests per outcome
    (:data:`OUTCOMES`); ``errors``: the ``error`` outcomes by errno name.
    ``start_ms``/``end_ms``/``outcome``: per request, in the order they were
    started, ms after the client's start ``t0`` (``time.monotonic()``);
    ``lag_ms``: how late each started against its schedule. A request's
    latency is counted from when it was due, not from when it started
    (``end - start + lag``): a server that stalls long enough to fill every
    place in flight is charged for the requests that had to wait. ``marks``:
    (ms after ``t0``, label) of what the caller did during the run.
    ``client_cpu_ms``: the CPU time the client used. A result read back from
    JSON (:meth:`from_dict`) keeps its summary and its :meth:`timeline`, not
    the per-request lists."""

    rate: float
    concurrency: int
    timeout: float
    t0: float
    duration_s: float
    counts: dict[str, int]
    errors: dict[str, int] = field(default_factory=dict)
    start_ms: list[float] = field(default_factory=list)
    end_ms: list[float] = field(default_factory=list)
    outcome: list[int] = field(default_factory=list)
    lag_ms: list[float] = field(default_factory=list)
    marks: list[tuple[float, str]] = field(default_factory=list)
    client_cpu_ms: float | None = None
    _summary: dict | None = None
    _timeline: dict | None = None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def failed(self) -> int:
        """Requests that ended in anything but ``ok``."""
        return self.total - self.counts.get("ok", 0)

    @property
    def failures(self) -> dict[str, int]:
        """The failed requests by kind (every kind, zeros included)."""
        return {k: self.counts.get(k, 0) for k in FAILURES}

    def _latencies(self) -> list[float]:
        return [e - s + g for s, e, o, g in zip(self.start_ms, self.end_ms, self.outcome,
                                                self.lag_ms) if o == _OK]

    def summary(self) -> dict:
        """Counts, the rate answered, latency of the answered requests from
        when each was due (median, p99, max, ms), the client's lag (p99,
        max, ms) and the share of one core the client used."""
        if self._summary is not None:
            return dict(self._summary)
        lat = self._latencies()
        return {
            "total": self.total, "failed": self.failed, "counts": dict(self.counts),
            "errors": dict(self.errors), "duration_s": round(self.duration_s, 3),
            "offered_per_s": self.rate,
            "answered_per_s": round(self.counts.get("ok", 0) / self.duration_s, 1)
            if self.duration_s else None,
            "latency_ms": {"median": _r(percentile(lat, 50)), "p99": _r(percentile(lat, 99)),
                           "max": _r(max(lat) if lat else None)},
            "lag_ms": {"p99": _r(percentile(self.lag_ms, 99)),
                       "max": _r(max(self.lag_ms) if self.lag_ms else None)},
            "client_cpu_share": None if self.client_cpu_ms is None or not self.duration_s
            else round(self.client_cpu_ms / (self.duration_s * 1000), 3),
        }

    def timeline(self, bin_ms: float = 50.0) -> dict:
        """Per bin of ``bin_ms`` (by when each request ended): answered
        requests per second, failed requests, and the latency of the
        answered ones from when each was due (median and max, ms). ``t_s``
        is each bin's start, s after ``t0``. Complete bins only: those that
        end before the last request started (the requests that ended later
        are in the counts, not in the timeline)."""
        if self._timeline is not None:
            return self._timeline
        # complete bins only: the last one would show the end of the run as a drop
        nbins = int(max(self.start_ms, default=0.0) // bin_ms)
        if nbins == 0:
            return {"bin_ms": bin_ms, "t_s": [], "ok_per_s": [], "failed": [],
                    "latency_median_ms": [], "latency_max_ms": []}
        ok = [0] * nbins
        failed = [0] * nbins
        lat: list[list[float]] = [[] for _ in range(nbins)]
        for s, e, o, g in zip(self.start_ms, self.end_ms, self.outcome, self.lag_ms):
            b = int(e // bin_ms)
            if b >= nbins:
                continue
            if o == _OK:
                ok[b] += 1
                lat[b].append(e - s + g)
            else:
                failed[b] += 1
        return {"bin_ms": bin_ms, "t_s": [round(i * bin_ms / 1000, 4) for i in range(nbins)],
                "ok_per_s": [round(k * 1000 / bin_ms, 1) for k in ok], "failed": failed,
                "latency_median_ms": [_r(percentile(x, 50)) for x in lat],
                "latency_max_ms": [_r(max(x)) if x else None for x in lat]}

    def to_dict(self, bin_ms: float = 50.0) -> dict:
        """The summary, the timeline and the marks (not the per-request lists)."""
        return {"rate": self.rate, "concurrency": self.concurrency, "timeout": self.timeout,
                "duration_s": round(self.duration_s, 3), "counts": dict(self.counts),
                "errors": dict(self.errors), "marks": [[round(t, 3), k] for t, k in self.marks],
                "client_cpu_ms": self.client_cpu_ms, "summary": self.summary(),
                "timeline": self.timeline(bin_ms)}

    @classmethod
    def from_dict(cls, d: dict) -> "LoadResult":
        """The inverse of :meth:`to_dict`: the summary, the timeline and
        the marks, without the per-request lists."""
        return cls(rate=d["rate"], concurrency=d["concurrency"], timeout=d["timeout"], t0=0.0,
                   duration_s=d["duration_s"], counts=dict(d["counts"]),
                   errors=dict(d["errors"]), marks=[(t, k) for t, k in d["marks"]],
                   client_cpu_ms=d.get("client_cpu_ms"), _summary=d["summary"],
                   _timeline=d["timeline"])


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


# -- the client (its own process) ---------------------------------------------------


class _Request:
    __slots__ = ("i", "sock", "start", "deadline", "buf", "sent", "done")

    def __init__(self, i: int, sock: socket.socket, start: float, deadline: float):
        self.i, self.sock, self.start, self.deadline = i, sock, start, deadline
        self.buf = bytearray()
        self.sent = 0
        self.done = False


def _judge(buf: bytes) -> int:
    """The outcome of an answer read to its end of file."""
    head, sep, body = bytes(buf).partition(b"\r\n\r\n")
    if not sep:
        return _SHORT
    lines = head.split(b"\r\n")
    parts = lines[0].split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return _SHORT
    if parts[1] != b"200":
        return _STATUS
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            try:
                want = int(value.strip())
            except ValueError:
                return _SHORT
            return _OK if len(body) >= want else _SHORT
    return _OK if body else _SHORT


def _kind(err: int) -> int:
    """The outcome of a request that failed with ``err``."""
    if err == errno.ECONNREFUSED:
        return _REFUSED
    if err in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED):
        return _RESET
    if err == errno.ETIMEDOUT:
        return _TIMEOUT
    return _ERROR


def probe(port: int, count: int = 5, *, timeout: float = 1.0) -> dict[str, int]:
    """``count`` requests to 127.0.0.1:``port``, one after the other, each on
    a connection of its own, as the client sends them: ``{outcome: count}``
    (every outcome of :data:`OUTCOMES`, zeros included)."""
    counts = {k: 0 for k in OUTCOMES}
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(("127.0.0.1", port))
            s.sendall(REQUEST)
            buf = bytearray()
            while chunk := s.recv(65536):
                buf += chunk
            code = _judge(buf)
        except TimeoutError:
            code = _TIMEOUT
        except OSError as e:
            code = _kind(e.errno)
        finally:
            s.close()
        counts[OUTCOMES[code]] += 1
    return counts


def run_client(port: int, *, rate: float, concurrency: int, timeout: float, max_s: float,
               control=None, out=None) -> dict:
    """The client loop (what ``python -m ngxlab.lab.load`` runs): send
    ``rate`` requests per second to 127.0.0.1:``port``, at most
    ``concurrency`` at once, until a line arrives on ``control`` (a file)
    or ``max_s`` seconds have passed, then wait for the requests in flight
    (at most ``timeout`` s) and return what happened as a dict. ``out``: a
    file to write "ready T0" to when the loop starts."""
    addr = ("127.0.0.1", port)
    sel = selectors.DefaultSelector()
    if control is not None:
        sel.register(control, selectors.EVENT_READ, None)
    cpu0 = time.process_time()
    t0 = time.monotonic()
    period = 1.0 / rate
    starts: list[float] = []
    ends: list[float] = []
    outcome: list[int] = []
    lags: list[float] = []
    errors: dict[str, int] = {}
    live: dict[int, _Request] = {}
    pending: deque[_Request] = deque()        # in start order: deadlines are in order too
    stopping = False
    if out is not None:
        out.write(f"ready {t0!r}\n")
        out.flush()

    def finish(r: _Request, code: int, err: int = 0) -> None:
        if r.done:
            return
        r.done = True
        now = time.monotonic()
        ends[r.i] = (now - t0) * 1000
        outcome[r.i] = code
        if code == _ERROR:
            name = errno.errorcode.get(err, str(err))
            errors[name] = errors.get(name, 0) + 1
        live.pop(r.sock.fileno(), None)
        try:
            sel.unregister(r.sock)
        except (KeyError, ValueError):
            pass
        r.sock.close()

    def failed(r: _Request, err: int) -> None:
        finish(r, _kind(err), err)

    def send(r: _Request) -> None:
        try:
            r.sent += r.sock.send(REQUEST[r.sent:])
        except BlockingIOError:
            return
        except OSError as e:
            failed(r, e.errno)
            return
        if r.sent == len(REQUEST):
            sel.modify(r.sock, selectors.EVENT_READ, r)

    def start(i: int, due: float) -> None:
        now = time.monotonic()
        starts.append((now - t0) * 1000)
        ends.append(0.0)
        outcome.append(_ERROR)
        lags.append(max(0.0, (now - due) * 1000))
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        r = _Request(i, s, now, now + timeout)
        live[s.fileno()] = r
        pending.append(r)
        err = s.connect_ex(addr)
        if err in (0, errno.EINPROGRESS):
            sel.register(s, selectors.EVENT_WRITE, r)
            if err == 0:
                send(r)
        else:
            failed(r, err)

    def readable(r: _Request) -> None:
        try:
            chunk = r.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as e:
            failed(r, e.errno)
            return
        if chunk:
            r.buf += chunk
        else:
            finish(r, _judge(r.buf))

    i = 0
    while True:
        now = time.monotonic()
        if not stopping and now - t0 >= max_s:
            stopping = True
        if not stopping:
            while len(live) < concurrency and t0 + i * period <= now:
                start(i, t0 + i * period)
                i += 1
        while pending and pending[0].done:
            pending.popleft()
        while pending and pending[0].deadline <= now:
            finish(pending.popleft(), _TIMEOUT)
        if stopping and not live:
            break
        wait = 0.05
        if not stopping and len(live) < concurrency:
            wait = min(wait, max(0.0, t0 + i * period - now))
        if pending:
            wait = min(wait, max(0.0, pending[0].deadline - now))
        for key, mask in sel.select(wait):
            r = key.data
            if r is None:
                control.readline()
                stopping = True
                sel.unregister(control)
                continue
            if r.done:
                continue
            if r.sent < len(REQUEST):
                err = r.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    failed(r, err)
                else:
                    send(r)
            else:
                readable(r)
    duration = time.monotonic() - t0
    counts = {k: 0 for k in OUTCOMES}
    for o in outcome:
        counts[OUTCOMES[o]] += 1
    sel.close()
    return {"t0": t0, "duration_s": duration, "counts": counts, "errors": errors,
            "start_ms": [round(x, 3) for x in starts], "end_ms": [round(x, 3) for x in ends],
            "outcome": outcome, "lag_ms": [round(x, 3) for x in lags],
            "client_cpu_ms": round((time.process_time() - cpu0) * 1000, 1)}


# -- the caller's side ---------------------------------------------------------------


class Load:
    """The client, running in its own process for the length of a ``with``
    block (or from :meth:`start` to :meth:`stop`)::

        with Load(port, rate=1000) as load:
            load.mark("HUP"); runner.send_signal(signal.SIGHUP)
            ...
        print(load.result.failures)

    ``rate``: requests per second; ``concurrency``: at most this many in
    flight; ``timeout``: seconds a request may take; ``max_s``: the client
    stops by itself after this long (a bound, not the plan: :meth:`stop`
    ends it). :meth:`stop` returns the :class:`LoadResult`.
    """

    def __init__(self, port: int, *, rate: float = 1000.0, concurrency: int = 48,
                 timeout: float = 3.0, max_s: float = 60.0):
        if rate <= 0 or concurrency < 1 or timeout <= 0 or max_s <= 0:
            raise ValueError("rate, concurrency, timeout and max_s must be positive")
        self.port, self.rate, self.concurrency = int(port), float(rate), int(concurrency)
        self.timeout, self.max_s = float(timeout), float(max_s)
        self.t0: float | None = None
        self.marks: list[tuple[float, str]] = []
        self.result: LoadResult | None = None
        self._popen: subprocess.Popen | None = None
        self._out: str | None = None

    def start(self) -> "Load":
        """Start the client and return once it has started its loop (its
        ``t0`` is known)."""
        fd, self._out = tempfile.mkstemp(prefix="ngxlab-load-", suffix=".json")
        os.close(fd)
        argv = [sys.executable, "-m", "ngxlab.lab.load", str(self.port), "--rate", str(self.rate),
                "--concurrency", str(self.concurrency), "--timeout", str(self.timeout),
                "--max-seconds", str(self.max_s), "--out", self._out]
        self._popen = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, env=ngxlab_env(), text=True,
                                       close_fds=True)
        line = self._popen.stdout.readline()
        if not line.startswith("ready "):
            err = self._finish(kill=True)
            raise LoadError(f"the load client did not start: {line!r} {err[-1000:]}")
        self.t0 = float(line.split()[1])
        return self

    def mark(self, label: str, when: float | None = None) -> float:
        """Note ``label`` on the timeline, now or at ``when``
        (``time.monotonic()``); returns the time used."""
        when = time.monotonic() if when is None else when
        self.marks.append(((when - self.t0) * 1000, label))
        return when

    def elapsed(self) -> float:
        """Seconds since the client started."""
        return time.monotonic() - self.t0

    def stop(self) -> LoadResult:
        """Tell the client to stop, wait for its report; the result."""
        if self.result is not None:
            return self.result
        p = self._popen
        if p is None:
            raise LoadError("the load client was not started")
        try:
            p.stdin.write("stop\n")
            p.stdin.flush()
        except (BrokenPipeError, OSError):
            pass
        try:
            p.wait(timeout=self.timeout + 30.0)
        except subprocess.TimeoutExpired:
            err = self._finish(kill=True)
            raise LoadError("the load client did not report in time: " + err[-1000:]) from None
        err = self._finish(kill=False)
        try:
            if p.returncode != 0:
                raise LoadError(f"the load client exited with status {p.returncode}: "
                                f"{err[-2000:]}")
            with open(self._out) as f:
                d = json.load(f)
        finally:
            self._remove_out()
        self.result = LoadResult(
            rate=self.rate, concurrency=self.concurrency, timeout=self.timeout, t0=d["t0"],
            duration_s=d["duration_s"], counts=d["counts"], errors=d["errors"],
            start_ms=d["start_ms"], end_ms=d["end_ms"], outcome=d["outcome"],
            lag_ms=d["lag_ms"], marks=list(self.marks), client_cpu_ms=d["client_cpu_ms"])
        return self.result

    def _remove_out(self) -> None:
        if self._out is not None:
            try:
                os.unlink(self._out)
            except FileNotFoundError:
                pass
            self._out = None

    def _finish(self, kill: bool) -> str:
        """End the client (SIGKILL with ``kill``), reap it, close its pipes;
        what it wrote to stderr."""
        p, self._popen = self._popen, None
        if p is None:
            return ""
        if kill and p.poll() is None:
            p.kill()
        try:
            _out, err = p.communicate(timeout=10.0)
        except subprocess.TimeoutExpired:
            p.kill()
            _out, err = p.communicate()
        if kill:
            self._remove_out()
        return err or ""

    def __enter__(self) -> "Load":
        return self.start()

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.stop()
        else:
            self._finish(kill=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ngxlab.lab.load",
                                 description="An open-loop HTTP load on 127.0.0.1:PORT; "
                                 "stops at a line on stdin; prints what happened as JSON.")
    ap.add_argument("port", type=int)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--concurrency", type=int, default=48)
    ap.add_argument("--timeout", type=float, default=3.0)
    ap.add_argument("--max-seconds", type=float, default=60.0)
    ap.add_argument("--out", required=True, help="where to write the result (JSON)")
    a = ap.parse_args(argv)
    result = run_client(a.port, rate=a.rate, concurrency=a.concurrency, timeout=a.timeout,
                        max_s=a.max_seconds, control=sys.stdin, out=sys.stdout)
    with open(a.out, "w") as f:
        json.dump(result, f, separators=(",", ":"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
