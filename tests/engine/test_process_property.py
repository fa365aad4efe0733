"""Process executors, and the property: any stage list == a plain sequential loop."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline_app.engine import AsyncTaskPipeline, RemoteStageError, StageError

from . import funcs
from .funcs import agen, apply_sequential


def _same(a: list[Any], b: list[Any]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if isinstance(y, BaseException):
            if type(x).__name__ != type(y).__name__ and not isinstance(x, RemoteStageError):
                return False
            if str(y) not in str(x):
                return False
        elif x != y:
            return False
    return True


async def test_process_stage_order_errors_fanout() -> None:
    p: AsyncTaskPipeline[int, object] = AsyncTaskPipeline(
        max_queue_size=8, return_exceptions=True, enable_timing=True
    )
    p.add_stage("fail", funcs.fail_on_7, workers=2, executor="process")
    p.add_stage("cpu", funcs.slow_square, workers=2, executor="process")
    p.add_stage("fan", funcs.split3, executor="process")
    p.add_stage("even", funcs.keep_even)
    steps = [
        ("e", funcs.fail_on_7),
        ("m", funcs.slow_square),
        ("f", funcs.split3),
        ("k", funcs.keep_even),
    ]
    async with p:
        out = [x async for x in p.run(agen(60))]
    assert _same(out, apply_sequential(steps, list(range(60))))
    errs = p.errors
    assert errs and "fail_on_7" in errs[0].traceback and errs[0].stage == "fail"
    s = p.get_latency_summary()
    assert s["stage_statistics"]["cpu"]["computation"]["avg"] > 0.0005
    assert not [t for t in threading.enumerate() if t.name.startswith("pipeline-")]


async def test_process_stage_requires_picklable_function() -> None:
    p: AsyncTaskPipeline[int, object] = AsyncTaskPipeline()
    with pytest.raises(ValueError, match="picklable"):
        p.add_stage("x", lambda x: x, executor="process")


async def test_process_unpicklable_exception_and_raise_policy() -> None:
    p: AsyncTaskPipeline[int, object] = AsyncTaskPipeline(return_exceptions=True)
    p.add_stage("u", funcs.raise_unpicklable, executor="process")
    async with p:
        out = [x async for x in p.run([1])]
    assert isinstance(out[0], RemoteStageError) and "Unpicklable" in str(out[0])
    p2: AsyncTaskPipeline[int, object] = AsyncTaskPipeline(error_policy="raise")
    p2.add_stage("f", funcs.fail_on_7, executor="process", workers=2)

    async def consume() -> None:
        async with p2:
            _ = [x async for x in p2.run(agen(50))]

    with pytest.raises(StageError) as ei:
        await consume()
    assert ei.value.seq == 7 and isinstance(ei.value.__cause__, ValueError)


THREAD_FNS = [
    ("map", funcs.inc),
    ("map", funcs.double),
    ("filter", funcs.keep_even),
    ("fan", funcs.split3),
    ("raise", funcs.fail_on_7),
    ("map", lambda x: x - 3),
    ("filter", lambda x: x if x % 3 else None),
    ("fan", lambda x: (x + k for k in range(x % 3))),  # 0..2 children (0 = filtered)
]

stage_spec = st.tuples(st.integers(0, len(THREAD_FNS) - 1), st.integers(1, 3))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stages=st.lists(stage_spec, min_size=1, max_size=4),
    data=st.lists(st.integers(-50, 50), max_size=60),
    qsize=st.integers(1, 20),
    timing=st.booleans(),
)
async def test_property_threads_match_sequential(
    stages: list[tuple[int, int]], data: list[int], qsize: int, timing: bool
) -> None:
    p: AsyncTaskPipeline[int, object] = AsyncTaskPipeline(
        max_queue_size=qsize, enable_timing=timing, return_exceptions=True
    )
    steps = []
    for i, (fi, workers) in enumerate(stages):
        kind, fn = THREAD_FNS[fi]
        p.add_stage(f"s{i}", fn, workers=workers)
        steps.append((kind, fn))
    async with p:
        out = [x async for x in p.run(data)]
    assert _same(out, apply_sequential(steps, data))
    if timing:
        assert p.get_latency_summary()["total_items"] == len(out)


PROC_FNS = [funcs.inc, funcs.keep_even, funcs.split3, funcs.fail_on_7]


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stages=st.lists(
        st.tuples(st.integers(0, len(PROC_FNS) - 1), st.integers(1, 2), st.booleans()),
        min_size=1,
        max_size=3,
    ),
    data=st.lists(st.integers(-30, 30), max_size=40),
    qsize=st.integers(1, 10),
)
async def test_property_mixed_process_match_sequential(
    stages: list[tuple[int, int, bool]], data: list[int], qsize: int
) -> None:
    p: AsyncTaskPipeline[int, object] = AsyncTaskPipeline(
        max_queue_size=qsize, return_exceptions=True
    )
    steps = []
    for i, (fi, workers, proc) in enumerate(stages):
        fn = PROC_FNS[fi]
        p.add_stage(f"s{i}", fn, workers=workers, executor="process" if proc else "thread")
        steps.append(("x", fn))
    async with p:
        out = [x async for x in p.run(data)]
    assert _same(out, apply_sequential(steps, data))


@settings(max_examples=15, deadline=None)
@given(data=st.lists(st.integers(0, 100), max_size=40), workers=st.integers(1, 3))
async def test_property_drop_policy_drops_exactly_failures(data: list[int], workers: int) -> None:
    p: AsyncTaskPipeline[int, object] = AsyncTaskPipeline(max_queue_size=3)
    p.add_stage("f", funcs.fail_on_7, workers=workers)
    async with p:
        out = [x async for x in p.run(data)]
    assert out == [x for x in data if x % 10 != 7]
    assert p.get_latency_summary()["error_count"] == len(data) - len(out)
