"""Bounded channels between stages (the last hop, to the consumer, is ``output_buffer.py``).

:class:`Channel` is a ``deque`` guarded by one lock with two conditions. Threads take what is
queued in batches (one lock round-trip for up to ``max_n`` items); the event loop puts without
blocking when there is room (:meth:`Channel.try_put`) and otherwise awaits a future that a
consumer thread resolves with ``call_soon_threadsafe`` once enough room was freed (hysteresis:
half the capacity), so there is no thread hop per item and no polling.

``abort()`` wakes every waiter; blocked calls then raise :class:`PipelineStopped`.

Timing on: a channel reads the clock once per insert, under its lock, at the moment the items
become visible to the consumers, and keeps that enqueue stamp per queued item in a list parallel
to the queue (filled and taken with C-level list operations, no per-envelope writes);
:meth:`Channel.get_batch` hands a batch's stamps out with it. An item the event loop puts at once
(:meth:`Channel.try_put` with ``enqueued_at``) is stamped with its creation stamp, read just before
the put, saving a second clock read; a channel's stamps never decrease along its queue (a given
stamp not later than the channel's latest clock reading -- another thread put meanwhile -- is
replaced by a fresh reading).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import Iterable
from itertools import repeat

from .errors import PipelineStopped
from .item import EOS, ERROR, FAIL, VALUE, Envelope
from .stage_timing import Stamps

_SAFETY_WAIT = 0.5  # condition waits are woken explicitly; the timeout is only a safety net
_COMPACT_AT = 1024  # taken enqueue stamps dropped from the front of the list in slices this big
_clock = time.perf_counter


_NO_STAMPS: Stamps = ()
_NO_ENQUEUED: list[float] = []  # what get_batch returns for the stamps with timing off


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _wake_all(futs: Iterable[asyncio.Future[None]]) -> None:
    for fut in futs:
        with contextlib.suppress(RuntimeError):  # loop closed
            fut.get_loop().call_soon_threadsafe(_wake, fut)


class Stopped(PipelineStopped):
    """A blocked put was aborted; ``remaining`` envelopes were not delivered."""

    def __init__(self, remaining: int = 0) -> None:
        super().__init__(remaining)
        self.remaining = remaining


def count_values(envs: Iterable[Envelope]) -> int:
    """How many of ``envs`` are items (values, or exceptions returned in their place)."""
    return sum(1 for e in envs if e.kind == VALUE or e.kind == ERROR)


def keep_markers_only(queue: deque[Envelope]) -> int:
    """Empty ``queue`` except for end-of-stream and fail-fast markers (what ``clear()`` keeps);
    return how many items it discarded."""
    removed = list(queue)
    queue.clear()
    queue.extend(e for e in removed if e.kind == EOS or e.kind == FAIL)
    return count_values(removed)


class Channel:
    """Bounded multi-producer multi-consumer queue of envelopes (capacity <= 0: unbounded)."""

    def __init__(self, capacity: int, timing: bool, name: str = "") -> None:
        self.name = name
        self.capacity = capacity if capacity > 0 else 0
        self._threshold = max(1, self.capacity // 2)
        self._timing = timing
        self._dq: deque[Envelope] = deque()
        # timing on: the enqueue stamp of every queued item, from index _head on (taken ones are
        # dropped from the front in slices, see get_batch); _last: the latest clock reading
        self._enqueued: list[float] = []
        self._head = 0
        self._last = -math.inf
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        self._getters = 0
        self._putters = 0
        self._async_putters: list[asyncio.Future[None]] = []
        self.aborted = False
        self.taken = 0  # positions handed out so far (for per-stage sequencing)
        self.cleared = 0  # clear() generation: workers drop batch items taken before a clear

    def __len__(self) -> int:
        return len(self._dq)

    # ----------------------------------------------------------------------------- consumer side
    def get_batch(self, max_n: int, share: int = 1) -> tuple[int, list[Envelope], list[float]]:
        """Block until something is queued; take up to ``max_n`` (and about 1/``share`` of it).

        Returns the position of the first item taken, the items and, with timing, their enqueue
        stamps (``[]`` otherwise)."""
        with self._lock:
            dq = self._dq
            while not dq:
                if self.aborted:
                    raise Stopped()
                self._getters += 1
                self._not_empty.wait(_SAFETY_WAIT)
                self._getters -= 1
            if self.aborted:
                raise Stopped()
            n = len(dq)
            take = n if n < max_n else max_n
            if share > 1 and take > 1:
                take = min(take, -(-n // share))
            if take == n:
                batch = list(dq)
                dq.clear()
            else:
                pop = dq.popleft
                batch = [pop() for _ in range(take)]
            enqueued = self._take_stamps(take, take == n) if self._timing else _NO_ENQUEUED
            start = self.taken
            self.taken = start + take
            if self._putters or self._async_putters:
                free = self.capacity - len(dq) if self.capacity else self._threshold
                if free >= self._threshold:
                    if self._putters:
                        self._not_full.notify_all()
                    if self._async_putters:
                        futs, self._async_putters = self._async_putters, []
                        _wake_all(futs)
            elif self._getters and dq:
                self._not_empty.notify()
            return start, batch, enqueued

    def _take_stamps(self, take: int, everything: bool) -> list[float]:
        # caller holds the lock: the enqueue stamps of the ``take`` items just taken
        head = self._head
        if everything:
            stamps = self._enqueued
            self._enqueued = []
            self._head = 0
            return stamps[head:] if head else stamps
        end = head + take
        stamps = self._enqueued[head:end]
        if end >= _COMPACT_AT and 2 * end >= len(self._enqueued):  # amortised O(1) per item
            del self._enqueued[:end]
            end = 0
        self._head = end
        return stamps

    # ----------------------------------------------------------------------------- producer side
    def _insert(self, chunk: list[Envelope]) -> float:
        # caller holds the lock; with timing, returns the chunk's enqueue stamp
        now = 0.0
        if self._timing:
            now = self._last = _clock()
            if len(chunk) == 1:
                self._enqueued.append(now)
            else:
                self._enqueued.extend(repeat(now, len(chunk)))
        self._dq.extend(chunk)
        if self._getters:
            if len(chunk) == 1:
                self._not_empty.notify()
            else:
                self._not_empty.notify(min(len(chunk), self._getters))
        return now

    def put_many(self, envs: list[Envelope]) -> Stamps:
        """Blocking put of a list (split when it does not fit); raises Stopped on abort.

        With timing, returns ``(end index, enqueue stamp)`` per inserted chunk."""
        n = len(envs)
        i = 0
        cap = self.capacity
        stamps: list[tuple[int, float]] = []
        with self._lock:
            while i < n:
                if self.aborted:
                    raise Stopped(count_values(envs[i:]))
                free = (cap - len(self._dq)) if cap else n - i
                if free <= 0:
                    self._putters += 1
                    self._not_full.wait(_SAFETY_WAIT)
                    self._putters -= 1
                    continue
                if i == 0 and free >= n:
                    now = self._insert(envs)
                    return [(n, now)] if self._timing else _NO_STAMPS
                j = min(n, i + free)
                stamps.append((j, self._insert(envs[i:j])))
                i = j
        return stamps

    def try_put(self, env: Envelope, enqueued_at: float = -math.inf) -> bool:
        """Non-blocking put; False when full. Raises Stopped when aborted.

        With timing, ``enqueued_at`` (a stamp read just before the call) is used as the enqueue
        stamp instead of reading the clock again, unless it is not later than the latest stamp
        read here (the default: always read the clock)."""
        with self._lock:
            if self.aborted:
                raise Stopped(1)
            dq = self._dq
            if self.capacity and len(dq) >= self.capacity:
                return False
            if self._timing:
                if enqueued_at <= self._last:
                    # another thread put meanwhile: keep the stamps in order along the queue
                    enqueued_at = self._last = _clock()
                self._enqueued.append(enqueued_at)
            dq.append(env)
            if self._getters:
                self._not_empty.notify()
            return True

    def force_put(self, env: Envelope) -> None:
        """Put ignoring the bound (markers, and puts from the event loop thread)."""
        with self._lock:
            if self.aborted:
                raise Stopped(1)
            self._insert([env])

    async def aput(self, env: Envelope) -> None:
        """Put from the event loop: no thread hop; awaits a wake-up future only when full."""
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                if self.aborted:
                    raise Stopped(1)
                if not self.capacity or len(self._dq) < self.capacity:
                    self._insert([env])
                    return
                fut: asyncio.Future[None] = loop.create_future()
                self._async_putters.append(fut)
            try:
                await fut
            except BaseException:
                with self._lock:
                    if fut in self._async_putters:
                        self._async_putters.remove(fut)
                raise

    # ----------------------------------------------------------------------------- control
    def abort(self) -> None:
        with self._lock:
            self.aborted = True
            self._not_empty.notify_all()
            self._not_full.notify_all()
            futs, self._async_putters = self._async_putters, []
        _wake_all(futs)

    def clear(self) -> int:
        """Remove everything queued except end-of-stream/fail markers; return items discarded."""
        with self._lock:
            discarded = keep_markers_only(self._dq)
            if self._timing:  # the markers kept are not timed
                self._enqueued = [math.nan] * len(self._dq)
                self._head = 0
            self.cleared += 1
            self._not_full.notify_all()
            futs, self._async_putters = self._async_putters, []
        _wake_all(futs)
        return discarded
