"""Streaming reorder buffer for stages with ``workers > 1``.

Order is restored *per stage*: a stage's workers take contiguous position ranges from the stage's
input channel (positions are handed out under the channel lock, see ``Channel.get_batch``), process
them concurrently, and deposit ``(position, count, outputs)`` here. Whoever deposits while nobody
is emitting becomes the emitter and forwards every contiguous ready range downstream, in position
order; the others return to work at once (a combining lock, so a blocked downstream put never holds
up the other workers' deposits). Fan-out children stay grouped under their parent's range and
filtered items are ranges with no outputs, so the buffer never stalls on a hole.

Because every stage preserves its input order, the pipeline's output order equals its input order
without a global buffer keyed by nested fan-out indices, and the first output waits only for the
items before it (streaming, never for the whole input).

Memory is bounded: a worker that is not the emitter waits while more than ``bound`` outputs are
parked here (the range at the head is always accepted, so this cannot deadlock).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Protocol

from .channel import Stopped, count_values
from .item import EOS, FAIL, Envelope
from .stage_timing import Columns, Stamps


class Sink(Protocol):
    def put_many(self, envs: list[Envelope]) -> Stamps: ...


class Sequencer:
    def __init__(
        self,
        sink: Sink,
        bound: int,
        on_put: Callable[[Columns, Stamps], None] | None = None,
    ) -> None:
        self._sink = sink
        self._on_put = on_put
        self._bound = max(1, bound)
        self._lock = threading.Lock()
        self._progress = threading.Condition(self._lock)
        self._pending: dict[int, tuple[int, list[Envelope], Columns | None]] = {}
        self._parked = 0
        self._next = 0
        self._emitting = False
        self.aborted = False

    def __len__(self) -> int:
        return self._parked

    def deposit(
        self, pos: int, count: int, outs: list[Envelope], cols: Columns | None = None
    ) -> None:
        """Positions ``[pos, pos+count)`` are done and produced ``outs`` (in order); ``cols``
        (timing on) are their timing columns, handed to ``on_put`` once they were put."""
        with self._lock:
            if self.aborted:
                raise Stopped(0)
            self._pending[pos] = (count, outs, cols)
            self._parked += len(outs)
            if self._emitting:
                while self._parked > self._bound and not self.aborted and self._emitting:
                    self._progress.wait(0.5)
                return
            self._emitting = True
        try:
            while True:
                with self._lock:
                    ready: list[Envelope] = []
                    rcols: Columns | None = None
                    pending = self._pending
                    nxt = self._next
                    while nxt in pending:
                        k, o, c = pending.pop(nxt)
                        nxt += k
                        if ready:
                            ready.extend(o)
                        else:
                            ready = o
                        if c is not None:
                            if rcols is None:
                                rcols = ([], [], [])
                            rcols[0].extend(c[0])
                            rcols[1].extend(c[1])
                            rcols[2].extend(c[2])
                    self._next = nxt
                    self._parked -= len(ready)
                    if not ready:
                        self._emitting = False
                        self._progress.notify_all()
                        return
                    self._progress.notify_all()
                stamps = self._sink.put_many(ready)
                if rcols is not None and self._on_put is not None:
                    self._on_put(rcols, stamps)
        except BaseException:
            with self._lock:
                self._emitting = False
                self._progress.notify_all()
            raise

    def abort(self) -> None:
        with self._lock:
            self.aborted = True
            self._progress.notify_all()

    def clear(self) -> int:
        """Drop the parked outputs but keep their positions (order goes on after them) and the
        end-of-stream and fail-fast markers among them; return how many items were dropped."""
        with self._lock:
            dropped = 0
            for pos, (count, outs, cols) in list(self._pending.items()):
                kept = [e for e in outs if e.kind == EOS or e.kind == FAIL]
                dropped += count_values(outs)
                self._parked -= len(outs) - len(kept)
                self._pending[pos] = (count, kept, None if cols is None else _untimed(len(kept)))
            self._progress.notify_all()
            return dropped

    def parked_values(self) -> int:
        with self._lock:
            return count_values(e for _, outs, _c in self._pending.values() for e in outs)


def _untimed(n: int) -> Columns:
    """Timing columns of ``n`` markers (not timed outputs)."""
    return ([math.nan] * n, [math.nan] * n, [math.nan] * n)
