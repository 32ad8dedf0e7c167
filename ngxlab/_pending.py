"""The master's per-channel write queue: ngxlab's answer to nginx's
``TODO: NGX_AGAIN`` (not a mirror: nginx has no such code).

nginx writes OPEN_CHANNEL (``ngx_pass_open_channel``) and CLOSE_CHANNEL (the
broadcast in ``ngx_reap_children``) and ignores the result, under the
comment ``TODO: NGX_AGAIN``
(https://github.com/nginx/nginx/blob/release-1.30.4/src/os/unix/ngx_process_cycle.c#L423-L426
and #L586-L589). A channel is non-blocking; when its receiver has not been
reading and the socket buffer is full, ``sendmsg()`` fails with EAGAIN and
the message is gone: that worker never learns of the new process (its mesh
stays incomplete for good), or keeps a dead peer's descriptor.

At those two places, with ``nginx_quirks`` off, ``ngxlab.process_cycle``
calls ``write()`` instead of ``ngx_write_channel``:

- One FIFO per receiving slot. A message for a slot whose queue is not empty
  goes behind the queue, so each channel still carries its messages in the
  order the master wrote them. A message that meets ``NGX_AGAIN`` is queued.
- A queued OPEN_CHANNEL keeps a ``dup()`` (close-on-exec) of the descriptor
  it announces, one per announced process however many receivers wait for it,
  so the message stays valid whatever happens to the original (the announced
  worker may be reaped, and its number reused, before the message goes out).
  Its ``fd`` field then carries the duplicate's number; the receiver replaces
  it with its own number anyway.
- ``flush()`` writes the queues in order until the first ``NGX_AGAIN``; the
  master calls it on every pass of its loop, in ``sigwaitinfo()``, before it
  sleeps and after it wakes (the terminate path of the loop ``continue``s,
  so a flush placed further down would be skipped).
- The master never blocks on a full channel. While something is queued it
  sleeps in ``sigtimedwait`` instead of ``sigwaitinfo``: the kernel wakes it
  with SIGIO, because nginx sets FIOASYNC and F_SETOWN(master) on every
  ``channel[0]``, and on Linux a unix stream socket whose ``sendmsg()``
  returned EAGAIN sends POLL_OUT (SIGIO to its owner) once its reader has
  freed room (``unix_write_space``). The timeout, ``RETRY_S``, is a safety
  net, not a poll loop; signals are answered as soon as they arrive.
- ``drop()``: a reaped slot's queue is dropped and its duplicates closed (the
  worker that would have read it is gone).
- ``queued()``: ``ngx_signal_worker_processes`` sends QUIT, TERMINATE and
  REOPEN with ``kill()`` to a slot whose queue is not empty, as nginx does
  for a channel whose write fails, instead of overtaking the queue.
- ``forget()``: a child closes the duplicates it inherited at ``fork()``.

Nothing here uses ``select()``: descriptor numbers above 1023 are fine.
"""

from __future__ import annotations

import collections
import os
import signal

from ngxlab.channel import ngx_channel_t, ngx_write_channel
from ngxlab.core import NGX_AGAIN, NGX_ERROR, NGX_LOG_ALERT, ngx_log_error, sizeof

__all__ = ["RETRY_S", "write", "flush", "queued", "drop", "forget", "reset",
           "sigwaitinfo", "depth"]

RETRY_S = 0.5           # the safety net of the master's wait while something is queued

_SIZE = sizeof(ngx_channel_t)

_queues: dict[int, collections.deque] = {}      # receiving slot -> messages
_channels: dict[int, int] = {}  # receiving slot -> its channel[0], while queued
_dups: dict[tuple[int, int, int], list[int]] = {}  # (slot, pid, fd) announced -> [dup, refs]


