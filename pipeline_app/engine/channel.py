"""Bounded channels between stages, and the output buffer bridging to the event loop.

:class:`Channel` is a ``deque`` guarded by one lock with two conditions. Threads take what is
queued in batches (one lock round-trip for up to ``max_n`` items); the event loop puts without
blocking when there is room (:meth:`Channel.try_put`) and otherwise awaits a future that a
consumer thread resolves with ``call_soon_threadsafe`` once enough room was freed (hysteresis:
half the capacity), so there is no thread hop per item and no polling.

:class:`OutputBuffer` is the last hop (final stage -> consumer). It is bounded only while a
consumer is attached (an output iteration is running); otherwise it spills. See ``pipeline.py``.

``abort()`` wakes every waiter; blocked calls then raise :class:`PipelineStopped`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Iterable

from .errors import PipelineStopped
from .item import EOS, FAIL, VALUE, Envelope
from .stage_timing import Stamps

_SAFETY_WAIT = 0.5  # condition waits are woken explicitly; the timeout is only a safety net
_clock = time.perf_counter


_NO_STAMPS: Stamps = ()


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


def _count_values(envs: Iterable[Envelope]) -> int:
    return sum(1 for e in envs if e.kind == VALUE or e.kind == 3)


class Channel:
    """Bounded multi-producer multi-consumer queue of envelopes (capacity <= 0: unbounded)."""

    def __init__(self, capacity: int, timing: bool, name: str = "") -> None:
        self.name = name
        self.capacity = capacity if capacity > 0 else 0
        self._threshold = max(1, self.capacity // 2)
        self._timing = timing
        self._dq: deque[Envelope] = deque()
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
    def get_batch(self, max_n: int, share: int = 1) -> tuple[int, list[Envelope]]:
        """Block until something is queued; take up to ``max_n`` (and about 1/``share`` of it)."""
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
            return start, batch

    # ----------------------------------------------------------------------------- producer side
    def _insert(self, chunk: list[Envelope]) -> float:
        # caller holds the lock; with timing, stamps every envelope's enqueue time and returns it
        now = 0.0
        if self._timing:
            now = time.perf_counter()
            for e in chunk:
                e.q = now
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
                    raise Stopped(_count_values(envs[i:]))
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

    def try_put(self, env: Envelope) -> bool:
        """Non-blocking put; False when full. Raises Stopped when aborted."""
        with self._lock:
            if self.aborted:
                raise Stopped(1)
            dq = self._dq
            if self.capacity and len(dq) >= self.capacity:
                return False
            if self._timing:
                env.q = _clock()
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
            removed = list(self._dq)
            self._dq.clear()
            self._dq.extend(e for e in removed if e.kind == EOS or e.kind == FAIL)
            self.cleared += 1
            self._not_full.notify_all()
            futs, self._async_putters = self._async_putters, []
        _wake_all(futs)
        return _count_values(removed)


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
        self._waiter: asyncio.Future[None] | None = None
        self.aborted = False
        self.eos_seen = 0
        self._eos_waiters: list[asyncio.Future[None]] = []

    def __len__(self) -> int:
        return len(self._dq)

    def put_many(self, envs: list[Envelope]) -> Stamps:
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
                    raise Stopped(_count_values(envs[i:]))
                if self.attached and cap:
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
                    now = time.perf_counter()
                    for e in chunk:
                        e.q = now
                    stamps.append((j, now))
                self._dq.extend(chunk)
                i = j
                w = self._waiter
                if w is not None:
                    self._waiter = None
                    _wake_all((w,))
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
                self._waiter = fut
            try:
                await fut
            finally:
                with self._lock:
                    if self._waiter is fut:
                        self._waiter = None

    async def wait_eos(self, target: int) -> None:
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                if self.eos_seen >= target or self.aborted:
                    return
                fut: asyncio.Future[None] = loop.create_future()
                self._eos_waiters.append(fut)
            await fut

    def attach(self) -> None:
        with self._lock:
            self.attached += 1

    def detach(self) -> None:
        with self._lock:
            self.attached -= 1
            if not self.attached:
                self._not_full.notify_all()

    def abort(self) -> None:
        with self._lock:
            self.aborted = True
            self._not_full.notify_all()
            futs = list(self._eos_waiters)
            self._eos_waiters = []
            if self._waiter is not None:
                futs.append(self._waiter)
                self._waiter = None
        _wake_all(futs)

    def clear(self) -> int:
        with self._lock:
            removed = list(self._dq)
            self._dq.clear()
            self._dq.extend(e for e in removed if e.kind == EOS or e.kind == FAIL)
            self._not_full.notify_all()
        return _count_values(removed)

    def drain_all(self) -> list[Envelope]:
        with self._lock:
            out = list(self._dq)
            self._dq.clear()
            return out
