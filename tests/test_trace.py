"""ngxlab.lab.trace: channel messages decoded from strace, by hand and from a real nginx."""

from __future__ import annotations

import struct
from collections import Counter

import pytest

from ngxlab.lab.trace import (CHANNEL_FORMAT, CHANNEL_SIZE, ChannelMessage, SeqItem, count_commands,
                              diff_sequences, parse_strace, parse_syscalls, parse_trace,
                              record_channel, sequence, trace_run)
from ngxlab.lab.nginx import Nginx


def _iov(command: int, pid: int, slot: int, fd: int) -> str:
    data = struct.pack(CHANNEL_FORMAT, command, pid, slot, fd)
    return "".join(f"\\x{b:02x}" for b in data)


def _send(fd, command, pid, slot, ch_fd, rights=None) -> str:
    control = (f"msg_control=[{{cmsg_len=20, cmsg_level=SOL_SOCKET, cmsg_type=SCM_RIGHTS, "
               f"cmsg_data=[{rights}]}}], msg_controllen=24" if rights is not None
               else "msg_controllen=0")
    return (f'sendmsg({fd}, {{msg_name=NULL, msg_namelen=0, msg_iov=[{{iov_base="'
            f'{_iov(command, pid, slot, ch_fd)}", iov_len=32}}], msg_iovlen=1, {control}, '
            f'msg_flags=0}}, 0) = 32')


def _recv_tail(command, pid, slot, ch_fd, rights=None) -> str:
    control = (f"msg_control=[{{cmsg_len=20, cmsg_level=SOL_SOCKET, cmsg_type=SCM_RIGHTS, "
               f"cmsg_data=[{rights}]}}], msg_controllen=24" if rights is not None
               else "msg_controllen=0")
    return (f'{{msg_name=NULL, msg_namelen=0, msg_iov=[{{iov_base="{_iov(command, pid, slot, ch_fd)}", '
            f'iov_len=32}}], msg_iovlen=1, {control}, msg_flags=0}}, 0) = 32')


CLONE = "clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|SIGCHLD, child_tidptr=0x7f4d4e9eca10)"

# strace -f -tt -xx written to stderr: the traced command's own lines have no [pid N] prefix
EXCERPT = f"""\
10:00:00.000100 socketpair(AF_UNIX, SOCK_STREAM, 0, [3, 6]) = 0
10:00:00.000150 ioctl(3, FIOASYNC, [1]) = 0
10:00:00.000160 fcntl(3, F_SETOWN, 100) = 0
10:00:00.000200 {CLONE} = 101
10:00:00.000300 socketpair(AF_UNIX, SOCK_STREAM, 0, [7, 8]) = 0
10:00:00.000400 clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|SIGCHLD <unfinished ...>
[pid   101] 10:00:00.000450 close(3) = 0
10:00:00.000500 <... clone resumed>, child_tidptr=0x7f4d4e9eca10) = 102
10:00:00.000600 {_send(3, 1, 102, 1, 7, rights=7)}
[pid   101] 10:00:00.000700 recvmsg(6,  <unfinished ...>
[pid   102] 10:00:00.000710 recvmsg(8, {{msg_namelen=0}}, 0) = -1 EAGAIN (Resource temporarily unavailable)
[pid   101] 10:00:00.000800 <... recvmsg resumed>{_recv_tail(1, 102, 1, 7, rights=3)}
10:00:01.000000 --- SIGHUP {{si_signo=SIGHUP, si_code=SI_USER, si_pid=55, si_uid=0}} ---
10:00:01.100000 {_send(3, 3, 0, 0, -1)}
10:00:01.100050 {_send(7, 9, 0, 0, -1)}
10:00:01.100100 kill(102, SIGKILL) = 0
[pid   102] 10:00:01.100200 +++ killed by SIGKILL +++
10:00:01.100300 --- SIGCHLD {{si_signo=SIGCHLD, si_code=CLD_KILLED, si_pid=102, si_uid=0, si_status=SIGKILL, si_utime=0, si_stime=0}} ---
10:00:01.100400 close(7) = 0
10:00:01.100500 close(8) = 0
10:00:01.100600 {_send(3, 2, 102, 1, -1)}
10:00:01.100700 socketpair(AF_UNIX, SOCK_STREAM, 0, [7, 8]) = 0
10:00:01.100800 {CLONE} = 103
10:00:01.100900 {_send(3, 1, 103, 1, 7, rights=7)}
10:00:01.101000 sendmsg(3, {{msg_name=NULL, msg_namelen=0, msg_iov=[{{iov_base="\\x01\\x02", iov_len=2}}], msg_iovlen=1, msg_controllen=0, msg_flags=0}}, 0) = 2
[pid   101] 10:00:01.200000 +++ exited with 0 +++
"""


