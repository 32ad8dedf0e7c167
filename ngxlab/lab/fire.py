"""The master's life under fire: ngxlab beside a real nginx, measured under load.

nginx promises that a reload and a binary upgrade lose no request and that a
worker which dies is replaced; ngxlab promises the same, and one more thing
(its workers die with their master, where nginx's live on). This module
measures each promise on both systems, one after the other, with the same
bounded load from :class:`ngxlab.lab.load.Load` (an open loop on
127.0.0.1, each request its own connection, every kind of failure counted):

:func:`reload_under_load`
    HUP ``reloads`` times while the load runs. After each HUP it waits until
    the new generation holds its full mesh and the old one is gone
    (``Runner.wait_mesh``), then pauses ``gap_s``. Reports the failed
    requests by kind, the request-rate timeline with each reload marked,
    and how long each reload took to settle.
:func:`upgrade_under_load`
    A binary upgrade while the load runs: USR2 (a new master, started from
    the same binary, inherits the listening socket), then WINCH to the old
    master (its workers quit, and are not respawned), then QUIT (the old
    master goes). Both systems run as daemons, as an upgrade needs.
:func:`kill_storm`
    SIGKILL a random worker ``kills`` times, each time waiting until the
    mesh is whole again, seen through ``/proc`` (:func:`mesh_whole`);
    respawn times, the master's and the workers' descriptor counts after
    every respawn, zombies among the master's children, and a census at the
    end.
:func:`master_kill`
    SIGKILL the master and watch its workers: ngxlab's exit (each watches
    its master through a pidfd), nginx's live on, and still answer; they are
    then stopped by pid.

:func:`under_fire` runs all four on both systems and returns an
:class:`UnderFire`, which ``ngxlab bench`` reports and
:func:`record_under_fire` keeps (``ngxlab/lab/data/recorded_under_fire.json``)
for the chapter "Under fire" to show, labelled as recorded, where nginx is
missing. Measurements, not tests: nothing here asserts a speed.

Not a mirror of nginx: nothing here has an ``ngx_`` name.
"""

from __future__ import annotations

import random
import signal
import time
from dataclasses import asdict, dataclass, field

from ngxlab.lab import proc, report
from ngxlab.lab.compare import percentile, row
from ngxlab.lab.load import Load, LoadResult, probe
from ngxlab.lab.nginx import Nginx, nginx_available
from ngxlab.lab.proc import Proc
from ngxlab.lab.report import MachineInfo, machine_info
from ngxlab.lab.run import MasterProcess
from ngxlab.lab.runner import Runner, wait_gone

__all__ = [
    "FireError", "UnderLoad", "StormResult", "MasterKillResult", "UnderFire",
    "SYSTEMS", "FULL", "BOOK", "QUICK", "reload_under_load", "upgrade_under_load",
    "kill_storm", "mesh_whole", "master_kill", "under_fire", "record_under_fire",
    "RECORDED", "MASTER_KILL_VARIANTS",
]

SYSTEMS = ("ngxlab", "nginx")

# How under_fire() is sized: ngxlab bench, the book, ngxlab bench --quick.
FULL = dict(n=4, rate=1000.0, reloads=20, kills=1000, hold_s=1.0)
BOOK = dict(n=4, rate=1000.0, reloads=20, kills=100, hold_s=0.5)
QUICK = dict(n=2, rate=500.0, reloads=3, kills=20, hold_s=0.3)

RECORDED = "data/recorded_under_fire.json"      # in ngxlab.lab's package data

# How often the masters are looked at while the load runs (s): one look at
# /proc costs a few hundred µs, and a tighter loop would take a core from
# the programs it watches (the kill storm, with no load, polls every 0.2 ms)
LOAD_POLL = 0.002


class FireError(RuntimeError):
    """A measurement could not be made (a master did not settle in time);
    the message says what was seen."""


def _runner(system: str, n: int, *, daemon: bool = False, binary=None,
            nginx_orphans: bool = False, timeout: float = 20.0) -> Runner:
    if system == "ngxlab":
        return MasterProcess(n, daemon=daemon, nginx_orphans=nginx_orphans,
                             start_timeout=timeout)
    if system == "nginx":
        return Nginx(n, binary=binary, daemon=daemon, start_timeout=timeout)
    raise ValueError(f"system must be one of {SYSTEMS}, not {system!r}")


