"""Process workers: a stage's worker threads ship batches to a process pool.

Every worker thread ships its batch to a ``ProcessPoolExecutor`` (one per stage, ``workers``
processes, forkserver context since the parent has threads) and waits for it; generators are
materialised in the child, exceptions come back with their formatted traceback. Batches adapt to
about ``PROCESS_BATCH_TARGET`` seconds of work in the child (amortising the IPC).

Failures stay per item: whatever the stage function raises (``BaseException`` included, e.g.
``SystemExit``) is that item's error under the pipeline's error policy; a result that cannot be
pickled back fails only its item (``PicklingError``; a fan-out keeps the children before the
first unpicklable one); and when a batch fails as a whole (an input that cannot be pickled, a
result that cannot be unpickled in the parent) its items are run again one by one, so that only
the failing ones are errors. A worker process that dies (``os._exit``, a crash) breaks the pool:
every later item of the stage fails with ``BrokenProcessPool``.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import pickle
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from types import GeneratorType
from typing import Any

from .channel import Stopped
from .errors import StageError
from .item import FAIL, VALUE, Envelope
from .stage_core import (
    MAX_BATCH,
    PROCESS_BATCH_TARGET,
    ExcPayload,
    StageCore,
    StageRun,
    WorkerStats,
    adapt_batch,
    fan_out_child,
)
from .stage_timing import Columns

logger = logging.getLogger("pipeline_app.engine.stage")

Result = tuple[int, Any, float, float]
"""One item's result from the child: (status, payload, processing start, processing end)."""


# ------------------------------------------------------------------------------ process child
def _exc_payload(exc: BaseException) -> ExcPayload:
    tb = "".join(traceback.format_exception(exc))
    try:
        pickle.loads(pickle.dumps(exc))
        keep: BaseException | None = exc
    except Exception:
        keep = None
    return keep, type(exc).__name__, str(exc), tb


def _run_batch(fn: Callable[[Any], Any], values: list[Any]) -> bytes:
    """Runs in the child process: the pickled list of the values' results (``Result``).

    Status: 0 value, 1 filtered, 2 fan-out, 3 error, 4 fan-out then error.
    """
    pc = time.perf_counter
    out: list[Result] = []
    for v in values:
        t0 = pc()
        try:
            r = fn(v)
        except BaseException as exc:
            out.append((3, _exc_payload(exc), t0, pc()))
            continue
        if r is None:
            out.append((1, None, t0, pc()))
        elif type(r) is GeneratorType:
            kids: list[tuple[Any, float]] = []
            try:
                for c in r:
                    kids.append((c, pc()))
            except BaseException as exc:
                out.append((4, (kids, _exc_payload(exc)), t0, pc()))
                continue
            out.append((2, kids, t0, pc()))
        else:
            out.append((0, r, t0, pc()))
    # Pickled here rather than by the executor, where a single result that cannot be pickled
    # fails the whole batch. Only when the list as a whole fails are the results checked
    # one by one.
    try:
        return pickle.dumps(out, pickle.HIGHEST_PROTOCOL)
    except Exception:
        return pickle.dumps([_sendable(r) for r in out], pickle.HIGHEST_PROTOCOL)


