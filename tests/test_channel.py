"""ngx_channel_t, ngx_write_channel and ngx_read_channel, with real sockets.

Every malformed message a channel can carry is sent for real over a
socketpair made the way ngx_spawn_process makes it (AF_UNIX, SOCK_STREAM,
non-blocking), and each test checks the return code, the logged line in
nginx's words, and that no descriptor is left open afterwards.
"""

from __future__ import annotations

import array
import io
import os
import socket
import struct
import subprocess

import pytest
from _tools import fd_table

from ngxlab import channel
from ngxlab.channel import (
    NGX_CMD_CLOSE_CHANNEL, NGX_CMD_OPEN_CHANNEL, NGX_CMD_QUIT, NGX_CMD_REOPEN,
    NGX_CMD_TERMINATE, command_name, ngx_channel_t, ngx_close_channel,
    ngx_read_channel, ngx_write_channel,
)
from ngxlab.core import (
    NGX_AGAIN, NGX_ERROR, NGX_LOG_ALERT, NGX_LOG_DEBUG, NGX_OK, ngx_log_t, sizeof,
)

SIZE = 32


def fds():
    """This process's open descriptors."""
    return set(fd_table())


@pytest.fixture
def pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def log():
    buf = io.StringIO()
    return ngx_log_t(buf, NGX_LOG_DEBUG), buf


def devnull():
    return os.open(os.devnull, os.O_RDONLY)


def send_raw(sock, data, fds_=(), level=socket.SOL_SOCKET,
             type_=socket.SCM_RIGHTS, payload=None):
    anc = []
    if fds_:
        anc.append((level, type_, array.array("i", fds_).tobytes()))
    if payload is not None:
        anc.append((level, type_, payload))
    sock.sendmsg([data], anc)


# -- the bytes ---------------------------------------------------------------

def test_size_and_offsets():
    assert sizeof(ngx_channel_t) == SIZE
    ch = ngx_channel_t(0x0102030405060708, 0x11121314, 0x2122232425262728,
                       0x31323334)
    raw = bytes(ch)
    assert len(raw) == SIZE
    assert raw[0:8] == struct.pack("<Q", 0x0102030405060708)
    assert raw[8:12] == struct.pack("<i", 0x11121314)
    assert raw[12:16] == b"\0" * 4            # padding after pid
    assert raw[16:24] == struct.pack("<q", 0x2122232425262728)
    assert raw[24:28] == struct.pack("<i", 0x31323334)
    assert raw[28:32] == b"\0" * 4            # trailing padding
    assert ngx_channel_t.from_bytes(raw) == ch


C_LAYOUT = r"""
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>

/* the same field types as nginx's ngx_channel_t on this platform */
typedef struct {
    uintptr_t  command;   /* ngx_uint_t */
    pid_t      pid;       /* ngx_pid_t  */
    intptr_t   slot;      /* ngx_int_t  */
    int        fd;        /* ngx_fd_t   */
} channel_t;

int main(void) {
    channel_t ch;
    unsigned char *p = (unsigned char *) &ch;
    memset(&ch, 0, sizeof(ch));
    ch.command = 1; ch.pid = 4242; ch.slot = 7; ch.fd = -1;
    printf("%zu %zu %zu %zu %zu\n", sizeof(ch), offsetof(channel_t, command),
           offsetof(channel_t, pid), offsetof(channel_t, slot),
           offsetof(channel_t, fd));
    for (size_t i = 0; i < sizeof(ch); i++) printf("%02x", p[i]);
    printf("\n");
    return 0;
}
"""


def test_layout_matches_a_compiled_c_struct(cc, tmp_path):
    src = tmp_path / "layout.c"
    src.write_text(C_LAYOUT)
    exe = tmp_path / "layout"
    subprocess.run([cc, "-O0", "-o", str(exe), str(src)], check=True,
                   timeout=60)
    out = subprocess.run([str(exe)], capture_output=True, text=True,
                         check=True, timeout=10).stdout.split()
    size, off_command, off_pid, off_slot, off_fd = map(int, out[:5])
    assert (size, off_command, off_pid, off_slot, off_fd) == (32, 0, 8, 16, 24)
    assert bytes(ngx_channel_t(1, 4242, 7, -1)).hex() == out[5]


