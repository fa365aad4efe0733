"""Thread workers: a stage's items run in its own named threads.

Each thread takes a batch of what is already queued (one lock round-trip), runs the stage function
on every item and forwards the outputs as one list. Outputs are flushed early when a batch runs
for longer than ``FLUSH_INTERVAL``, so slow items still stream to the next stage (pipeline
parallelism) and the transmission time stays the time an item really waited to be put
downstream. With ``workers > 1`` the batch size adapts to about ``THREAD_BATCH_TARGET`` seconds of
work (load balance).

Whatever the stage function raises, ``BaseException`` included (``asyncio.CancelledError``,
``SystemExit`` ...), is that item's error under the pipeline's error policy: nothing the function
raises ends a worker thread (which would leave the consumer waiting forever).
"""

from __future__ import annotations

import logging
import time
from types import GeneratorType
from typing import Any

from .channel import Stopped
from .errors import StageError
from .item import FAIL, VALUE, Envelope
from .stage_core import (
    FLUSH_INTERVAL,
    MAX_BATCH,
    THREAD_BATCH_TARGET,
    StageCore,
    StageRun,
    WorkerStats,
    adapt_batch,
    fan_out_child,
)
from .stage_timing import Columns, Timing

logger = logging.getLogger("pipeline_app.engine.stage")