def _tail(r: Runner) -> str:
    return "\n--- error log tail ---\n" + r.log_tail(12)


def _ms(a: float, b: float) -> float:
    return round((b - a) * 1000, 3)


def _stats(values: list[float]) -> dict:
    """median, p99 and max (None for an empty list)."""
    return {"median": percentile(values, 50), "p99": percentile(values, 99),
            "max": max(values) if values else None}


# -- reload and binary upgrade under load ------------------------------------------


@dataclass
class UnderLoad:
    """One system, one action (``"reload"`` or ``"upgrade"``), the load
    running throughout. ``load``: what the client saw (its ``marks`` are the
    signals, on its timeline). ``steps_ms``: how long each step took, by
    name: for a reload ``settle`` (HUP until the old generation is gone and
    the new one's mesh whole, seen through ``/proc`` by :func:`mesh_whole`),
    one per reload; for an upgrade ``new`` (USR2 until the new master's
    mesh is whole), ``winch`` (WINCH until the old workers are gone) and
    ``quit`` (QUIT until the old master is gone). ``census_full``: the
    census after the load found the full mesh."""

    system: str
    action: str
    n: int
    load: LoadResult
    steps_ms: dict[str, list[float]] = field(default_factory=dict)
    census_full: bool | None = None

    @property
    def failed(self) -> int:
        return self.load.failed

    @property
    def failures(self) -> dict[str, int]:
        return self.load.failures

    def to_dict(self) -> dict:
        return {"system": self.system, "action": self.action, "n": self.n,
                "load": self.load.to_dict(), "steps_ms": self.steps_ms,
                "census_full": self.census_full}

    @classmethod
    def from_dict(cls, d: dict) -> "UnderLoad":
        return cls(system=d["system"], action=d["action"], n=d["n"],
                   load=LoadResult.from_dict(d["load"]), steps_ms=d["steps_ms"],
                   census_full=d.get("census_full"))


def reload_under_load(system: str, *, n: int = 4, reloads: int = 20, rate: float = 1000.0,
                      lead_s: float = 0.3, gap_s: float = 0.1, tail_s: float = 0.3,
                      binary=None, timeout: float = 20.0) -> UnderLoad:
    """Start ``system`` with ``n`` workers, run the load, and reload it
    ``reloads`` times (HUP, what ``nginx -s reload`` sends), waiting after
    each until the old generation is gone and the new one's mesh whole
    (through ``/proc``: a census after every reload would load the machine
    it measures), then ``gap_s``; ``lead_s`` of load before the first and
    ``tail_s`` after the last; a census at the end."""
    settle = []
    with _runner(system, n, binary=binary, timeout=timeout) as r:
        watch = _Watch.settled(r, system, n, poll_interval=LOAD_POLL, timeout=timeout)
        master = r.master_pid
        with Load(r.port, rate=rate, max_s=lead_s + tail_s + reloads * (timeout + gap_s)) \
                as load:
            time.sleep(lead_s)
            for _ in range(reloads):
                old = set(proc.children(master) or [])
                t = load.mark("HUP")
                r.send_signal(signal.SIGHUP)
                _seen, done, _kids = watch.whole(master, n, old, since=t)
                settle.append(_ms(t, load.mark("settled", done)))
                time.sleep(gap_s)
            time.sleep(tail_s)
        census = r.wait_mesh(n, timeout=timeout)
    return UnderLoad(system, "reload", n, load.result, {"settle": settle},
                     census.is_full_mesh(n))


