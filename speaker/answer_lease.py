"""The answer lease: may this node's ARP/NDP responder answer right now, and with which view?

Written by the heartbeat process (``speaker.heartbeat``, real-time priority), read by the
responder thread of the speaker process (``speaker.l2``), through 24 bytes of shared memory
(a memfd both map): ``(seq, epoch, valid_until)``.

* ``epoch`` counts the live maps the heartbeat process has handed to the speaker; it is bumped
  (and written here) *before* the new map is sent. The responder answers only with an owned
  set planned from the live map of the current epoch: a speaker whose plan is older than what
  the heartbeat process knows (it was stopped, or slow to replan) answers nothing.
* ``valid_until`` (CLOCK_MONOTONIC, shared by all processes of the host) is renewed on every
  pass of the heartbeat loop (at least every 10 ms) while that loop runs, the speaker process
  is not stopped, and the view is not being re-learnt after a stall. It lasts ``LEASE`` = half
  the liveness timeout: when everything freezes (SIGSTOP, a stalled machine) the responder
  goes silent before any peer can have declared this node dead (at the earliest
  timeout - interval after our last heartbeat), and it stays silent on waking — the requests
  queued on its socket meanwhile are dropped, not answered — until the heartbeat process has
  re-learnt who is live and the speaker has replanned.

A seqlock (``seq`` odd while writing) keeps the reader from pairing one write's epoch with
another's deadline. x86-64 and arm64 keep these aligned stores in order for a reader that
re-checks ``seq``; a torn read is retried, and after a few failed tries the answer is "no".
"""

from __future__ import annotations

import mmap
import os
import struct

_FMT = "=QQd"
SIZE = struct.calcsize(_FMT)
_TRIES = 4


class AnswerLease:
    """One shared lease. ``AnswerLease()`` creates it (memfd); ``AnswerLease(fd)`` maps one
    created by another process (the fd is duplicated; the caller keeps its own)."""

    def __init__(self, fd: int | None = None) -> None:
        if fd is None:
            self.fd = os.memfd_create("portico-answer-lease", 0)
            os.ftruncate(self.fd, SIZE)
        else:
            self.fd = os.dup(fd)
        self._map = mmap.mmap(self.fd, SIZE)
        self._seq = struct.unpack_from("=Q", self._map, 0)[0]

    def write(self, epoch: int, valid_until: float) -> None:
        """Writer side (one writer only: the heartbeat loop, under its lock)."""
        seq = self._seq + 1 if self._seq % 2 == 0 else self._seq
        struct.pack_into("=Q", self._map, 0, seq)  # odd: write in progress
        struct.pack_into("=Qd", self._map, 8, epoch, valid_until)
        self._seq = seq + 1
        struct.pack_into("=Q", self._map, 0, self._seq)

    def read(self) -> tuple[int, float] | None:
        for _ in range(_TRIES):
            s1, epoch, until = struct.unpack_from(_FMT, self._map, 0)
            if s1 % 2 == 0 and struct.unpack_from("=Q", self._map, 0)[0] == s1:
                return epoch, until
        return None

    def valid(self, epoch: int, now: float) -> bool:
        """May a responder whose owned set was planned for ``epoch`` answer at ``now``?"""
        got = self.read()
        return got is not None and got[0] == epoch and now < got[1]

    def close(self) -> None:
        self._map.close()
        os.close(self.fd)
