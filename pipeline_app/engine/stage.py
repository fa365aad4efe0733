"""Pipeline stages: named worker threads, optionally backed by a process pool.

A stage owns ``workers`` threads named ``pipeline-<stage>-<i>``. With ``executor="thread"`` they
run the stage function themselves (``thread_worker.py``); with ``executor="process"`` they ship
batches to a process pool (``process_worker.py``). Configuration, counters, error handling and
forwarding are shared (``stage_core.py``). With ``workers > 1`` the outputs go through a
:class:`~.reorder.Sequencer` that restores order.
"""

from __future__ import annotations

import sys
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
    "WorkerStats",
]


class PipelineStage(ThreadWorker, ProcessWorker):
    """One stage of the pipeline (seed-compatible attributes, plus workers/executor)."""

    # ---------------------------------------------------------------- lifecycle
    def bind(self, input_queue: Channel, output_queue: Sink, host: StageHost, bound: int) -> None:
        self.input_queue = input_queue
        self.output_queue = output_queue
        self._host = host
        self._tstats = StageStats() if self.enable_timing else None
        on_put = self._tstats.add_forwarded if self._tstats is not None else None
        self._sequencer = Sequencer(output_queue, bound, on_put) if self.workers > 1 else None
        self._sink = output_queue
        self._stats = [WorkerStats() for _ in range(self.workers)]
        self._logged_first_error = False
        self._fail_pos = sys.maxsize

    def start(self) -> None:
        if self.input_queue is None or self._sink is None:
            raise RuntimeError(f"stage {self.name!r} is not bound to a pipeline")
        self._stopping = False
        if self.executor == "process":
            self._start_pool()
        target = self._process_worker if self.executor == "process" else self._thread_worker
        self._threads = [
            threading.Thread(
                target=target, args=(ws,), name=f"pipeline-{self.name}-{i}", daemon=True
            )
            for i, ws in enumerate(self._stats)
        ]
        self.running = True
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        """Signal the workers to stop (non-blocking; the channels are aborted by the pipeline)."""
        self._stopping = True
        self.running = False
        if self._sequencer is not None:
            self._sequencer.abort()
        if self.input_queue is not None:
            self.input_queue.abort()
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