def write(slot, s, ch, log):
    """Write ``ch`` into ``s``, the ``channel[0]`` of slot ``slot``, behind
    anything queued for that slot; queue it on ``NGX_AGAIN``. Returns
    ``NGX_OK`` (written), ``NGX_AGAIN`` (queued) or ``NGX_ERROR`` (logged by
    ``ngx_write_channel``, nothing queued)."""
    if _queues and slot in _queues:
        _flush_slot(slot, log)
        if slot in _queues:
            return _enqueue(slot, s, ch, log)
    rc = ngx_write_channel(s, ch, _SIZE, log)
    if rc != NGX_AGAIN:
        return rc
    return _enqueue(slot, s, ch, log)


def _enqueue(slot, s, ch, log):
    fd = -1
    if ch.fd != -1:
        key = (ch.slot, ch.pid, ch.fd)
        held = _dups.get(key)
        if held is None:
            try:
                held = _dups[key] = [os.dup(ch.fd), 0]     # os.dup: close-on-exec
            except OSError as e:
                ngx_log_error(NGX_LOG_ALERT, log, e.errno or 0,
                              "dup(%d) failed, OPEN_CHANNEL s:%d pid:%d to s:%d lost",
                              ch.fd, ch.slot, ch.pid, slot)
                return NGX_ERROR
        held[1] += 1
        fd = held[0]
    msg = ngx_channel_t(ch.command, ch.pid, ch.slot, fd)
    _queues.setdefault(slot, collections.deque()).append((msg, ch.fd))
    # the slot's channel[0]: it stays while the slot's worker lives, and the
    # queue is dropped when it is reaped (drop())
    _channels[slot] = s
    return NGX_AGAIN


def _release(msg, original):
    if msg.fd == -1:
        return
    key = (msg.slot, msg.pid, original)
    held = _dups[key]
    held[1] -= 1
    if held[1] == 0:
        del _dups[key]
        os.close(held[0])


def _flush_slot(slot, log):
    q = _queues[slot]
    fd = _channels[slot]
    while q:
        msg, original = q[0]
        if ngx_write_channel(fd, msg, _SIZE, log) == NGX_AGAIN:
            return
        q.popleft()             # written, or NGX_ERROR (logged): not retried
        _release(msg, original)
    del _queues[slot], _channels[slot]


def flush(log):
    """Write what is queued, each slot in order, until its channel is full
    again. Returns how many messages are still queued."""
    for slot in list(_queues):
        _flush_slot(slot, log)
    return depth()


def queued(slot) -> bool:
    """Whether messages wait for slot ``slot``'s channel."""
    return slot in _queues


def depth(slot=None) -> int:
    """How many messages are queued (for ``slot``, or in all)."""
    if slot is not None:
        return len(_queues.get(slot, ()))
    return sum(len(q) for q in _queues.values())


def drop(slot):
    """Forget slot ``slot``'s queue (its worker was reaped) and close the
    duplicates only it held."""
    _channels.pop(slot, None)
    for msg, original in _queues.pop(slot, ()):
        _release(msg, original)


def forget():
    """In a child after ``fork()``: close the inherited duplicates and
    forget the master's queues (they are the master's, not this process's)."""
    for fd, _refs in _dups.values():
        try:
            os.close(fd)
        except OSError:
            pass
    _dups.clear()
    _queues.clear()
    _channels.clear()


def reset():
    """Drop every queue and close every duplicate (a master that stops)."""
    for slot in list(_queues):
        drop(slot)


def sigwaitinfo(sigset, log):
    """The master's sleep: ``signal.sigwaitinfo(sigset)`` when nothing is
    queued; otherwise flush, then ``sigtimedwait`` (woken by SIGIO when a
    full channel has room again, or after ``RETRY_S``), flush again, until
    a signal arrives. Returns its ``siginfo``."""
    while True:
        flush(log)
        if not _queues:
            return signal.sigwaitinfo(sigset)
        info = signal.sigtimedwait(sigset, RETRY_S)
        if info is not None:
            flush(log)
            return info
