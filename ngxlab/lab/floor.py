"""The Python floor of a start-up and a reload: only what nginx does for the mesh.

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
  worker's initialisation ends), then, at each wake, reads with
  ``recvmsg`` until it finds nothing (EAGAIN), as nginx's channel handler
  does, and keeps the descriptors the OPEN_CHANNEL messages carry.

No logging, no configuration, no event loop beyond that one epoll wait, no
non-blocking flags, no process titles: what is left is the interpreter's
own start-up and the system calls of the mesh. :mod:`ngxlab.lab.timing`
times it beside ``ngxlab run`` and nginx, to the same end condition, in the
same interleaved runs: ngxlab / floor is what ngxlab adds to Python, floor /
nginx what Python adds to C. Its runner, with the vocabulary of
``MasterProcess`` and ``Nginx``, is :class:`ngxlab.lab.run.FloorProcess`.

A reload, the floor of :mod:`ngxlab.lab.scale`'s: on SIGHUP the master
does what nginx's reload does to the mesh, and nothing else. It spawns N
new children as at start-up (socketpair, fork, OPEN_CHANNEL to every live
child, old and new), each closing the other slots' ``channel[1]`` and its
own ``channel[0]``; sleeps nginx's 100 ms "to allow new processes to
start"; sends a QUIT message (32 bytes) to every old child, which exits on
it. When a child exits (SIGCHLD, ``waitpid``) the master closes both of its
ends of that child's pair, frees the slot and sends CLOSE_CHANNEL (with the
slot) to every child still live, which closes its copy of that slot's
``channel[0]``, as ``ngx_reap_children`` does. A freed slot is reused by
the next spawn (the first free one, as ``ngx_spawn_process`` picks), so a
second reload takes the first generation's slots again.

The channels are non-blocking at both ends, as ``ngx_spawn_process``
makes nginx's, and the master writes as ``ngx_write_channel`` does: a
message that finds its channel's buffer full (EAGAIN) is not sent. With
hundreds of children that happens: a child that has exited but is not
yet reaped reads nothing, the master still holds both ends of its pair,
and every CLOSE_CHANNEL of a reload or a QUIT is written to it; a few
hundred 32-byte messages fill a buffer of Linux's default size. (An
earlier floor wrote with blocking sockets and hung there for good, in
``sendto``, in QUITs of 400 children.) A QUIT that cannot be written
becomes a signal (SIGTERM), as ``ngx_signal_worker_processes`` falls
back to ``kill()``.

A child reads at each wake until ``recvmsg`` finds nothing (EAGAIN),
at start-up as afterwards: nginx's channel handler
drains its channel that way, so each wake costs nginx one ``recvmsg`` that
finds nothing, and it costs the floor the same. (An earlier floor had its
children read their start-up OPEN_CHANNELs one per wake, knowing
how many would come: one ``recvmsg`` per message fewer than nginx makes,
which put that call, and the exception Python raises for EAGAIN, on
ngxlab's side of ngxlab / floor instead of on Python's.)

SIGQUIT is a graceful stop as nginx's: a QUIT message to every child, the
same reaping (CLOSE_CHANNEL to the children still live), and the master
exits once the last child is reaped. SIGTERM or SIGINT, or the master no
longer being the child of ``--parent PID`` (by default the process that
started it; checked once a second), stop the children with SIGTERM; a
child exits when its master is gone.

This file imports only what the floor needs before its first fork (``os``,
``socket``, ``struct``, ``select``, ``signal``, ``sys``); a reload imports
``time``.

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
# the commands' values are ngxlab.channel's (nginx's), not imported: the floor
# imports nothing of the mirrors
_OPEN_CHANNEL = 1
_CLOSE_CHANNEL = 2
_QUIT = 3
# what the master waits for: a signal to stop, a reload, a child's exit
_STOP = {signal.SIGTERM, signal.SIGINT}
_SIGNALS = {*_STOP, signal.SIGQUIT, signal.SIGHUP, signal.SIGCHLD}


def _child(slot, table, parent, unblock):
    """A worker of the floor: close what is not its own (the other slots'
    ``channel[1]``, its own ``channel[0]``), wait on its channel, keep the
    descriptor each OPEN_CHANNEL brings, close a slot's on CLOSE_CHANNEL,
    exit on QUIT (or when the master is gone).

    ``table``: the master's slots when it forked, ``(pid, channel[0],
    channel[1])`` or None. Each wake reads until ``recvmsg`` says EAGAIN,
    as nginx's (and ngxlab's) channel handler does. ``unblock``: the
    signals the master had blocked when it forked (a reload's children)."""
    peers = {}                          # slot: the channel[0] this worker holds
    for k, entry in enumerate(table):
        if entry is not None and k != slot:
            os.close(entry[2])
            peers[k] = entry[1]
    own = table[slot][2]
    os.close(table[slot][1])
    if unblock:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, unblock)
    ep = select.epoll()
    ep.register(own, select.EPOLLIN)
    sock = socket.socket(fileno=own)    # non-blocking: made so by socketpair()
    space = socket.CMSG_SPACE(4)
    size = _MESSAGE.size
    while True:
        if not ep.poll(1.0):
            if os.getppid() != parent:
                os._exit(0)
            continue
        while True:
            try:
                data, anc, _, _ = sock.recvmsg(size, space)
            except BlockingIOError:
                break
            if not data:
                os._exit(0)
            command, _, peer, _ = _MESSAGE.unpack(data)
            if command == _OPEN_CHANNEL:
                for _, _, cdata in anc:
                    peers[peer] = int.from_bytes(cdata[:4], sys.byteorder, signed=True)
            elif command == _CLOSE_CHANNEL:
                fd = peers.pop(peer, None)
                if fd is not None:
                    os.close(fd)
            elif command == _QUIT:
                os._exit(0)


