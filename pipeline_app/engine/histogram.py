"""Streaming histogram: exact count/sum/min/max, log buckets (~1 % relative error) for
percentiles, and systematic sampling so large batches cost C-speed column arithmetic plus a
bounded amount of Python work. Used by :mod:`~.stage_timing` and :class:`~.timing.Aggregator`.

Count, sum and extremes are updated at once; the values to bucket are kept and bucketed in bulk
(``FLUSH_AT`` of them, or when the buckets are read): sorted at C speed, then one bucket
computation and one binary search per bucket present rather than per value -- timings cluster,
so thousands of values usually span a few dozen buckets, and the recording threads do not pay
for the bucketing while the buckets are not read."""

from __future__ import annotations

import math
from bisect import bisect_left

_GROWTH = 1.02  # bucket width: <= 1 % error at the geometric mid-point
_INV_LOG = 1.0 / math.log(_GROWTH)


def bucket_of(x: float) -> int:
    """The bucket holding ``x`` (values <= 0 in bucket 0)."""
    return int(math.log1p(x * 1e9) * _INV_LOG) if x > 0.0 else 0


def bucket_counts(xs: list[float]) -> dict[int, int]:
    """Bucket index -> how many of the (ascending) ``xs`` fall in it: one bucket computation
    and one binary search per bucket present."""
    log1p = math.log1p
    expm1 = math.expm1
    inv = _INV_LOG
    counts: dict[int, int] = {}
    i = 0
    n = len(xs)
    while i < n:
        x = xs[i]
        b = int(log1p(x * 1e9) * inv) if x > 0.0 else 0
        j = bisect_left(xs, expm1((b + 1) / inv) / 1e9, i + 1)  # the next bucket's start
        counts[b] = counts.get(b, 0) + j - i
        i = j
    return counts


class Histogram:
    """count/sum/min/max exactly; percentiles from log buckets (~1 % relative error).

    Bucket ``i`` holds values ``x`` with ``log1p(x * 1e9)`` in ``[i, i + 1) * log(1.02)``.
    ``record_many`` buckets at most ``SAMPLE`` values per call (a systematic sample, each counted
    with its weight), so large batches cost C-speed ``sum``/``min``/``max`` plus a bounded amount
    of Python work; batches up to ``SAMPLE`` values are bucketed exactly. Not thread-safe: a
    histogram shared between threads is guarded by its owner (see ``stage_timing.py``).
    """

    __slots__ = ("_buckets", "_pending", "_pending_n", "count", "max", "min", "total", "weight")

    SAMPLE = 16
    FLUSH_AT = 4096  # values kept before they are bucketed

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.weight = 0  # how many values the buckets (and the kept values) stand for
        self._buckets: dict[int, int] = {}
        self._pending: list[tuple[list[float], int]] = []  # (values, weight of each)
        self._pending_n = 0

    @property
    def buckets(self) -> dict[int, int]:
        """Bucket index -> weight (what the sampled values stand for)."""
        if self._pending:
            self._flush()
        return self._buckets

    def record(self, x: float) -> None:
        self.count += 1
        self.total += x
        if x < self.min:
            self.min = x
        if x > self.max:
            self.max = x
        self.add_sample([x], 1)

    def record_many(self, xs: list[float], total: float | None = None) -> None:
        """Record ``xs`` (whose sum the caller may already know: ``total``)."""
        n = len(xs)
        if not n:
            return
        self._count(xs, sum(xs) if total is None else total)
        step = 1 if n <= self.SAMPLE else -(-n // self.SAMPLE)
        self.add_sample(xs[::step], step)

    def record_all(self, xs: list[float], total: float) -> None:
        """Record every one of ``xs`` (whose sum is ``total``; the list is kept)."""
        if not xs:
            return
        self._count(xs, total)
        self.add_sample(xs, 1)

    def _count(self, xs: list[float], total: float) -> None:
        """Exact count, sum and extremes of ``xs`` (not empty)."""
        self.count += len(xs)
        self.total += total
        lo = min(xs)
        hi = max(xs)
        if lo < self.min:
            self.min = lo
        if hi > self.max:
            self.max = hi

    def add_sample(self, sample: list[float], step: int) -> None:
        """Bucket ``sample`` (the list is kept), each value standing for ``step`` values
        (count, sum and extremes not touched)."""
        if not sample:
            return
        self._pending.append((sample, step))
        self._pending_n += len(sample)
        self.weight += step * len(sample)
        if self._pending_n >= self.FLUSH_AT:
            self._flush()

    def _flush(self) -> None:
        pending = self._pending
        self._pending = []
        self._pending_n = 0
        by_step: dict[int, list[float]] = {}
        for sample, step in pending:
            values = by_step.get(step)
            if values is None:
                by_step[step] = list(sample)
            else:
                values += sample
        b = self._buckets
        for step, values in by_step.items():
            values.sort()
            for i, c in bucket_counts(values).items():
                b[i] = b.get(i, 0) + c * step

    def record_summary(
        self,
        n: int,
        total: float,
        sample: list[float],
        step: int,
        lo: float | None = None,
        hi: float | None = None,
    ) -> None:
        """Record ``n`` values known by their exact ``total``, a systematic ``sample`` (every
        ``step``-th value; the list is kept) and, when known, their exact extremes ``lo``/``hi``.

        Without exact extremes, the sample's are used, widened to contain the batch mean.
        """
        if not n:
            return
        self.count += n
        self.total += total
        if lo is None or hi is None:
            mean = total / n
            lo = min(min(sample), mean) if sample else mean
            hi = max(max(sample), mean) if sample else mean
        if lo < self.min:
            self.min = lo
        if hi > self.max:
            self.max = hi
        self.add_sample(sample, step)

    @property
    def avg(self) -> float:
        return self.total / self.count if self.count else 0.0

    def bins(self, count: int = 30) -> list[tuple[float, float, int]]:
        """``count`` equal-width ``(low, high, items)`` bins from min to max, for a chart; each
        log bucket lands in the bin holding its geometric mid-point.

        When every value is the same (min == max), the bins span a window of about the buckets'
        precision (1 %) around that value, and all items are in the bin holding it."""
        buckets = self.buckets
        if not buckets or self.count == 0 or count < 1:
            return []
        lo, hi = self.min, self.max
        if hi <= lo:
            half = max(lo * (_GROWTH - 1.0) / 2, 1e-9)
            low = max(lo - half, 0.0)
            width = (lo + half - low) / count
            slot = min(int((lo - low) / width), count - 1)
            return [
                (low + i * width, low + (i + 1) * width, self.count if i == slot else 0)
                for i in range(count)
            ]
        width = (hi - lo) / count
        counts = [0] * count
        scale = self.count / self.weight if self.weight else 1.0
        for index, weight in buckets.items():
            middle = math.expm1((index + 0.5) / _INV_LOG) / 1e9
            slot = min(max(int((middle - lo) / width), 0), count - 1)
            counts[slot] += weight
        scaled = [round(n * scale) for n in counts]
        scaled[scaled.index(max(scaled))] += self.count - sum(scaled)  # exact total
        return [(lo + i * width, lo + (i + 1) * width, n) for i, n in enumerate(scaled)]

    def percentile(self, q: float) -> float:
        if not self.count or not self.weight:
            return 0.0
        rank = max(1, math.ceil(q / 100.0 * self.weight))
        buckets = self.buckets
        seen = 0
        for i in sorted(buckets):
            seen += buckets[i]
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
