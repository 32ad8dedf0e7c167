"""One wake of a worker: ``ngx_process_events_and_timers`` returns from
``epoll_wait`` once, and ``ngx_channel_handler`` reads every message waiting
(nginx's handler loops until ``NGX_AGAIN``), with its debug lines at debug
level and none below it. In this process, on a real socketpair and a real
epoll instance; nothing is forked."""

from __future__ import annotations

import io
import os
import socket

import pytest

from ngxlab import channel, cycle as cy, event as evt, process, process_cycle as pc
from ngxlab.channel import (
    NGX_CMD_CLOSE_CHANNEL, NGX_CMD_OPEN_CHANNEL, NGX_CMD_QUIT, NGX_CMD_REOPEN,
    ngx_channel_t, ngx_write_channel,
)
from ngxlab.core import NGX_LOG_DEBUG, NGX_LOG_NOTICE, ngx_log_t, sizeof

SLOT = 700          # a slot far from anything a test spawns


@pytest.fixture(params=[NGX_LOG_DEBUG, NGX_LOG_NOTICE], ids=["debug", "notice"])
def worker(request):
    """An event loop with a channel registered as a worker registers it;
    yields (master's end, log buffer, level)."""
    buf = io.StringIO()
    c = cy.ngx_cycle_t(log=ngx_log_t(buf, request.param))
    saved_cycle, cy.ngx_cycle = cy.ngx_cycle, c
    a, b = socket.socketpair()
    master_end, worker_end = a.detach(), b.detach()
    os.set_blocking(master_end, False)
    os.set_blocking(worker_end, False)
    assert evt.ngx_event_process_init(c) == 0
    assert channel.ngx_add_channel_event(c, worker_end, evt.NGX_READ_EVENT,
                                         pc.ngx_channel_handler) == 0
    try:
        yield master_end, buf, request.param
    finally:
        evt.close_event_loop()
        for fd in (master_end, worker_end):
            os.close(fd)
        process.ngx_processes[SLOT].__init__()
        pc._reset()
        cy.ngx_cycle = saved_cycle


def _send(fd, command, pid=0, slot=0, sent=-1):
    ch = ngx_channel_t(command, pid, slot, sent)
    assert ngx_write_channel(fd, ch, sizeof(ngx_channel_t), None) == 0


def test_one_wake_reads_every_waiting_message(worker):
    master_end, buf, level = worker
    peer_a, peer_b = socket.socketpair()
    try:
        _send(master_end, NGX_CMD_OPEN_CHANNEL, 4242, SLOT, peer_a.fileno())
        _send(master_end, NGX_CMD_CLOSE_CHANNEL, 4242, SLOT)
        _send(master_end, NGX_CMD_QUIT)

        evt.ngx_process_events_and_timers(cy.ngx_cycle)   # one epoll_wait

        # all three handled in that one wake: the descriptor received with
        # OPEN_CHANNEL was recorded, then closed by CLOSE_CHANNEL; QUIT set
        p = process.ngx_processes[SLOT]
        assert (p.pid, p.channel[0]) == (4242, -1)
        assert pc.ngx_quit == 1
        assert evt.ep.poll(0) == []                         # nothing left
    finally:
        peer_a.close()
        peer_b.close()

    lines = [line.split("#0: ", 1)[1] for line in buf.getvalue().splitlines()]
    if level < NGX_LOG_DEBUG:
        assert lines == []
        return
    assert lines[0] == "channel handler"
    assert lines.count("channel: 32") == 3 and lines[-1] == "channel: -2"
    assert [x for x in lines if x.startswith("channel command: ")] == [
        "channel command: 1", "channel command: 2", "channel command: 3"]
    assert any(x.startswith(f"get channel s:{SLOT} pid:4242 fd:") for x in lines)
    assert any(x.startswith(f"close channel s:{SLOT} pid:4242 our:4242 fd:")
               for x in lines)


def test_the_event_dispatch_reads_the_handler_as_a_specialised_attribute(worker):
    """``rev.handler(rev)`` written as one call is a method lookup that
    CPython 3.11 never specialises: a generic lookup through the type on
    every event, which a perf profile of a 400-worker reload shows in every
    worker. Read as an attribute, then called, the load is specialised
    (``LOAD_ATTR_SLOT``: ``ngx_event_t`` has slots) on 3.11 as on later
    versions."""
    import dis

    master_end, _, _ = worker
    for _ in range(100):                  # past CPython's warm-up counters
        _send(master_end, NGX_CMD_QUIT)
        evt.ngx_process_events_and_timers(cy.ngx_cycle)
    pc.ngx_quit = 0

    loads = [i.opname for i in dis.get_instructions(
        evt.ngx_process_events_and_timers, adaptive=True)
        if i.argval == "handler"]
    assert "LOAD_ATTR_SLOT" in loads, loads


def test_the_handlers_message_is_one_per_process_overwritten_by_the_next(worker):
    """nginx's ``ch`` is a local on the handler's stack; ngxlab's handler
    reads into one ``ngx_channel_t`` per process (a new one per wake costs a
    cold wake an allocation, an ``__init__`` and a deallocation). What an
    observer is given is that object: valid during the call, overwritten by
    the next message."""
    master_end, _, _ = worker
    seen = []
    pc._received.append(lambda ch: seen.append((ch, ch.command, ch.slot)))
    _send(master_end, NGX_CMD_REOPEN, 4242, SLOT)
    evt.ngx_process_events_and_timers(cy.ngx_cycle)
    _send(master_end, NGX_CMD_QUIT, 0, 7)
    evt.ngx_process_events_and_timers(cy.ngx_cycle)
    (first, *fields1), (second, *fields2) = seen
    assert first is second is pc._ch
    assert fields1 == [NGX_CMD_REOPEN, SLOT] and fields2 == [NGX_CMD_QUIT, 7]
    assert (first.command, first.slot) == (NGX_CMD_QUIT, 7)   # the first, overwritten
