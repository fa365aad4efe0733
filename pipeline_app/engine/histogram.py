"""Streaming histogram: exact count/sum/min/max, log buckets (~1 % relative error) for
percentiles, and systematic sampling so large batches cost C-speed column arithmetic plus a
bounded amount of Python work. Used by :mod:`~.stage_timing` and :class:`~.timing.Aggregator`."""

from __future__ import annotations

import math
from collections import Counter
from operator import mul

_GROWTH = 1.02  # bucket width: <= 1 % error at the geometric mid-point
_INV_LOG = 1.0 / math.log(_GROWTH)
_ZEROS = (0.0,)


def bucket_counts(xs: list[float]) -> Counter[int]:
    """Bucket index -> how many of ``xs`` fall in it, at C speed (values <= 0 in bucket 0)."""
    n = len(xs)
    clipped = map(max, xs, _ZEROS * n)
    scaled = map(mul, clipped, (1e9,) * n)
    return Counter(map(int, map(mul, map(math.log1p, scaled), (_INV_LOG,) * n)))


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
        self.add_sample(xs if step == 1 else xs[::step], step)

    def add_sample(self, sample: list[float], step: int) -> None:
        """Bucket ``sample``, each value standing for ``step`` values (count/sum not touched)."""
        b = self.buckets
        if len(sample) > 64:
            for i, c in bucket_counts(sample).items():
                b[i] = b.get(i, 0) + c * step
        else:
            log1p = math.log1p
            inv = _INV_LOG
            for x in sample:
                i = int(log1p(x * 1e9) * inv) if x > 0.0 else 0
                b[i] = b.get(i, 0) + step
        self.weight += step * len(sample)

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
        ``step``-th value) and, when known, their exact extremes ``lo``/``hi``.

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
        log bucket lands in the bin holding its geometric mid-point."""
        if not self.buckets or self.count == 0 or count < 1:
            return []
        lo, hi = self.min, self.max
        width = (hi - lo) / count if hi > lo else 1.0
        counts = [0] * count
        scale = self.count / self.weight if self.weight else 1.0
        for index, weight in self.buckets.items():
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
