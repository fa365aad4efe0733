"""What every stage has, whatever runs its items: configuration, counters, error handling and
forwarding outputs downstream (directly, or through the reorder buffer with ``workers > 1``).

The workers themselves are in ``thread_worker.py`` and ``process_worker.py``; ``stage.py``
assembles them into :class:`~.stage.PipelineStage` and owns the lifecycle.
"""

from __future__ import annotations

import math
import pickle
import queue
import sys
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Protocol

from .channel import Channel, Stopped
from .errors import ErrorPolicy, ErrorRecord, RemoteStageError, StageError
from .item import EOS, ERROR, FAIL, HOLE, VALUE, Envelope
from .output_buffer import OutputBuffer
from .reorder import Sequencer, Sink
from .stage_timing import Columns, StageStats, Timing, as_columns

FLUSH_INTERVAL = 0.0005  # seconds of work after which pending outputs are forwarded
MAX_BATCH = 256
THREAD_BATCH_TARGET = 0.002  # seconds per batch, workers > 1 (load balance)
PROCESS_BATCH_TARGET = 0.02  # seconds per batch in a process worker (amortise IPC)


def adapt_batch(ema: float, per_item: float, target: float) -> tuple[float, int]:
    """Smoothed seconds per item and the batch size that takes about ``target`` seconds."""
    ema = per_item if ema == 0.0 else 0.7 * ema + 0.3 * per_item
    return ema, max(1, min(MAX_BATCH, int(target / ema) if ema else MAX_BATCH))


def fan_out_child(
    env: Envelope,
    value: Any,
    index: int,
    cols: Columns | None,
    start: float,
    yielded: float,
    enqueued: float = math.nan,
) -> Envelope:
    """The ``index``-th child of a fan-out, with its own timing columns (and stamp copy);
    ``enqueued`` is the parent's enqueue stamp in this stage."""
    child = Envelope(VALUE, value, env.seq, None, (*env.sub, index))
    if cols is not None:
        child.c = env.c
        cols[0].append(enqueued)
        cols[1].append(start)
        cols[2].append(yielded)
        if env.t is not None:
            stamps = env.t[:]
            stamps.append(yielded)
            child.t = stamps
    return child


ExcPayload = tuple[BaseException | None, str, str, str]
"""An exception as it comes back from a process worker: (exception if picklable, type name,
message, formatted traceback)."""


class StageHost(Protocol):
    def _report_error(self, record: ErrorRecord, exc: BaseException | None) -> None: ...

    def _fail(self, err: StageError) -> None: ...

    def _add_discarded(self, n: int) -> None: ...


class WorkerStats:
    __slots__ = ("busy", "errors", "filtered", "n_in", "n_out")

    def __init__(self) -> None:
        self.n_in = 0
        self.n_out = 0
        self.filtered = 0
        self.errors = 0
        self.busy = 0.0


class StageRun:
    """One run of a stage (``bind`` ... ``stop``): where its workers take items from and deliver
    to, its counters and timing, and its fail-fast and stop state.

    Every worker thread keeps the run it was started for, so a thread still inside the stage
    function when ``stop()`` gave up waiting for it delivers into its own aborted run (and ends),
    never into the run of a restarted pipeline.
    """

    __slots__ = (
        "fail_lock",
        "fail_pos",
        "input",
        "pool",
        "sequencer",
        "sink",
        "stats",
        "stopping",
        "tstats",
    )

    def __init__(
        self,
        input_channel: Channel,
        sink: Sink,
        sequencer: Sequencer | None,
        tstats: StageStats | None,
        stats: list[WorkerStats],
    ) -> None:
        self.input = input_channel
        self.sink = sink
        self.sequencer = sequencer
        self.tstats = tstats
        self.stats = stats
        self.pool: ProcessPoolExecutor | None = None
        self.stopping = False
        self.fail_lock = threading.Lock()
        self.fail_pos = sys.maxsize  # earliest input position that failed (policy "raise")