# -- write and read ------------------------------------------------------------

@pytest.mark.parametrize("command", [NGX_CMD_CLOSE_CHANNEL, NGX_CMD_QUIT,
                                     NGX_CMD_TERMINATE, NGX_CMD_REOPEN])
def test_round_trip_without_descriptor(pair, log, command):
    a, b = pair
    lg, buf = log
    sent = ngx_channel_t(command, 1234, 3, -1)
    assert ngx_write_channel(a.fileno(), sent, SIZE, lg) == NGX_OK
    got = ngx_channel_t()
    assert ngx_read_channel(b.fileno(), got, SIZE, lg) == SIZE
    assert got == sent
    assert ngx_read_channel(b.fileno(), got, SIZE, lg) == NGX_AGAIN
    assert "[alert]" not in buf.getvalue()


def test_open_channel_passes_a_descriptor(pair, log):
    a, b = pair
    lg, buf = log
    r, w = os.pipe()
    before = fds()
    ch = ngx_channel_t(NGX_CMD_OPEN_CHANNEL, 99, 2, w)
    assert ngx_write_channel(a.fileno(), ch, SIZE, lg) == NGX_OK
    got = ngx_channel_t()
    assert ngx_read_channel(b.fileno(), got, SIZE, lg) == SIZE
    assert (got.command, got.pid, got.slot) == (NGX_CMD_OPEN_CHANNEL, 99, 2)
    # the receiver's number for the descriptor differs from the sender's
    assert got.fd not in before and got.fd != w
    assert os.path.sameopenfile(got.fd, w)
    os.write(got.fd, b"x")
    assert os.read(r, 1) == b"x"
    for fd in (r, w, got.fd):
        os.close(fd)


def test_write_again_when_the_buffer_is_full(pair, log):
    a, b = pair
    lg, buf = log
    ch = ngx_channel_t(NGX_CMD_QUIT, 1, 0, -1)
    n = 0
    while True:
        rc = ngx_write_channel(a.fileno(), ch, SIZE, lg)
        if rc == NGX_AGAIN:
            break
        assert rc == NGX_OK
        n += 1
        assert n < 1_000_000
    assert n > 10
    assert buf.getvalue() == ""   # EAGAIN is not logged


def test_write_to_a_bad_descriptor_logs_nginx_alert(log):
    lg, buf = log
    fd = devnull()
    os.close(fd)
    assert ngx_write_channel(fd, ngx_channel_t(NGX_CMD_QUIT), SIZE, lg) \
        == NGX_ERROR
    assert "[alert]" in buf.getvalue()
    assert "sendmsg() failed (9: Bad file descriptor)" in buf.getvalue()


def test_read_again_and_read_error(pair, log):
    a, b = pair
    lg, buf = log
    assert ngx_read_channel(b.fileno(), ngx_channel_t(), SIZE, lg) == NGX_AGAIN
    assert buf.getvalue() == ""
    fd = devnull()
    assert ngx_read_channel(fd, ngx_channel_t(), SIZE, lg) == NGX_ERROR
    os.close(fd)
    assert "recvmsg() failed (88: Socket operation on non-socket)" \
        in buf.getvalue()


def test_log_line_format(log):
    lg, buf = log
    fd = devnull()
    os.close(fd)
    ngx_write_channel(fd, ngx_channel_t(NGX_CMD_QUIT), SIZE, lg)
    line = buf.getvalue().strip()
    import re
    assert re.fullmatch(
        r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[alert\] %d#0: sendmsg\(\) failed "
        r"\(9: Bad file descriptor\)" % os.getpid(), line), line


def test_the_log_time_is_formatted_once_a_second(log, monkeypatch):
    """As nginx's ngx_cached_err_log_time: lines in the same second share
    one formatted time; the next second is formatted anew."""
    from ngxlab import core
    lg, buf = log
    now = [1_800_000_000.25]
    monkeypatch.setattr(core.time, "time", lambda: now[0])
    monkeypatch.setattr(core, "_cached_err_log_time", [-1, ""])
    stamp = lambda t: core.time.strftime("%Y/%m/%d %H:%M:%S", core.time.localtime(t))
    lg.write(NGX_LOG_ALERT, 0, "one")
    first = core._cached_err_log_time[1]
    now[0] += 0.5
    lg.write(NGX_LOG_ALERT, 0, "two")
    assert core._cached_err_log_time[1] is first
    now[0] += 1
    lg.write(NGX_LOG_ALERT, 0, "three")
    lines = buf.getvalue().splitlines()
    assert [line[:19] for line in lines] == [stamp(1_800_000_000)] * 2 + [stamp(1_800_000_001)]


