"""ngxlab.beyond: a worker hands a live connection to another over the mesh.

Real workers (lab.Master, with ngxlab.beyond installed before the forks),
real TCP connections on 127.0.0.1, real descriptors in real channels. The
malformed messages are written by this process, which is the workers'
master and holds every channel[0], exactly where a buggy peer would write
them.
"""

from __future__ import annotations

import os
import re
import socket
import time

import pytest

from ngxlab import beyond, channel
from ngxlab.channel import (
    NGX_CMD_OPEN_CHANNEL, NGX_CMD_REOPEN, ngx_channel_t,
    ngx_read_channel,
)
from ngxlab.core import NGX_AGAIN, NGX_ERROR, ngx_log_t, sizeof
from ngxlab.lab.handoff import HandoffMaster, NoAnswer, read_reply, send_request

pytestmark = pytest.mark.usefixtures("no_unexpected_alerts")

SIZE = sizeof(ngx_channel_t)
KILLED = r"exited on signal 9"


def wait_until(pred, timeout=5.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def tcp_pair():
    """A connected TCP pair on 127.0.0.1: (client, the server's end)."""
    with socket.create_server(("127.0.0.1", 0)) as ls:
        client = socket.create_connection(ls.getsockname())
        server, _ = ls.accept()
    return client, server


def client_sees_close(client, timeout=3.0):
    """True when the server side of ``client`` is closed (EOF or reset)."""
    client.settimeout(timeout)
    try:
        return client.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def fds_by_slot(h):
    return {w.slot: w.total_fds for w in h.census().workers}


def channel0(h, slot):
    return {w.slot: w.channel for w in h.master.workers}[slot][0]


def raw_send(h, slot, data, fds=()):
    """Write ``data`` (and ``fds`` as SCM_RIGHTS) into slot's channel[0]."""
    s = socket.socket(fileno=channel0(h, slot))
    try:
        if fds:
            socket.send_fds(s, [data], list(fds))
        else:
            s.send(data)
    finally:
        s.detach()


def log_has(h, pattern, timeout=3.0):
    rx = re.compile(pattern)
    return wait_until(lambda: [l for l in h.log_lines() if rx.search(l)], timeout,
                      f"a log line matching {pattern!r}")


def reads_channel(h, slot):
    """Whether the worker in slot still holds its channel[1]."""
    return f"{slot}:1" in h.census().process(h.slots[slot]).channel_ends


# -- the registry, at the reader -----------------------------------------------------


def test_register_refuses_nginx_numbers_and_duplicates():
    for bad in (0, 1, 5, -3, 1 << 64, True, 7.0):
        with pytest.raises(ValueError):
            beyond.register(bad, lambda ch, fd, log: None)
    beyond.register(beyond.NAMESPACE | 99, lambda ch, fd, log: None, name="T99")
    try:
        assert channel.command_name(beyond.NAMESPACE | 99) == "T99"
        with pytest.raises(ValueError, match="already registered"):
            beyond.register(beyond.NAMESPACE | 99, lambda ch, fd, log: None)
    finally:
        beyond.unregister(beyond.NAMESPACE | 99)
    assert channel._extensions == {}
    assert channel.command_name(beyond.NAMESPACE | 99).startswith("UNKNOWN")


def _open_fds():
    """This process's descriptors (not the one listdir itself used)."""
    return {int(x) for x in os.listdir("/proc/self/fd")
            if os.path.exists(f"/proc/self/fd/{x}")}


def _read_one(data, fds, *, nginx_quirks=False):
    """Write ``data`` with ``fds`` into a fresh pair; read one message.
    Returns (rc, ch, log text, descriptors this process gained)."""
    import io
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    text = io.StringIO()
    try:
        if fds:
            socket.send_fds(a, [data], fds)
        else:
            a.send(data)
        before = _open_fds()
        ch = ngx_channel_t()
        rc = ngx_read_channel(b.fileno(), ch, SIZE, ngx_log_t(text),
                              nginx_quirks=nginx_quirks)
        gained = sorted(_open_fds() - before)
        return rc, ch, text.getvalue(), gained
    finally:
        a.close()
        b.close()


def test_reader_unchanged_when_nothing_is_registered():
    command = beyond.NAMESPACE | 1
    r, w = os.pipe()
    try:
        data = bytes(ngx_channel_t(command, 1, 0, r))
        rc, ch, log, gained = _read_one(data, [r])
        assert (rc, gained) == (NGX_ERROR, [])
        assert "unexpected descriptor(s) with channel command" in log
        # nginx's rules: the message is read, the descriptor leaks
        rc, ch, log, gained = _read_one(data, [r], nginx_quirks=True)
        assert rc == SIZE and len(gained) == 1 and log == ""
        os.close(gained[0])
    finally:
        os.close(r)
        os.close(w)


def test_reader_hands_a_registered_commands_descriptor_to_its_handler():
    got = []
    command = beyond.NAMESPACE | 98
    ext = beyond.register(command, lambda ch, fd, log: got.append(fd),
                          descriptor=True, name="T98")
    r, w = os.pipe()
    try:
        data = bytes(ngx_channel_t(command, 1, 0, r))
        rc, ch, log, gained = _read_one(data, [r])
        assert rc == SIZE and log == "" and len(gained) == 1
        ext(ch, None)
        assert got == gained                  # the descriptor, not ch.fd
        os.close(got.pop())
        # two descriptors: both closed, the message still delivered
        rc, ch, log, gained = _read_one(data, [r, r])
        assert rc == SIZE and gained == []
        assert "2 unexpected descriptor(s) with channel command T98" in log
        ext(ch, None)
        assert got == [-1]
        # nginx's rules are not extended: the descriptor leaks, none arrives
        got.clear()
        rc, ch, log, gained = _read_one(data, [r], nginx_quirks=True)
        assert rc == SIZE and len(gained) == 1
        os.close(gained[0])
        ext(ch, None)
        assert got == [-1]
    finally:
        beyond.unregister(command)
        os.close(r)
        os.close(w)


# -- the handoff, end to end ------------------------------------------------------------


def test_handoff_served_end_to_end_and_nothing_leaked():
    with HandoffMaster(3, record=True) as h:
        before = fds_by_slot(h)
        master_before = h.census().master.total_fds
        served = []
        for i in range(10):
            for slot in range(3):
                served.append((slot, h.get(h.path_for(slot, i)).slot))
        direct = h.get("/")                      # no key: served where accepted
        assert direct.status == 200
        assert all(owner == got for owner, got in served)
        reports = h.reports()
        total = {k: sum(r["stats"].get(k, 0) for r in reports.values())
                 for k in ("accepted", "handed_off", "acknowledged", "received",
                           "served_for_peer", "direct")}
        # 30 keyed requests: the chance that every one was accepted by its
        # owner is 3**-30
        assert total["handed_off"] > 0
        assert total["handed_off"] == total["acknowledged"] == total["received"] \
            == total["served_for_peer"]
        assert total["accepted"] == 31 == total["handed_off"] + total["direct"]
        assert sum(len(r["handed"]) for r in reports.values()) == total["handed_off"]
        assert all(r["pending"] == 0 and r["parked"] == 0 for r in reports.values())
        wait_until(lambda: fds_by_slot(h) == before, 3, "the workers' descriptors")
        assert h.census().master.total_fds == master_before
        assert h.census().is_full_mesh(3)


@pytest.mark.expected_alerts(KILLED)
def test_directory_sees_peers_the_frozen_table_misses():
    with HandoffMaster(3) as h:
        pids = h.slots
        reports = h.reports()
        for slot, r in reports.items():
            assert r["ngx_last_process"] == slot      # frozen at its fork
            assert r["directory"] == {str(s): p for s, p in pids.items() if s != slot}
            assert r["naive_directory"] == {str(s): pids[s] for s in range(slot)}
        h.kill_worker(1)
        new = h.slots[1]
        reports = h.reports()
        for slot in (0, 2):
            assert reports[slot]["directory"]["1"] == new
        assert reports[1]["directory"] == {"0": pids[0], "2": pids[2]}


@pytest.mark.expected_alerts(KILLED)
def test_respawned_receiver_a_handoff_in_its_channel_is_served_by_the_sender():
    with HandoffMaster(3) as h:
        before = fds_by_slot(h)
        old = h.pause(2)                      # reads nothing, accepts nothing
        inflight = send_request(h.port, h.path_for(2))
        wait_until(lambda: h.queued(2) == SIZE, 3, "the HANDOFF in slot 2's channel")
        # the sender still holds its copy: one descriptor more than before
        during = fds_by_slot(h)
        senders = [s for s in (0, 1) if during[s] == before[s] + 1]
        assert len(senders) == 1 and during[2] == before[2]
        assert h.kill_worker(2) == old        # the master closes the pair:
        new = h.slots[2]
        reply = read_reply(inflight)          # the queued message is dropped
        assert reply.status == 200 and reply.slot == senders[0]
        log_has(h, rf"handoff to slot 2 pid {old} was not taken before it exited")
        # the respawned worker is reached through the directory
        again = h.get(h.path_for(2, 1))
        assert (again.slot, again.pid) == (2, new)
        stats = h.reports()[senders[0]]["stats"]
        assert stats["taken_back"] == 1
        wait_until(lambda: fds_by_slot(h) == before, 3, "the descriptors of before")


@pytest.mark.expected_alerts(KILLED)
def test_without_acknowledgement_a_handoff_in_flight_is_lost():
    with HandoffMaster(3, acknowledge=False) as h:
        before = fds_by_slot(h)
        h.pause(2)
        inflight = send_request(h.port, h.path_for(2))
        wait_until(lambda: h.queued(2) == SIZE, 3, "the HANDOFF in slot 2's channel")
        h.kill_worker(2)
        with pytest.raises(NoAnswer):
            read_reply(inflight)
        wait_until(lambda: fds_by_slot(h) == before, 3, "the descriptors of before")


def test_full_channel_the_sender_serves_the_connection_itself():
    with HandoffMaster(2) as h:
        h.pause(1)
        n = 0
        while h.master.send(1, NGX_CMD_REOPEN) != NGX_AGAIN:
            n += 1
            assert n < 200_000
        reply = h.get(h.path_for(1))          # only slot 0 can accept it
        assert reply.slot == 0
        h.resume(1)
        stats = h.reports()[0]["stats"]
        assert stats["send_failed"] == 1 and stats.get("handed_off", 0) == 0
        log_has(h, r"handoff to slot 1 pid \d+ not sent \(channel full\): served here")


@pytest.mark.expected_alerts(r"came without a descriptor",
                             r"\[alert\].*REFUSED from slot \d+ pid \d+ answers no handoff",
                             r"2 unexpected descriptor\(s\) with channel command HANDOFF",
                             r"not a peer's slot, connection closed")
def test_malformed_handoffs_that_keep_the_channel():
    with HandoffMaster(3) as h:
        pids = h.slots
        before = fds_by_slot(h)
        msg = bytes(ngx_channel_t(beyond.HANDOFF, pids[0], 0, -1))

        # no descriptor: refused to the (claimed) sender, nothing else
        raw_send(h, 2, msg)
        log_has(h, rf"handoff from slot 0 pid {pids[0]} came without a descriptor")
        log_has(h, rf"REFUSED from slot 2 pid {pids[2]} answers no handoff")
        # a descriptor number in the message but none attached: 3 is one of
        # the worker's own descriptors, which it must not take for a client
        raw_send(h, 2, bytes(ngx_channel_t(beyond.HANDOFF, pids[0], 0, 3)))
        wait_until(lambda: len([l for l in h.log_lines()
                                if "came without a descriptor" in l]) == 2)

        # two descriptors: both closed, the client sees the close
        client, server = tcp_pair()
        with client, server:
            raw_send(h, 2, msg, [server.fileno(), server.fileno()])
            log_has(h, r"2 unexpected descriptor\(s\) with channel command HANDOFF")
            server.close()
            assert client_sees_close(client)

        # a slot out of range, and a slot that is the receiver's own
        for slot in (5000, -1, 2):
            client, server = tcp_pair()
            with client, server:
                raw_send(h, 2, bytes(ngx_channel_t(beyond.HANDOFF, pids[0], slot, -1)),
                         [server.fileno()])
                server.close()
                log_has(h, rf"handoff from slot {slot} pid {pids[0]}: not a peer's slot")
                assert client_sees_close(client)

        # the channel survived all of it, and nothing leaked
        assert reads_channel(h, 2)
        assert h.reports()[2]["stats"]["received"] == 6
        assert h.get(h.path_for(2)).slot == 2
        wait_until(lambda: fds_by_slot(h) == before, 3, "the descriptors of before")


@pytest.mark.expected_alerts(r"recvmsg\(\) returned not enough data: 8",
                             r"1 unexpected descriptor\(s\) with channel command "
                             r"7955459672025071625, closed",
                             KILLED)
def test_malformed_handoffs_that_cost_the_channel():
    with HandoffMaster(3) as h:
        pids = h.slots
        # a short message: the stream cannot be framed any more; the reader
        # closes the descriptor that came with it and the channel, as nginx
        # closes a channel after a short read
        client, server = tcp_pair()
        with client, server:
            h.master.send(2, beyond.HANDOFF, pid=pids[0], about_slot=0,
                          fd=server.fileno(), size=8)
            server.close()
            log_has(h, r"not enough data: 8")
            assert client_sees_close(client)
        assert not reads_channel(h, 2)
        h.kill_worker(2)

        # a command of ngxlab's namespace nobody registered, with a
        # descriptor: today's safe default (closed, and the channel with it)
        client, server = tcp_pair()
        with client, server:
            raw_send(h, 1, bytes(ngx_channel_t(beyond.NAMESPACE | 9, pids[0], 0, -1)),
                     [server.fileno()])
            server.close()
            log_has(h, r"with channel command 7955459672025071625, closed")
            assert client_sees_close(client)
        assert not reads_channel(h, 1)
        h.kill_worker(1)
        assert h.census().is_full_mesh(3)


@pytest.mark.expected_alerts(r"unknown channel command 7955459672025071625 ignored",
                             r"no such peer announced within")
def test_unknown_sender_waits_for_its_open_channel():
    with HandoffMaster(3) as h:
        # without a descriptor, an unregistered command is only logged
        h.master.send(1, beyond.NAMESPACE | 9)
        log_has(h, r"unknown channel command 7955459672025071625 ignored")
        assert reads_channel(h, 1)

        # a HANDOFF from slot 7, pid 4242, which nobody announced: parked,
        # then taken when OPEN_CHANNEL about it arrives
        a, b = socket.socketpair()
        client, server = tcp_pair()
        with a, b, client, server:
            client.sendall(b"GET / HTTP/1.0\r\n\r\n")
            raw_send(h, 1, bytes(ngx_channel_t(beyond.HANDOFF, 4242, 7, -1)),
                     [server.fileno()])
            server.close()
            wait_until(lambda: h.reports([1])[1]["parked"] == 1, 3, "the parked handoff")
            h.master.send(1, NGX_CMD_OPEN_CHANNEL, pid=4242, about_slot=7,
                          fd=a.fileno())
            b.settimeout(3)
            answer = ngx_channel_t.from_bytes(b.recv(SIZE))
            assert (answer.command, answer.pid, answer.slot, answer.fd) == \
                (beyond.TAKEN, h.slots[1], 1, -1)
            client.settimeout(3)
            assert client.recv(4096).startswith(b"HTTP/1.0 200 OK")

        # never announced: closed after PARK_S
        client, server = tcp_pair()
        with client, server:
            raw_send(h, 0, bytes(ngx_channel_t(beyond.HANDOFF, 4343, 9, -1)),
                     [server.fileno()])
            server.close()
            assert client_sees_close(client, timeout=beyond.PARK_S + 3)
        log_has(h, r"handoff from slot 9 pid 4343: no such peer announced")


@pytest.mark.expected_alerts(r"came without a descriptor")
def test_nginx_rules_leak_the_descriptor_and_the_sender_serves():
    with HandoffMaster(3, nginx_quirks=True) as h:
        before = fds_by_slot(h)
        replies = [h.get(h.path_for(2, i)) for i in range(12)]
        reports = h.reports()
        refused = reports[2]["stats"].get("refused", 0)
        handed = sum(r["stats"].get("handed_off", 0) for r in reports.values())
        # 12 requests for slot 2's keys, and slot 2 accepted every one: 3**-12
        assert handed > 0 and refused == handed
        assert sum(r.slot != 2 for r in replies) == handed
        # every refused handoff left its descriptor in the receiver
        assert fds_by_slot(h)[2] == before[2] + refused



def test_a_small_measurement_run_fails_nothing_and_leaks_nothing():
    from ngxlab.lab.handoff import measure
    run = measure(workers=2, requests=60, concurrency=4, duration=0.4, rounds=2)
    assert len(run.direct) + len(run.handed) == 60
    # 30 keyed requests, each accepted by the other worker with even odds
    assert run.handed and run.handoff_rate > 0
    assert run.failed == {}
    assert run.leaked == {}, (run.fds_before, run.fds_after)
    assert set(run.fds_before) == {"master", "slot 0", "slot 1"}
    handed = sum(s.get("handed_off", 0) for s in run.stats.values())
    assert handed == sum(s.get("acknowledged", 0) for s in run.stats.values())