class ThreadWorker(StageCore):
    """The ``executor="thread"`` worker loop."""

    def _thread_worker(self, ws: WorkerStats, run: StageRun) -> None:
        try:
            self._thread_loop(ws, run)
        except Stopped:
            pass
        except BaseException:  # pragma: no cover - engine bug: make it visible, stop cleanly
            logger.exception("stage %r worker crashed", self.name)
            if self._host is not None and run is self._run:
                self._host._fail(StageError(self.name, -1, "engine worker crashed"))

    def _thread_loop(self, ws: WorkerStats, run: StageRun) -> None:
        if run.tstats is not None:
            self._thread_loop_timed(ws, run)
            return
        ch = run.input
        fn = self.process_fn
        pc = time.perf_counter
        share = self.workers
        max_n = MAX_BATCH
        ema = 0.0
        forward = self._forward
        while True:
            pos, batch, _ = ch.get_batch(max_n, share)
            epoch = ch.cleared
            b0 = now = pc()  # ``now``: the last clock reading (one per item on the fast path)
            t_flush = b0
            put_time = 0.0
            flushed_work = 0.0  # work of the batch's parts already forwarded (and counted)
            outs: list[Envelope] = []
            first = 0
            n_in = n_out = 0
            last = len(batch) - 1
            limit = run.fail_pos - pos  # batch indexes past a fail-fast failure: no work
            for i, env in enumerate(batch):
                if env.kind != VALUE:
                    outs.append(env)
                    if env.kind == FAIL:
                        self._note_fail(run, pos + i)
                        limit = min(limit, i)
                elif ch.cleared != epoch or i > limit:  # clear()/interrupt(), or failed before
                    self._discard_rest(run, batch, i, outs)
                    break
                else:
                    n_in += 1
                    t = env.t
                    if t is not None:
                        # processing start = the previous reading, taken right after the
                        # previous item ended (a few bytecodes ago): one clock read per item
                        t.append(now)
                    try:
                        r = fn(env.data)
                    except BaseException as exc:
                        self._error(run, env, ws, exc, None, pc(), outs, pos + i)
                        r = env  # marker: handled
                        limit = run.fail_pos - pos
                    if type(r) is GeneratorType:
                        n_out += self._fan_out(run, env, r, ws, outs, pos + i)
                        limit = run.fail_pos - pos
                        now = pc()
                    elif r is None:
                        now = pc()
                        self._filtered(env, ws, now, outs)
                    elif r is env:
                        now = pc()
                    else:
                        env.data = r
                        now = pc()
                        if t is not None:
                            t.append(now)
                        outs.append(env)
                        n_out += 1
                if i != last and now - t_flush > FLUSH_INTERVAL:
                    ws.n_in += n_in
                    ws.n_out += n_out
                    n_in = n_out = 0
                    # counted before the put, which raises when the pipeline stops meanwhile
                    work = now - b0 - put_time
                    ws.busy += work
                    flushed_work += work
                    b0, put_time = now, 0.0
                    forward(run, pos + first, i + 1 - first, outs)
                    outs = []
                    first = i + 1
                    t_flush = pc()
                    put_time += t_flush - now
                    now = t_flush
            ws.n_in += n_in
            ws.n_out += n_out
            b1 = pc()
            work = b1 - b0 - put_time
            ws.busy += work
            forward(run, pos + first, len(batch) - first, outs)
            if share > 1:
                per_item = (flushed_work + work) / len(batch)
                ema, max_n = adapt_batch(ema, per_item, THREAD_BATCH_TARGET)

    def _fan_out(
        self,
        run: StageRun,
        env: Envelope,
        gen: Any,
        ws: WorkerStats,
        outs: list[Envelope],
        pos: int,
        cols: Columns | None = None,
        start: float = 0.0,
        enqueued: float = 0.0,
    ) -> int:
        pc = time.perf_counter
        timed = cols is not None
        k = 0
        try:
            for v in gen:
                yielded = pc() if timed else 0.0
                outs.append(fan_out_child(env, v, k, cols, start, yielded, enqueued))
                k += 1
        except BaseException as exc:
            ws.n_out += k
            k0 = len(outs)
            end = pc()
            self._error(run, env, ws, exc, None, end, outs, pos)
            if cols is not None:
                self._settle(run, env, outs, k0, cols, enqueued, start, end)
            return 0
        if k == 0:
            end = pc()
            k0 = len(outs)
            self._filtered(env, ws, end, outs)
            if cols is not None:
                self._settle(run, env, outs, k0, cols, enqueued, start, end)
        return k

    def _thread_loop_timed(self, ws: WorkerStats, run: StageRun) -> None:
        """``_thread_loop`` with timing: the same work plus the outputs' timing columns.

        An item's processing starts when the previous one ended (one clock read per item, as
        without timing), so for a run of plain outputs (each input mapped to one value) the loop
        keeps only their end stamps; the run's enqueue and start columns are built with C-level
        list operations when it is closed (``_close_run``): before anything else is appended
        (markers, errors, filtered items, fan-outs, which append their own columns) and before
        a forward."""
        ch = run.input
        fn = self.process_fn
        pc = time.perf_counter
        share = self.workers
        max_n = MAX_BATCH
        ema = 0.0
        forward = self._forward
        settle = self._settle
        pad = self._pad
        while True:
            pos, batch, enq = ch.get_batch(max_n, share)
            epoch = ch.cleared
            b0 = now = pc()
            t_flush = b0
            put_time = 0.0
            flushed_work = 0.0  # work of the batch's parts already forwarded (and counted)
            outs: list[Envelope] = []
            cols: Columns = ([], [], [])  # the outputs before the current run
            run_first = 0  # batch index of the current run's first item
            run_start = b0  # its processing start
            ends: list[float] = []  # the run's processing ends
            records = False  # an output may carry per-item stamps
            first = 0
            n_in = n_out = 0
            last = len(batch) - 1
            limit = run.fail_pos - pos
            for i, env in enumerate(batch):
                if env.kind != VALUE:
                    _close_run(cols, enq, run_first, run_start, ends)
                    outs.append(env)
                    pad(cols, 1)
                    if env.kind == FAIL:
                        self._note_fail(run, pos + i)
                        limit = min(limit, i)
                    run_first, run_start, ends = i + 1, now, []
                elif ch.cleared != epoch or i > limit:
                    _close_run(cols, enq, run_first, run_start, ends)
                    k0 = len(outs)
                    self._discard_rest(run, batch, i, outs)
                    pad(cols, len(outs) - k0)
                    run_first, ends = len(batch), []
                    break
                else:
                    n_in += 1
                    t = env.t
                    if t is not None:
                        t.append(enq[i])
                        t.append(now)
                        records = True
                    try:
                        r = fn(env.data)
                    except BaseException as exc:
                        start = ends[-1] if ends else run_start
                        now = pc()
                        _close_run(cols, enq, run_first, run_start, ends)
                        k0 = len(outs)
                        self._error(run, env, ws, exc, None, now, outs, pos + i)
                        settle(run, env, outs, k0, cols, enq[i], start, now)
                        run_first, run_start, ends = i + 1, now, []
                        r = env  # marker: handled
                        limit = run.fail_pos - pos
                    if type(r) is GeneratorType:
                        start = ends[-1] if ends else run_start
                        _close_run(cols, enq, run_first, run_start, ends)
                        n_out += self._fan_out(run, env, r, ws, outs, pos + i, cols, start, enq[i])
                        limit = run.fail_pos - pos
                        now = pc()
                        run_first, run_start, ends = i + 1, now, []
                    elif r is None:
                        start = ends[-1] if ends else run_start
                        now = pc()
                        _close_run(cols, enq, run_first, run_start, ends)
                        k0 = len(outs)
                        self._filtered(env, ws, now, outs)
                        settle(run, env, outs, k0, cols, enq[i], start, now)
                        run_first, run_start, ends = i + 1, now, []
                    elif r is not env:
                        env.data = r
                        now = pc()
                        if t is not None:
                            t.append(now)
                        outs.append(env)
                        ends.append(now)
                        n_out += 1
                if i != last and now - t_flush > FLUSH_INTERVAL:
                    ws.n_in += n_in
                    ws.n_out += n_out
                    n_in = n_out = 0
                    work = now - b0 - put_time
                    ws.busy += work
                    flushed_work += work
                    b0, put_time = now, 0.0
                    timing = _timing(cols, enq, run_first, run_start, ends)
                    forward(run, pos + first, i + 1 - first, outs, timing, records)
                    outs = []
                    cols = ([], [], [])
                    records = False
                    first = i + 1
                    t_flush = pc()
                    put_time += t_flush - now
                    now = t_flush
                    run_first, run_start, ends = i + 1, now, []
            ws.n_in += n_in
            ws.n_out += n_out
            b1 = pc()
            work = b1 - b0 - put_time
            ws.busy += work
            timing = _timing(cols, enq, run_first, run_start, ends)
            forward(run, pos + first, len(batch) - first, outs, timing, records)
            if share > 1:
                per_item = (flushed_work + work) / len(batch)
                ema, max_n = adapt_batch(ema, per_item, THREAD_BATCH_TARGET)


def _timing(cols: Columns, enq: list[float], first: int, start: float, ends: list[float]) -> Timing:
    """The timing of the outputs to forward: ``cols`` then the current run (see _close_run);
    just the run when nothing else was appended."""
    if cols[0]:
        _close_run(cols, enq, first, start, ends)
        return cols
    return enq[first : first + len(ends)], start, ends


def _close_run(
    cols: Columns, enq: list[float], first: int, start: float, ends: list[float]
) -> None:
    """Append a run of plain outputs to ``cols``: the items from batch index ``first`` on,
    enqueued at ``enq[first:]``, the first one started at ``start`` and each of the others when
    the previous one ended (``ends``)."""
    n = len(ends)
    if n:
        qs, ss, es = cols
        qs += enq[first : first + n]
        ss.append(start)
        ss += ends[: n - 1]
        es += ends