def test_close_channel_logs_each_failure(log):
    lg, buf = log
    a, b = socket.socketpair()
    pair_ = [a.detach(), b.detach()]
    ngx_close_channel(pair_, lg)
    assert pair_ != [-1, -1]          # nginx leaves the numbers in place
    ngx_close_channel(pair_, lg)
    assert buf.getvalue().count("close() channel failed (9: Bad file "
                                "descriptor)") == 2


# -- every malformed message -------------------------------------------------

@pytest.mark.parametrize("n", list(range(1, SIZE)))
def test_short_messages(pair, log, n):
    a, b = pair
    lg, buf = log
    before = fds()
    a.send(bytes(ngx_channel_t(NGX_CMD_QUIT, 1, 1, -1))[:n])
    assert ngx_read_channel(b.fileno(), ngx_channel_t(), SIZE, lg) \
        == NGX_ERROR
    assert f"[alert] {os.getpid()}#0: recvmsg() returned not enough data: " \
        f"{n}\n" in buf.getvalue()
    assert fds() == before


def test_short_message_with_a_descriptor_closes_it(pair, log):
    a, b = pair
    lg, buf = log
    fd = devnull()
    before = fds()
    send_raw(a, b"12345678", [fd])
    assert ngx_read_channel(b.fileno(), ngx_channel_t(), SIZE, lg) \
        == NGX_ERROR
    assert "not enough data: 8" in buf.getvalue()
    assert fds() == before
    os.close(fd)


def test_eof(pair, log):
    a, b = pair
    lg, buf = log
    a.close()
    assert ngx_read_channel(b.fileno(), ngx_channel_t(), SIZE, lg) \
        == NGX_ERROR
    assert "[debug]" in buf.getvalue()
    assert "recvmsg() returned zero" in buf.getvalue()
    assert "[alert]" not in buf.getvalue()


def test_eof_is_silent_below_debug(pair):
    a, b = pair
    buf = io.StringIO()
    a.close()
    assert ngx_read_channel(b.fileno(), ngx_channel_t(), SIZE,
                            ngx_log_t(buf, "notice")) == NGX_ERROR
    assert buf.getvalue() == ""


def test_open_channel_without_ancillary_data(pair, log):
    a, b = pair
    lg, buf = log
    a.send(bytes(ngx_channel_t(NGX_CMD_OPEN_CHANNEL, 5, 1, 7)))
    assert ngx_read_channel(b.fileno(), ngx_channel_t(), SIZE, lg) \
        == NGX_ERROR
    assert "recvmsg() returned too small ancillary data" in buf.getvalue()


@pytest.mark.parametrize("quirks", [False, True])
def test_descriptor_with_quit(pair, log, quirks):
    """nginx looks at ancillary data only for OPEN_CHANNEL, but the kernel
    has already installed the descriptor: nginx leaks it."""
    a, b = pair
    lg, buf = log
    fd = devnull()
    before = fds()
    send_raw(a, bytes(ngx_channel_t(NGX_CMD_QUIT, 1, 0, -1)), [fd])
    got = ngx_channel_t()
    rc = ngx_read_channel(b.fileno(), got, SIZE, lg, nginx_quirks=quirks)
    if quirks:
        assert rc == SIZE and got.command == NGX_CMD_QUIT
        leaked = fds() - before
        assert len(leaked) == 1                  # nginx's leak, reproduced
        (extra,) = leaked
        assert os.path.sameopenfile(extra, fd)
        os.close(extra)
    else:
        assert rc == NGX_ERROR
        assert "1 unexpected descriptor(s) with channel command 3, closed" \
            in buf.getvalue()
        assert fds() == before
    os.close(fd)


