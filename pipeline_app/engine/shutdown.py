"""Stop, drain, interrupt and clear (see "Stop" in ``pipeline.py``).

``stop()`` aborts every channel (waking every blocked thread and future), joins the stage threads
in a helper thread -- never on the event loop -- up to ``stop_timeout``, terminates busy process
workers and returns how many items it discarded. It is idempotent: a concurrent or later call
awaits the first one, which runs in a task of its own (cancelling a caller does not cut it
short). ``stop(drain=True)`` first lets what was fed come out, to the consumer when one is
iterating the output.
"""

from __future__ import annotations

import asyncio
import logging
import time

from .core import CONSUMING, PipelineCore, T, U

logger = logging.getLogger("pipeline_app.engine.pipeline")


class Shutdown(PipelineCore[T, U]):
    """stop / drain / interrupt / clear of :class:`~.pipeline.AsyncTaskPipeline`."""

    def _join_all(self, deadline: float) -> list[str]:
        for stage in self.stages:
            stage.join(deadline)
        return [t.name for s in self.stages for t in s.alive_threads()]

    async def stop(self, drain: bool = False, join_timeout: float | None = None) -> int:
        """Stop every stage; return the number of items discarded. Idempotent, prompt.

        The stopping runs in a task of its own: a caller cancelled meanwhile does not leave it
        half done, and a later call awaits it (and returns 0, as every call after the first)."""
        if drain and self.running and not self._halted:
            await self.drain()
        if self._stop_future is not None:
            await asyncio.shield(self._stop_future)
            return 0
        if not self.running:
            return 0
        task = asyncio.get_running_loop().create_task(self._stop_now(join_timeout))
        self._stop_future = task
        return await asyncio.shield(task)

    async def _stop_now(self, join_timeout: float | None) -> int:
        try:
            self._abort_all()
            wait = self.stop_timeout if join_timeout is None else join_timeout
            deadline = time.monotonic() + wait
            alive = await asyncio.to_thread(self._join_all, deadline)
            if alive:
                logger.warning("stop: threads still inside a stage function: %s", alive)
        finally:
            self.running = False
        discarded = self._in_flight()
        self._discarded += discarded
        if self._out is not None:
            self._out.drain_all()
        for stage in self.stages:
            n = int(stage.counters()["errors"])
            if n:
                logger.warning("stage %r: %d item(s) failed", stage.name, n)
        if discarded:
            logger.info("pipeline stopped, %d item(s) discarded", discarded)
        return discarded

    async def drain(self) -> None:
        """Close the input and wait until everything fed so far has come out: taken by the
        consumer if one is iterating the output, else into the output buffer.

        Awaited by the consumer itself (inside its ``async for``), it cannot wait for its own
        iteration: the output buffer then takes outputs without bound until the end-of-stream
        marker is in, and the consumer finds them when it goes on."""
        out = self._out
        if not self.running or out is None or self._halted:
            return
        if not self._input_closed or out.eos_delivered >= self._eos_sent:
            # (every end marker sent was consumed already: the next reader needs a new one)
            self.close_input()
        if asyncio.current_task() in self._consumers or CONSUMING.get() is self:
            out.spill(True)
            try:
                await out.wait_eos(self._eos_sent)
            finally:
                out.spill(False)
        else:
            await out.wait_delivered(self._eos_sent)

    async def interrupt(self) -> int:
        """Discard everything queued if running (seed); returns the number discarded."""
        if not self.running:
            return 0
        return self.clear()

    def clear(self) -> int:
        """Empty every queue and the kept records, reset ``counter``; return items discarded."""
        n = sum(ch.clear() for ch in self._channels)
        n += sum(stage.clear_reorder_buffer() for stage in self.stages)
        if self._out is not None:
            n += self._out.clear()
        with self._lock:
            self._discarded += n
            self._counter_base = self._next_seq - self._failed_puts
            self._record_until = self._record_horizon(self._next_seq)
        if self._agg is not None:
            self._agg.clear_records()
        return n

    def clear_input_queue(self) -> int:
        n = self._channels[0].clear() if self._channels else 0
        with self._lock:
            self._discarded += n
        return n

    def clear_output_queue(self) -> int:
        n = self._out.clear() if self._out is not None else 0
        with self._lock:
            self._discarded += n
        return n
