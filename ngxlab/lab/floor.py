"""The Python floor of a start-up: only what nginx's start-up does for the mesh.

``python -m ngxlab.lab.floor --workers N --prefix DIR`` is started the way
``python -m ngxlab run`` is (same interpreter, same environment, the same
``-m``), and does nothing but what builds the channel mesh in nginx
(``ngx_start_worker_processes``, ``ngx_spawn_process``,
``ngx_pass_open_channel``, ``ngx_worker_process_init``):

- the master writes its pid file (``DIR/logs/floor.pid``, as nginx writes
  its own before the first fork), then for each slot makes a socketpair,
  forks, and sends an OPEN_CHANNEL message (32 bytes, the new slot's
  ``channel[0]`` as ``SCM_RIGHTS``) to every earlier child;
- each child closes the ``channel[1]`` of every other slot and its own
  ``channel[0]``, puts its ``channel[1]`` in an epoll instance (last, as a
  worker's initialisation ends), then reads OPEN_CHANNEL messages with
  ``recvmsg`` and keeps the descriptors they carry.

No logging, no configuration, no event loop beyond that one epoll wait, no
non-blocking flags, no process titles: what is left is the interpreter's
own start-up and the system calls of the mesh. :mod:`ngxlab.lab.timing`
times it beside ``ngxlab run`` and nginx, to the same end condition, in the
same interleaved runs: ngxlab / floor is what ngxlab adds to Python, floor /
nginx what Python adds to C. Its runner, with the vocabulary of
``MasterProcess`` and ``Nginx``, is :class:`ngxlab.lab.run.FloorProcess`.

The master stops its children with SIGTERM and exits on SIGTERM, SIGQUIT
or SIGINT, and when it is no longer the child of ``--parent PID`` (by
default the process that started it; checked once a second); a child exits
when its master is gone.

This file imports only what the floor needs before its first fork (``os``,
``socket``, ``struct``, ``select``, ``signal``, ``sys``).

Not a mirror of nginx: nothing here has an ``ngx_`` name.
"""

import os
import select
import signal
import socket
import struct
import sys

PID_NAME = "floor.pid"
_MESSAGE = struct.Struct("@Lili0l")     # ngx_channel_t: command, pid, slot, fd
_OPEN_CHANNEL = 1


def _child(slot, pairs, parent):
    """A worker of the floor: close what is not its own, wait on its channel,
    keep every descriptor that arrives."""
    for k, (ch0, ch1) in enumerate(pairs):
        if k != slot:
            os.close(ch1)
    own = pairs[slot][1]
    os.close(pairs[slot][0])
    ep = select.epoll()
    ep.register(own, select.EPOLLIN)
    sock = socket.socket(fileno=own)
    space = socket.CMSG_SPACE(4)
    kept = []
    while True:
        if not ep.poll(1.0):
            if os.getppid() != parent:
                os._exit(0)
            continue
        data, anc, _, _ = sock.recvmsg(_MESSAGE.size, space)
        if not data:
            os._exit(0)
        for _, _, cdata in anc:
            kept.append(int.from_bytes(cdata[:4], sys.byteorder, signed=True))


def main(argv=None):
    """The floor's master: ``--workers N --prefix DIR [--parent PID]``. Writes
    ``DIR/logs/floor.pid``, builds the mesh, waits for SIGTERM, SIGQUIT or
    SIGINT (or for its parent to go), stops its children, returns 0."""
    argv = sys.argv[1:] if argv is None else argv
    args = dict(zip(argv[::2], argv[1::2]))
    n = int(args["--workers"])
    prefix = args["--prefix"]
    starter = int(args.get("--parent", os.getppid()))
    master = os.getpid()
    with open(os.path.join(prefix, "logs", PID_NAME), "w") as f:
        f.write(f"{master}\n")

    pairs = []
    pids = []
    socks = []
    for slot in range(n):
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pairs.append((a.detach(), b.detach()))
        pid = os.fork()
        if pid == 0:
            try:
                _child(slot, pairs, master)
            finally:
                os._exit(1)
        pids.append(pid)
        msg = [_MESSAGE.pack(_OPEN_CHANNEL, pid, slot, pairs[slot][0])]
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", pairs[slot][0]))]
        for k in range(slot):
            socks[k].sendmsg(msg, anc)
        socks.append(socket.socket(fileno=pairs[slot][0]))

    # the master keeps both ends of every pair, as nginx's does
    signals = {signal.SIGTERM, signal.SIGQUIT, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    while signal.sigtimedwait(signals, 1.0) is None and os.getppid() == starter:
        pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for pid in pids:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    for s in socks:
        s.detach()
    os.unlink(os.path.join(prefix, "logs", PID_NAME))
    return 0


if __name__ == "__main__":
    sys.exit(main())
