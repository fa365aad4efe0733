"""Streaming timing aggregation: log-bucket histograms and the per-item record builder.

Nothing here keeps a list of every item: each metric is a :class:`Histogram` (count, sum, min,
max and ~1 % relative-error log buckets for percentiles). Per-item :class:`~.item.ItemRecord`
objects are built only when somebody wants them (an ``on_item_timing`` callback, or the in-memory
report below its ``max_item_records`` bound).

The :class:`Aggregator` runs on the consumer's side (the event loop thread), once per delivered
output batch, so it needs no lock and ``on_item_timing`` is always called from that one thread.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from operator import sub

from .item import ERROR, HOLE, Envelope, ItemRecord

logger = logging.getLogger(__name__)

_GROWTH = 1.02  # bucket width: <= 1 % error at the geometric mid-point
_INV_LOG = 1.0 / math.log(_GROWTH)


class Histogram:
    """count/sum/min/max exactly; percentiles from log buckets (~1 % relative error).

    Bucket ``i`` holds values ``x`` with ``log1p(x * 1e9)`` in ``[i, i + 1) * log(1.02)``.
    ``record_many`` buckets at most ``SAMPLE`` values per call (a systematic sample, each counted
    with its weight), so large batches cost C-speed ``sum``/``min``/``max`` plus a bounded amount
    of Python work; batches up to ``SAMPLE`` values are bucketed exactly.
    """

    __slots__ = ("buckets", "count", "max", "min", "total", "weight")

    SAMPLE = 16

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.weight = 0
        self.buckets: dict[int, int] = {}

    def record(self, x: float) -> None:
        self.count += 1
        self.total += x
        if x < self.min:
            self.min = x
        if x > self.max:
            self.max = x
        i = int(math.log1p(x * 1e9) * _INV_LOG) if x > 0.0 else 0
        b = self.buckets
        b[i] = b.get(i, 0) + 1
        self.weight += 1

    def record_many(self, xs: list[float]) -> None:
        n = len(xs)
        if not n:
            return
        self.count += n
        self.total += sum(xs)
        lo = min(xs)
        hi = max(xs)
        if lo < self.min:
            self.min = lo
        if hi > self.max:
            self.max = hi
        step = 1 if n <= self.SAMPLE else -(-n // self.SAMPLE)
        sample = xs if step == 1 else xs[::step]
        b = self.buckets
        log1p = math.log1p
        inv = _INV_LOG
        for x in sample:
            i = int(log1p(x * 1e9) * inv) if x > 0.0 else 0
            b[i] = b.get(i, 0) + step
        self.weight += step * len(sample)

    @property
    def avg(self) -> float:
        return self.total / self.count if self.count else 0.0

    def percentile(self, q: float) -> float:
        if not self.count or not self.weight:
            return 0.0
        rank = max(1, math.ceil(q / 100.0 * self.weight))
        seen = 0
        for i in sorted(self.buckets):
            seen += self.buckets[i]
            if seen >= rank:
                mid = math.expm1((i + 0.5) / _INV_LOG) / 1e9
                return min(max(mid, self.min), self.max)
        return self.max

    def stats(self) -> dict[str, float]:
        if not self.count:
            return {"avg": 0.0, "min": 0.0, "max": 0.0, "p50": 0.0, "p95": 0.0, "p99": 0.0}
        return {
            "avg": self.avg,
            "min": self.min,
            "max": self.max,
            "p50": self.percentile(50),
            "p95": self.percentile(95),
            "p99": self.percentile(99),
        }


class StageTiming:
    __slots__ = ("computation", "latency", "queue_wait", "transmission")

    def __init__(self) -> None:
        self.queue_wait = Histogram()
        self.computation = Histogram()
        self.transmission = Histogram()
        self.latency = Histogram()


class Aggregator:
    """Consumes delivered envelopes (timing on) and keeps streaming statistics."""

    def __init__(
        self,
        stage_names: list[str],
        on_item_timing: Callable[[ItemRecord], None] | None,
        max_item_records: int,
    ) -> None:
        self.stage_names = stage_names
        self.stages = [StageTiming() for _ in stage_names]
        self.total = Histogram()  # end-to-end latency of delivered outputs
        self.sum_computation = 0.0  # over delivered outputs
        self.sum_latency = 0.0
        self.records: list[ItemRecord] = []
        self.max_records = max_item_records
        self.callback = on_item_timing
        self.finished = 0  # items finalised (ok + filtered + error)
        self.delivered = 0

    def _want_record(self) -> bool:
        return self.callback is not None or len(self.records) < self.max_records

    def process(self, envs: list[Envelope], delivered: list[float]) -> None:
        """Finalise a batch (output order); ``delivered[i]`` is 0.0 for filtered/failed items."""
        if self.callback is not None or len(self.records) < self.max_records:
            self._process_each(envs, delivered)
            return
        n = len(envs)
        plain = [i for i in range(n) if envs[i].info is None]
        if len(plain) == n:
            self._process_plain([e.t for e in envs], delivered)  # type: ignore[misc]
            self.finished += n
            return
        others = [i for i in range(n) if envs[i].info is not None]
        self._process_each([envs[i] for i in others], [delivered[i] for i in others])
        self._process_plain([envs[i].t for i in plain], [delivered[i] for i in plain])  # type: ignore[misc]
        self.finished += len(plain)

    def _process_plain(self, ts: list[list[float]], ds: list[float]) -> None:
        """Vectorised path for delivered values (no record wanted): C-level column arithmetic."""
        if not ts:
            return
        cols = list(zip(*ts, strict=True))
        comp_sum = 0.0
        for i, s in enumerate(self.stages):
            b = 1 + 3 * i
            enq, start, end, nxt = cols[b], cols[b + 1], cols[b + 2], cols[b + 3]
            comp = list(map(sub, end, start))
            s.queue_wait.record_many(list(map(sub, start, enq)))
            s.computation.record_many(comp)
            s.transmission.record_many(list(map(sub, nxt, end)))
            s.latency.record_many(list(map(sub, nxt, enq)))
            comp_sum += sum(comp)
        totals = list(map(sub, ds, cols[0]))
        self.total.record_many(totals)
        self.delivered += len(ts)
        self.sum_computation += comp_sum
        self.sum_latency += sum(totals)

    def _process_each(self, envs: list[Envelope], dels: list[float]) -> None:
        names = self.stage_names
        st = self.stages
        nst = len(st)
        for env, delivered in zip(envs, dels, strict=True):
            self.finished += 1
            info = env.info
            if info is None:  # delivered value: stamps for every stage + output enqueue
                t = env.t
                if t is None:
                    continue
                last = nst
                status = "ok"
                msg = err_stage = None
                finished = delivered
            else:
                last, t, status, msg, err_stage = info
                last += 1
                finished = delivered if env.kind == ERROR else t[-1]
            created = t[0]
            comp_sum = 0.0
            want = self._want_record()
            rec_stages: dict[str, dict[str, float]] = {}
            for i in range(last):
                b = 1 + 3 * i
                enq = t[b]
                start = t[b + 1]
                end = t[b + 2]
                s = st[i]
                qw = start - enq
                comp = end - start
                s.queue_wait.record(qw)
                s.computation.record(comp)
                comp_sum += comp
                if b + 3 < len(t):
                    tr = t[b + 3] - end
                    s.transmission.record(tr)
                    s.latency.record(t[b + 3] - enq)
                else:
                    tr = 0.0
                    s.latency.record(end - enq)
                if want:
                    rec_stages[names[i]] = {
                        "queue_wait": qw,
                        "computation": comp,
                        "transmission": tr,
                        "start": start - created,
                        "end": end - created,
                    }
            total = finished - created
            if env.kind != HOLE:
                self.delivered += 1
                self.total.record(total)
                self.sum_computation += comp_sum
                self.sum_latency += total
            if want:
                rec = ItemRecord(
                    seq=env.seq,
                    sub_index=env.sub,
                    status=status,
                    created_at=created,
                    finished_at=finished,
                    total_latency=total,
                    computation_time=comp_sum,
                    overhead_time=max(0.0, total - comp_sum),
                    stages=rec_stages,
                    error=msg,
                    error_stage=err_stage,
                )
                if len(self.records) < self.max_records:
                    self.records.append(rec)
                cb = self.callback
                if cb is not None:
                    try:
                        cb(rec)
                    except Exception:
                        logger.exception("on_item_timing callback failed; it is disabled")
                        self.callback = None

    def clear_records(self) -> None:
        self.records.clear()
