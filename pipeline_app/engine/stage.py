"""Pipeline stages: named worker threads, optionally backed by a process pool.

A stage owns ``workers`` threads named ``pipeline-<stage>-<i>``. With ``executor="thread"`` they
run the stage function themselves (``thread_worker.py``); with ``executor="process"`` they ship
batches to a process pool (``process_worker.py``). Configuration, counters, error handling and
forwarding are shared (``stage_core.py``). With ``workers > 1`` the outputs go through a
:class:`~.reorder.Sequencer` that restores order.

``bind()`` begins a new run (:class:`~.stage_core.StageRun`: channels, sequencer, counters, timing,
fail-fast and stop state) and every worker thread keeps the run it was started for: a thread that
``stop()`` left inside the stage function cannot deliver into the run of a restarted pipeline.
"""

from __future__ import annotations

import threading
import time

from .channel import Channel
from .process_worker import ProcessWorker
from .reorder import Sequencer, Sink
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
        run = self._run
        if run is None:
            raise RuntimeError(f"stage {self.name!r} is not bound to a pipeline")
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
        """Signal the workers to stop (non-blocking; the channels are aborted by the pipeline)."""
        self.running = False
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
