"""The orchestrator's shared state and the primitives every part of it uses.

:class:`PipelineCore` declares the run state of :class:`~.pipeline.AsyncTaskPipeline` (reset by
:meth:`~PipelineCore._reset_state` on every start), the callbacks the stages make into the
pipeline (:class:`~.stage_core.StageHost`), and the few helpers shared by the parts built on it:
input feeding (``feeding.py``), stop and drain (``shutdown.py``), output iteration
(``output.py``) and introspection / summaries (``reporting.py``).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .channel import Channel, Stopped
from .errors import ErrorPolicy, ErrorRecord, StageError
from .item import EOS, Envelope, ItemRecord, StampBatch
from .output_buffer import OutputBuffer
from .stage import PipelineStage
from .timing import Aggregator

logger = logging.getLogger("pipeline_app.engine.pipeline")

CONSUMING: contextvars.ContextVar[object | None] = contextvars.ContextVar(
    "pipeline_app_consuming", default=None
)
"""The pipeline whose output the running code is consuming (inside its ``async for`` body, and
in the tasks that body starts); set per output batch by ``output.py``."""

T = TypeVar("T")
U = TypeVar("U")


class PipelineCore(Generic[T, U]):
    """State and shared primitives of the orchestrator (not used on its own)."""

    # configuration (set by AsyncTaskPipeline.__init__)
    max_queue_size: int
    enable_timing: bool
    error_policy: ErrorPolicy
    return_exceptions: bool
    on_item_timing: Callable[[ItemRecord], None] | None
    on_item_timings: Callable[[list[ItemRecord]], None] | None
    on_item_stamps: Callable[[StampBatch], None] | None
    max_item_records: int
    max_error_records: int
    stop_timeout: float
    stages: list[PipelineStage]
    running: bool
    # wiring (set by start())
    _channels: list[Channel]
    _out: OutputBuffer | None
    _agg: Aggregator | None

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
        # streams whose run() consumer left early: their outputs are dropped up to their EOS
        self._abandoned_streams = 0
        self._consumers: set[asyncio.Task[Any]] = set()  # tasks iterating the output now
        self._input_closed = False
        self._eos_sent = 0
        self._t_start = time.perf_counter()
        self._t_first_in: float | None = None
        self._t_last_out: float | None = None
        self._loop_thread: int | None = None
        # Items with seq below this carry per-item stamps for their ItemRecord (timing on):
        # every item when a record callback is set, else the first max_item_records (again
        # after clear(), which empties the kept records).
        self._record_until = self._record_horizon(0)

    def _record_horizon(self, next_seq: int) -> int:
        if (
            self.on_item_timing is not None
            or self.on_item_timings is not None
            or self.on_item_stamps is not None
        ):
            return sys.maxsize
        return next_seq + self.max_item_records

    # ------------------------------------------------------------------ shared primitives
    def _abort_all(self) -> None:
        self._halted = True
        for stage in self.stages:
            stage.stop()
        for ch in self._channels:
            ch.abort()
        if self._out is not None:
            self._out.abort()

    def _check_running(self) -> Channel:
        if not self.running or not self._channels:
            raise RuntimeError("Pipeline is not running")
        if self._halted:
            raise RuntimeError("Pipeline is stopping")
        return self._channels[0]

    def close_input(self) -> None:
        """End the current input stream: the output iteration ends after what was fed so far."""
        ch = self._check_running()
        try:
            ch.force_put(Envelope(EOS, None))
        except Stopped:
            return
        self._input_closed = True
        self._eos_sent += 1

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
