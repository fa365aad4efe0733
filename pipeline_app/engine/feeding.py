"""Input feeding (see "End of stream" and "No deadlock ..." in ``pipeline.py``).

The event loop puts without a thread hop while the input channel has room and otherwise awaits a
future that a stage thread resolves once room was freed; other threads block in
:meth:`~InputFeeding.put_input_data` (never the event loop thread, which may be the consumer).

Timing on: an item gets its creation stamp (``created_at``) when its envelope is made; when the
event loop then puts it at once, that stamp doubles as its enqueue stamp in the input channel
(read a moment before the put; see ``channel.py``), so feeding costs one clock read per item.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterable, Iterable
from typing import Any

from .channel import Channel, Stopped
from .core import PipelineCore, T, U
from .item import SENTINEL, VALUE, Envelope

_clock = time.perf_counter


class InputFeeding(PipelineCore[T, U]):
    """The feeding side of :class:`~.pipeline.AsyncTaskPipeline`."""

    def _envelope(self, data: Any, created_at: float | None) -> Envelope:
        with self._lock:
            seq = self._next_seq
            self._next_seq = seq + 1
            if self._t_first_in is None:
                self._t_first_in = time.perf_counter()
        self._input_closed = False
        if self.enable_timing:
            c = _clock() if created_at is None else created_at
            # Only items whose record is wanted carry per-item stamps (see _record_until).
            env = Envelope(VALUE, data, seq, [c] if seq < self._record_until else None)
            env.c = c
            return env
        return Envelope(VALUE, data, seq)

    def _put_failed(self) -> None:
        with self._lock:
            self._failed_puts += 1

    async def _aput(self, ch: Channel, env: Envelope) -> None:
        """Put, waiting for room; an item whose put was cancelled never entered the pipeline."""
        try:
            await ch.aput(env)
        except asyncio.CancelledError:
            self._put_failed()
            raise

    async def process_input_data(self, data: T, created_at: float | None = None) -> None:
        ch = self._check_running()
        env = self._envelope(data, created_at)
        try:
            if not (
                ch.try_put(env, env.c)
                if created_at is None and self.enable_timing
                else ch.try_put(env)
            ):
                await ch.aput(env)
        except Stopped:
            self._put_failed()
            raise RuntimeError("Pipeline was stopped") from None

    def _put_sync(self, env: Envelope) -> None:
        ch = self._check_running()
        if threading.get_ident() == self._loop_thread:
            # On the event loop thread: never block the loop (which may be the consumer).
            ch.force_put(env)
        else:
            ch.put_many([env])

    def put_input_data(self, data: T, created_at: float | None = None) -> None:
        """Feed one item from any thread (blocks while full; never blocks the event loop)."""
        self._check_running()
        env = self._envelope(data, created_at)
        try:
            self._put_sync(env)
        except (Stopped, RuntimeError):
            self._put_failed()
            raise RuntimeError("Pipeline is not running") from None

    def put_input_sentinel(self, sentinel: U) -> None:
        self._input_closed = False  # as data: a later drain() closes the input after it
        try:
            self._put_sync(Envelope(SENTINEL, sentinel))
        except Stopped:
            raise RuntimeError("Pipeline is not running") from None

    async def process_input_sentinel(self, sentinel: U) -> None:
        ch = self._check_running()
        self._input_closed = False
        try:
            await ch.aput(Envelope(SENTINEL, sentinel))
        except Stopped:
            raise RuntimeError("Pipeline was stopped") from None

    async def process_input_stream(
        self, input_stream: AsyncIterable[T] | Iterable[T], *, close_input: bool = True
    ) -> None:
        """Feed a whole (async) iterable; close the input at its end unless ``close_input=False``.

        Returns quietly if the pipeline is stopped meanwhile; an exception from the stream
        closes the input (``close_input=False`` or not: the output iteration then ends instead
        of waiting for more) and propagates.
        """
        ch = self._check_running()
        envelope = self._envelope
        # Four copies of one loop, so that timing off pays nothing for the timed put.
        try:
            if isinstance(input_stream, AsyncIterable):
                if self.enable_timing:
                    async for data in input_stream:
                        env = envelope(data, None)
                        if not ch.try_put(env, env.c):
                            await self._aput(ch, env)
                else:
                    async for data in input_stream:
                        env = envelope(data, None)
                        if not ch.try_put(env):
                            await self._aput(ch, env)
            elif self.enable_timing:
                for data in input_stream:
                    env = envelope(data, None)
                    if not ch.try_put(env, env.c):
                        await self._aput(ch, env)
            else:
                for data in input_stream:
                    env = envelope(data, None)
                    if not ch.try_put(env):
                        await self._aput(ch, env)
        except Stopped:
            self._put_failed()
            return
        except Exception:
            close_input = True
            raise
        finally:
            if close_input and self.running and not self._halted:
                self.close_input()
