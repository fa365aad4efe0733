"""AsyncTaskPipeline: the orchestrator (async API, end of stream, stop, summaries).

README (engine)
===============

Shape
-----
``input channel -> stage 0 -> channel -> stage 1 -> ... -> output buffer -> consumer``.
Every stage runs in named threads (``pipeline-<stage>-<i>``), optionally shipping batches to a
process pool (``executor="process"``). Channels are bounded (``max_queue_size`` items each): that
is the backpressure. Stage threads take everything already queued in one lock round-trip and pass
lists downstream, which is where the throughput comes from. The event loop puts without a thread
hop when there is room and otherwise awaits a future resolved by the stage thread; outputs reach
the loop through one ``call_soon_threadsafe`` wake-up per batch, only when the consumer waits.

End of stream
-------------
:meth:`close_input` puts an end-of-stream marker into the input; it travels through the stages in
order, and the output iteration (``generate_output_stream()`` / ``run()``) ends when it reaches
it, i.e. once everything fed before it has come out. ``process_input_stream(s)`` closes the input
when ``s`` is exhausted (or raises). To feed several streams into one output iteration, call
``process_input_stream(s, close_input=False)`` for each and :meth:`close_input` once at the end.
After an end of stream the pipeline keeps running: the next items start a new output iteration
(feed, read, feed, read ... works as in the seed).

No deadlock in the seed's quick start, backpressure otherwise
-------------------------------------------------------------
The quick start feeds the whole input *then* reads the output. With only bounded queues that
deadlocks as soon as every queue is full. Here the output buffer (final stage -> consumer) is
bounded *only while a consumer is attached*, i.e. while an output iteration is running. Without a
consumer it spills, so a feed-then-read program always terminates; its memory is O(outputs not
yet read), which is inherent to that style. With a consumer reading concurrently (``run()``,
``asyncio.gather(feed, consume)``) every hop is bounded and a slow consumer slows the producer.

Order
-----
Every stage preserves its input order (``workers > 1``: per-stage streaming reorder buffer, see
``reorder.py``), so outputs come out in input order, fan-out children in yield order, sentinels
in their place, and the first output never waits for the whole input.

Errors
------
``error_policy`` (see :data:`~.errors.ErrorPolicy`): ``"drop"`` (default; counted, recorded in
:attr:`errors` with traceback; the first failure of each stage is logged at ERROR with its
traceback, each further one at DEBUG, and a per-stage count at WARNING on stop), ``"return"``
(``return_exceptions=True``: the exception object is the output), ``"raise"`` (fail fast, in
input order: the failing item's place is taken by a marker that travels through the stages and
reorder buffers like any item, the consumer gets every output before it, then its ``async for``
raises :class:`~.errors.StageError` for the earliest failing item in input order and the stages
are stopped. Meanwhile each stage skips the items after its earliest failure, so a failure is
deterministic with ``workers > 1`` -- a later item failing first in wall time does not win).

Stop
----
``await stop()`` aborts every channel (which wakes every blocked thread and future), waits for the
threads in a helper thread (never on the loop) up to ``stop_timeout`` (default 0.5 s: a thread
still inside a user function then ends right after it), terminates busy process workers, and
returns how many items it discarded. It is idempotent, and runs in a task of its own (a caller
cancelled meanwhile does not cut it short; a later call awaits it). ``stop(drain=True)`` /
:meth:`drain` first closes the input and waits until everything in flight has come out: taken by
the consumer when one is iterating the output (awaited inside that consumer's loop, the output
buffer takes everything instead, so it cannot deadlock), else into the output buffer. ``async
with`` starts on enter and stops on exit (``run()`` has consumed everything on a normal exit).

A consumer that breaks out of ``generate_output_stream()`` leaves the rest of the stream for the
next iteration; one that leaves ``run()`` early abandons its stream: feeding stops and what was
fed of it is dropped (and counted as discarded) when it comes out, so the next ``run()`` sees only
its own outputs. Whatever a stage function raises, ``BaseException`` included, is that item's
error under the policy.

Timing (``enable_timing=True``)
-------------------------------
Per item and stage: queue wait = processing start - enqueue (an item drained into a worker's
batch is still waiting), computation = processing (including consuming a generator; for a
fan-out child, up to its yield), transmission = end of computation -> visible downstream (time
blocked by backpressure, or by order for ``workers > 1``). End-to-end = ``created_at`` ->
handed to the consumer. Items put downstream together share one enqueue stamp (they became
visible at that one instant), and one clock reading is an item's end and the next one's start.

Aggregates are streaming histograms. Each stage builds its own (queue wait, computation,
transmission, latency) in its threads while it processes, from three columns per batch and the
stamp its put returns (``stage_timing.py``), so nothing per item and stage is left for the event
loop; the consumer aggregates the end-to-end latency of what it reads. A summary folds the
stages' pending batches in (under each stage's lock) and merges them with the consumer's side.

Per-item :class:`ItemRecord` objects go to ``on_item_timing`` -- called on the event loop
thread, in output order, once per output (each fan-out child) and once per filtered or failed
item, right after the consumer took the batch (keep it cheap) -- and/or to ``on_item_timings``
(the same records, one list per output batch: one call instead of one per item), and the first
``max_item_records`` stay in memory for :meth:`get_report`. ``on_item_stamps`` is the cheapest
form, for persisting every item: one :class:`~.item.StampBatch` per output batch, with the
delivered items' raw stamps in columns and no object per item. Only items whose record is wanted
carry per-item stamps (every item when a callback is set, else the first ``max_item_records``
fed, again after :meth:`clear`); kept records are built when first read. Records are cheap: they
keep the item's raw stamps and build the per-stage dicts only when :attr:`ItemRecord.stages` is
read (:meth:`ItemRecord.stage_values` gives the same values as tuples, in stage order, without
dicts).

Modules
-------
``pipeline.py`` (this class: configuration, start, ``run()``) is assembled from ``core.py``
(shared state, stage callbacks), ``feeding.py`` (input), ``output.py`` (output iteration),
``shutdown.py`` (stop, drain, clear) and ``reporting.py`` (progress, summaries, report). A stage
(``stage.py``) is ``stage_core.py`` (counters, error handling, forwarding) plus
``thread_worker.py`` and ``process_worker.py``; ``stage_timing.py`` holds its timing statistics.
Stages are joined by ``channel.py``; the last one puts into ``output_buffer.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Iterable
from typing import Any

from .channel import Channel
from .core import T, U
from .errors import ERROR_POLICIES, ErrorPolicy
from .feeding import InputFeeding
from .item import ItemRecord, StampBatch
from .output import OutputIteration
from .output_buffer import OutputBuffer
from .reporting import Reporting
from .stage import PipelineStage
from .timing import Aggregator

logger = logging.getLogger(__name__)

__all__ = ["AsyncTaskPipeline"]


class AsyncTaskPipeline(InputFeeding[T, U], OutputIteration[T, U], Reporting[T, U]):
    """Ordered, bounded, timed async task pipeline (see the module documentation)."""

    def __init__(
        self,
        max_queue_size: int = 100,
        enable_timing: bool = False,
        return_exceptions: bool = False,
        *,
        error_policy: ErrorPolicy | None = None,
        on_item_timing: Callable[[ItemRecord], None] | None = None,
        on_item_timings: Callable[[list[ItemRecord]], None] | None = None,
        on_item_stamps: Callable[[StampBatch], None] | None = None,
        max_item_records: int = 10_000,
        max_error_records: int = 1000,
        stop_timeout: float = 0.5,
    ) -> None:
        for name, value in (
            ("max_queue_size", max_queue_size),
            ("max_item_records", max_item_records),
            ("max_error_records", max_error_records),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if (
            not isinstance(stop_timeout, int | float)
            or isinstance(stop_timeout, bool)
            or not stop_timeout >= 0
        ):
            raise ValueError(f"stop_timeout must be a number of seconds >= 0, got {stop_timeout!r}")
        if error_policy is None:
            error_policy = "return" if return_exceptions else "drop"
        if error_policy not in ERROR_POLICIES:
            raise ValueError(f"error_policy must be one of {ERROR_POLICIES}")
        if return_exceptions and error_policy != "return":
            raise ValueError("return_exceptions=True conflicts with error_policy")
        self.max_queue_size = max_queue_size
        self.enable_timing = enable_timing
        self.error_policy: ErrorPolicy = error_policy
        self.return_exceptions = error_policy == "return"
        self.on_item_timing = on_item_timing
        self.on_item_timings = on_item_timings
        self.on_item_stamps = on_item_stamps
        self.max_item_records = max_item_records
        self.max_error_records = max_error_records
        self.stop_timeout = stop_timeout
        self.stages: list[PipelineStage] = []
        self.running = False
        self._channels: list[Channel] = []
        self._out: OutputBuffer | None = None
        self._agg: Aggregator | None = None
        # the latest run() iterator, closed before the next run() feeds (kept across restarts)
        self._last_run: AsyncGenerator[Any, None] | None = None
        self._reset_state()

    # ------------------------------------------------------------------ configuration
    def add_stage(
        self,
        name: str,
        process_fn: Callable[[Any], Any],
        *,
        workers: int = 1,
        executor: str = "thread",
    ) -> None:
        """Append a stage (order of calls = order of stages). Not allowed while running."""
        if self.running:
            raise RuntimeError("cannot add a stage to a running pipeline")
        if any(s.name == name for s in self.stages):
            raise ValueError(f"duplicate stage name {name!r}")
        self.stages.append(
            PipelineStage(
                name,
                process_fn,
                enable_timing=self.enable_timing,
                workers=workers,
                executor=executor,
                error_policy=self.error_policy,
                index=len(self.stages),
            )
        )

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self.running:
            raise RuntimeError("pipeline is already running")
        if not self.stages:
            raise RuntimeError("pipeline has no stages")
        self._reset_state()
        self._loop_thread = threading.get_ident()
        cap = self.max_queue_size
        timing = self.enable_timing
        self._channels = [Channel(cap, timing, s.name) for s in self.stages]
        self._out = OutputBuffer(cap, timing)
        for i, stage in enumerate(self.stages):
            sink = self._channels[i + 1] if i + 1 < len(self.stages) else self._out
            stage.enable_timing = timing
            stage.bind(self._channels[i], sink, self, max(1, cap))
        self._agg = (
            Aggregator(
                [s.name for s in self.stages],
                self.on_item_timing,
                self.max_item_records,
                self.on_item_timings,
                self.on_item_stamps,
            )
            if timing
            else None
        )
        self.running = True
        for stage in self.stages:
            stage.start()
        logger.debug("pipeline started with %d stages", len(self.stages))

    async def __aenter__(self) -> AsyncTaskPipeline[T, U]:
        if not self.running and self.stages:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def run(
        self, source: AsyncIterable[T] | Iterable[T], *, close_input: bool = True
    ) -> AsyncGenerator[T | U, None]:
        """Feed ``source`` concurrently and yield the outputs in order (starts if needed).

        A consumer that leaves early (``break``, an exception) abandons the stream: feeding
        stops, and what was fed of it is dropped when it comes out (counted as discarded), so
        a later ``run()`` sees only its own outputs. With ``close_input=False`` the stream has
        no end marker to stop at: its remaining outputs stay for the next iteration."""
        previous, self._last_run = self._last_run, None
        outputs = self._run(source, close_input, previous)
        self._last_run = outputs
        return outputs

    async def _run(
        self,
        source: AsyncIterable[T] | Iterable[T],
        close_input: bool,
        previous: AsyncGenerator[T | U, None] | None,
    ) -> AsyncGenerator[T | U, None]:
        if previous is not None:
            # A run() left by a plain ``break`` is closed by asyncio only later, from another
            # task: close it here, before this stream is fed, so the streams never interleave.
            with contextlib.suppress(RuntimeError):  # being iterated right now elsewhere
                await previous.aclose()
        if not self.running:
            await self.start()
        feeder = asyncio.create_task(self.process_input_stream(source, close_input=close_input))
        outputs = self.generate_output_stream()
        finished = False
        try:
            async for item in outputs:
                yield item
            finished = True
        finally:
            await outputs.aclose()
            if not feeder.done():
                feeder.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await feeder
            if not finished and close_input and self.running and not self._halted:
                self._abandoned_streams += 1
        if feeder.done() and not feeder.cancelled() and feeder.exception() is not None:
            raise feeder.exception()  # type: ignore[misc]