def test_channel_message_wire_format():
    assert CHANNEL_SIZE == 32
    raw = struct.pack(CHANNEL_FORMAT, 1, 1234, 5, 9)
    assert raw[:8] == (1).to_bytes(8, "little") and raw[8:12] == (1234).to_bytes(4, "little")
    assert raw[16:24] == (5).to_bytes(8, "little") and raw[24:28] == (9).to_bytes(4, "little")
    assert raw[12:16] == raw[28:32] == b"\0" * 4
    m = ChannelMessage.from_bytes(raw, sender=1, fd=3, scm_fds=(9,))
    assert (m.command_name, m.pid, m.slot, m.ch_fd, m.has_fd) == ("OPEN_CHANNEL", 1234, 5, 9, True)
    assert m.to_bytes() == raw
    assert ChannelMessage.from_bytes(struct.pack(CHANNEL_FORMAT, 9, 0, 0, -1)).command_name == "UNKNOWN(9)"
    with pytest.raises(ValueError):
        ChannelMessage.from_bytes(b"\x01" * 31)


def test_parse_strace_excerpt():
    trace = parse_trace(EXCERPT, default_pid=100)
    msgs = parse_strace(EXCERPT, default_pid=100)
    assert list(trace.messages) == msgs
    assert not trace.epoch and trace.start == 36000.0001
    sends = [m for m in msgs if m.direction == "send"]
    recvs = [m for m in msgs if m.direction == "recv"]
    assert [m.command_name for m in sends] == ["OPEN_CHANNEL", "QUIT", "UNKNOWN(9)", "CLOSE_CHANNEL",
                                               "OPEN_CHANNEL"]

    first = sends[0]
    assert (first.time, first.sender, first.fd, first.pid, first.slot, first.ch_fd, first.scm_fds) == (
        0.0005, 100, 3, 102, 1, 7, (7,))
    assert (first.receiver, first.target_slot) == (101, 0)

    (got,) = recvs  # the EAGAIN and the 2-byte send are not messages
    assert got.time == 0.0007                      # when recvmsg returned (the resumed half)
    assert (got.receiver, got.fd, got.scm_fds, got.sender, got.target_slot) == (101, 6, (3,), 100, 0)
    assert (got.command_name, got.pid, got.slot, got.ch_fd) == ("OPEN_CHANNEL", 102, 1, 7)

    assert all(not m.scm_fds for m in sends if m.command_name != "OPEN_CHANNEL")
    assert sends[2].target_slot == 1 and sends[2].receiver == 102
    assert sends[4].pid == 103 and sends[4].target_slot == 0

    # the channels: (3, 6) for 101 in slot 0, (7, 8) for 102 then again for 103 in slot 1
    chans = [(c.fds, c.child, c.slot) for c in trace.channels]
    assert chans == [((3, 6), 101, 0), ((7, 8), 102, 1), ((7, 8), 103, 1)]
    assert trace.channels[1].closed == (1.1003, 1.1004)
    assert trace.masters == (100,)

    assert sequence(msgs) == [("OPEN_CHANNEL", 1, 0, True), ("QUIT", 0, 0, False),
                              ("UNKNOWN(9)", 0, 1, False), ("CLOSE_CHANNEL", 1, 0, False),
                              ("OPEN_CHANNEL", 1, 0, True)]
    assert sequence(msgs, direction="recv") == [("OPEN_CHANNEL", 1, 0, True)]

    events = parse_syscalls(EXCERPT, default_pid=100)
    assert [e.result for e in events if e.name == "clone"] == [101, 102, 103]
    assert [e.fds for e in events if e.name == "socketpair"] == [(3, 6), (7, 8), (7, 8)]
    (kill,) = [e for e in events if e.name == "kill"]
    assert (kill.pid, kill.signal, kill.args) == (100, "SIGKILL", "102, SIGKILL")
    sigs = [(e.signal, e.from_pid) for e in events if e.name == "signal"]
    assert sigs == [("SIGHUP", 55), ("SIGCHLD", 102)]
    exits = [(e.pid, e.args, e.result) for e in events if e.name == "exit"]
    assert exits == [(102, "killed by SIGKILL", None), (101, "exited with 0", 0)]
    assert {e.name for e in events} == {"socketpair", "ioctl", "fcntl", "clone", "close", "kill",
                                        "signal", "exit"}


def test_parse_strace_other_formats():
    # -ttt epoch timestamps with "PID  " prefixes (strace -o file), and no timestamps at all
    send = _send(3, 5, 0, 0, -1)
    epoch = f"200  1795746679.000000 {CLONE} = 201\n200  1795746679.250000 {send}\n"
    (m,) = parse_strace(epoch)
    assert m.time == 0.25 and m.sender == 200 and m.command_name == "REOPEN"
    assert parse_trace(epoch).epoch and parse_trace(epoch).start == 1795746679.0
    bare = f"[pid  300] {send}\n"
    (m,) = parse_strace(bare)
    assert m.sender == 300 and m.time == 0.0
    # -tt wrapping past midnight
    wrap = f"23:59:59.900000 {send}\n00:00:00.100000 {send}\n"
    assert [m.time for m in parse_strace(wrap)] == [0.0, 0.2]


