"""A small NETLINK_SOCK_DIAG client for Unix sockets (private to ``ngxlab.lab``).

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

__all__ = ["UnixSocketInfo", "NetlinkError", "unix_sockets"]

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


def unix_sockets() -> dict[int, UnixSocketInfo]:
    """Every Unix socket of this network namespace, keyed by inode.

    One dump request (``SOCK_DIAG_BY_FAMILY``, ``AF_UNIX``, all states, with
    name, peer and queue lengths).  Raises :class:`NetlinkError` when the
    kernel answers with an error.
    """
    show = UDIAG_SHOW_NAME | UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN
    req = _UNIX_DIAG_REQ.pack(socket.AF_UNIX, 0, 0, 0xFFFFFFFF, 0, show, 0xFFFFFFFF, 0xFFFFFFFF)
    seq = 1
    hdr = _NLMSGHDR.pack(_NLMSGHDR.size + len(req), SOCK_DIAG_BY_FAMILY,
                         NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
    result: dict[int, UnixSocketInfo] = {}
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
                if kind == SOCK_DIAG_BY_FAMILY and len(payload) >= _UNIX_DIAG_MSG.size:
                    info = _parse_message(payload)
                    result[info.inode] = info
