"""Pipeline stages: named worker threads, optionally backed by a process pool.

A stage owns ``workers`` threads named ``pipeline-<stage>-<i>``. With ``executor="thread"`` they
run the stage function themselves (``thread_worker.py``); with ``executor="process"`` they ship
batches to a process pool (``process_worker.py``). Configuration, counters, error handling and
forwarding are shared (``stage_core.py``). With ``workers > 1`` the outputs go through a
:class:`~.reorder.Sequencer` that restores order.

``bind()`` begins a new run (:class:`~.stage_core.StageRun`: channels, sequencer, counters, timing,
fail-fast and stop state) and every worker thread keeps the run it was started for: a thread that
``stop()`` left inside the stage function cannot deliver into the run of a restarted pipeline.

Standalone use, as documented by the seed: ``PipelineStage(name, fn, input_queue, output_queue)``
with ``queue.Queue`` queues runs one thread that takes :class:`~.seed_item.PipelineItem` objects
from the input, puts the processed items (each with its timing stamps) into the output and forwards
anything else untouched. It has no ordering, batching or fail-fast machinery: ``workers``,
``executor="process"`` and ``error_policy="raise"`` need an :class:`~.pipeline.AsyncTaskPipeline`.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from types import GeneratorType
from typing import Any

from .channel import Channel
from .process_worker import ProcessWorker
from .reorder import Sequencer, Sink
from .seed_item import DetailedTiming, PipelineItem
from .stage_core import (
    FLUSH_INTERVAL,
    MAX_BATCH,
    PROCESS_BATCH_TARGET,
    THREAD_BATCH_TARGET,
    StageHost,
    StageRun,
    WorkerStats,
)
from .stage_timing import StageStats
from .thread_worker import ThreadWorker

logger = logging.getLogger("pipeline_app.engine.stage")

# How often a standalone worker blocked on a queue checks whether stop() was called.
_STANDALONE_POLL = 0.1

# Put into a standalone stage's input by stop() to wake its worker at once.
_WAKE_UP = object()

__all__ = [
    "FLUSH_INTERVAL",
    "MAX_BATCH",
    "PROCESS_BATCH_TARGET",
    "THREAD_BATCH_TARGET",
    "PipelineStage",
    "StageHost",
    "StageRun",
    "WorkerStats",
]


class PipelineStage(ThreadWorker, ProcessWorker):
    """One stage of the pipeline (seed-compatible attributes, plus workers/executor)."""

    # ---------------------------------------------------------------- lifecycle
    def bind(self, input_queue: Channel, output_queue: Sink, host: StageHost, bound: int) -> None:
        self.input_queue = input_queue
        self.output_queue = output_queue
        self._host = host
        tstats = StageStats() if self.enable_timing else None
        on_put = tstats.add_forwarded if tstats is not None else None
        sequencer = Sequencer(output_queue, bound, on_put) if self.workers > 1 else None
        self._stats = [WorkerStats() for _ in range(self.workers)]
        self._run = StageRun(input_queue, output_queue, sequencer, tstats, self._stats)
        self._logged_first_error = False

    def start(self) -> None:
        if isinstance(self.input_queue, queue.Queue):
            self._start_standalone(self.input_queue)
            return
        run = self._run
        if run is None:
            raise RuntimeError(
                f"stage {self.name!r} has no queues to run on: give it queue.Queue input and "
                "output queues to run it on its own, or add it to an AsyncTaskPipeline "
                "(add_stage), which connects and starts its stages"
            )
        if self.executor == "process":
            self._start_pool()
            run.pool = self._pool
        target = self._process_worker if self.executor == "process" else self._thread_worker
        # each thread gets its run: see StageRun
        self._threads = [
            threading.Thread(
                target=target, args=(ws, run), name=f"pipeline-{self.name}-{i}", daemon=True
            )
            for i, ws in enumerate(run.stats)
        ]
        self.running = True
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        """Signal the workers to stop (non-blocking; the channels are aborted by the pipeline).

        A standalone stage's ``stop()`` waits for its thread, as in the seed (items still queued
        stay there; an item taken but not yet delivered is lost)."""
        self.running = False
        if isinstance(self.input_queue, queue.Queue):
            self._stop_standalone(self.input_queue)
            return
        run = self._run
        if run is not None:
            run.stopping = True
            if run.sequencer is not None:
                run.sequencer.abort()
            run.input.abort()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def join(self, deadline: float) -> bool:
        """Blocking: wait for the worker threads until ``deadline``; True if all ended.

        Process workers are terminated (a running task cannot be cancelled otherwise).
        """
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        alive = [t for t in self._threads if t.is_alive()]
        self._terminate_pool()
        return not alive

    def alive_threads(self) -> list[threading.Thread]:
        return [t for t in self._threads if t.is_alive()]

    # ---------------------------------------------------------------- standalone (queue.Queue)
    def _start_standalone(self, inbox: queue.Queue[Any]) -> None:
        outbox = self.output_queue
        if not isinstance(outbox, queue.Queue):
            raise TypeError(
                f"stage {self.name!r}: a stage with a queue.Queue input needs a queue.Queue output"
            )
        if self.workers != 1 or self.executor != "thread" or self.error_policy == "raise":
            raise ValueError(
                f"stage {self.name!r}: a standalone stage runs one thread with error policy "
                "'drop' or 'return'; workers, process executors and fail-fast need an "
                "AsyncTaskPipeline"
            )
        if self.alive_threads():
            raise RuntimeError(f"stage {self.name!r} is already running")
        stats = WorkerStats()
        self._stats = [stats]
        self._logged_first_error = False
        self.running = True
        self._threads = [
            threading.Thread(
                target=self._standalone_worker,
                args=(inbox, outbox, stats),
                name=f"pipeline-{self.name}-0",
                daemon=True,
            )
        ]
        self._threads[0].start()

    def _stop_standalone(self, inbox: queue.Queue[Any]) -> None:
        # a full input needs no wake-up: the worker is not waiting for input, and it sees
        # `running` within a poll
        with contextlib.suppress(queue.Full):
            inbox.put_nowait(_WAKE_UP)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()

    def _standalone_worker(
        self, inbox: queue.Queue[Any], outbox: queue.Queue[Any], stats: WorkerStats
    ) -> None:
        while self.running:
            try:
                received = inbox.get(timeout=_STANDALONE_POLL)
            except queue.Empty:
                continue
            if received is _WAKE_UP:
                continue  # a wake-up left over from an earlier stop() does not stop this run
            if isinstance(received, PipelineItem):
                self._process_standalone(received, outbox, stats)
            else:
                self._deliver_standalone(outbox, received)

    def _process_standalone(
        self, item: PipelineItem[Any], outbox: queue.Queue[Any], stats: WorkerStats
    ) -> None:
        item.enable_timing = self.enable_timing
        if item.get_entry_time(self.name) is None:
            # the producer did not stamp when it queued the item: the wait is unknown
            item.record_entry_time(self.name)
        stats.n_in += 1
        outputs: list[PipelineItem[Any]] = []
        failure: Exception | None = None
        started = time.perf_counter()
        try:
            result = self.process_fn(item.data)
            if type(result) is GeneratorType:
                for value in result:
                    child = item.copy()
                    child.data = value
                    outputs.append(child)
            elif result is not None:
                item.data = result
                outputs.append(item)
        except Exception as exc:
            failure = exc  # what a generator yielded before failing is still delivered
        ended = time.perf_counter()
        stats.busy += ended - started
        if failure is None and not outputs:
            stats.filtered += 1
        entered = item.get_entry_time(self.name)
        for output in outputs:
            output.record_completion_time(self.name)
            if entered is not None:
                # stamped before the hand-over: once queued, the item belongs to the consumer
                output.record_detailed_timing(
                    self.name, DetailedTiming(entered, started, ended, time.perf_counter())
                )
            stats.n_out += 1
            self._deliver_standalone(outbox, output)
        if failure is not None:
            stats.errors += 1
            self._log_standalone_error(failure)
            if self.error_policy == "return":
                stats.n_out += 1
                self._deliver_standalone(outbox, failure)

    def _deliver_standalone(self, outbox: queue.Queue[Any], value: object) -> None:
        """Put into a possibly full output queue, giving up when the stage is stopped."""
        while self.running:
            try:
                outbox.put(value, timeout=_STANDALONE_POLL)
                return
            except queue.Full:
                continue

    def _log_standalone_error(self, exc: Exception) -> None:
        if self._logged_first_error:
            logger.debug("stage %r failed on an item: %r", self.name, exc)
            return
        self._logged_first_error = True
        logger.error("stage %r failed on an item", self.name, exc_info=exc)