@pytest.mark.parametrize("quirks", [False, True])
def test_two_descriptors(pair, log, quirks):
    """CMSG_SPACE(sizeof(int)) is 24 bytes on x86-64: room for exactly two
    descriptors, so no truncation is reported and nginx keeps the first and
    leaks the second."""
    a, b = pair
    lg, buf = log
    d1, d2 = devnull(), devnull()
    before = fds()
    send_raw(a, bytes(ngx_channel_t(NGX_CMD_OPEN_CHANNEL, 1, 0, d1)), [d1, d2])
    got = ngx_channel_t()
    rc = ngx_read_channel(b.fileno(), got, SIZE, lg, nginx_quirks=quirks)
    new = fds() - before
    if quirks:
        assert rc == SIZE
        assert got.fd in new and len(new) == 2    # one kept, one leaked
        assert "truncated" not in buf.getvalue()
        for fd in new:
            os.close(fd)
    else:
        assert rc == NGX_ERROR and got.fd == -1
        # two received, the first taken as OPEN_CHANNEL's, both closed
        assert "1 unexpected descriptor(s) with channel command 1, closed" \
            in buf.getvalue()
        assert new == set()
    os.close(d1)
    os.close(d2)


@pytest.mark.parametrize("s", [-1, -5])
def test_a_negative_descriptor_is_ebadf_on_both_sides(log, s):
    """nginx passes the number to the system call, which says EBADF; the
    socket table refuses a negative number in the same words."""
    lg, buf = log
    assert ngx_write_channel(s, ngx_channel_t(NGX_CMD_QUIT), SIZE, lg) == NGX_ERROR
    assert ngx_read_channel(s, ngx_channel_t(), SIZE, lg) == NGX_ERROR
    assert "sendmsg() failed (9: Bad file descriptor)" in buf.getvalue()
    assert "recvmsg() failed (9: Bad file descriptor)" in buf.getvalue()
    assert s not in channel._sockets


def test_the_socket_table_is_a_plain_dict():
    """CPython gives a subclass of dict the generic subscript (a lookup of
    ``__getitem__`` through the type, then a call): on every message, cold
    at every wake of a reload. The table is a ``dict``, read with ``get``."""
    assert type(channel._sockets) is dict


def test_read_channel_makes_no_closure_cell():
    """A local that a nested function (a list comprehension, before Python
    3.12) reads becomes a cell, allocated at every call of the function,
    here the channel's hot path; ``ngx_read_channel`` has none."""
    assert ngx_read_channel.__code__.co_cellvars == ()


@pytest.mark.parametrize("quirks", [False, True])
def test_three_descriptors_truncate(pair, log, quirks):
    """Three descriptors do not fit: the kernel closes what does not fit and
    sets MSG_CTRUNC; nginx only logs it."""
    a, b = pair
    lg, buf = log
    ds = [devnull() for _ in range(3)]
    before = fds()
    send_raw(a, bytes(ngx_channel_t(NGX_CMD_OPEN_CHANNEL, 1, 0, ds[0])), ds)
    got = ngx_channel_t()
    rc = ngx_read_channel(b.fileno(), got, SIZE, lg, nginx_quirks=quirks)
    assert "recvmsg() truncated data" in buf.getvalue()
    new = fds() - before
    if quirks:
        assert rc == SIZE and got.fd in new
        assert len(new) == 2         # two fitted; the kernel closed the third
        for fd in new:
            os.close(fd)
    else:
        assert rc == NGX_ERROR and got.fd == -1
        assert new == set()
    for fd in ds:
        os.close(fd)


def test_credentials_instead_of_rights(pair, log):
    a, b = pair
    lg, buf = log
    b.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    before = fds()
    ucred = struct.pack("iII", os.getpid(), os.getuid(), os.getgid())
    send_raw(a, bytes(ngx_channel_t(NGX_CMD_OPEN_CHANNEL, 1, 0, 5)),
             type_=socket.SCM_CREDENTIALS, payload=ucred)
    assert ngx_read_channel(b.fileno(), ngx_channel_t(), SIZE, lg) \
        == NGX_ERROR
    assert "recvmsg() returned invalid ancillary data level %d or type %d" % (
        socket.SOL_SOCKET, socket.SCM_CREDENTIALS) in buf.getvalue()
    assert fds() == before


