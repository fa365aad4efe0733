"""Pipeline stages: named worker threads, optionally backed by a process pool.

A stage owns ``workers`` threads named ``pipeline-<stage>-<i>``. Each thread takes a batch of what
is already queued (one lock round-trip), runs the stage function on every item and forwards the
outputs as one list. Outputs are flushed early when a batch runs for longer than
``FLUSH_INTERVAL``, so slow items still stream to the next stage (pipeline parallelism) and the
transmission time stays the time an item really waited to be put downstream.

``executor="process"``: every worker thread ships its batch to a ``ProcessPoolExecutor`` (one per
stage, ``workers`` processes, forkserver context since the parent has threads) and waits for it;
generators are materialised in the child, exceptions come back with their formatted traceback.
With ``workers > 1`` the outputs go through a :class:`~.reorder.Sequencer` that restores order.
"""

from __future__ import annotations

import logging
import multiprocessing
import pickle
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from types import GeneratorType
from typing import Any, Protocol

from .channel import Channel, Stopped
from .errors import ErrorPolicy, ErrorRecord, RemoteStageError, StageError
from .item import EOS, ERROR, FAIL, HOLE, VALUE, Envelope
from .reorder import Sequencer, Sink

logger = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.0005  # seconds of work after which pending outputs are forwarded
MAX_BATCH = 256
THREAD_BATCH_TARGET = 0.002  # seconds per batch, workers > 1 (load balance)
PROCESS_BATCH_TARGET = 0.02  # seconds per batch in a process worker (amortise IPC)


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


# ------------------------------------------------------------------------------ process child
ExcPayload = tuple[BaseException | None, str, str, str]


def _exc_payload(exc: BaseException) -> ExcPayload:
    tb = "".join(traceback.format_exception(exc))
    try:
        pickle.loads(pickle.dumps(exc))
        keep: BaseException | None = exc
    except Exception:
        keep = None
    return keep, type(exc).__name__, str(exc), tb


def _run_batch(fn: Callable[[Any], Any], values: list[Any]) -> list[tuple[int, Any, float, float]]:
    """Runs in the child process.

    Status: 0 value, 1 filtered, 2 fan-out, 3 error, 4 fan-out then error.
    """
    pc = time.perf_counter
    out: list[tuple[int, Any, float, float]] = []
    for v in values:
        t0 = pc()
        try:
            r = fn(v)
        except Exception as exc:
            out.append((3, _exc_payload(exc), t0, pc()))
            continue
        if r is None:
            out.append((1, None, t0, pc()))
        elif type(r) is GeneratorType:
            kids: list[tuple[Any, float]] = []
            try:
                for c in r:
                    kids.append((c, pc()))
            except Exception as exc:
                out.append((4, (kids, _exc_payload(exc)), t0, pc()))
                continue
            out.append((2, kids, t0, pc()))
        else:
            out.append((0, r, t0, pc()))
    return out


def _noop() -> None:
    return None


