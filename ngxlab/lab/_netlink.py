"""A small NETLINK_SOCK_DIAG client for Unix and inet sockets (private to ``ngxlab.lab``).

``/proc/<pid>/fd`` says that descriptor 7 is ``socket:[48213]``, but not which
socket is at the other end.  The kernel answers that through the sock_diag
netlink family (see ``man 7 sock_diag``): one ``SOCK_DIAG_BY_FAMILY`` dump
request for ``AF_UNIX`` returns every Unix socket of the caller's network
namespace, and with ``UDIAG_SHOW_PEER`` each connected socket carries the
inode of its peer.  That is what ``ss -x`` prints, done here with ``struct``
and one netlink socket, which is closed on every path.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass

__all__ = ["UnixSocketInfo", "NetlinkError", "unix_sockets", "inet_sockets"]

NETLINK_SOCK_DIAG = 4          # <linux/netlink.h>; not exported by the socket module
SOCK_DIAG_BY_FAMILY = 20       # <linux/sock_diag.h>

NLM_F_REQUEST = 0x01
NLM_F_DUMP = 0x300             # NLM_F_ROOT | NLM_F_MATCH
NLMSG_ERROR = 2
NLMSG_DONE = 3

# <linux/unix_diag.h>
UDIAG_SHOW_NAME = 0x01
UDIAG_SHOW_PEER = 0x04
UDIAG_SHOW_RQLEN = 0x10
UNIX_DIAG_NAME = 0
UNIX_DIAG_PEER = 2
UNIX_DIAG_RQLEN = 4

_NLMSGHDR = struct.Struct("=IHHII")          # len, type, flags, seq, pid
_UNIX_DIAG_REQ = struct.Struct("=BBHIIIII")  # family, protocol, pad, states, ino, show, cookie[2]
_UNIX_DIAG_MSG = struct.Struct("=BBBBIII")   # family, type, state, pad, ino, cookie[2]
_RTATTR = struct.Struct("=HH")               # len, type

SOCKET_TYPES = {socket.SOCK_STREAM: "stream", socket.SOCK_DGRAM: "dgram",
                socket.SOCK_SEQPACKET: "seqpacket"}
# Unix sockets reuse the TCP state numbers.
SOCKET_STATES = {1: "established", 2: "syn_sent", 7: "unconnected", 10: "listen"}


class NetlinkError(OSError):
    """The kernel refused or garbled a sock_diag request."""


@dataclass(frozen=True)
class UnixSocketInfo:
    """One Unix socket as sock_diag reports it."""

    inode: int
    type: str                 # "stream", "dgram", "seqpacket"
    state: str                # "established", "listen", "unconnected", ...
    peer: int | None          # inode of the connected peer, None if not connected
    name: str | None = None   # bound path ("@..." for the abstract namespace)
    rqueue: int | None = None  # bytes queued for reading (established) or backlog (listen)
    wqueue: int | None = None


def _align4(n: int) -> int:
    return (n + 3) & ~3


def _parse_attrs(data: bytes) -> dict[int, bytes]:
    attrs: dict[int, bytes] = {}
    off = 0
    while off + _RTATTR.size <= len(data):
        length, kind = _RTATTR.unpack_from(data, off)
        if length < _RTATTR.size:
            break
        attrs[kind] = data[off + _RTATTR.size: off + length]
        off += _align4(length)
    return attrs


def _decode_name(raw: bytes) -> str:
    if raw.startswith(b"\0"):
        return "@" + raw[1:].decode("utf-8", "replace")
    return raw.rstrip(b"\0").decode("utf-8", "replace")


def _parse_message(payload: bytes) -> UnixSocketInfo:
    _family, kind, state, _pad, ino, _c0, _c1 = _UNIX_DIAG_MSG.unpack_from(payload)
    attrs = _parse_attrs(payload[_UNIX_DIAG_MSG.size:])
    peer = None
    if UNIX_DIAG_PEER in attrs and len(attrs[UNIX_DIAG_PEER]) >= 4:
        peer = struct.unpack_from("=I", attrs[UNIX_DIAG_PEER])[0] or None
    name = _decode_name(attrs[UNIX_DIAG_NAME]) if UNIX_DIAG_NAME in attrs else None
    rqueue = wqueue = None
    if UNIX_DIAG_RQLEN in attrs and len(attrs[UNIX_DIAG_RQLEN]) >= 8:
        rqueue, wqueue = struct.unpack_from("=II", attrs[UNIX_DIAG_RQLEN])
    return UnixSocketInfo(inode=ino, type=SOCKET_TYPES.get(kind, str(kind)),
                          state=SOCKET_STATES.get(state, str(state)), peer=peer,
                          name=name, rqueue=rqueue, wqueue=wqueue)


def _dump(req: bytes, parse) -> list:
    """Send one sock_diag dump request; ``parse`` each answer's payload."""
    seq = 1
    hdr = _NLMSGHDR.pack(_NLMSGHDR.size + len(req), SOCK_DIAG_BY_FAMILY,
                         NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
    result = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(5.0)
        nl.sendto(hdr + req, (0, 0))
        while True:
            data = nl.recv(1 << 20)
            if not data:
                raise NetlinkError("sock_diag: empty netlink answer")
            off = 0
            while off + _NLMSGHDR.size <= len(data):
                length, kind, _flags, mseq, _pid = _NLMSGHDR.unpack_from(data, off)
                if length < _NLMSGHDR.size:
                    raise NetlinkError("sock_diag: malformed netlink header")
                payload = data[off + _NLMSGHDR.size: off + length]
                off += _align4(length)
                if mseq != seq:
                    continue
                if kind == NLMSG_DONE:
                    return result
                if kind == NLMSG_ERROR:
                    err = struct.unpack_from("=i", payload)[0] if len(payload) >= 4 else 0
                    if err == 0:       # an acknowledgement, not an error
                        continue
                    raise NetlinkError(-err, f"sock_diag: {os.strerror(-err)}")
                if kind == SOCK_DIAG_BY_FAMILY:
                    item = parse(payload)
                    if item is not None:
                        result.append(item)


def unix_sockets() -> dict[int, UnixSocketInfo]:
    """Every Unix socket of this network namespace, keyed by inode.

    One dump request (``SOCK_DIAG_BY_FAMILY``, ``AF_UNIX``, all states, with
    name, peer and queue lengths).  Raises :class:`NetlinkError` when the
    kernel answers with an error.
    """
    show = UDIAG_SHOW_NAME | UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN
    req = _UNIX_DIAG_REQ.pack(socket.AF_UNIX, 0, 0, 0xFFFFFFFF, 0, show, 0xFFFFFFFF, 0xFFFFFFFF)
    found = _dump(req, lambda p: _parse_message(p) if len(p) >= _UNIX_DIAG_MSG.size else None)
    return {info.inode: info for info in found}


# <linux/inet_diag.h>: a request names a family, a protocol and a mask of TCP
# states; the answer carries the socket's addresses, state and inode.
_INET_DIAG_REQ = struct.Struct("=BBBBI48x")          # family, protocol, ext, pad, states, sockid
_INET_DIAG_MSG = struct.Struct("=BBBB2s2s16s16s12xIIIII")
# family, state, timer, retrans, sport, dport, src, dst, (if, cookie), expires, rqueue,
# wqueue, uid, inode
TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1",
              5: "FIN_WAIT2", 6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT",
              9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING"}
# TIME_WAIT and SYN_RECV sockets have no inode (no descriptor can hold them):
# leaving them out keeps the dump short on a machine that has just served
# thousands of connections.
_WITH_INODE = 0xFFFFFFFF & ~((1 << 6) | (1 << 3))


def inet_sockets(*, listening_only: bool = False) -> dict[int, tuple[str, str]]:
    """Every TCP and UDP socket (IPv4 and IPv6) of this network namespace
    that a descriptor can hold, keyed by inode: ``(kind, "addr:port STATE")``
    with ``kind`` one of ``tcp``, ``tcp6``, ``udp``, ``udp6``, as
    ``/proc/net/tcp`` and its siblings list them.  Raises
    :class:`NetlinkError` when the kernel answers with an error.

    With ``listening_only``, the TCP sockets asked for are the listening
    ones: the kernel then walks only its table of listeners, not the one of
    connections (which holds every TIME_WAIT socket too, tens of thousands
    after a load test, and takes tens of milliseconds to walk).
    """
    result: dict[int, tuple[str, str]] = {}
    for family in (socket.AF_INET, socket.AF_INET6):
        for proto, name in ((socket.IPPROTO_TCP, "tcp"), (socket.IPPROTO_UDP, "udp")):
            kind = name + ("6" if family == socket.AF_INET6 else "")

            def parse(payload: bytes, family=family, name=name, kind=kind):
                if len(payload) < _INET_DIAG_MSG.size:
                    return None
                (_fam, state, _timer, _retrans, sport, _dport, src, _dst,
                 _exp, _rq, _wq, _uid, inode) = _INET_DIAG_MSG.unpack_from(payload)
                if not inode:
                    return None
                raw = src[:4] if family == socket.AF_INET else src
                host = socket.inet_ntop(family, raw)
                shown = f"[{host}]" if family == socket.AF_INET6 else host
                port = int.from_bytes(sport, "big")
                label = f" {TCP_STATES.get(state, str(state))}" if name == "tcp" else ""
                return inode, (kind, f"{shown}:{port}{label}")

            states = 1 << 10 if listening_only and name == "tcp" else _WITH_INODE
            req = _INET_DIAG_REQ.pack(family, proto, 0, 0, states)
            result.update(_dump(req, parse))
    return result
