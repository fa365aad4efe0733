"""The stage threads' timing statistics and the end-to-end histogram agree with the per-item
records (which carry every raw stamp): exact counts, sums and latency extremes, through the
exact phase and the sampled one, with one worker and several."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline_app.engine import AsyncTaskPipeline, ItemRecord
from pipeline_app.engine.histogram import Histogram, bucket_counts, bucket_of
from pipeline_app.engine.stage_timing import EXACT_VALUES, StageStats

from . import funcs


@pytest.mark.parametrize(
    ("first", "middle", "workers", "executor"),
    [
        (funcs.inc, funcs.keep_even, 1, "thread"),
        (funcs.inc, funcs.keep_even, 2, "thread"),
        (funcs.split3, funcs.keep_even, 1, "thread"),
        (funcs.inc, funcs.keep_even, 2, "process"),
    ],
)
async def test_stage_statistics_match_the_records(
    first: Callable[[int], Any], middle: Callable[[int], Any], workers: int, executor: str
) -> None:
    records: list[ItemRecord] = []
    p: AsyncTaskPipeline[int, object] = AsyncTaskPipeline(
        max_queue_size=300, enable_timing=True, on_item_timings=records.extend
    )
    p.add_stage("a", first)
    p.add_stage("b", middle, workers=workers, executor=executor)
    p.add_stage("c", funcs.inc)
    n = 3 * EXACT_VALUES if executor == "thread" else EXACT_VALUES
    async with p:
        out = [x async for x in p.run(range(n))]
    summary = p.get_latency_summary()  # folds what the stage threads kept
    ok = [r for r in records if r.status == "ok"]
    assert len(ok) == len(out) > 0
    for index, stage in enumerate(p.stages):
        tstats = stage.timing_stats
        assert tstats is not None
        tm = tstats.timing
        # queue wait, computation, transmission and latency of each output of this stage (or
        # item that ended here), from the records; a fan-out's children are its outputs
        waits, comps, trans, lats = [], [], [], []
        for r in records:
            values = r.stage_values()
            if index >= len(values):
                continue
            qw, comp, tr, _, _ = values[index]
            forwarded = r.status == "ok" or index < len(values) - 1
            waits.append(qw)
            comps.append(comp)
            if forwarded:
                trans.append(tr)
            lats.append(qw + comp + (tr if forwarded else 0.0))
        assert tm.queue_wait.count == len(waits)
        assert tm.computation.count == len(comps)
        assert tm.transmission.count == len(trans)
        assert tm.latency.count == len(lats)
        assert math.isclose(tm.queue_wait.total, math.fsum(waits), abs_tol=1e-6)
        assert math.isclose(tm.computation.total, math.fsum(comps), abs_tol=1e-6)
        assert math.isclose(tm.transmission.total, math.fsum(trans), abs_tol=1e-6)
        assert math.isclose(tm.latency.total, math.fsum(lats), abs_tol=1e-6)
        assert math.isclose(tm.latency.min, min(lats), abs_tol=1e-9)
        assert math.isclose(tm.latency.max, max(lats), abs_tol=1e-9)
    assert summary["total_items"] == len(ok)
    totals = [r.total_latency for r in ok]
    agg = p._agg
    assert agg is not None
    assert math.isclose(agg.total.total, math.fsum(totals), abs_tol=1e-6)
    assert math.isclose(agg.total.min, min(totals), abs_tol=1e-9)
    assert math.isclose(agg.total.max, max(totals), abs_tol=1e-9)


def test_runs_and_columns_fold_alike() -> None:
    """A batch given as a run (each output started when the previous one ended) and the same
    batch as full columns give the same statistics, in both phases."""
    rnd = random.Random(7)
    as_runs, as_columns = StageStats(), StageStats()
    clock = 100.0
    for _ in range(3 * EXACT_VALUES // 100):
        n = rnd.randint(1, 200)
        first = clock
        ends = []
        for _ in range(n):
            clock += rnd.random() * 1e-4
            ends.append(clock)
        enqueued = sorted(first - rnd.random() * 1e-3 for _ in range(n))
        put = [(n, clock + 1e-5)]
        as_runs.add_forwarded((enqueued, first, ends), put)
        as_columns.add_forwarded((list(enqueued), [first, *ends[:-1]], list(ends)), put)
    for stats in (as_runs, as_columns):
        with stats.lock:
            stats.fold()
    for name in ("queue_wait", "computation", "transmission", "latency"):
        a = getattr(as_runs.timing, name)
        b = getattr(as_columns.timing, name)
        assert a.count == b.count
        assert math.isclose(a.total, b.total, rel_tol=1e-9, abs_tol=1e-9)
        assert a.buckets == b.buckets
        assert (a.min, a.max) == pytest.approx((b.min, b.max))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.floats(min_value=-1.0, max_value=1e4),
            st.floats(min_value=1e-10, max_value=1e-2),
        ),
        max_size=300,
    )
)
def test_bucket_counts_is_per_value_bucketing(xs: list[float]) -> None:
    expected: dict[int, int] = {}
    for x in xs:
        expected[bucket_of(x)] = expected.get(bucket_of(x), 0) + 1
    assert bucket_counts(sorted(xs)) == expected


def test_kept_values_are_bucketed_when_read() -> None:
    h = Histogram()
    xs = [i * 1e-6 for i in range(1, 3001)]
    h.record_all(xs[:1000], math.fsum(xs[:1000]))
    h.record_summary(2000, math.fsum(xs[1000:]), xs[1000::10], 10)
    assert h.count == 3000 and h.weight == 3000
    eager: dict[int, int] = {}
    for x in xs[:1000]:
        eager[bucket_of(x)] = eager.get(bucket_of(x), 0) + 1
    for x in xs[1000::10]:
        eager[bucket_of(x)] = eager.get(bucket_of(x), 0) + 10
    assert h.buckets == eager
    assert math.isclose(h.percentile(50), 1.5e-3, rel_tol=0.03)