def test_sequence_and_diff():
    a = [SeqItem("OPEN_CHANNEL", 1, 0, True), SeqItem("QUIT", 0, 0, False), SeqItem("QUIT", 0, 1, False)]
    b = [SeqItem("OPEN_CHANNEL", 1, 0, True), SeqItem("QUIT", 0, 1, False)]
    assert diff_sequences(a, a) == []
    lines = diff_sequences(a, b, names=("ngxlab", "nginx"))
    assert lines[0] == "ngxlab[1] QUIT(slot 0) -> slot 0: not in nginx"
    assert lines[-1] == "counts differ (ngxlab/nginx): QUIT 2/1"
    assert diff_sequences([tuple(x) for x in a], a) == []   # plain tuples compare too
    msgs = [ChannelMessage.from_bytes(struct.pack(CHANNEL_FORMAT, 5, 0, 0, -1), time=t, target_slot=s)
            for t, s in ((0.2, 1), (0.1, 0))]
    assert sequence(msgs) == [("REOPEN", 0, 0, False), ("REOPEN", 0, 1, False)]
    assert sequence(msgs, commands=("QUIT",)) == []
    assert count_commands(msgs) == {"REOPEN": 2}


@pytest.mark.nginx
@pytest.mark.timeout(60)
def test_trace_of_a_real_nginx(nginx_bin, strace_bin):
    n = 4
    run = trace_run(Nginx(n, binary=nginx_bin), ("reopen", "kill_worker:1", "reload", "quit"))
    assert list(run.phases) == ["startup", "reopen", "kill_worker:1", "reload", "quit"]
    trace = run.trace
    (master,) = trace.masters

    # every message is the master's, and every one sent was received by the worker it was meant for
    sends, recvs = trace.sends(), trace.recvs()
    assert {m.sender for m in sends} == {master}
    assert all(m.target_slot is not None and m.receiver is not None for m in sends)
    def key(m):
        return (m.receiver, m.target_slot, m.command_name, m.pid, m.slot, m.ch_fd, len(m.scm_fds))
    assert not Counter(map(key, recvs)) - Counter(map(key, sends))   # old workers may exit unread
    for phase in ("startup", "reopen", "kill_worker:1"):
        got = [m for m in run.phases[phase] if m.direction == "recv"]
        assert Counter(map(key, got)) == Counter(map(key, run.sends(phase))), phase
    # SCM_RIGHTS travels only with OPEN_CHANNEL, whose fd field is the master's channel[0] number
    for m in sends:
        assert bool(m.scm_fds) == (m.command_name == "OPEN_CHANNEL")
        if m.scm_fds:
            assert m.scm_fds == (m.ch_fd,)
    # the master signals its workers only through the channel
    assert not [e for e in trace.events if e.name == "kill" and e.pid == master]

    startup = run.sequence("startup")
    assert startup == [("OPEN_CHANNEL", s, t, True) for s in range(1, n) for t in range(s)]
    assert len(startup) == n * (n - 1) // 2

    assert run.sequence("reopen") == [("REOPEN", 0, t, False) for t in range(n)]

    respawn = run.sequence("kill_worker:1")
    others = [t for t in range(n) if t != 1]
    assert respawn == ([("CLOSE_CHANNEL", 1, t, False) for t in others]
                       + [("OPEN_CHANNEL", 1, t, True) for t in others])
    new_pid = run.slots["kill_worker:1"][1]
    assert {m.pid for m in run.sends("kill_worker:1") if m.command_name == "OPEN_CHANNEL"} == {new_pid}

    reload = run.counts("reload")
    assert reload["OPEN_CHANNEL"] == 4 * n + n * (n - 1) // 2
    assert reload["QUIT"] == n and reload["CLOSE_CHANNEL"] >= 4 * n
    assert sorted(x.target_slot for x in run.sequence("reload", commands=("QUIT",))) == list(range(n))
    assert sorted(run.slots["reload"]) == list(range(n, 2 * n))

    quit_ = run.counts("quit")
    assert quit_["QUIT"] == n and run.censuses["quit"] is None

    # the runner's model of nginx's slot table agrees with the slots nginx wrote in its messages
    slot_of_child = {c.child: c.slot for c in trace.channels}
    for phase, table in run.slots.items():
        for slot, pid in table.items():
            assert slot_of_child[pid] == slot, (phase, slot, pid)
    assert all(c.slot_source == "message" for c in trace.channels)
    assert "OPEN_CHANNEL x6" in run.table()


@pytest.mark.nginx
@pytest.mark.timeout(60)
def test_ngxlab_startup_matches_nginx(nginx_bin, strace_bin):
    from ngxlab.lab.master import Master

    n = 3
    with record_channel() as sent:
        with Master(workers=n) as m:
            m.wait_mesh()
    ours = sequence(sent, commands=("OPEN_CHANNEL",))
    theirs = trace_run(Nginx(n, binary=nginx_bin), ("quit",)).sequence("startup")
    assert diff_sequences(ours, theirs, names=("ngxlab", "nginx")) == []
    assert all(msg.sender == sent[0].sender for msg in sent)