def _sendable(result: Result) -> Result:
    """``result``, or its item's error if what it carries cannot be pickled."""
    status, payload, t0, t1 = result
    if status == 0:
        try:
            pickle.dumps(payload, pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            return 3, _unpicklable_result(exc), t0, t1
    elif status == 2 or status == 4:
        kids = payload if status == 2 else payload[0]
        for k, (value, _yielded) in enumerate(kids):
            try:
                pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
            except Exception as exc:
                return 4, (kids[:k], _unpicklable_result(exc)), t0, t1
    return result


def _unpicklable_result(exc: Exception) -> ExcPayload:
    err = pickle.PicklingError(
        f"the result cannot be sent back from the worker process: {type(exc).__name__}: {exc}"
    )
    err.__cause__ = exc
    return _exc_payload(err)


def _noop() -> None:
    return None


# ------------------------------------------------------------------------------ parent side
class ProcessWorker(StageCore):
    """The ``executor="process"`` worker loop (and its pool)."""

    def _start_pool(self) -> None:
        ctx = multiprocessing.get_context("forkserver")
        self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx)
        for _ in range(self.workers):
            self._pool.submit(_noop)  # warm up the workers in the background

    def _terminate_pool(self) -> None:
        """Blocking: terminate busy workers (a running task cannot be cancelled otherwise)."""
        pool = self._pool
        if pool is not None:
            procs = dict(getattr(pool, "_processes", None) or {})
            for p in procs.values():
                if p.is_alive():
                    p.terminate()
            pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _process_worker(self, ws: WorkerStats, run: StageRun) -> None:
        try:
            self._process_loop(ws, run)
        except Stopped:
            pass
        except BaseException:  # pragma: no cover
            logger.exception("stage %r worker crashed", self.name)
            if self._host is not None and run is self._run:
                self._host._fail(StageError(self.name, -1, "engine worker crashed"))

    @staticmethod
    def _wait(run: StageRun, fut: Future[Any]) -> Any:
        while True:
            try:
                return fut.result(timeout=0.05)
            except FutureTimeout:
                if run.stopping:
                    fut.cancel()
                    raise Stopped(0) from None

    def _run_values(
        self, run: StageRun, fn: Callable[[Any], Any], values: list[Any]
    ) -> list[Result]:
        """The values' results, from one batch in the pool; if the batch fails as a whole, from
        running them one by one (a value that fails alone gets that failure as its error)."""
        pool = run.pool
        assert pool is not None
        try:
            results: list[Result] = pickle.loads(
                self._wait(run, pool.submit(_run_batch, fn, values))
            )
            return results
        except Stopped:
            raise
        except BaseException as exc:
            if run.stopping:
                raise Stopped(0) from None
            if len(values) == 1:
                now = time.perf_counter()
                return [(3, _exc_payload(exc), now, now)]
        return [r for v in values for r in self._run_values(run, fn, [v])]

    def _process_loop(self, ws: WorkerStats, run: StageRun) -> None:
        ch = run.input
        share = self.workers
        max_n = 1
        ema = 0.0
        fn = self.process_fn
        while True:
            pos, batch, enqueued = ch.get_batch(max_n, share)
            count = len(batch)  # positions taken (the sequencer needs the whole range)
            limit = run.fail_pos - pos  # batch indexes past a fail-fast failure: no work
            for i, e in enumerate(batch):
                if e.kind == FAIL:
                    self._note_fail(run, pos + i)
                    limit = min(limit, i)
            if limit < count - 1:
                limit = max(limit, -1)  # a failure before this batch: no work at all
                kept: list[Envelope] = []
                self._discard_rest(run, batch, limit + 1, kept)
                batch = batch[: limit + 1] + kept
                enqueued = enqueued[: limit + 1] + [math.nan] * len(kept)
            values = [e.data for e in batch if e.kind == VALUE]
            results = self._run_values(run, fn, values) if values else []
            outs: list[Envelope] = []
            cols: Columns | None = ([], [], []) if run.tstats is not None else None
            records = False
            j = 0
            work = 0.0
            for i, env in enumerate(batch):
                if env.kind != VALUE:
                    outs.append(env)
                    if cols is not None:
                        self._pad(cols, 1)
                    continue
                ws.n_in += 1
                t = env.t
                q = enqueued[i] if cols is not None else 0.0
                if t is not None:
                    records = True
                status, payload, t0, t1 = results[j]
                j += 1
                work += t1 - t0
                if t is not None:
                    t.append(q)
                    t.append(t0)
                k0 = len(outs)
                if status == 0:
                    env.data = payload
                    if t is not None:
                        t.append(t1)
                    outs.append(env)
                    if cols is not None:
                        cols[0].append(q)
                        cols[1].append(t0)
                        cols[2].append(t1)
                    ws.n_out += 1
                elif status == 1:
                    self._filtered(env, ws, t1, outs)
                elif status == 3:
                    self._error(run, env, ws, None, payload, t1, outs, pos + i)
                else:
                    kids = payload if status == 2 else payload[0]
                    for k, (v, ty) in enumerate(kids):
                        outs.append(fan_out_child(env, v, k, cols, t0, ty, q))
                    ws.n_out += len(kids)
                    k0 = len(outs)
                    if status == 4:
                        self._error(run, env, ws, None, payload[1], t1, outs, pos + i)
                    elif not kids:
                        self._filtered(env, ws, t1, outs)
                    else:
                        continue
                if status != 0 and cols is not None:
                    self._settle(run, env, outs, k0, cols, q, t0, t1)
            ws.busy += work
            self._forward(run, pos, count, outs, cols, records)
            if values and work > 0:
                ema, max_n = adapt_batch(ema, work / len(values), PROCESS_BATCH_TARGET)
            elif values:
                max_n = MAX_BATCH
