"""Output iteration: the consumer's side of the output buffer, on the event loop thread.

:meth:`OutputIteration.generate_output_stream` takes everything buffered in one batch, yields the
values in order, ends at an end-of-stream marker (leaving what follows it for the next
iteration), raises the fail-fast :class:`~.errors.StageError` when it reaches a fail marker, and
hands each batch's timed envelopes to the :class:`~.timing.Aggregator` (end-to-end latency and
records) right after the consumer took them.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from .core import T, U
from .item import ERROR, FAIL, HOLE, SENTINEL, VALUE, Envelope
from .shutdown import Shutdown


class OutputIteration(Shutdown[T, U]):
    """The consuming side of :class:`~.pipeline.AsyncTaskPipeline`."""

    async def generate_output_stream(self) -> AsyncIterator[T | U]:
        """Yield outputs in input order until the input is closed and all came out (or stop)."""
        out = self._out
        if out is None:
            raise RuntimeError("Pipeline is not running")
        agg = self._agg
        pc = time.perf_counter
        tenv: list[Envelope] = []
        tdel: list[float] = []
        out.attach()
        try:
            while not self._halted:
                if self._leftover:
                    batch, self._leftover = self._leftover, []
                else:
                    batch = await out.get_batch()
                    if not batch:
                        break
                n = len(batch)
                for idx in range(n):
                    env = batch[idx]
                    k = env.kind
                    if k in (VALUE, ERROR):
                        if self.halted:
                            break
                        self._delivered += 1
                        if agg is not None:
                            tenv.append(env)
                            tdel.append(pc())
                        yield env.data
                    elif k == SENTINEL:
                        if self.halted:
                            break
                        yield env.data
                    elif k == HOLE:
                        if agg is not None:
                            tenv.append(env)
                            tdel.append(0.0)
                    elif k == FAIL:  # fail fast, in input order: everything before came out
                        if agg is not None and env.info is not None:
                            tenv.append(env)
                            tdel.append(0.0)
                        with self._lock:
                            if self._fatal is None:
                                self._fatal = env.data
                        self._abort_all()
                        break
                    else:  # EOS
                        if idx + 1 < n:
                            self._leftover = batch[idx + 1 :] + self._leftover
                        self._t_last_out = pc()
                        return
                self._t_last_out = pc()
                if tenv:
                    assert agg is not None
                    agg.process(tenv, tdel)
                    tenv = []
                    tdel = []
        finally:
            out.detach()
            if tenv and agg is not None:
                agg.process(tenv, tdel)
        fatal = self._fatal
        if fatal is not None:
            await self.stop()
            raise fatal
