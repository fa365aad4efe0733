"""Output iteration: the consumer's side of the output buffer, on the event loop thread.

:meth:`OutputIteration.generate_output_stream` takes everything buffered in one batch, yields the
values in order, ends at an end-of-stream marker (leaving what follows it for the next
iteration), raises the fail-fast :class:`~.errors.StageError` when it reaches a fail marker, and
hands the part of each batch the consumer took to the :class:`~.timing.Aggregator` (end-to-end
latency and records).

Timing on: an output is delivered when the consumer takes the batch it is in from the output
buffer (the clock is read once per batch, right before its first output is yielded), so the
end-to-end latency runs from the item's creation to that moment; the time the consumer then
spends on the outputs before it in the batch is the consumer's, not the pipeline's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator

from .channel import count_values
from .core import CONSUMING, T, U
from .item import EOS, ERROR, FAIL, HOLE, SENTINEL, VALUE, Envelope
from .shutdown import Shutdown


class OutputIteration(Shutdown[T, U]):
    """The consuming side of :class:`~.pipeline.AsyncTaskPipeline`."""

    async def generate_output_stream(self) -> AsyncGenerator[T | U, None]:
        """Yield outputs in input order until the input is closed and all came out (or stop)."""
        out = self._out
        if out is None:
            raise RuntimeError("Pipeline is not running")
        agg = self._agg
        pc = time.perf_counter
        consumer = asyncio.current_task()
        out.attach()
        if consumer is not None:
            self._consumers.add(consumer)
        try:
            while not self._halted:
                batch = await out.get_batch()
                if not batch:
                    break
                if self._abandoned_streams:
                    batch = self._skip_abandoned(batch)
                    if not batch:
                        continue
                taken = pc() if agg is not None else 0.0
                n = len(batch)
                end = n  # how much of the batch the consumer took
                others = 0  # envelopes among those that are not delivered outputs
                # while the consumer's loop body runs (between yields), also in the tasks it
                # starts (asyncio.wait_for runs its awaitable in one on Python 3.11)
                CONSUMING.set(self)
                try:
                    for idx in range(n):
                        env = batch[idx]
                        k = env.kind
                        if k in (VALUE, ERROR):
                            if self.halted:
                                end = idx
                                break
                            self._delivered += 1
                            yield env.data
                        elif k == SENTINEL:
                            if self.halted:
                                end = idx
                                break
                            others += 1
                            yield env.data
                        elif k == HOLE:  # a filtered/failed item carrying its record
                            others += 1
                        elif k == FAIL:  # fail fast, in input order: everything before came out
                            end = idx + 1
                            others += 1
                            with self._lock:
                                if self._fatal is None:
                                    self._fatal = env.data
                            self._abort_all()
                            break
                        else:  # EOS
                            end = idx
                            out.unget(batch[idx + 1 :])  # for the next iteration
                            self._t_last_out = pc()
                            out.note_delivered_eos()
                            return
                except BaseException:
                    end = idx + 1  # thrown in at a yield: that output was taken
                    out.unget(batch[end:])  # the rest stays for the next iteration
                    raise
                finally:
                    CONSUMING.set(None)
                    if agg is not None:
                        agg.process(batch[:end], taken, others)
                self._t_last_out = pc()
        finally:
            out.detach()
            self._consumers.discard(consumer)  # type: ignore[arg-type]
        fatal = self._fatal
        if fatal is not None:
            await self.stop()
            raise fatal

    def _skip_abandoned(self, batch: list[Envelope]) -> list[Envelope]:
        """Drop the outputs of streams whose ``run()`` consumer left early, up to and including
        each one's end-of-stream marker (counted as discarded); return what follows."""
        while self._abandoned_streams:
            eos = next((i for i, env in enumerate(batch) if env.kind == EOS), None)
            dropped = batch if eos is None else batch[: eos + 1]
            with self._lock:
                self._discarded += count_values(dropped)
            if eos is None:
                return []
            self._abandoned_streams -= 1
            if self._out is not None:  # consumed: a drain waiting for it must not wait forever
                self._out.note_delivered_eos()
            batch = batch[eos + 1 :]
        return batch