def _write(sendmsg, *args):
    """One message on a channel, as ``ngx_write_channel`` writes it: a
    channel whose buffer is full (EAGAIN: a child that does not read, or
    one that has exited and is not yet reaped, whose end the master still
    holds) does not get it. Returns whether it was written."""
    try:
        sendmsg(*args)
    except BlockingIOError:
        return False
    return True


class _Master:
    """The floor's master: its slots, and what it does to them."""

    def __init__(self, n, pid):
        self.n = n
        self.pid = pid
        self.table = []                 # slot: (pid, channel[0], channel[1]) or None
        self.socks = []                 # slot: the socket of channel[0], or None
        self.quitting = set()           # the slots sent a QUIT
        self.blocked = ()               # the signals blocked once the mesh is built

    def spawn(self):
        """One child in the first free slot (a freed slot is reused, as
        ``ngx_spawn_process`` does, else the table grows): socketpair, fork,
        then OPEN_CHANNEL (its ``channel[0]`` as ``SCM_RIGHTS``) to every
        other live child, as ``ngx_pass_open_channel`` does."""
        table, socks = self.table, self.socks
        try:
            slot = table.index(None)
        except ValueError:
            slot = len(table)
            table.append(None)
            socks.append(None)
        # both ends non-blocking, as ngx_spawn_process makes them
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        ch0, ch1 = a.detach(), b.detach()
        table[slot] = (0, ch0, ch1)
        pid = os.fork()
        if pid == 0:
            try:
                _child(slot, table, self.pid, self.blocked)
            finally:
                os._exit(1)
        table[slot] = (pid, ch0, ch1)
        msg = [_MESSAGE.pack(_OPEN_CHANNEL, pid, slot, ch0)]
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", ch0))]
        for s in socks:
            if s is not None:
                _write(s.sendmsg, msg, anc)
        socks[slot] = socket.socket(fileno=ch0)

    def quit(self, slots=None):
        """QUIT to the children of ``slots`` (by default every live one) not
        yet told, in slot order, as ``ngx_signal_worker_processes`` goes;
        where the message cannot be written it signals the child instead,
        as nginx does (SIGTERM: a floor child has no SIGQUIT handler)."""
        if slots is None:
            slots = {k for k, s in enumerate(self.socks) if s is not None}
        msg = [_MESSAGE.pack(_QUIT, 0, 0, -1)]
        for k in sorted(slots - self.quitting):
            if not _write(self.socks[k].sendmsg, msg):
                try:
                    os.kill(self.table[k][0], signal.SIGTERM)
                except ProcessLookupError:
                    pass
            self.quitting.add(k)

    def reload(self):
        """What a reload does to the mesh: N new children, nginx's 100 ms
        for them to start, then QUIT to the old ones."""
        import time
        old = {k for k, s in enumerate(self.socks) if s is not None}
        for _ in range(self.n):
            self.spawn()
        time.sleep(0.1)
        self.quit(old)

    def reap(self):
        """Every exited child: close the master's ends of its pair, free its
        slot, then CLOSE_CHANNEL (its slot) to every child still live, as
        ``ngx_reap_children`` does. Returns whether a child is left."""
        gone = []
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            gone.append(pid)
        slots = {entry[0]: k for k, entry in enumerate(self.table) if entry is not None}
        freed = []
        for pid in gone:
            k = slots.get(pid)
            if k is None:
                continue
            ch1 = self.table[k][2]
            self.socks[k].close()       # channel[0]
            os.close(ch1)
            self.table[k] = self.socks[k] = None
            self.quitting.discard(k)
            freed.append((pid, k))
        for pid, k in freed:
            msg = [_MESSAGE.pack(_CLOSE_CHANNEL, pid, k, -1)]
            for s in self.socks:
                if s is not None:
                    _write(s.sendmsg, msg)
        return any(s is not None for s in self.socks)

    def terminate(self):
        """SIGTERM to every child, and wait for each."""
        pids = [entry[0] for entry in self.table if entry is not None]
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
        for s in self.socks:
            if s is not None:
                s.detach()


def main(argv=None):
    """The floor's master: ``--workers N --prefix DIR [--parent PID]``. Writes
    ``DIR/logs/floor.pid``, builds the mesh, then waits for signals: SIGHUP
    reloads (see the module's docstring), SIGQUIT quits gracefully (QUIT
    to every child, reaps them all), SIGTERM and SIGINT (or its parent's
    exit) stop the children with SIGTERM. Returns 0."""
    argv = sys.argv[1:] if argv is None else argv
    args = dict(zip(argv[::2], argv[1::2]))
    n = int(args["--workers"])
    prefix = args["--prefix"]
    starter = int(args.get("--parent", os.getppid()))
    master = _Master(n, os.getpid())
    with open(os.path.join(prefix, "logs", PID_NAME), "w") as f:
        f.write(f"{master.pid}\n")

    for _ in range(n):
        master.spawn()

    # the master keeps both ends of every pair, as nginx's does
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    master.blocked = _SIGNALS
    quitting = False
    while True:
        info = signal.sigtimedwait(_SIGNALS, 1.0)
        if info is None:
            if os.getppid() != starter:
                break
            continue
        signo = info.si_signo
        if signo in _STOP:
            break
        if signo == signal.SIGCHLD:
            if not master.reap() and quitting:
                break
        elif signo == signal.SIGQUIT:
            quitting = True
            master.quit()
            if not master.reap():
                break
        elif signo == signal.SIGHUP and not quitting:
            master.reload()
    master.terminate()
    os.unlink(os.path.join(prefix, "logs", PID_NAME))
    return 0


if __name__ == "__main__":
    sys.exit(main())
