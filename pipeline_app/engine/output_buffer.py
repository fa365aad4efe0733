"""The output buffer: the last hop (final stage -> consumer), bridging to the event loop.

It is bounded only while a consumer is attached (an output iteration is running); otherwise it
spills, and so it does while that consumer itself awaits a drain (see ``shutdown.py``). See
``pipeline.py``. ``abort()`` wakes every waiter, as in ``channel.py``.

Timing on: it returns its enqueue stamps to the putting stage and writes ``q`` only on envelopes
that carry a per-item record (``stamp_each``), where the record builder reads it; no other
envelope has ``q`` set.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque

from .channel import _SAFETY_WAIT, Stopped, _wake_all, count_values, keep_markers_only
from .item import EOS, Envelope
from .stage_timing import Stamps

_clock = time.perf_counter


class OutputBuffer:
    """Final stage -> consumer. Bounded while a consumer is attached, spilling otherwise."""

    def __init__(self, capacity: int, timing: bool) -> None:
        self.capacity = capacity if capacity > 0 else 0
        self._timing = timing
        self._dq: deque[Envelope] = deque()
        self._lock = threading.Lock()
        self._not_full = threading.Condition(self._lock)
        self._putters = 0
        self.attached = 0
        self._getters: list[asyncio.Future[None]] = []  # consumers waiting for outputs
        self.aborted = False
        self.eos_seen = 0
        self._eos_waiters: list[asyncio.Future[None]] = []
        self.eos_delivered = 0  # end-of-stream markers a consumer's iteration reached
        self.spilling = 0  # drains keeping it unbounded although a consumer is attached

    def __len__(self) -> int:
        return len(self._dq)

    def put_many(self, envs: list[Envelope], stamp_each: bool = True) -> Stamps:
        """Blocking put (while a consumer is attached and it is full); raises Stopped on abort.

        With timing, returns ``(end index, enqueue stamp)`` per inserted chunk and, if
        ``stamp_each``, also writes the stamp on each envelope (``q``, for per-item records)."""
        n = len(envs)
        i = 0
        cap = self.capacity
        eos = 0
        timing = self._timing
        stamps: list[tuple[int, float]] = []
        for e in envs:
            if e.kind == EOS:
                eos += 1
        with self._lock:
            while i < n:
                if self.aborted:
                    raise Stopped(count_values(envs[i:]))
                if self.attached and cap and not self.spilling:
                    free = cap - len(self._dq)
                    if free <= 0:
                        self._putters += 1
                        self._not_full.wait(_SAFETY_WAIT)
                        self._putters -= 1
                        continue
                else:
                    free = n - i
                j = min(n, i + free)
                chunk = envs if (i == 0 and j == n) else envs[i:j]
                if timing:
                    now = _clock()
                    if stamp_each:
                        for e in chunk:
                            e.q = now
                    stamps.append((j, now))
                self._dq.extend(chunk)
                i = j
                if self._getters:
                    getters, self._getters = self._getters, []
                    _wake_all(getters)
            if eos:
                self.eos_seen += eos
                if self._eos_waiters:
                    futs, self._eos_waiters = self._eos_waiters, []
                    _wake_all(futs)
        return stamps

    async def get_batch(self) -> list[Envelope]:
        """Everything buffered (waits while empty); [] once aborted and empty."""
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                if self._dq:
                    batch = list(self._dq)
                    self._dq.clear()
                    if self._putters:
                        self._not_full.notify_all()
                    return batch
                if self.aborted:
                    return []
                fut: asyncio.Future[None] = loop.create_future()
                self._getters.append(fut)
            try:
                await fut
            finally:
                with self._lock:
                    if fut in self._getters:
                        self._getters.remove(fut)

    def unget(self, envs: list[Envelope]) -> None:
        """Put back, at the front, what a consumer took and did not consume (it broke out of
        its loop, or its iteration ended at an end-of-stream marker): the next batch starts
        with it, whoever takes it."""
        if not envs:
            return
        with self._lock:
            self._dq.extendleft(reversed(envs))
            getters, self._getters = self._getters, []
        _wake_all(getters)

    async def wait_eos(self, target: int) -> None:
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                if self.eos_seen >= target or self.aborted:
                    return
                fut: asyncio.Future[None] = loop.create_future()
                self._eos_waiters.append(fut)
            await fut

    async def wait_delivered(self, target: int) -> None:
        """Until a consumer's iteration has reached end-of-stream marker ``target`` (it took
        every output before it), or nobody consumes any more and the marker is buffered."""
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                if self.eos_delivered >= target or self.aborted:
                    return
                if not self.attached and self.eos_seen >= target:
                    return
                fut: asyncio.Future[None] = loop.create_future()
                self._eos_waiters.append(fut)
            await fut

    def note_delivered_eos(self) -> None:
        """A consumer's iteration reached an end-of-stream marker."""
        with self._lock:
            self.eos_delivered += 1
            futs, self._eos_waiters = self._eos_waiters, []
        _wake_all(futs)

    def spill(self, on: bool) -> None:
        """Take outputs without bound even while a consumer is attached, from ``spill(True)``
        until the matching ``spill(False)`` (concurrent drains each hold it)."""
        with self._lock:
            self.spilling += 1 if on else -1
            self._not_full.notify_all()

    def attach(self) -> None:
        with self._lock:
            self.attached += 1

    def detach(self) -> None:
        with self._lock:
            self.attached -= 1
            if not self.attached:
                self._not_full.notify_all()
                futs, self._eos_waiters = self._eos_waiters, []
            else:
                futs = []
        _wake_all(futs)

    def abort(self) -> None:
        with self._lock:
            self.aborted = True
            self._not_full.notify_all()
            futs = self._eos_waiters + self._getters
            self._eos_waiters = []
            self._getters = []
        _wake_all(futs)

    def clear(self) -> int:
        with self._lock:
            discarded = keep_markers_only(self._dq)
            self._not_full.notify_all()
        return discarded

    def drain_all(self) -> list[Envelope]:
        with self._lock:
            out = list(self._dq)
            self._dq.clear()
            return out