class StageCore:
    """Configuration, counters, error handling and forwarding of a stage (see ``stage.py``)."""

    def __init__(
        self,
        name: str,
        process_fn: Callable[[Any], Any],
        input_queue: Channel | queue.Queue[Any] | None = None,
        output_queue: Sink | queue.Queue[Any] | None = None,
        enable_timing: bool = True,
        return_exceptions: bool = False,
        *,
        workers: int = 1,
        executor: str = "thread",
        error_policy: ErrorPolicy | None = None,
        index: int = 0,
    ) -> None:
        if not callable(process_fn):
            raise TypeError(
                f"stage {name!r}: the stage function must be callable, "
                f"not {type(process_fn).__name__}"
            )
        if isinstance(workers, bool) or not isinstance(workers, int):
            raise TypeError(f"stage {name!r}: workers must be an int >= 1, not {workers!r}")
        if workers < 1:
            raise ValueError(f"stage {name!r}: workers must be >= 1, not {workers}")
        if executor not in ("thread", "process"):
            raise ValueError(f"stage {name!r}: executor must be 'thread' or 'process'")
        if executor == "process":
            try:
                pickle.dumps(process_fn)
            except Exception as exc:
                raise ValueError(
                    f"stage {name!r}: a process stage needs a picklable (module-level) "
                    f"function: {exc}"
                ) from exc
        self.name = name
        self.process_fn = process_fn
        self.input_queue = input_queue
        self.output_queue = output_queue
        self.enable_timing = enable_timing
        self.error_policy: ErrorPolicy = error_policy or ("return" if return_exceptions else "drop")
        self.return_exceptions = self.error_policy == "return"
        self.workers = workers
        self.executor = executor
        self.index = index
        self.running = False
        self._host: StageHost | None = None
        self._run: StageRun | None = None  # the current run (set by bind)
        self._threads: list[threading.Thread] = []
        self._stats: list[WorkerStats] = []  # the current run's
        self._pool: ProcessPoolExecutor | None = None
        self._logged_first_error = False

    # ---------------------------------------------------------------- stats (seed attributes)
    @property
    def processed_count(self) -> int:
        return sum(s.n_in for s in self._stats)

    @property
    def total_processing_time(self) -> float:
        return sum(s.busy for s in self._stats)

    def get_average_processing_time(self) -> float:
        n = self.processed_count
        return self.total_processing_time / n if n else 0.0

    def counters(self) -> dict[str, float]:
        st = list(self._stats)
        return {
            "items_in": sum(s.n_in for s in st),
            "items_out": sum(s.n_out for s in st),
            "filtered": sum(s.filtered for s in st),
            "errors": sum(s.errors for s in st),
            "busy_time": sum(s.busy for s in st),
        }

    def queue_depth(self) -> int:
        inbox = self.input_queue
        if isinstance(inbox, queue.Queue):
            return inbox.qsize()
        return len(inbox) if inbox is not None else 0

    def clear_reorder_buffer(self) -> int:
        """Drop the outputs parked for order (``workers > 1``); return how many items."""
        run = self._run
        sequencer = run.sequencer if run is not None else None
        return sequencer.clear() if sequencer is not None else 0

    def clear_input_queue(self) -> int:
        """Discard what waits in the input queue; return how many entries were discarded."""
        inbox = self.input_queue
        if isinstance(inbox, queue.Queue):
            discarded = 0
            while True:
                try:
                    inbox.get_nowait()
                except queue.Empty:
                    return discarded
                discarded += 1
        return inbox.clear() if inbox is not None else 0

    # ---------------------------------------------------------------- error handling
    @staticmethod
    def _note_fail(run: StageRun, pos: int) -> None:
        """Input position ``pos`` failed (or carried a fail marker): later ones need no work."""
        with run.fail_lock:
            if pos < run.fail_pos:
                run.fail_pos = pos

    def _error(
        self,
        run: StageRun,
        env: Envelope,
        ws: WorkerStats,
        exc: BaseException | None,
        payload: ExcPayload | None,
        t_end: float,
        outs: list[Envelope],
        pos: int,
    ) -> None:
        if run is not self._run:
            raise Stopped(0)  # a thread of a previous run: nothing to report to any more
        ws.errors += 1
        if payload is None:
            assert exc is not None
            tb = "".join(traceback.format_exception(exc))
            exc_type, msg = type(exc).__name__, str(exc)
        else:
            exc, exc_type, msg, tb = payload
            if exc is None:
                exc = RemoteStageError(f"{exc_type}: {msg}\n{tb}")
        record = ErrorRecord(env.seq, self.name, exc_type, msg, tb, env.sub)
        host = self._host
        assert host is not None
        host._report_error(record, exc)
        policy = self.error_policy
        t = env.t
        if t is not None:
            t.append(t_end)
            env.info = (self.index, t, "error", f"{exc_type}: {msg}", self.name)
            env.t = None
        if policy == "raise":
            # Fail fast, in order: the marker takes the item's place and the consumer raises
            # when it reaches it (after every earlier output), then stops the pipeline. This
            # stage skips the positions after it meanwhile (see _thread_loop/_process_loop).
            err = StageError(self.name, env.seq, f"{exc_type}: {msg}", tb)
            err.__cause__ = exc
            self._note_fail(run, pos)
            env.kind = FAIL
            env.data = err
            outs.append(env)
        elif policy == "return":
            env.kind = ERROR
            env.data = exc
            ws.n_out += 1
            outs.append(env)
        elif t is not None:
            env.kind = HOLE
            env.data = None
            outs.append(env)

    def _filtered(self, env: Envelope, ws: WorkerStats, t_end: float, outs: list[Envelope]) -> None:
        ws.filtered += 1
        t = env.t
        if t is not None:
            t.append(t_end)
            env.info = (self.index, t, "filtered", None, self.name)
            env.t = None
            env.kind = HOLE
            env.data = None
            outs.append(env)

    @staticmethod
    def _forward(
        run: StageRun,
        pos: int,
        count: int,
        outs: list[Envelope],
        timing: Timing | None = None,
        records: bool = True,
    ) -> None:
        """Put ``outs`` downstream (``records``: some of them may carry per-item stamps)."""
        seqr = run.sequencer
        if seqr is not None:
            seqr.deposit(pos, count, outs, None if timing is None else as_columns(timing))
        elif outs:
            sink = run.sink
            if isinstance(sink, OutputBuffer):
                stamps = sink.put_many(outs, records)
            else:
                stamps = sink.put_many(outs)
            if timing is not None:
                tstats = run.tstats
                assert tstats is not None
                tstats.add_forwarded(timing, stamps)

    def _settle(
        self,
        run: StageRun,
        env: Envelope,
        outs: list[Envelope],
        k0: int,
        cols: Columns,
        q: float,
        start: float,
        end: float,
    ) -> None:
        """Timing of an item (enqueued at ``q``) whose error/filter handling appended
        ``outs[k0:]``: a returned error is an output like any other (it has a transmission);
        otherwise the item ends here and what it appended (a marker, a record carrier) is not
        a timed output."""
        if len(outs) > k0 and env.kind == ERROR:
            cols[0].append(q)
            cols[1].append(start)
            cols[2].append(end)
            return
        tstats = run.tstats
        assert tstats is not None
        tstats.add_one(q, start, end)
        self._pad(cols, len(outs) - k0)

    @staticmethod
    def _pad(cols: Columns, n: int) -> None:
        """``n`` untimed outputs (markers, pass-through envelopes)."""
        if n:
            pad = [math.nan] * n
            cols[0].extend(pad)
            cols[1].extend(pad)
            cols[2].extend(pad)

    @property
    def timing_stats(self) -> StageStats | None:
        """The stage's timing statistics (timing on), built up by its threads."""
        return self._run.tstats if self._run is not None else None

    def _discard_rest(
        self, run: StageRun, batch: list[Envelope], i: int, outs: list[Envelope]
    ) -> None:
        rest = batch[i:]
        outs.extend(e for e in rest if e.kind == EOS or e.kind == FAIL)
        n = sum(1 for e in rest if e.kind in (VALUE, ERROR))
        if n and self._host is not None and run is self._run:
            self._host._add_discarded(n)
