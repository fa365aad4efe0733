"""Stage workers: restarts, what a stage function may raise or return, add_stage validation.

Process stage functions are module-level here so that they can be pickled.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pipeline_app.engine import AsyncTaskPipeline, StageError
from pipeline_app.engine.errors import ErrorPolicy

# ------------------------------------------------------------------ restart while a thread is busy

OLD_RUN_ITEM = "old"
NEW_RUN_FIRST = "new"


def _slow_new_run_first(x: Any) -> Any:
    if x == NEW_RUN_FIRST:
        time.sleep(0.9)  # the old run's thread returns meanwhile (before position 0 is done)
    return x


def stale_result(x: Any) -> Any:
    if x == OLD_RUN_ITEM:
        time.sleep(0.6)
        return "STALE"
    return _slow_new_run_first(x)


def stale_failure(x: Any) -> Any:
    if x == OLD_RUN_ITEM:
        time.sleep(0.6)
        raise ValueError("stale failure")
    return _slow_new_run_first(x)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("fn", "workers", "executor", "enable_timing"),
    [
        (stale_result, 1, "thread", False),
        (stale_result, 1, "thread", True),
        (stale_result, 2, "thread", False),
        (stale_result, 2, "thread", True),
        (stale_failure, 1, "thread", False),
        (stale_failure, 2, "thread", True),
        (stale_failure, 2, "process", True),
    ],
)
async def test_restart_gets_nothing_from_a_thread_of_the_previous_run(
    fn: Any, workers: int, executor: str, enable_timing: bool
) -> None:
    """A thread still inside the stage function when stop() gave up on it neither delivers its
    output nor reports its error (nor fails the positions after it) into the next run."""
    p: AsyncTaskPipeline[Any, Any] = AsyncTaskPipeline(
        max_queue_size=30, stop_timeout=0.05, error_policy="raise", enable_timing=enable_timing
    )
    p.add_stage("a", fn, workers=workers, executor=executor)
    await p.start()
    await p.process_input_data(OLD_RUN_ITEM)
    await asyncio.sleep(0.3 if executor == "process" else 0.1)  # inside the stage function
    await p.stop()
    async with p:
        got = await asyncio.wait_for(_collect(p, [NEW_RUN_FIRST, *range(20)]), 10)
    assert got == [NEW_RUN_FIRST, *range(20)]
    assert p.errors == []


# ------------------------------------------------------------------ BaseException from a stage


def cancelled_on_3(x: int) -> int:
    if x == 3:
        raise asyncio.CancelledError()  # e.g. asyncio.run() of a coroutine that was cancelled
    return x


def exits_on_3(x: int) -> int:
    if x == 3:
        raise SystemExit(3)
    return x


def fan_out_then_exit_on_3(x: int) -> Iterator[int]:
    yield x * 10
    if x == 3:
        raise SystemExit(3)
    yield x * 10 + 1


def _expected_without_3() -> list[int]:
    return [x for x in range(10) if x != 3]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("enable_timing", [False, True])
@pytest.mark.parametrize(
    ("fn", "executor", "exc_type"),
    [
        (cancelled_on_3, "thread", asyncio.CancelledError),
        (exits_on_3, "thread", SystemExit),
        (exits_on_3, "process", SystemExit),
    ],
)
@pytest.mark.parametrize("policy", ["drop", "return", "raise"])
async def test_base_exception_from_a_stage_is_that_items_error(
    fn: Any, executor: str, exc_type: type[BaseException], policy: ErrorPolicy, enable_timing: bool
) -> None:
    p: AsyncTaskPipeline[int, Any] = AsyncTaskPipeline(
        error_policy=policy, enable_timing=enable_timing
    )
    p.add_stage("a", fn, executor=executor)
    got: list[Any] = []

    async def consume() -> None:
        async for x in p.run(range(10)):
            got.append(x)

    async with p:
        if policy == "raise":
            with pytest.raises(StageError) as info:
                await asyncio.wait_for(consume(), 10)
            assert info.value.seq == 3 and isinstance(info.value.__cause__, exc_type)
            assert got == [0, 1, 2]
        else:
            await asyncio.wait_for(consume(), 10)
    if policy == "drop":
        assert got == _expected_without_3()
    elif policy == "return":
        assert isinstance(got[3], exc_type)
        assert got[:3] + got[4:] == _expected_without_3()
    assert [(e.seq, e.exc_type) for e in p.errors] == [(3, exc_type.__name__)]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("executor", ["thread", "process"])
@pytest.mark.parametrize("enable_timing", [False, True])
async def test_base_exception_from_a_fan_out_keeps_the_children_before_it(
    executor: str, enable_timing: bool
) -> None:
    p: AsyncTaskPipeline[int, Any] = AsyncTaskPipeline(enable_timing=enable_timing)
    p.add_stage("a", fan_out_then_exit_on_3, executor=executor)
    async with p:
        got = await asyncio.wait_for(_collect(p, range(5)), 10)
    assert got == [0, 1, 10, 11, 20, 21, 30, 40, 41]
    assert [(e.seq, e.exc_type) for e in p.errors] == [(3, "SystemExit")]


async def _collect(p: AsyncTaskPipeline[Any, Any], source: Any) -> list[Any]:
    return [x async for x in p.run(source)]


# ------------------------------------------------------------------ process: per-item pickling

UNPICKLABLE_AT = 150


def unpicklable_result_at_150(x: int) -> Any:
    if x == UNPICKLABLE_AT:
        return threading.Lock()
    return x


def fan_out_unpicklable_second_child_at_2(x: int) -> Iterator[Any]:
    yield x * 10
    yield threading.Lock() if x == 2 else x * 10 + 1
    yield x * 10 + 2


def identity(x: Any) -> Any:
    return x


@pytest.mark.timeout(60)
@pytest.mark.parametrize("enable_timing", [False, True])
async def test_unpicklable_process_result_fails_only_its_item(enable_timing: bool) -> None:
    p: AsyncTaskPipeline[int, Any] = AsyncTaskPipeline(
        max_queue_size=300, enable_timing=enable_timing
    )
    p.add_stage("a", unpicklable_result_at_150, executor="process")
    async with p:
        got = await asyncio.wait_for(_collect(p, range(300)), 30)
    assert got == [x for x in range(300) if x != UNPICKLABLE_AT]
    assert [(e.seq, e.exc_type) for e in p.errors] == [(UNPICKLABLE_AT, "PicklingError")]
    assert "cannot be sent back" in p.errors[0].message


@pytest.mark.timeout(60)
async def test_unpicklable_process_result_under_raise_names_its_item() -> None:
    p: AsyncTaskPipeline[int, Any] = AsyncTaskPipeline(max_queue_size=300, error_policy="raise")
    p.add_stage("a", unpicklable_result_at_150, executor="process")
    got: list[Any] = []

    async def consume() -> None:
        async for x in p.run(range(300)):
            got.append(x)

    async with p:
        with pytest.raises(StageError) as info:
            await asyncio.wait_for(consume(), 30)
    assert info.value.seq == UNPICKLABLE_AT
    assert got == list(range(UNPICKLABLE_AT))


@pytest.mark.timeout(60)
async def test_unpicklable_process_fan_out_child_keeps_the_children_before_it() -> None:
    p: AsyncTaskPipeline[int, Any] = AsyncTaskPipeline()
    p.add_stage("a", fan_out_unpicklable_second_child_at_2, executor="process")
    async with p:
        got = await asyncio.wait_for(_collect(p, range(4)), 30)
    assert got == [0, 1, 2, 10, 11, 12, 20, 30, 31, 32]
    assert [(e.seq, e.exc_type) for e in p.errors] == [(2, "PicklingError")]


@pytest.mark.timeout(60)
async def test_unpicklable_process_input_fails_only_its_item() -> None:
    """A batch that fails as a whole (here: an input cannot be pickled) is run again item by
    item, so only the failing item is an error."""
    lock = threading.Lock()
    source: list[Any] = [*range(100), lock, *range(100, 200)]
    p: AsyncTaskPipeline[Any, Any] = AsyncTaskPipeline(max_queue_size=300, error_policy="return")
    p.add_stage("a", identity, executor="process")
    async with p:
        await p.process_input_stream(source)  # all queued first: one batch holds the lock
        got = await asyncio.wait_for(_collect_stream(p), 30)
    assert got[:100] == list(range(100)) and got[101:] == list(range(100, 200))
    assert isinstance(got[100], TypeError)
    assert [e.seq for e in p.errors] == [100]


async def _collect_stream(p: AsyncTaskPipeline[Any, Any]) -> list[Any]:
    return [x async for x in p.generate_output_stream()]


# ------------------------------------------------------------------ add_stage validation


def test_add_stage_rejects_a_function_that_is_not_callable() -> None:
    p: AsyncTaskPipeline[int, int] = AsyncTaskPipeline()
    with pytest.raises(TypeError, match=r"stage 'a'.*callable"):
        p.add_stage("a", 5)  # type: ignore[arg-type]
    assert p.stages == []


@pytest.mark.parametrize(
    ("workers", "error"),
    [(2.5, TypeError), ("2", TypeError), (True, TypeError), (0, ValueError), (-1, ValueError)],
)
def test_add_stage_rejects_bad_workers(workers: Any, error: type[Exception]) -> None:
    p: AsyncTaskPipeline[int, int] = AsyncTaskPipeline()
    with pytest.raises(error, match=r"stage 'a'.*workers"):
        p.add_stage("a", abs, workers=workers)
    assert p.stages == []