def test_control_buffer_too_small_for_credentials_and_rights(pair, log):
    """With SO_PASSCRED on, the kernel puts credentials first: an
    OPEN_CHANNEL then fails nginx's type check and its descriptor must not
    leak."""
    a, b = pair
    lg, buf = log
    b.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    fd = devnull()
    before = fds()
    send_raw(a, bytes(ngx_channel_t(NGX_CMD_OPEN_CHANNEL, 1, 0, fd)), [fd])
    assert ngx_read_channel(b.fileno(), ngx_channel_t(), SIZE, lg) \
        == NGX_ERROR
    assert fds() == before
    os.close(fd)


def test_unknown_command_reads_fine(pair, log):
    """ngx_read_channel does not look at the command; the handler ignores
    an unknown one (see test_mesh for the worker side)."""
    a, b = pair
    lg, buf = log
    a.send(bytes(ngx_channel_t(99, 1, 0, -1)))
    got = ngx_channel_t()
    assert ngx_read_channel(b.fileno(), got, SIZE, lg) == SIZE
    assert got.command == 99
    assert command_name(99) == "UNKNOWN(99)"


def test_two_messages_in_one_read_are_read_one_by_one(pair, log):
    a, b = pair
    lg, buf = log
    a.send(bytes(ngx_channel_t(NGX_CMD_QUIT)) + bytes(ngx_channel_t(
        NGX_CMD_REOPEN)))
    got = ngx_channel_t()
    assert ngx_read_channel(b.fileno(), got, SIZE, lg) == SIZE
    assert got.command == NGX_CMD_QUIT
    assert ngx_read_channel(b.fileno(), got, SIZE, lg) == SIZE
    assert got.command == NGX_CMD_REOPEN


def test_padding_is_zero_on_the_wire(pair, log):
    a, b = pair
    lg, _ = log
    ngx_write_channel(a.fileno(), ngx_channel_t(NGX_CMD_QUIT, -1, -1, -1),
                      SIZE, lg)
    raw = b.recv(64)
    assert raw[12:16] == b"\0" * 4 and raw[28:32] == b"\0" * 4


# -- a process-wide socket timeout -----------------------------------------

def test_a_default_socket_timeout_changes_nothing(log):
    """``socket.setdefaulttimeout()`` in the process must not turn a full or
    an empty channel into a wait: NGX_AGAIN at once, as the system call
    says, not NGX_ERROR after the timeout."""
    import time

    lg, buf = log
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a.setblocking(False)
    b.setblocking(False)
    s0, s1 = a.detach(), b.detach()
    channel._forget_sockets()          # wrap the numbers anew, under the timeout
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(2)
    try:
        t = time.monotonic()
        assert ngx_read_channel(s1, ngx_channel_t(), SIZE, lg) == NGX_AGAIN
        ch = ngx_channel_t(NGX_CMD_QUIT, 0, 0, -1)
        while (rc := ngx_write_channel(s0, ch, SIZE, lg)) == NGX_OK:
            pass
        assert rc == NGX_AGAIN
        assert time.monotonic() - t < 1.0
        assert buf.getvalue() == ""
        assert os.get_blocking(s0) is False and os.get_blocking(s1) is False
    finally:
        socket.setdefaulttimeout(old)
        channel._forget_sockets()
        os.close(s0)
        os.close(s1)


def test_rights_reads_one_or_several_descriptors():
    """_rights: one descriptor (every OPEN_CHANNEL's) and several give the
    numbers in order; a control message cut inside an int gives only the
    whole ones; another level or type gives none."""
    from ngxlab.channel import _rights
    rights = (socket.SOL_SOCKET, socket.SCM_RIGHTS)
    one = struct.pack("i", 7)
    three = struct.pack("3i", 7, 8, 9)
    assert _rights([(*rights, one)]) == [7]
    assert _rights([(*rights, three)]) == [7, 8, 9]
    assert _rights([(*rights, three[:10])]) == [7, 8]
    assert _rights([(*rights, one), (*rights, three)]) == [7, 7, 8, 9]
    assert _rights([(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, one)]) == []