# ------------------------------------------------------------------------------ stage
class PipelineStage:
    """One stage of the pipeline (seed-compatible attributes, plus workers/executor)."""

    def __init__(
        self,
        name: str,
        process_fn: Callable[[Any], Any],
        input_queue: Channel | None = None,
        output_queue: Sink | None = None,
        enable_timing: bool = True,
        return_exceptions: bool = False,
        *,
        workers: int = 1,
        executor: str = "thread",
        error_policy: ErrorPolicy | None = None,
        index: int = 0,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        if executor not in ("thread", "process"):
            raise ValueError("executor must be 'thread' or 'process'")
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
        self._sink: Sink | None = None
        self._sequencer: Sequencer | None = None
        self._threads: list[threading.Thread] = []
        self._stats: list[WorkerStats] = []
        self._pool: ProcessPoolExecutor | None = None
        self._stopping = False
        self._logged_first_error = False
        self._fail_lock = threading.Lock()
        self._fail_pos = sys.maxsize  # earliest input position that failed (policy "raise")

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
        return len(self.input_queue) if self.input_queue is not None else 0

    def clear_input_queue(self) -> int:
        return self.input_queue.clear() if self.input_queue is not None else 0

    # ---------------------------------------------------------------- lifecycle
    def bind(self, input_queue: Channel, output_queue: Sink, host: StageHost, bound: int) -> None:
        self.input_queue = input_queue
        self.output_queue = output_queue
        self._host = host
        self._sequencer = Sequencer(output_queue, bound) if self.workers > 1 else None
        self._sink = output_queue
        self._stats = [WorkerStats() for _ in range(self.workers)]
        self._logged_first_error = False
        self._fail_pos = sys.maxsize

    def start(self) -> None:
        if self.input_queue is None or self._sink is None:
            raise RuntimeError(f"stage {self.name!r} is not bound to a pipeline")
        self._stopping = False
        if self.executor == "process":
            ctx = multiprocessing.get_context("forkserver")
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx)
            for _ in range(self.workers):
                self._pool.submit(_noop)  # warm up the workers in the background
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
        pool = self._pool
        if pool is not None:
            procs = dict(getattr(pool, "_processes", None) or {})
            for p in procs.values():
                if p.is_alive():
                    p.terminate()
            pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        return not alive

    def alive_threads(self) -> list[threading.Thread]:
        return [t for t in self._threads if t.is_alive()]

    # ---------------------------------------------------------------- error handling
    def _note_fail(self, pos: int) -> None:
        """Input position ``pos`` failed (or carried a fail marker): later ones need no work."""
        with self._fail_lock:
            if pos < self._fail_pos:
                self._fail_pos = pos

    def _error(
        self,
        env: Envelope,
        ws: WorkerStats,
        exc: BaseException | None,
        payload: ExcPayload | None,
        t_end: float,
        outs: list[Envelope],
        pos: int,
    ) -> None:
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
            self._note_fail(pos)
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

    def _forward(self, pos: int, count: int, outs: list[Envelope]) -> None:
        seqr = self._sequencer
        if seqr is not None:
            seqr.deposit(pos, count, outs)
        elif outs:
            sink = self._sink
            assert sink is not None
            sink.put_many(outs)

    # ---------------------------------------------------------------- thread executor
    def _thread_worker(self, ws: WorkerStats) -> None:
        try:
            self._thread_loop(ws)
        except Stopped:
            pass
        except Exception:  # pragma: no cover - engine bug: make it visible, stop cleanly
            logger.exception("stage %r worker crashed", self.name)
            if self._host is not None:
                self._host._fail(StageError(self.name, -1, "engine worker crashed"))

    def _thread_loop(self, ws: WorkerStats) -> None:
        ch = self.input_queue
        assert ch is not None
        fn = self.process_fn
        pc = time.perf_counter
        share = self.workers
        max_n = MAX_BATCH
        ema = 0.0
        forward = self._forward
        while True:
            pos, batch = ch.get_batch(max_n, share)
            epoch = ch.cleared
            b0 = now = pc()  # ``now``: the last clock reading (one per item on the fast path)
            t_flush = b0
            put_time = 0.0
            outs: list[Envelope] = []
            first = 0
            n_in = n_out = 0
            last = len(batch) - 1
            limit = self._fail_pos - pos  # batch indexes past a fail-fast failure: no work
            for i, env in enumerate(batch):
                if env.kind != VALUE:
                    outs.append(env)
                    if env.kind == FAIL:
                        self._note_fail(pos + i)
                        limit = min(limit, i)
                elif ch.cleared != epoch or i > limit:  # clear()/interrupt(), or failed before
                    self._discard_rest(batch, i, outs)
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
                    except Exception as exc:
                        self._error(env, ws, exc, None, pc(), outs, pos + i)
                        r = env  # marker: handled
                        limit = self._fail_pos - pos
                    if type(r) is GeneratorType:
                        n_out += self._fan_out(env, r, ws, outs, pos + i)
                        limit = self._fail_pos - pos
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
                    forward(pos + first, i + 1 - first, outs)
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
            forward(pos + first, len(batch) - first, outs)
            if share > 1:
                per = work / len(batch)
                ema = per if ema == 0.0 else 0.7 * ema + 0.3 * per
                cap = int(THREAD_BATCH_TARGET / ema) if ema else MAX_BATCH
                max_n = max(1, min(MAX_BATCH, cap))

    def _discard_rest(self, batch: list[Envelope], i: int, outs: list[Envelope]) -> None:
        rest = batch[i:]
        outs.extend(e for e in rest if e.kind == EOS or e.kind == FAIL)
        n = sum(1 for e in rest if e.kind in (VALUE, ERROR))
        if n and self._host is not None:
            self._host._add_discarded(n)

    def _fan_out(
        self, env: Envelope, gen: Any, ws: WorkerStats, outs: list[Envelope], pos: int
    ) -> int:
        t = env.t
        pc = time.perf_counter
        k = 0
        sub = env.sub
        try:
            for v in gen:
                ct = None
                if t is not None:
                    ct = t[:]
                    ct.append(pc())
                outs.append(Envelope(VALUE, v, env.seq, ct, (*sub, k)))
                k += 1
        except Exception as exc:
            ws.n_out += k
            self._error(env, ws, exc, None, pc(), outs, pos)
            return 0
        if k == 0:
            self._filtered(env, ws, pc(), outs)
        return k

    # ---------------------------------------------------------------- process executor
    def _process_worker(self, ws: WorkerStats) -> None:
        try:
            self._process_loop(ws)
        except Stopped:
            pass
        except Exception:  # pragma: no cover
            logger.exception("stage %r worker crashed", self.name)
            if self._host is not None:
                self._host._fail(StageError(self.name, -1, "engine worker crashed"))

    def _wait(self, fut: Future[Any]) -> Any:
        while True:
            try:
                return fut.result(timeout=0.05)
            except FutureTimeout:
                if self._stopping:
                    fut.cancel()
                    raise Stopped(0) from None

    def _process_loop(self, ws: WorkerStats) -> None:
        ch = self.input_queue
        pool = self._pool
        assert ch is not None and pool is not None
        share = self.workers
        max_n = 1
        ema = 0.0
        fn = self.process_fn
        while True:
            pos, batch = ch.get_batch(max_n, share)
            count = len(batch)  # positions taken (the sequencer needs the whole range)
            limit = self._fail_pos - pos  # batch indexes past a fail-fast failure: no work
            for i, e in enumerate(batch):
                if e.kind == FAIL:
                    self._note_fail(pos + i)
                    limit = min(limit, i)
            if limit < count - 1:
                kept: list[Envelope] = []
                self._discard_rest(batch, limit + 1, kept)
                batch = batch[: limit + 1] + kept
            values = [e.data for e in batch if e.kind == VALUE]
            results: list[tuple[int, Any, float, float]] | None = None
            failure: BaseException | None = None
            if values:
                try:
                    results = self._wait(pool.submit(_run_batch, fn, values))
                except Stopped:
                    raise
                except Exception as exc:
                    if self._stopping:
                        raise Stopped(0) from None
                    failure = exc
            outs: list[Envelope] = []
            j = 0
            work = 0.0
            for i, env in enumerate(batch):
                if env.kind != VALUE:
                    outs.append(env)
                    continue
                ws.n_in += 1
                t = env.t
                if results is None:
                    now = time.perf_counter()
                    if t is not None:
                        t.append(now)
                    self._error(env, ws, failure, None, now, outs, pos + i)
                    continue
                status, payload, t0, t1 = results[j]
                j += 1
                work += t1 - t0
                if t is not None:
                    t.append(t0)
                if status == 0:
                    env.data = payload
                    if t is not None:
                        t.append(t1)
                    outs.append(env)
                    ws.n_out += 1
                elif status == 1:
                    self._filtered(env, ws, t1, outs)
                elif status == 3:
                    self._error(env, ws, None, payload, t1, outs, pos + i)
                else:
                    kids = payload if status == 2 else payload[0]
                    sub = env.sub
                    for k, (v, ty) in enumerate(kids):
                        ct = None
                        if t is not None:
                            ct = t[:]
                            ct.append(ty)
                        outs.append(Envelope(VALUE, v, env.seq, ct, (*sub, k)))
                    ws.n_out += len(kids)
                    if status == 4:
                        self._error(env, ws, None, payload[1], t1, outs, pos + i)
                    elif not kids:
                        self._filtered(env, ws, t1, outs)
            ws.busy += work
            self._forward(pos, count, outs)
            if values and work > 0:
                per = work / len(values)
                ema = per if ema == 0.0 else 0.7 * ema + 0.3 * per
                max_n = max(1, min(MAX_BATCH, int(PROCESS_BATCH_TARGET / ema)))
            elif values:
                max_n = MAX_BATCH
