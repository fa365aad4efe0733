"""Streaming timing aggregation and the per-item record builder.

Nothing here keeps a list of every item: each metric is a :class:`~.histogram.Histogram` (count,
sum, min, max and ~1 % relative-error log buckets for percentiles). Delivered values are
aggregated per output batch with C-level column arithmetic. Counts and sums (hence averages) are
always exact; so are the min/max of the end-to-end latency and of each stage's latency. For
batches larger than ``SMALL_BATCH`` (whether or not records are wanted: a record needs only its
own stamps and summed computation time), the min/max of the queue wait / computation /
transmission split come, like the percentiles, from a systematic sample of the batch (widened to
contain the batch mean), which keeps timing cheap at high throughput. Per-item
:class:`~.item.ItemRecord` objects are built only when somebody wants them (an
``on_item_timing`` callback, or the in-memory report below its ``max_item_records`` bound).

The :class:`Aggregator` runs on the consumer's side (the event loop thread), once per delivered
output batch, so it needs no lock and ``on_item_timing`` is always called from that one thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from operator import add, sub

from .histogram import Histogram
from .item import ERROR, Envelope, ItemRecord

logger = logging.getLogger(__name__)

__all__ = ["SMALL_BATCH", "Aggregator", "Histogram", "StageTiming"]

SMALL_BATCH = 64  # delivered batches up to this size get exact per-metric min/max


class StageTiming:
    __slots__ = ("computation", "latency", "queue_wait", "transmission")

    def __init__(self) -> None:
        self.queue_wait = Histogram()
        self.computation = Histogram()
        self.transmission = Histogram()
        self.latency = Histogram()


class Aggregator:
    """Consumes delivered envelopes (timing on) and keeps streaming statistics.

    Statistics take the vectorised path (column arithmetic at C speed) for every delivered value;
    only filtered/failed items (rare) are handled one by one. Records, when wanted, are built
    lazily (:class:`~.item.ItemRecord` keeps the raw stamps) in output order.
    """

    def __init__(
        self,
        stage_names: list[str],
        on_item_timing: Callable[[ItemRecord], None] | None,
        max_item_records: int,
        on_item_timings: Callable[[list[ItemRecord]], None] | None = None,
    ) -> None:
        self.stage_names = stage_names
        self._names = tuple(stage_names)
        self.stages = [StageTiming() for _ in stage_names]
        self.total = Histogram()  # end-to-end latency of delivered outputs
        self.sum_computation = 0.0  # over delivered outputs
        self.sum_latency = 0.0
        self.records: list[ItemRecord] = []
        self.max_records = max_item_records
        self.callback = on_item_timing
        self.batch_callback = on_item_timings
        self.finished = 0  # items finalised (ok + filtered + error)
        self.delivered = 0

    def _want_record(self) -> bool:
        return (
            self.callback is not None
            or self.batch_callback is not None
            or len(self.records) < self.max_records
        )

    def process(self, envs: list[Envelope], delivered: list[float]) -> None:
        """Finalise a batch (output order); ``delivered[i]`` is 0.0 for filtered/failed items."""
        n = len(envs)
        if not n:
            return
        want = self._want_record()
        self.finished += n
        plain = [i for i in range(n) if envs[i].info is None]
        comp: list[float] | None
        if len(plain) == n:
            comp = self._process_plain([e.t for e in envs], delivered, want)  # type: ignore[misc]
        else:
            ts: list[list[float]] = [envs[i].t for i in plain]  # type: ignore[misc]
            comp = self._process_plain(ts, [delivered[i] for i in plain], want)
            others = [i for i in range(n) if envs[i].info is not None]
            self._process_each([envs[i] for i in others], [delivered[i] for i in others])
        if want:
            assert comp is not None
            self._records(envs, delivered, plain, comp)

    def _process_plain(
        self, ts: list[list[float]], ds: list[float], want: bool
    ) -> list[float] | None:
        """Vectorised path for delivered values: C-level column arithmetic.

        Returns each item's summed computation time when ``want`` (for its record).
        """
        n = len(ts)
        if not n:
            return [] if want else None
        if n <= SMALL_BATCH:
            return self._process_plain_exact(ts, ds, want)
        # Large batch: exact count and sum of every metric (from column sums), exact min/max of
        # each stage's latency and of the end-to-end latency; percentiles (and the min/max of
        # the queue wait / computation / transmission split) from a systematic sample.
        cols = list(zip(*ts, strict=True))
        sums = list(map(sum, cols))
        step = -(-n // Histogram.SAMPLE)
        scols = list(zip(*ts[::step], strict=True))
        comp_sum = 0.0
        ctot: list[float] | None = None
        for i, s in enumerate(self.stages):
            b = 1 + 3 * i
            s_enq, s_start, s_end, s_nxt = sums[b], sums[b + 1], sums[b + 2], sums[b + 3]
            q_enq, q_start, q_end, q_nxt = scols[b], scols[b + 1], scols[b + 2], scols[b + 3]
            comp_total = s_end - s_start
            s.queue_wait.record_summary(n, s_start - s_enq, list(map(sub, q_start, q_enq)), step)
            s.computation.record_summary(n, comp_total, list(map(sub, q_end, q_start)), step)
            s.transmission.record_summary(n, s_nxt - s_end, list(map(sub, q_nxt, q_end)), step)
            lat = list(map(sub, cols[b + 3], cols[b]))
            s.latency.record_summary(n, sum(lat), lat[::step], step, min(lat), max(lat))
            comp_sum += comp_total
            if want:
                comp = list(map(sub, cols[b + 2], cols[b + 1]))
                ctot = comp if ctot is None else list(map(add, ctot, comp))
        totals = list(map(sub, ds, cols[0]))
        total_sum = sum(totals)
        self.total.record_summary(n, total_sum, totals[::step], step, min(totals), max(totals))
        self.delivered += n
        self.sum_computation += comp_sum
        self.sum_latency += total_sum
        if want:
            return ctot if ctot is not None else [0.0] * n
        return None

    def _process_plain_exact(
        self, ts: list[list[float]], ds: list[float], want: bool
    ) -> list[float] | None:
        cols = list(zip(*ts, strict=True))
        comp_sum = 0.0
        ctot: list[float] | None = None
        for i, s in enumerate(self.stages):
            b = 1 + 3 * i
            enq, start, end, nxt = cols[b], cols[b + 1], cols[b + 2], cols[b + 3]
            comp = list(map(sub, end, start))
            s.queue_wait.record_many(list(map(sub, start, enq)))
            s.computation.record_many(comp)
            s.transmission.record_many(list(map(sub, nxt, end)))
            s.latency.record_many(list(map(sub, nxt, enq)))
            comp_sum += sum(comp)
            if want:
                ctot = comp if ctot is None else list(map(add, ctot, comp))
        totals = list(map(sub, ds, cols[0]))
        self.total.record_many(totals)
        self.delivered += len(ts)
        self.sum_computation += comp_sum
        self.sum_latency += sum(totals)
        if want:
            return ctot if ctot is not None else [0.0] * len(ts)
        return None

    def _process_each(self, envs: list[Envelope], dels: list[float]) -> None:
        """Statistics of filtered/failed items (and returned errors), one by one."""
        st = self.stages
        for env, delivered in zip(envs, dels, strict=True):
            info = env.info
            assert info is not None
            last, t, _status, _msg, _stage = info
            nt = len(t)
            comp_sum = 0.0
            for i in range(last + 1):
                b = 1 + 3 * i
                enq = t[b]
                start = t[b + 1]
                end = t[b + 2]
                s = st[i]
                s.queue_wait.record(start - enq)
                s.computation.record(end - start)
                comp_sum += end - start
                if b + 3 < nt:
                    s.transmission.record(t[b + 3] - end)
                    s.latency.record(t[b + 3] - enq)
                else:
                    s.latency.record(end - enq)
            if env.kind == ERROR:  # returned in the item's place: a delivered output
                total = delivered - t[0]
                self.delivered += 1
                self.total.record(total)
                self.sum_computation += comp_sum
                self.sum_latency += total

    def _records(
        self, envs: list[Envelope], delivered: list[float], plain: list[int], comp: list[float]
    ) -> None:
        names = self._names
        recs: list[ItemRecord] = []
        append = recs.append
        k = 0  # index into comp (plain items, in order)
        for i, env in enumerate(envs):
            info = env.info
            if info is None:
                t = env.t
                assert t is not None
                c = comp[k]
                k += 1
                d = delivered[i]
                created = t[0]
                total = d - created
                over = total - c
                append(
                    ItemRecord(
                        env.seq,
                        env.sub,
                        "ok",
                        created,
                        d,
                        total,
                        c,
                        over if over > 0.0 else 0.0,
                        None,
                        None,
                        None,
                        t,
                        names,
                    )
                )
                continue
            last, t, status, msg, err_stage = info
            created = t[0]
            finished = delivered[i] if env.kind == ERROR else t[-1]
            c = 0.0
            for j in range(last + 1):
                c += t[3 + 3 * j] - t[2 + 3 * j]
            total = finished - created
            append(
                ItemRecord(
                    env.seq,
                    env.sub,
                    status,
                    created,
                    finished,
                    total,
                    c,
                    max(0.0, total - c),
                    None,
                    msg,
                    err_stage,
                    t,
                    names[: last + 1],
                )
            )
        self._emit(recs)

    def _emit(self, recs: list[ItemRecord]) -> None:
        room = self.max_records - len(self.records)
        if room > 0:
            self.records.extend(recs if len(recs) <= room else recs[:room])
        cb = self.callback
        if cb is not None:
            try:
                for r in recs:
                    cb(r)
            except Exception:
                logger.exception("on_item_timing callback failed; it is disabled")
                self.callback = None
        bcb = self.batch_callback
        if bcb is not None:
            try:
                bcb(recs)
            except Exception:
                logger.exception("on_item_timings callback failed; it is disabled")
                self.batch_callback = None

    def clear_records(self) -> None:
        self.records.clear()
