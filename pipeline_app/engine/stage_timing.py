"""Per-stage timing statistics, built up in the stage's own threads (timing on).

A stage thread keeps three columns per forwarded batch while it processes it -- each output's
enqueue stamp (when it became visible to the stage), processing start and processing end --
aligned with the batch's outputs (markers and pass-through envelopes get ``nan`` placeholders).
When the batch has been put downstream, the put returns the stamp(s) at which the outputs became
visible there (with ``workers > 1``, whichever worker emits the ordered outputs reports them), and
:meth:`StageStats.add_forwarded` keeps the batch: queue wait = start - enqueue, computation =
end - start, transmission = next enqueue - end, latency = next enqueue - enqueue. Filtered and
failed items (nothing downstream) are added one by one with :meth:`StageStats.add_one` (latency =
end - enqueue, no transmission).

Kept batches are folded into the histograms with C-level column arithmetic every
``FOLD_EVERY`` outputs, and whenever a summary is read (:meth:`StageStats.fold`), so a small
batch costs a few list appends. Counts and sums are always exact, and so are the min/max of the
stage latency. Each stage's first ``EXACT_VALUES`` outputs are bucketed exactly (every value,
exact min/max); after that the percentiles and the min/max of the queue wait / computation /
transmission split come from a systematic sample of every ``SAMPLE_EVERY``-th output (its min/max
widened to contain the mean), which keeps timing cheap at high throughput. One lock per stage,
taken once per batch (uncontended with one worker), lets a summary read at any time.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from operator import sub

from .histogram import Histogram

SMALL_BATCH = 64  # end-to-end: delivered batches up to this size are bucketed exactly
FOLD_EVERY = 512  # forwarded outputs buffered before they are folded into the histograms
EXACT_VALUES = 2048  # each stage's first outputs are bucketed exactly ...
SAMPLE_EVERY = 64  # ... then every 64th (a systematic sample over the stream)

Columns = tuple[list[float], list[float], list[float]]
"""``(enqueue, start, end)`` per output of a batch, ``nan`` for untimed envelopes."""

Stamps = Sequence[tuple[int, float]]
"""What a put returns with timing on: ``(end index, stamp)`` per chunk it inserted."""


class StageTiming:
    __slots__ = ("computation", "latency", "queue_wait", "transmission")

    def __init__(self) -> None:
        self.queue_wait = Histogram()
        self.computation = Histogram()
        self.transmission = Histogram()
        self.latency = Histogram()


class StageStats:
    """A stage's timing histograms, updated by its threads (see the module documentation)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.timing = StageTiming()
        self._pending: list[tuple[Columns, Stamps]] = []
        self._n_pending = 0
        self._phase = 0  # index, in the next folded columns, of the next sampled output

    def add_one(self, enq: float, start: float, end: float) -> None:
        """An item that ended here (filtered, or failed without being returned)."""
        tm = self.timing
        with self.lock:
            tm.queue_wait.record(start - enq)
            tm.computation.record(end - start)
            tm.latency.record(end - enq)

    def add_forwarded(self, cols: Columns, stamps: Stamps) -> None:
        """A batch of outputs was put downstream at ``stamps`` (folded in by the thousand)."""
        n = len(cols[0])
        if not n or not stamps:
            return
        with self.lock:
            self._pending.append((cols, stamps))
            self._n_pending += n
            if self._n_pending >= FOLD_EVERY:
                self.fold()

    def fold(self) -> None:
        """Fold the pending batches into the histograms (caller holds :attr:`lock`; readers
        call it before reading)."""
        pending = self._pending
        if not pending:
            return
        self._pending = []
        self._n_pending = 0
        tm = self.timing
        if tm.latency.count < EXACT_VALUES:
            self._fold_exact(pending)
            return
        # Sampled: exact counts and sums; exact latency extremes from the batches' order
        # (enqueue stamps never decrease along a stage's outputs, nor do put stamps).
        k = SAMPLE_EVERY
        ph = self._phase
        count = 0
        s_q = s_s = s_e = s_n = 0.0
        lo = math.inf
        hi = -math.inf
        sq: list[float] = []
        sst: list[float] = []
        se: list[float] = []
        sn: list[float] = []
        for (q, st, e), stamps in pending:
            a = sum(q)
            if a != a or len(stamps) != 1:  # untimed envelopes, or a split put: rare
                q, st, e, nx = _expand(q, st, e, stamps)
                n = len(q)
                if not n:
                    continue
                lat = list(map(sub, nx, q))
                lo = min(lo, min(lat))
                hi = max(hi, max(lat))
                s_q += sum(q)
                s_n += sum(nx)
                sn += nx[ph::k]
            else:
                n = len(q)
                p = stamps[0][1]
                s_q += a
                s_n += p * n
                if p - q[-1] < lo:
                    lo = p - q[-1]
                if p - q[0] > hi:
                    hi = p - q[0]
                if ph < n:
                    sn += [p] * len(range(ph, n, k))
            s_s += sum(st)
            s_e += sum(e)
            count += n
            if ph < n:
                sq += q[ph::k]
                sst += st[ph::k]
                se += e[ph::k]
            ph = (ph - n) % k
        self._phase = ph
        if not count:
            return
        tm.queue_wait.record_summary(count, s_s - s_q, list(map(sub, sst, sq)), k)
        tm.computation.record_summary(count, s_e - s_s, list(map(sub, se, sst)), k)
        tm.transmission.record_summary(count, s_n - s_e, list(map(sub, sn, se)), k)
        tm.latency.record_summary(count, s_n - s_q, list(map(sub, sn, sq)), k, lo, hi)

    def _fold_exact(self, pending: list[tuple[Columns, Stamps]]) -> None:
        qs: list[float] = []
        ss: list[float] = []
        es: list[float] = []
        nx: list[float] = []
        for (q, st, e), stamps in pending:
            q, st, e, nxt = _expand(q, st, e, stamps)
            qs += q
            ss += st
            es += e
            nx += nxt
        n = len(qs)
        if not n:
            return
        tm = self.timing
        for h, vs in (
            (tm.queue_wait, list(map(sub, ss, qs))),
            (tm.computation, list(map(sub, es, ss))),
            (tm.transmission, list(map(sub, nx, es))),
            (tm.latency, list(map(sub, nx, qs))),
        ):
            h.record_summary(n, sum(vs), vs, 1, min(vs), max(vs))


def _expand(
    q: list[float], st: list[float], e: list[float], stamps: Stamps
) -> tuple[list[float], list[float], list[float], list[float]]:
    """One batch's columns plus its next-enqueue column, untimed entries left out."""
    n = len(q)
    if len(stamps) == 1:
        nx = [stamps[0][1]] * n
    else:  # split put (backpressure): one stamp per inserted chunk
        nx = []
        prev = 0
        for j, stamp in stamps:
            nx += [stamp] * (j - prev)
            prev = j
        nx += [math.nan] * (n - len(nx))
        del nx[n:]
    a = sum(q) + sum(nx)
    if a != a:
        keep = [i for i in range(n) if not (math.isnan(q[i]) or math.isnan(nx[i]))]
        return (
            [q[i] for i in keep],
            [st[i] for i in keep],
            [e[i] for i in keep],
            [nx[i] for i in keep],
        )
    return q, st, e, nx
