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
returns how many items it discarded. It is idempotent. ``stop(drain=True)`` / :meth:`drain` first
closes the input and waits until everything in flight has passed every stage. ``async with``
starts on enter and stops on exit (``run()`` has consumed everything on a normal exit).

Timing (``enable_timing=True``)
-------------------------------
Per item and stage: queue wait = processing start - enqueue (an item drained into a worker's
batch is still waiting), computation = processing (including consuming a generator; for a
fan-out child, up to its yield), transmission = end of computation -> visible downstream (time
blocked by backpressure, or by order for ``workers > 1``). End-to-end = ``created_at`` ->
handed to the consumer. Aggregates are streaming histograms; per-item :class:`ItemRecord`
objects go to ``on_item_timing`` -- called on the event loop thread, in output order, once per
output (each fan-out child) and once per filtered or failed item, right after the consumer took
the batch (keep it cheap) -- and/or to ``on_item_timings`` (the same records, one list per output
batch: one call instead of one per item), and the first ``max_item_records`` stay in memory for
:meth:`get_report`. Records are cheap: they keep the item's raw stamps and build the per-stage
dicts only when :attr:`ItemRecord.stages` is read (:meth:`ItemRecord.stage_values` gives the
same values as tuples, in stage order, without dicts). Summaries are computed from the
consumer's side: items never read are not
timed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import asdict
from typing import Any, Generic, TypeVar

from .analysis import PipelineAnalysis, build_summary, item_breakdown
from .channel import Channel, OutputBuffer, Stopped
from .errors import ERROR_POLICIES, ErrorPolicy, ErrorRecord, StageError
from .item import EOS, ERROR, FAIL, HOLE, SENTINEL, VALUE, Envelope, ItemRecord
from .stage import PipelineStage
from .timing import Aggregator

logger = logging.getLogger(__name__)

T = TypeVar("T")
U = TypeVar("U")