def _read_pid(path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def upgrade_under_load(system: str, *, n: int = 4, rate: float = 1000.0, lead_s: float = 0.5,
                       pause_s: float = 0.3, tail_s: float = 0.5, binary=None,
                       timeout: float = 20.0) -> UnderLoad:
    """Start ``system`` as a daemon with ``n`` workers, run the load, and
    upgrade its binary (to the same binary) the way nginx's documentation
    says: USR2; once the new master's mesh is full, WINCH to the old
    master; once its workers are gone, QUIT to it. ``pause_s`` between the
    steps, ``lead_s`` before the first, ``tail_s`` after the old master
    is gone."""
    steps: dict[str, list[float]] = {}
    with _runner(system, n, daemon=True, binary=binary, timeout=timeout) as r:
        watch = _Watch.settled(r, system, n, poll_interval=LOAD_POLL, timeout=timeout)
        old = Proc.of(r.master_pid)
        with Load(r.port, rate=rate, max_s=lead_s + tail_s + 3 * (timeout + pause_s)) as load:
            time.sleep(lead_s)
            t = load.mark("USR2")
            r.send_signal(signal.SIGUSR2)
            new = r.wait_for(lambda: (p := _read_pid(r.pid_path)) not in (None, old.pid)
                             and proc.alive(p) and p, timeout, interval=LOAD_POLL,
                             what="a new master in the pid file")
            r.follow(new)
            _seen, done, _kids = watch.whole(new, n, since=t)
            steps["new"] = [_ms(t, load.mark("new workers ready", done))]
            time.sleep(pause_s)
            t = load.mark("WINCH")
            old.kill(signal.SIGWINCH)
            r.wait_for(lambda: set(proc.children(old.pid) or []) <= {new}, timeout,
                       interval=LOAD_POLL, what="the old workers gone after WINCH")
            steps["winch"] = [_ms(t, load.mark("old workers gone"))]
            time.sleep(pause_s)
            t = load.mark("QUIT")
            old.kill(signal.SIGQUIT)
            r.wait_for(lambda: not old.alive(), timeout, interval=LOAD_POLL,
                       what="the old master gone after QUIT")
            steps["quit"] = [_ms(t, load.mark("old master gone"))]
            time.sleep(tail_s)
        census = r.wait_mesh(n, timeout=timeout)
    return UnderLoad(system, "upgrade", n, load.result, steps, census.is_full_mesh(n))


# -- the kill storm -------------------------------------------------------------------


def _sockets(pid: int) -> set[str] | None:
    fds = proc.fd_targets(pid)
    return None if fds is None else {t for t in fds.values() if t.startswith("socket:")}


def mesh_whole(master: int, workers, sockets_per_worker: int) -> bool:
    """Whether the mesh is whole, seen through ``/proc`` alone: every worker
    holds exactly ``sockets_per_worker`` sockets (its N channel ends and the
    listening sockets), and every one of them is also held by the master.

    The master holds both ends of every live pair and the listening
    sockets, so a worker that still holds the end of a dead worker's pair
    (its CLOSE_CHANNEL not read yet), lacks the new worker's (OPEN_CHANNEL
    not read yet), or still holds what it inherited (a new worker before
    ``ngx_worker_process_init`` has closed the other ends) fails one of the
    two tests. Far cheaper than a census, which :func:`kill_storm` takes at
    the end."""
    held = _sockets(master)
    if held is None:
        return False
    for pid in workers:
        socks = _sockets(pid)
        if socks is None or len(socks) != sockets_per_worker or not socks <= held:
            return False
    return True


class _Watch:
    """Polls ``/proc`` for one master until its mesh is whole again after a
    change (a kill, a reload, a new binary), keeping the cost of its polls.
    ``per_worker``: the sockets of a settled worker, from a census taken
    before the change."""

    def __init__(self, r: Runner, system: str, per_worker: int, *, poll_interval: float,
                 timeout: float):
        self.r, self.system, self.per_worker = r, system, per_worker
        self.poll_interval, self.timeout = poll_interval, timeout
        self.polls = 0
        self.spent = 0.0

    @classmethod
    def settled(cls, r: Runner, system: str, n: int, *, poll_interval: float,
                timeout: float) -> "_Watch":
        """Wait for the full mesh (a census) and learn a worker's sockets from it."""
        c = r.wait_mesh(n, timeout=timeout)
        return cls(r, system, len(_sockets(c.workers[0].pid) or ()),
                   poll_interval=poll_interval, timeout=timeout)

    @property
    def poll_us(self) -> float:
        return round(self.spent / max(self.polls, 1) * 1e6, 2)

    def whole(self, master: int, n: int, gone=frozenset(), since: float | None = None
              ) -> tuple[float, float, list[int]]:
        """Poll until ``master`` has ``n`` children, none of ``gone``, and
        :func:`mesh_whole` says yes. Returns (when the ``n`` children were
        first seen, when the mesh was whole, the children), the times on
        ``time.monotonic()``, the clock of the load's marks."""
        clock = time.monotonic
        since = clock() if since is None else since
        seen = None
        while True:
            a = clock()
            kids = proc.children(master)
            if kids is None:
                raise FireError(f"{self.system}: master {master} is gone" + _tail(self.r))
            ok = len(kids) == n and not gone.intersection(kids)
            if ok and seen is None:
                seen = a
            ok = ok and mesh_whole(master, kids, self.per_worker)
            b = clock()
            self.polls += 1
            self.spent += b - a
            if ok:
                return seen, a, kids
            if b - since > self.timeout:
                raise FireError(f"{self.system}: the mesh of master {master} was not whole "
                                f"{self.timeout} s after the change ({len(kids)} children)"
                                + _tail(self.r))
            time.sleep(self.poll_interval)


@dataclass
class StormResult:
    """A kill storm on one system. Per kill, in order: ``replaced_ms`` (SIGKILL
    until the master has a new child in place of the victim), ``whole_ms``
    (until :func:`mesh_whole`), ``master_fds`` and ``worker_fds_min``/
    ``worker_fds_max`` (the descriptor counts once whole), ``zombies``
    (children of the master that had exited and were not reaped yet, once
    whole). ``base_*``: the counts before the first kill. ``census_*``:
    the census at the end (full mesh or not, its summary, channel ends in
    the master and in each worker). ``rereads``: counts that differed from
    the base at first look and were read again (a file open for a moment,
    e.g. ngxlab's master rewriting its table file; a leak stays).
    ``poll_us``: the mean cost of one poll (the time resolution)."""

    system: str
    n: int
    kills: int
    replaced_ms: list[float]
    whole_ms: list[float]
    master_fds: list[int]
    worker_fds_min: list[int]
    worker_fds_max: list[int]
    zombies: list[int]
    base_master_fds: int
    base_worker_fds: int
    census_full: bool
    census_summary: str
    census_master_channel: int
    census_worker_channel: list[int]
    rereads: int
    poll_us: float
    duration_s: float

    @property
    def respawn(self) -> dict:
        """median, p99 and max of ``whole_ms``."""
        return _stats(self.whole_ms)

    @property
    def flat(self) -> bool:
        """Every count after every respawn equals the count before the first kill."""
        return (all(x == self.base_master_fds for x in self.master_fds)
                and all(x == self.base_worker_fds for x in self.worker_fds_min)
                and all(x == self.base_worker_fds for x in self.worker_fds_max))

    @property
    def max_zombies(self) -> int:
        return max(self.zombies, default=0)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(respawn=self.respawn, flat=self.flat, max_zombies=self.max_zombies,
                 replaced=_stats(self.replaced_ms))
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "StormResult":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


def _settled_count(pid: int, want: int, tries: int = 10) -> tuple[int, bool]:
    """``pid``'s descriptor count; read again (1 ms apart, ``tries`` times)
    while it differs from ``want``. Returns (count, whether it was re-read)."""
    got = proc.fd_count(pid)
    again = got != want
    for _ in range(tries):
        if got == want:
            break
        time.sleep(0.001)
        got = proc.fd_count(pid)
    return got, again


def kill_storm(system: str, *, n: int = 4, kills: int = 1000, seed: int = 1,
               poll_interval: float = 0.0002, binary=None, timeout: float = 20.0,
               progress=False) -> StormResult:
    """Start ``system`` with ``n`` workers; ``kills`` times, SIGKILL a worker
    chosen at random (``Runner.kill_worker``) and poll ``/proc`` until the
    master has replaced it and the mesh is whole again (:func:`mesh_whole`);
    then read the descriptor counts and look for zombies. A census at the
    end (``Runner.wait_mesh``)."""
    rng = random.Random(seed)
    replaced, whole, mfds, wmin, wmax, zombies = [], [], [], [], [], []
    rereads = 0
    started = time.monotonic()
    with _runner(system, n, binary=binary, timeout=timeout) as r, \
            report.progress_bar(progress, kills, f"kill storm, {system}") as bar:
        c0 = r.wait_mesh(n, timeout=timeout)
        master = r.master_pid
        base_master = c0.master.total_fds
        totals = {w.total_fds for w in c0.workers}
        if len(totals) != 1:
            raise FireError(f"{system}: the workers differ in their descriptors at the "
                            f"start:\n{c0.table()}")
        base_worker = totals.pop()
        watch = _Watch(r, system, len(_sockets(c0.workers[0].pid) or ()),
                       poll_interval=poll_interval, timeout=timeout)
        for _ in range(kills):
            slots = r.wait_for(lambda: (s := r.slots) and len(s) == n
                               and set(s.values()) == set(proc.children(master) or []) and s,
                               timeout, what="the master's table")
            t0 = time.monotonic()
            victim = r.kill_worker(rng.choice(sorted(slots)))
            seen, done, kids = watch.whole(master, n, {victim}, since=t0)
            replaced.append(_ms(t0, seen))
            whole.append(_ms(t0, done))
            count, again = _settled_count(master, base_master)
            mfds.append(count)
            rereads += again
            counts = []
            for pid in kids:
                count, again = _settled_count(pid, base_worker)
                counts.append(count)
                rereads += again
            wmin.append(min(counts))
            wmax.append(max(counts))
            zombies.append(len(proc.children(master, zombies=True) or []) - len(kids))
            bar.update()
        c1 = r.wait_mesh(n, timeout=timeout)
    return StormResult(
        system=system, n=n, kills=kills, replaced_ms=replaced, whole_ms=whole,
        master_fds=mfds, worker_fds_min=wmin, worker_fds_max=wmax, zombies=zombies,
        base_master_fds=base_master, base_worker_fds=base_worker,
        census_full=c1.is_full_mesh(n), census_summary=c1.summary(),
        census_master_channel=c1.master.channel_fds,
        census_worker_channel=[w.channel_fds for w in c1.workers], rereads=rereads,
        poll_us=watch.poll_us,
        duration_s=round(time.monotonic() - started, 3))


# -- the master's death -----------------------------------------------------------------


@dataclass
class MasterKillResult:
    """SIGKILL to a master. ``variant``: "ngxlab", "ngxlab --nginx-orphans"
    or "nginx". ``alive``: (ms after the kill, workers alive) each time the
    number changed, from the kill on. ``gone_ms``: when the last worker was
    gone (None if some still lived ``hold_s`` after). ``alive_after``:
    workers alive after ``hold_s``; ``answered``: the outcomes of requests
    sent then (:func:`ngxlab.lab.load.probe`). ``cleanup_ms``: how long
    the workers left took to go after QUIT by pid (None if none was left);
    ``cleanup_killed``: how many needed SIGKILL after that."""

    variant: str
    n: int
    hold_s: float
    alive: list[tuple[float, int]]
    gone_ms: float | None
    alive_after: int
    answered: dict[str, int]
    cleanup_ms: float | None
    cleanup_killed: int

    @property
    def orphans(self) -> bool:
        """The workers outlived their master."""
        return self.alive_after > 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["alive"] = [list(x) for x in self.alive]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "MasterKillResult":
        d = dict(d)
        d["alive"] = [tuple(x) for x in d["alive"]]
        return cls(**d)


MASTER_KILL_VARIANTS = ("ngxlab", "ngxlab --nginx-orphans", "nginx")


def master_kill(variant: str, *, n: int = 4, hold_s: float = 1.0, probes: int = 5,
                binary=None, timeout: float = 20.0) -> MasterKillResult:
    """Start ``variant`` (see :data:`MASTER_KILL_VARIANTS`), SIGKILL its
    master, and watch its workers for ``hold_s``; then send ``probes``
    requests, and stop the workers left by pid (QUIT, then SIGKILL after 5 s)."""
    if variant not in MASTER_KILL_VARIANTS:
        raise ValueError(f"variant must be one of {MASTER_KILL_VARIANTS}, not {variant!r}")
    system = variant.split()[0]
    with _runner(system, n, binary=binary, timeout=timeout,
                 nginx_orphans=variant.endswith("--nginx-orphans")) as r:
        port = r.port
        workers = [Proc.of(p) for p in r.worker_pids]
        if None in workers or len(workers) != n:
            raise FireError(f"{variant}: {n} workers expected, saw {r.worker_pids}")
        t0 = time.perf_counter()
        r.send_signal(signal.SIGKILL)
        alive = [(0.0, n)]
        gone = None
        while True:
            now = time.perf_counter()
            k = sum(w.alive() for w in workers)
            if k != alive[-1][1]:
                alive.append((_ms(t0, now), k))
            if k == 0:
                gone = _ms(t0, now)
                break
            if now - t0 >= hold_s:
                break
            time.sleep(0.0002)
        if gone is None:
            time.sleep(max(0.0, hold_s - (time.perf_counter() - t0)))
        left = [w for w in workers if w.alive()]
        answered = probe(port, probes)
        cleanup, killed = None, 0
        if left:
            c0 = time.perf_counter()
            for w in left:
                w.kill(signal.SIGQUIT)
            if wait_gone(left, 5.0):
                cleanup = _ms(c0, time.perf_counter())
            else:
                killed = sum(w.kill(signal.SIGKILL) for w in left)
                wait_gone(left, 5.0)
    return MasterKillResult(variant=variant, n=n, hold_s=hold_s, alive=alive, gone_ms=gone,
                            alive_after=len(left), answered=answered, cleanup_ms=cleanup,
                            cleanup_killed=killed)


# -- all of it ---------------------------------------------------------------------------


@dataclass
class UnderFire:
    """Everything :func:`under_fire` measured, per system: ``reload``,
    ``upgrade``, ``storm`` by system; ``master_kill`` by variant.
    ``nginx_skipped``: why nginx was not measured (its entries are then
    missing)."""

    machine: MachineInfo
    nginx_version: str | None
    params: dict
    reload: dict[str, UnderLoad]
    upgrade: dict[str, UnderLoad]
    storm: dict[str, StormResult]
    master_kill: dict[str, MasterKillResult]
    nginx_skipped: str | None = None
    duration_s: float | None = None

    @property
    def systems(self) -> list[str]:
        return list(self.storm)

    def failed(self) -> dict[str, dict[str, int]]:
        """Failed requests, ``{action: {system: count}}``."""
        return {a: {s: u.failed for s, u in getattr(self, a).items()}
                for a in ("reload", "upgrade")}

    def ratios(self) -> list[dict]:
        """Rows of ``ngxlab bench``'s table (:func:`ngxlab.lab.compare.row`):
        ngxlab / nginx of the medians of the same run."""
        if "nginx" not in self.storm:
            return []
        def r2(x):
            return None if x is None else round(x, 2)

        rows = []
        for name, key in (("respawn to a whole mesh, median", "median"),
                          ("respawn to a whole mesh, p99", "p99")):
            rows.append(row(f"kill storm: {name}", "ngxlab", "nginx",
                            r2(self.storm["ngxlab"].respawn[key]),
                            r2(self.storm["nginx"].respawn[key]), "ms"))
        rows.append(row("reload under load: HUP to settled, median", "ngxlab", "nginx",
                        r2(percentile(self.reload["ngxlab"].steps_ms["settle"], 50)),
                        r2(percentile(self.reload["nginx"].steps_ms["settle"], 50)), "ms"))
        up = {s: r2(sum(v[0] for v in self.upgrade[s].steps_ms.values())) for s in self.upgrade}
        rows.append(row("binary upgrade under load: the three steps", "ngxlab", "nginx",
                        up["ngxlab"], up["nginx"], "ms"))
        return rows

    def table(self) -> str:
        """The counts and times, one line per system and measure."""
        lines = [f"under fire: {self.params}"]
        kinds = "refused/reset/status/short/timeout/error"
        head = f"{'':<24}{'requests':>9}{'failed':>7}  {kinds:<36}{'lag max ms':>11}"
        for action in ("reload", "upgrade"):
            lines += ["", f"{action} under load", head]
            for s, u in getattr(self, action).items():
                f = u.failures
                lines.append(f"{s:<24}{u.load.total:>9}{u.failed:>7}  "
                             f"{'/'.join(str(v) for v in f.values()):<36}"
                             f"{u.load.summary()['lag_ms']['max'] or 0:>11.1f}")
        lines += ["", "kill storm", f"{'':<10}{'kills':>6}{'median':>9}{'p99':>9}{'max':>9}"
                  f"  {'master fds':>11}{'worker fds':>11}{'flat':>6}{'zombies':>8}  census"]
        for s, st in self.storm.items():
            rs = st.respawn
            lines.append(f"{s:<10}{st.kills:>6}{rs['median']:>9.2f}{rs['p99']:>9.2f}"
                         f"{rs['max']:>9.2f}  {st.base_master_fds:>11}{st.base_worker_fds:>11}"
                         f"{'yes' if st.flat else 'NO':>6}{st.max_zombies:>8}  "
                         f"{'full mesh' if st.census_full else 'NOT a full mesh'}")
        lines += ["", "master SIGKILL", f"{'':<24}{'all gone after':>16}{'alive after hold':>18}"
                  f"{'answered':>10}"]
        for v, m in self.master_kill.items():
            gone = "-" if m.gone_ms is None else f"{m.gone_ms:.1f} ms"
            lines.append(f"{v:<24}{gone:>16}{m.alive_after:>12} of {m.n}"
                         f"{m.answered['ok']:>8}/{sum(m.answered.values())}")
        return report.table_text(lines, self.nginx_skipped)

    def to_dict(self) -> dict:
        return {"machine": asdict(self.machine), "machine_line": self.machine.line(),
                "nginx_version": self.nginx_version, "params": self.params,
                "reload": {s: u.to_dict() for s, u in self.reload.items()},
                "upgrade": {s: u.to_dict() for s, u in self.upgrade.items()},
                "storm": {s: st.to_dict() for s, st in self.storm.items()},
                "master_kill": {v: m.to_dict() for v, m in self.master_kill.items()},
                "nginx_skipped": self.nginx_skipped, "duration_s": self.duration_s,
                "ratios": self.ratios()}

    @classmethod
    def from_dict(cls, d: dict) -> "UnderFire":
        return cls(machine=MachineInfo.from_dict(d["machine"]),
                   nginx_version=d["nginx_version"], params=d["params"],
                   reload={s: UnderLoad.from_dict(u) for s, u in d["reload"].items()},
                   upgrade={s: UnderLoad.from_dict(u) for s, u in d["upgrade"].items()},
                   storm={s: StormResult.from_dict(x) for s, x in d["storm"].items()},
                   master_kill={v: MasterKillResult.from_dict(m)
                                for v, m in d["master_kill"].items()},
                   nginx_skipped=d.get("nginx_skipped"), duration_s=d.get("duration_s"))


def under_fire(*, n: int = 4, rate: float = 1000.0, reloads: int = 20, kills: int = 1000,
               hold_s: float = 1.0, binary=None, progress=False,
               timeout: float = 20.0) -> UnderFire:
    """All four measurements, ngxlab then nginx for each (nginx skipped,
    with the reason, where it cannot run). Sizes: :data:`FULL` (``ngxlab
    bench``), :data:`BOOK`, :data:`QUICK`."""
    started = time.monotonic()
    nginx_path, why = nginx_available(binary)
    systems = SYSTEMS if nginx_path else ("ngxlab",)
    machine = machine_info()
    params = dict(n=n, rate=rate, reloads=reloads, kills=kills, hold_s=hold_s)
    common = dict(n=n, binary=nginx_path, timeout=timeout)
    out = UnderFire(machine=machine, nginx_version=machine.nginx if nginx_path else None,
                    params=params, reload={}, upgrade={}, storm={}, master_kill={},
                    nginx_skipped=why)
    for s in systems:
        out.reload[s] = reload_under_load(s, reloads=reloads, rate=rate, **common)
    for s in systems:
        out.upgrade[s] = upgrade_under_load(s, rate=rate, **common)
    for s in systems:
        out.storm[s] = kill_storm(s, kills=kills, progress=progress, **common)
    for v in MASTER_KILL_VARIANTS:
        if v.split()[0] in systems:
            out.master_kill[v] = master_kill(v, hold_s=hold_s, **common)
    out.duration_s = round(time.monotonic() - started, 3)
    return out


def record_under_fire(path, **sizes) -> dict:
    """Run :func:`under_fire` (sized as the book runs it, :data:`BOOK`, unless
    ``sizes`` say otherwise) against a real nginx and write it as JSON to
    ``path``, labelled with the date, the nginx version and the machine:
    what the chapter "Under fire" shows, as recorded, where nginx is
    missing. Raises :class:`FireError` without nginx: a recording is
    always of a real run."""
    binary, why = nginx_available()
    if binary is None:
        raise FireError(f"cannot record without nginx: {why}")
    p = {**BOOK, **sizes}
    uf = under_fire(**p)
    return report.write_recording(
        path, "ngxlab.lab.fire.record_under_fire(path"
        + "".join(f", {k}={v!r}" for k, v in sizes.items()) + ")",
        uf.machine, uf.nginx_version, under_fire=uf.to_dict())
