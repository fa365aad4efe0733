"""Per-stage timing statistics, built up in the stage's own threads (timing on).

A stage thread keeps, per forwarded batch, its outputs' timing -- each output's enqueue stamp
(when its input became visible to the stage, from the input channel: see ``channel.py``),
processing start and processing end -- in one of two forms: a *run* ``(enqueue, first start,
ends)`` when each of the batch's outputs is an input mapped to one value (the common case: an
item's processing starts when the previous one ended, so the starts need not be kept), or full
``(enqueue, start, end)`` columns aligned with the batch's outputs (markers and pass-through
envelopes get ``nan`` placeholders). When the batch has been put downstream, the put returns the
stamp(s) at which the outputs became visible there (with ``workers > 1``, whichever worker emits
the ordered outputs reports them), and :meth:`StageStats.add_forwarded` keeps the batch: queue
wait = start - enqueue, computation = end - start, transmission = next enqueue - end, latency =
next enqueue - enqueue. Filtered and failed items (nothing downstream) are added one by one with
:meth:`StageStats.add_one` (latency = end - enqueue, no transmission).

Counts and sums are always exact, and so are the min/max of the stage latency. Each stage's
first ``EXACT_VALUES`` outputs are bucketed exactly (every value, exact min/max): their batches are
kept and folded into the histograms with C-level column arithmetic. After that the percentiles and
the min/max of the queue wait / computation / transmission split come from a systematic sample of
every ``SAMPLE_EVERY``-th output (its min/max widened to contain the mean), which keeps timing
cheap at high throughput: each batch is reduced at once, while its stamps are fresh in the CPU
caches, to its sums, latency extremes and sampled values (two C-level sums and a few slices for a
run), and those are folded into the histograms every ``FOLD_EVERY`` outputs and whenever a summary
is read (:meth:`StageStats.fold`); the histograms bucket the values in bulk (``histogram.py``).
One lock per stage, taken once per batch (uncontended with one worker), lets a summary read at
any time.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from operator import sub

from .histogram import Histogram

FOLD_EVERY = 4096  # outputs reduced before they are folded into the histograms
EXACT_VALUES = 2048  # each stage's first outputs are bucketed exactly ...
SAMPLE_EVERY = 64  # ... then every 64th (a systematic sample over the stream)

Columns = tuple[list[float], list[float], list[float]]
"""``(enqueue, start, end)`` per output of a batch, ``nan`` for untimed envelopes."""

Run = tuple[list[float], float, list[float]]
"""``(enqueue, first start, end)``: a batch whose every input became one output, each output
started when the previous one ended."""

Timing = Columns | Run
"""A forwarded batch's timing, in either form."""

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
        # exact phase: the batches not folded yet
        self._pending: list[tuple[Timing, Stamps]] = []
        self._n_pending = 0
        self._fold_at = min(FOLD_EVERY, EXACT_VALUES)  # fold when this many outputs are pending
        self._sampling = False  # past the exact phase
        # sampled phase, since the last fold: exact count, sums of the enqueue / start / end /
        # next-enqueue stamps and latency extremes, and the sampled outputs' stamps
        self._count = 0
        self._sum_q = self._sum_s = self._sum_e = self._sum_n = 0.0
        self._lo = math.inf
        self._hi = -math.inf
        self._sample_q: list[float] = []
        self._sample_s: list[float] = []
        self._sample_e: list[float] = []
        self._sample_n: list[float] = []
        self._phase = 0  # index, in the next batch, of the next sampled output

    def add_one(self, enq: float, start: float, end: float) -> None:
        """An item that ended here (filtered, or failed without being returned)."""
        tm = self.timing
        with self.lock:
            tm.queue_wait.record(start - enq)
            tm.computation.record(end - start)
            tm.latency.record(end - enq)

    def add_forwarded(self, timing: Timing, stamps: Stamps) -> None:
        """A batch of outputs was put downstream at ``stamps``."""
        q, starts, e = timing
        if not q or not stamps:
            return
        if not self._sampling:
            with self.lock:
                self._pending.append((timing, stamps))
                self._n_pending += len(q)
                if self._n_pending >= self._fold_at:
                    self.fold()
        elif isinstance(starts, float) and len(stamps) == 1:
            self._add_run(q, starts, e, stamps[0][1])
        else:
            st = _run_starts(starts, e) if isinstance(starts, float) else starts
            self._add_columns(q, st, e, stamps)

    def _add_run(self, q: list[float], first: float, e: list[float], put: float) -> None:
        """A run put at once at ``put`` (the common case), in the sampled phase."""
        n = len(e)
        # enqueue stamps never decrease along a stage's outputs: equal ends, equal all (a
        # batch from one inserted chunk)
        sum_q = n * q[0] if q[0] == q[-1] else sum(q)
        sum_e = sum(e)
        k = SAMPLE_EVERY
        with self.lock:
            self._count += n
            self._sum_q += sum_q
            self._sum_s += first + sum_e - e[-1]  # each started when the previous one ended
            self._sum_e += sum_e
            self._sum_n += put * n
            if put - q[-1] < self._lo:
                self._lo = put - q[-1]
            if put - q[0] > self._hi:
                self._hi = put - q[0]
            ph = self._phase
            if ph < n:
                self._sample_q += q[ph::k]
                self._sample_e += e[ph::k]
                if ph:
                    self._sample_s += e[ph - 1 : n - 1 : k]
                else:
                    self._sample_s.append(first)
                    self._sample_s += e[k - 1 : n - 1 : k]
                self._sample_n += [put] * len(range(ph, n, k))
            self._phase = (ph - n) % k
            if self._count >= FOLD_EVERY:
                self._fold_sampled()

    def _add_columns(self, q: list[float], st: list[float], e: list[float], stamps: Stamps) -> None:
        """Full columns (untimed envelopes among the outputs, or a split put), sampled phase."""
        q, st, e, nx = _expand(q, st, e, stamps)
        n = len(q)
        if not n:
            return
        lat = list(map(sub, nx, q))
        k = SAMPLE_EVERY
        with self.lock:
            self._count += n
            self._sum_q += sum(q)
            self._sum_s += sum(st)
            self._sum_e += sum(e)
            self._sum_n += sum(nx)
            self._lo = min(self._lo, min(lat))
            self._hi = max(self._hi, max(lat))
            ph = self._phase
            if ph < n:
                self._sample_q += q[ph::k]
                self._sample_s += st[ph::k]
                self._sample_e += e[ph::k]
                self._sample_n += nx[ph::k]
            self._phase = (ph - n) % k
            if self._count >= FOLD_EVERY:
                self._fold_sampled()

    def fold(self) -> None:
        """Fold what was added since the last fold into the histograms (caller holds
        :attr:`lock`; readers call it before reading)."""
        if self._pending:
            pending = self._pending
            self._pending = []
            self._n_pending = 0
            self._fold_exact(pending)
            left = EXACT_VALUES - self.timing.latency.count
            if left > 0:  # the exact phase ends after about EXACT_VALUES outputs
                self._fold_at = min(FOLD_EVERY, left)
            else:
                self._sampling = True
        if self._count:
            self._fold_sampled()

    def _fold_sampled(self) -> None:
        tm = self.timing
        n = self._count
        k = SAMPLE_EVERY
        sq, ss, se, sn = self._sample_q, self._sample_s, self._sample_e, self._sample_n
        sum_q, sum_s, sum_e, sum_n = self._sum_q, self._sum_s, self._sum_e, self._sum_n
        tm.queue_wait.record_summary(n, sum_s - sum_q, list(map(sub, ss, sq)), k)
        tm.computation.record_summary(n, sum_e - sum_s, list(map(sub, se, ss)), k)
        tm.transmission.record_summary(n, sum_n - sum_e, list(map(sub, sn, se)), k)
        tm.latency.record_summary(n, sum_n - sum_q, list(map(sub, sn, sq)), k, self._lo, self._hi)
        self._count = 0
        self._sum_q = self._sum_s = self._sum_e = self._sum_n = 0.0
        self._lo = math.inf
        self._hi = -math.inf
        self._sample_q = []
        self._sample_s = []
        self._sample_e = []
        self._sample_n = []

    def _fold_exact(self, pending: list[tuple[Timing, Stamps]]) -> None:
        qs: list[float] = []
        ss: list[float] = []
        es: list[float] = []
        nx: list[float] = []
        for (q, starts, e), stamps in pending:
            st = _run_starts(starts, e) if isinstance(starts, float) else starts
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
            h.record_all(vs, sum(vs))


def _run_starts(first: float, ends: list[float]) -> list[float]:
    """A run's start column: the first start, then each previous end."""
    if not ends:
        return []
    starts = [first]
    starts += ends[:-1]
    return starts


def as_columns(timing: Timing) -> Columns:
    """A batch's timing as full columns."""
    q, starts, e = timing
    if isinstance(starts, float):
        return q, _run_starts(starts, e), e
    return q, starts, e


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