class AsyncTaskPipeline(Generic[T, U]):
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
        max_item_records: int = 10_000,
        max_error_records: int = 1000,
        stop_timeout: float = 0.5,
    ) -> None:
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
        self.max_item_records = max_item_records
        self.max_error_records = max_error_records
        self.stop_timeout = stop_timeout
        self.stages: list[PipelineStage] = []
        self.running = False
        self._channels: list[Channel] = []
        self._out: OutputBuffer | None = None
        self._agg: Aggregator | None = None
        self._reset_state()

    def _reset_state(self) -> None:
        self._lock = threading.Lock()
        self._next_seq = 0
        self._failed_puts = 0
        self._counter_base = 0
        self._delivered = 0
        self._discarded = 0
        self._errors: list[ErrorRecord] = []
        self._error_logged: set[str] = set()
        self._fatal: StageError | None = None
        self._halted = False
        self._stop_future: asyncio.Future[int] | None = None
        self._leftover: list[Envelope] = []
        self._input_closed = False
        self._eos_sent = 0
        self._t_start = time.perf_counter()
        self._t_first_in: float | None = None
        self._t_last_out: float | None = None
        self._loop_thread: int | None = None

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

    def _abort_all(self) -> None:
        self._halted = True
        for stage in self.stages:
            stage.stop()
        for ch in self._channels:
            ch.abort()
        if self._out is not None:
            self._out.abort()

    def _join_all(self, deadline: float) -> list[str]:
        for stage in self.stages:
            stage.join(deadline)
        return [t.name for s in self.stages for t in s.alive_threads()]

    async def stop(self, drain: bool = False, join_timeout: float | None = None) -> int:
        """Stop every stage; return the number of items discarded. Idempotent, prompt."""
        if drain and self.running and not self._halted:
            await self.drain()
        if self._stop_future is not None:
            await asyncio.shield(self._stop_future)
            return 0
        if not self.running:
            return 0
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._stop_future = fut
        try:
            self._abort_all()
            wait = self.stop_timeout if join_timeout is None else join_timeout
            deadline = time.monotonic() + wait
            alive = await asyncio.to_thread(self._join_all, deadline)
            if alive:
                logger.warning("stop: threads still inside a stage function: %s", alive)
            self.running = False
            discarded = self._in_flight()
            self._discarded += discarded
            self._leftover = []
            if self._out is not None:
                self._out.drain_all()
            for stage in self.stages:
                n = int(stage.counters()["errors"])
                if n:
                    logger.warning("stage %r: %d item(s) failed", stage.name, n)
            if discarded:
                logger.info("pipeline stopped, %d item(s) discarded", discarded)
            fut.set_result(discarded)
            return discarded
        except BaseException as exc:
            self.running = False
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # mark retrieved
            raise

    async def drain(self) -> None:
        """Close the input and wait until everything fed so far has passed every stage."""
        out = self._out
        if not self.running or out is None or self._halted:
            return
        if not self._input_closed:
            self.close_input()
        await out.wait_eos(self._eos_sent)

    async def interrupt(self) -> int:
        """Discard everything queued if running (seed); returns the number discarded."""
        if not self.running:
            return 0
        return self.clear()

    def clear(self) -> int:
        """Empty every queue and the kept records, reset ``counter``; return items discarded."""
        n = sum(ch.clear() for ch in self._channels)
        if self._out is not None:
            n += self._out.clear()
        n += sum(1 for e in self._leftover if e.kind in (VALUE, ERROR))
        self._leftover = [e for e in self._leftover if e.kind == EOS or e.kind == FAIL]
        with self._lock:
            self._discarded += n
            self._counter_base = self._next_seq - self._failed_puts
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

    # ------------------------------------------------------------------ callbacks from stages
    def _report_error(self, record: ErrorRecord, exc: BaseException | None) -> None:
        with self._lock:
            if len(self._errors) < self.max_error_records:
                self._errors.append(record)
            first = record.stage not in self._error_logged
            self._error_logged.add(record.stage)
        if first:
            logger.error(
                "stage %r failed on item %d (%s: %s); further failures of this stage are "
                "logged at DEBUG\n%s",
                record.stage,
                record.seq,
                record.exc_type,
                record.message,
                record.traceback,
            )
        else:
            logger.debug(
                "stage %r failed on item %d: %s: %s",
                record.stage,
                record.seq,
                record.exc_type,
                record.message,
            )

    def _add_discarded(self, n: int) -> None:
        with self._lock:
            self._discarded += n

    def _fail(self, err: StageError) -> None:
        with self._lock:
            if self._fatal is None:
                self._fatal = err
        self._abort_all()

    # ------------------------------------------------------------------ input
    def _check_running(self) -> Channel:
        if not self.running or not self._channels:
            raise RuntimeError("Pipeline is not running")
        if self._halted:
            raise RuntimeError("Pipeline is stopping")
        return self._channels[0]

    def _envelope(self, data: Any, created_at: float | None) -> Envelope:
        with self._lock:
            seq = self._next_seq
            self._next_seq = seq + 1
            if self._t_first_in is None:
                self._t_first_in = time.perf_counter()
        self._input_closed = False
        if self.enable_timing:
            return Envelope(
                VALUE, data, seq, [time.perf_counter() if created_at is None else created_at]
            )
        return Envelope(VALUE, data, seq)

    def _put_failed(self) -> None:
        with self._lock:
            self._failed_puts += 1

    async def process_input_data(self, data: T, created_at: float | None = None) -> None:
        ch = self._check_running()
        env = self._envelope(data, created_at)
        try:
            if not ch.try_put(env):
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
        try:
            self._put_sync(Envelope(SENTINEL, sentinel))
        except Stopped:
            raise RuntimeError("Pipeline is not running") from None

    async def process_input_sentinel(self, sentinel: U) -> None:
        ch = self._check_running()
        try:
            await ch.aput(Envelope(SENTINEL, sentinel))
        except Stopped:
            raise RuntimeError("Pipeline was stopped") from None

    def close_input(self) -> None:
        """End the current input stream: the output iteration ends after what was fed so far."""
        ch = self._check_running()
        try:
            ch.force_put(Envelope(EOS, None))
        except Stopped:
            return
        self._input_closed = True
        self._eos_sent += 1

    async def process_input_stream(
        self, input_stream: AsyncIterable[T] | Iterable[T], *, close_input: bool = True
    ) -> None:
        """Feed a whole (async) iterable; close the input at its end unless ``close_input=False``.

        Returns quietly if the pipeline is stopped meanwhile; an exception from the stream
        closes the input and propagates.
        """
        ch = self._check_running()
        envelope = self._envelope
        try:
            if isinstance(input_stream, AsyncIterable):
                async for data in input_stream:
                    env = envelope(data, None)
                    if not ch.try_put(env):
                        await ch.aput(env)
            else:
                for data in input_stream:
                    env = envelope(data, None)
                    if not ch.try_put(env):
                        await ch.aput(env)
        except Stopped:
            self._put_failed()
            return
        finally:
            if close_input and self.running and not self._halted:
                self.close_input()

    # ------------------------------------------------------------------ output
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

    async def run(
        self, source: AsyncIterable[T] | Iterable[T], *, close_input: bool = True
    ) -> AsyncIterator[T | U]:
        """Feed ``source`` concurrently and yield the outputs in order (starts if needed)."""
        if not self.running:
            await self.start()
        feeder = asyncio.create_task(self.process_input_stream(source, close_input=close_input))
        try:
            async for item in self.generate_output_stream():
                yield item
        finally:
            if not feeder.done():
                feeder.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await feeder
        if feeder.done() and not feeder.cancelled() and feeder.exception() is not None:
            raise feeder.exception()  # type: ignore[misc]

    # ------------------------------------------------------------------ introspection
    def _in_flight(self) -> int:
        delta = 0
        for s in self.stages:
            c = s.counters()
            delta += int(c["items_out"]) - int(c["items_in"])
        items_in = self._next_seq - self._failed_puts
        return max(0, items_in + delta - self._delivered - self._discarded)

    @property
    def halted(self) -> bool:
        """True once stop() or a fail-fast error began shutting the stages down."""
        return self._halted

    @property
    def counter(self) -> int:
        return self._next_seq - self._failed_puts - self._counter_base

    @property
    def errors(self) -> list[ErrorRecord]:
        with self._lock:
            return list(self._errors)

    @property
    def fatal_error(self) -> StageError | None:
        return self._fatal

    @property
    def queues(self) -> list[Channel | OutputBuffer]:
        out: list[Channel | OutputBuffer] = list(self._channels)
        if self._out is not None:
            out.append(self._out)
        return out

    @property
    def input_queue(self) -> Channel | None:
        return self._channels[0] if self._channels else None

    @property
    def output_queue(self) -> OutputBuffer | None:
        return self._out

    @property
    def completed_items(self) -> list[ItemRecord]:
        return list(self._agg.records) if self._agg is not None else []

    def _duration(self) -> float:
        if self._t_first_in is None:
            return 0.0
        end = self._t_last_out
        if end is None or (self.running and self._in_flight()):
            end = time.perf_counter()
        return max(0.0, end - self._t_first_in)

    def progress(self) -> dict[str, Any]:
        stages: dict[str, dict[str, Any]] = {}
        filtered = errors = 0
        for s in self.stages:
            c = s.counters()
            filtered += int(c["filtered"])
            errors += int(c["errors"])
            stages[s.name] = {
                "queue_depth": s.queue_depth(),
                "processed": int(c["items_in"]),
                "busy_time": c["busy_time"],
            }
        return {
            "items_in": self._next_seq - self._failed_puts,
            "items_out": self._delivered,
            "filtered": filtered,
            "errors": errors,
            "in_flight": self._in_flight(),
            "elapsed": time.perf_counter() - self._t_start,
            "stages": stages,
        }

    def _summary(self) -> Any:
        return build_summary(
            self.stages,
            self._agg,
            duration=self._duration(),
            items_in=self._next_seq - self._failed_puts,
            items_out=self._delivered,
            in_flight=self._in_flight(),
            discarded=self._discarded,
        )

    def latency_histogram(self, bins: int = 30) -> list[tuple[float, float, int]]:
        """End-to-end latency as ``bins`` equal-width ``(low_s, high_s, items)`` bins (timing on),
        from the streaming histogram: every item counts, none is kept."""
        return self._agg.total.bins(bins) if self._agg is not None else []

    def get_latency_summary(self) -> dict[str, Any]:
        """The seed document's summary dict, plus percentiles, counts and throughput."""
        return asdict(self._summary())

    def get_report(self, include_item_details: bool = True) -> PipelineAnalysis | None:
        """Typed report; ``None`` when nothing was ever fed."""
        if self._next_seq == 0:
            return None
        items = None
        if include_item_details and self._agg is not None:
            items = [item_breakdown(r) for r in self._agg.records]
        return PipelineAnalysis(
            summary=self._summary(),
            item_breakdowns=items,
            analysis_metadata={
                "timing_enabled": self.enable_timing,
                "error_policy": self.error_policy,
                "max_queue_size": self.max_queue_size,
                "item_records_kept": len(self._agg.records) if self._agg else 0,
            },
            errors=self.errors,
        )
