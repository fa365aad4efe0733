"""End-to-end timing on the consumer's side, and the per-item record builder.

Stage statistics (queue wait, computation, transmission, stage latency) are built up by the
stage threads themselves (:mod:`~.stage_timing`). What is left for the consumer (the event loop
thread, once per delivered output batch, so no lock and ``on_item_timing`` is always called from
that one thread) is the end-to-end latency of delivered outputs (from creation to when the
consumer took the output batch holding it; see ``output.py``) -- a
:class:`~.histogram.Histogram` (count, sum, exact min/max, ~1 % relative-error log buckets for
percentiles: the first ``EXACT_VALUES`` outputs bucketed exactly, then a systematic sample of
every ``SAMPLE_EVERY``-th output across the stream, as for the stages) fed with C-level column
arithmetic -- and the per-item
:class:`~.item.ItemRecord` objects, built only for items that carry per-item stamps (every item
when an ``on_item_timing``/``on_item_timings``/``on_item_stamps`` callback is set, else the first
``max_item_records``; see ``feeding.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .histogram import Histogram
from .item import ERROR, VALUE, Envelope, ItemRecord, StampBatch, delivered_record
from .stage_timing import EXACT_VALUES, SAMPLE_EVERY, StageStats, StageTiming

logger = logging.getLogger(__name__)

__all__ = ["Aggregator", "Histogram", "StageStats", "StageTiming"]

RawRecord = tuple[
    int,
    tuple[int, ...],
    list[float] | None,
    float,
    tuple[int, list[float], str, str | None, str] | None,
    int,
]


class Aggregator:
    """Consumes delivered envelopes (timing on): end-to-end statistics and records."""

    def __init__(
        self,
        stage_names: list[str],
        on_item_timing: Callable[[ItemRecord], None] | None,
        max_item_records: int,
        on_item_timings: Callable[[list[ItemRecord]], None] | None = None,
        on_item_stamps: Callable[[StampBatch], None] | None = None,
    ) -> None:
        self.stage_names = stage_names
        self._names = tuple(stage_names)
        self.total = Histogram()  # end-to-end latency of delivered outputs
        self._exact_left = EXACT_VALUES  # outputs still bucketed exactly
        self._phase = 0  # index, in the next sampled part, of the next sampled output
        self.sum_latency = 0.0
        self._kept: list[ItemRecord] = []
        # records kept for the report and not yet built: (seq, sub, stamps, delivered, info,
        # kind) in output order; built when somebody reads :attr:`records`
        self._raw: list[RawRecord] = []
        self.max_records = max_item_records
        self.callback = on_item_timing
        self.batch_callback = on_item_timings
        self.stamp_callback = on_item_stamps
        self.finished = 0  # items finalised (ok + filtered + error)
        self.delivered = 0

    @property
    def records(self) -> list[ItemRecord]:
        """The kept records (the first ``max_item_records``), in output order."""
        if self._raw:
            raw, self._raw = self._raw, []
            self._kept.extend(self._build(raw))
        return self._kept

    def _want_record(self) -> bool:
        return (
            self.callback is not None
            or self.batch_callback is not None
            or len(self._kept) + len(self._raw) < self.max_records
        )

    def _want_stamps(self) -> bool:
        return self.stamp_callback is not None

    def process(self, envs: list[Envelope], taken: float, others: int = 0) -> None:
        """Finalise a batch of envelopes (output order) the consumer took at ``taken``: that is
        when its outputs were delivered (end-to-end latency: from each one's creation stamp).
        ``others`` of them are not delivered outputs: filtered/failed items, which travel only
        to carry their record, and markers."""
        n = len(envs)
        if not n:
            return
        if others:
            outputs = [e for e in envs if e.kind == VALUE or e.kind == ERROR]
            # finalised here as well: the filtered/failed items carrying their record
            self.finished += len(outputs) + sum(
                1 for e in envs if e.info is not None and e.kind != ERROR
            )
        else:
            outputs = envs
            self.finished += n
        m = len(outputs)
        if m:
            created = [e.c for e in outputs]
            total = m * taken - sum(created)
            lo = taken - max(created)
            hi = taken - min(created)
            # the first EXACT_VALUES outputs exactly, then every SAMPLE_EVERY-th across the
            # stream (not per batch: one large batch must not be judged by a few values)
            exact = self._exact_left
            if exact >= m:
                self.total.record_summary(m, total, [taken - c for c in created], 1, lo, hi)
                self._exact_left = exact - m
            else:
                head = [taken - c for c in created[:exact]] if exact > 0 else []
                self.total.record_summary(m, total, head, 1, lo, hi)
                self._exact_left = 0
                phase = self._phase
                tail = [taken - c for c in created[exact + phase :: SAMPLE_EVERY]]
                self.total.add_sample(tail, SAMPLE_EVERY)
                self._phase = (phase - (m - exact)) % SAMPLE_EVERY
            self.delivered += m
            self.sum_latency += total
        want_stamps = self._want_stamps()
        if not (want_stamps or self._want_record()):
            return
        # when each was delivered (0.0 if not), for the record builders
        if others:
            delivered = [taken if e.kind == VALUE or e.kind == ERROR else 0.0 for e in envs]
        else:
            delivered = [taken] * n
        if want_stamps:
            self._stamps(envs, delivered)
        else:
            self._records(envs, delivered)

    def _stamps(self, envs: list[Envelope], delivered: list[float]) -> None:
        """``on_item_stamps``: delivered items in columns, no object per item (and the records
        the other callbacks or the report want, from the same stamps)."""
        seqs: list[int] = []
        subs: list[tuple[int, ...]] = []
        stamps: list[list[float]] = []
        times: list[float] = []
        others: list[RawRecord] = []
        for i, env in enumerate(envs):
            t = env.t
            info = env.info
            if info is None:
                if t is None:
                    continue
                t.append(env.q)  # enq_out: when it entered the output buffer
                seqs.append(env.seq)
                subs.append(env.sub)
                stamps.append(t)
                times.append(delivered[i])
            else:
                others.append((env.seq, env.sub, t, delivered[i], info, env.kind))
        if not seqs and not others:
            return
        batch = StampBatch(self._names, seqs, subs, stamps, times, self._build(others))
        callback = self.stamp_callback
        assert callback is not None
        try:
            callback(batch)
        except Exception:
            logger.exception("on_item_stamps callback failed; it is disabled")
            self.stamp_callback = None
        if self._want_record():
            # record callbacks as well, or the report's first records: built from the same
            # stamps, in output order
            self._records(envs, delivered, stamped=True)

    def _records(
        self, envs: list[Envelope], delivered: list[float], *, stamped: bool = False
    ) -> None:
        raw: list[RawRecord] = []
        append = raw.append
        for i, env in enumerate(envs):
            info = env.info
            t = env.t
            if info is None:
                if t is None:  # no per-item stamps: no record
                    continue
                if not stamped:
                    t.append(env.q)  # enq_out: when it entered the output buffer
            append((env.seq, env.sub, t, delivered[i], info, env.kind))
        if not raw:
            return
        if self.callback is None and self.batch_callback is None:  # kept only: build later
            room = self.max_records - len(self._kept) - len(self._raw)
            if room > 0:
                self._raw.extend(raw if len(raw) <= room else raw[:room])
            return
        self._emit(self._build(raw))

    def _build(self, raw: list[RawRecord]) -> list[ItemRecord]:
        names = self._names
        recs: list[ItemRecord] = []
        append = recs.append
        for seq, sub_index, t, d, info, kind in raw:
            if info is None:
                assert t is not None
                append(delivered_record(seq, sub_index, t, d, names))
                continue
            last, t, status, msg, err_stage = info
            created = t[0]
            finished = d if kind == ERROR else t[-1]
            c = 0.0
            for j in range(last + 1):
                c += t[3 + 3 * j] - t[2 + 3 * j]
            total = finished - created
            append(
                ItemRecord(
                    seq,
                    sub_index,
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
        return recs

    def _emit(self, recs: list[ItemRecord]) -> None:
        room = self.max_records - len(self.records)
        if room > 0:
            self._kept.extend(recs if len(recs) <= room else recs[:room])
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
        self._kept.clear()
        self._raw.clear()
