"""Seed document patterns, order, end of stream, the modern API."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator

import pytest

from pipeline_app.engine import AsyncTaskPipeline, PipelineItem, log_pipeline_performance_analysis

from .funcs import agen, feed_closed_stream, split3


async def test_import_has_no_logging_side_effect() -> None:
    import logging

    assert logging.getLogger().handlers == [] or all(
        "pytest" in type(h).__module__ or "_pytest" in type(h).__module__
        for h in logging.getLogger().handlers
    )


@pytest.mark.parametrize("n", [0, 1, 20, 450, 3000])
async def test_seed_quick_start_terminates(n: int) -> None:
    """Exactly the seed's quick start: feed everything, THEN read the output."""
    pipeline: AsyncTaskPipeline[int, object] = AsyncTaskPipeline(
        max_queue_size=100, enable_timing=True
    )
    pipeline.add_stage("process", lambda x: x * 2)
    pipeline.add_stage("filter", lambda x: x if x > 10 else None)
    await pipeline.start()

    async def data_generator():  # type: ignore[no-untyped-def]
        for i in range(n):
            yield i

    await asyncio.wait_for(pipeline.process_input_stream(data_generator()), 30)
    results = []

    async def read() -> None:
        async for result in pipeline.generate_output_stream():
            results.append(result)

    await asyncio.wait_for(read(), 30)
    assert results == [i * 2 for i in range(n) if i * 2 > 10]
    stats = pipeline.get_latency_summary()
    assert stats["total_items"] == len(results)
    assert stats["filtered_count"] == min(n, 6)
    if results:
        assert stats["avg_total_latency"] > 0
        assert stats["stage_statistics"]["process"]["timing_breakdown"]["computation_ratio"] >= 0
    assert await pipeline.stop() == 0


async def test_seed_quick_start_with_sleeps() -> None:
    pipeline: AsyncTaskPipeline[int, object] = AsyncTaskPipeline(enable_timing=True)
    pipeline.add_stage("process", lambda x: x * 2)
    await pipeline.start()
    await pipeline.process_input_stream(agen(20, 0.001))
    out = [r async for r in pipeline.generate_output_stream()]
    assert out == [i * 2 for i in range(20)]
    await pipeline.stop()


async def test_concurrent_gather_pattern() -> None:
    pipeline: AsyncTaskPipeline[int, object] = AsyncTaskPipeline(max_queue_size=10)
    pipeline.add_stage("a", lambda x: x + 1)
    pipeline.add_stage("b", lambda x: x * 3)
    await pipeline.start()
    results: list[int] = []

    async def consume() -> None:
        async for r in pipeline.generate_output_stream():
            results.append(r)  # type: ignore[arg-type]

    await asyncio.wait_for(asyncio.gather(pipeline.process_input_stream(agen(2000)), consume()), 30)
    assert results == [(i + 1) * 3 for i in range(2000)]
    await pipeline.stop()


async def test_sentinel_pass_through_with_return_exceptions() -> None:
    class Marker:
        pass

    m1, m2 = Marker(), Marker()
    p: AsyncTaskPipeline[int, Marker] = AsyncTaskPipeline(return_exceptions=True)

    def maybe_fail(x: int) -> int:
        if x == 2:
            raise RuntimeError("two")
        return x

    p.add_stage("s", maybe_fail)
    p.add_stage("t", lambda x: x + 100, workers=2)
    await p.start()
    await p.process_input_data(1, 0.0)
    await p.process_input_sentinel(m1)
    await p.process_input_data(2, 0.0)
    p.put_input_sentinel(m2)
    await p.process_input_data(3, 0.0)
    p.close_input()
    out = [x async for x in p.generate_output_stream()]
    assert out[0] == 101 and out[1] is m1 and isinstance(out[2], RuntimeError)
    assert out[3] is m2 and out[4] == 103 and len(out) == 5
    await p.stop()


async def test_fan_out_and_filter_order_with_workers() -> None:
    p: AsyncTaskPipeline[int, object] = AsyncTaskPipeline(max_queue_size=7)
    p.add_stage("fan", split3, workers=3)
    p.add_stage("filter", lambda x: x if x % 4 else None, workers=2)
    p.add_stage("fan2", lambda x: (y for y in (x, -x)), workers=2)
    expected = [s * v for x in range(300) for v in split3(x) if v % 4 for s in (1, -1)]
    async with p:
        out = [x async for x in p.run(agen(300))]
    assert out == expected


async def test_first_output_does_not_wait_for_whole_input() -> None:
    p: AsyncTaskPipeline[int, object] = AsyncTaskPipeline(max_queue_size=4)
    p.add_stage("a", lambda x: x, workers=2)
    gate = asyncio.Event()

    async def source():  # type: ignore[no-untyped-def]
        yield 1
        await gate.wait()
        yield 2

    async with p:
        it = p.run(source()).__aiter__()
        first = await asyncio.wait_for(it.__anext__(), 5)
        assert first == 1
        gate.set()
        assert await it.__anext__() == 2
        with pytest.raises(StopAsyncIteration):
            await it.__anext__()


async def test_several_streams_one_output() -> None:
    p: AsyncTaskPipeline[int, object] = AsyncTaskPipeline()
    p.add_stage("a", lambda x: x)
    await p.start()
    await p.process_input_stream(agen(5), close_input=False)
    await p.process_input_stream([10, 11], close_input=False)
    p.close_input()
    assert [x async for x in p.generate_output_stream()] == [0, 1, 2, 3, 4, 10, 11]
    # a new epoch after the end of stream
    await p.process_input_stream(agen(3))
    assert [x async for x in p.generate_output_stream()] == [0, 1, 2]
    await p.stop()


async def test_put_input_data_from_thread_and_loop() -> None:
    p: AsyncTaskPipeline[int, object] = AsyncTaskPipeline(max_queue_size=2)
    p.add_stage("a", lambda x: x + 1)
    await p.start()
    for i in range(50):  # on the loop: never blocks the loop
        p.put_input_data(i, 0.0)

    def feed() -> None:
        for i in range(50, 100):
            p.put_input_data(i, 0.0)

    t = threading.Thread(target=feed)
    t.start()
    await asyncio.to_thread(t.join)
    p.close_input()
    assert [x async for x in p.generate_output_stream()] == list(range(1, 101))
    assert p.counter == 100
    await p.stop()


async def test_run_source_error_propagates_and_sync_iterable() -> None:
    p: AsyncTaskPipeline[int, object] = AsyncTaskPipeline()
    p.add_stage("a", lambda x: x)

    async def bad():  # type: ignore[no-untyped-def]
        yield 1
        raise OSError("source broke")

    got = []

    async def consume() -> None:
        async for x in p.run(bad()):
            got.append(x)

    async with p:
        with pytest.raises(OSError, match="source broke"):
            await consume()
        assert got == [1]
    async with p:
        assert [x async for x in p.run(range(5))] == [0, 1, 2, 3, 4]


async def test_async_with_deferred_start_and_not_running_errors() -> None:
    p: AsyncTaskPipeline[int, object] = AsyncTaskPipeline()
    with pytest.raises(RuntimeError):
        p.put_input_data(1, 0.0)
    with pytest.raises(RuntimeError):
        await p.process_input_data(1, 0.0)
    p.add_stage("a", lambda x: x * 2)
    async with p:
        assert p.running
        with pytest.raises(RuntimeError):
            p.add_stage("b", lambda x: x)
        assert [x async for x in p.run([1, 2])] == [2, 4]
    assert not p.running
    assert not [t for t in threading.enumerate() if t.name.startswith("pipeline-a-")]


async def test_seed_compat_objects_and_log_helper(caplog: pytest.LogCaptureFixture) -> None:
    item = PipelineItem(data=1, start_timestamp=0.0)
    item.record_entry_time("s")
    item.record_completion_time("s")
    child = item.copy(data=2)
    child.record_completion_time("t")
    assert "t" not in (item.get_stage_latencies() or {})
    p: AsyncTaskPipeline[int, object] = AsyncTaskPipeline(enable_timing=True)
    p.add_stage("a", lambda x: x)
    async with p:
        _ = [x async for x in p.run(range(10))]
    import logging

    with caplog.at_level(logging.INFO, logger="pipeline_app.engine"):
        log_pipeline_performance_analysis(p)
    assert "Stage a" in caplog.text
    report = p.get_report()
    assert report is not None and report.item_breakdowns is not None
    assert report.item_breakdowns[0].totals["total_latency"] > 0
    assert set(report.item_breakdowns[0].stages["a"]) == {
        "queue_wait_time",
        "computation_time",
        "transmission_time",
        "total_stage_time",
    }


async def test_breaking_out_of_the_output_loop_keeps_the_rest_for_the_next_one() -> None:
    p: AsyncTaskPipeline[int, int] = AsyncTaskPipeline()
    p.add_stage("inc", lambda x: x + 1)
    async with p:
        await p.process_input_stream(range(10))
        await p.drain()  # every output and the end-of-stream marker are buffered
        first: list[int] = []
        outputs = p.generate_output_stream()
        async for x in outputs:
            first.append(x)
            break
        await outputs.aclose()
        rest = await asyncio.wait_for(_collect(p), 3)

    assert first + rest == list(range(1, 11))


async def _collect(p: AsyncTaskPipeline[int, int]) -> list[int]:
    return [x async for x in p.generate_output_stream()]


async def _slowly(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i
        await asyncio.sleep(0.002)


async def test_a_run_left_early_does_not_leak_into_the_next_run() -> None:
    def slow_inc(x: int) -> int:
        time.sleep(0.005)
        return x + 1

    p: AsyncTaskPipeline[int, int] = AsyncTaskPipeline()
    p.add_stage("inc", slow_inc)
    async with p:
        first: list[int] = []
        outputs = p.run(_slowly(50))
        async for x in outputs:
            first.append(x)
            if len(first) == 3:
                break
        await outputs.aclose()
        second = await asyncio.wait_for(_collect_run(p, range(1000, 1010)), 5)
        summary = p.get_latency_summary()

    assert first == [1, 2, 3]
    assert second == list(range(1001, 1011))
    # what was fed of the first stream and not delivered was dropped, and counted
    assert summary["in_flight"] == 0
    assert summary["discarded_count"] == summary["items_in"] - summary["items_out"]
    assert summary["items_out"] == 13


async def _collect_run(p: AsyncTaskPipeline[int, int], source: range) -> list[int]:
    return [x async for x in p.run(source)]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_queue_size": None},
        {"max_queue_size": "10"},
        {"max_queue_size": -1},
        {"max_item_records": 1.5},
        {"stop_timeout": None},
        {"stop_timeout": -1},
    ],
)
def test_bad_constructor_arguments_are_refused_at_once(kwargs: dict[str, object]) -> None:
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        AsyncTaskPipeline(**kwargs)  # type: ignore[arg-type]


async def test_breaking_out_without_closing_the_iterator_then_iterating_again() -> None:
    """The natural idiom: ``async for ... break`` on an inline iterator (asyncio closes it a
    moment later, while the next iteration may already wait for outputs)."""
    p: AsyncTaskPipeline[int, int] = AsyncTaskPipeline()
    p.add_stage("same", lambda x: x)
    async with p:
        await feed_closed_stream(p, range(10))
        async for _ in p.generate_output_stream():
            break
        rest = await asyncio.wait_for(_collect(p), 3)

    assert rest == list(range(1, 10))


async def test_two_concurrent_consumers_share_the_outputs_and_both_end() -> None:
    p: AsyncTaskPipeline[int, int] = AsyncTaskPipeline(max_queue_size=10)
    p.add_stage("same", lambda x: x)
    got: list[list[int]] = [[], []]

    async def consume(k: int) -> None:
        async for x in p.generate_output_stream():
            got[k].append(x)
            await asyncio.sleep(0.01)  # slow: the other consumer gets its turn

    async with p:
        consumers = [asyncio.create_task(consume(k)) for k in (0, 1)]
        await asyncio.sleep(0.05)  # both wait for outputs
        for i in range(40):
            await p.process_input_data(i)
            await asyncio.sleep(0.005)
        p.close_input()
        p.close_input()  # one end-of-stream marker per consumer
        _, pending = await asyncio.wait(consumers, timeout=5)

    assert not pending
    assert sorted(got[0] + got[1]) == list(range(40))
    assert got[0] and got[1]


async def test_stop_ends_every_waiting_consumer() -> None:
    p: AsyncTaskPipeline[int, int] = AsyncTaskPipeline()
    p.add_stage("same", lambda x: x)
    await p.start()
    consumers = [asyncio.create_task(_collect(p)) for _ in range(2)]
    await asyncio.sleep(0.05)
    await p.stop()
    _, pending = await asyncio.wait(consumers, timeout=2)

    assert not pending


async def test_a_sentinel_after_close_input_is_drained_like_data() -> None:
    p: AsyncTaskPipeline[int, object] = AsyncTaskPipeline()
    p.add_stage("double", lambda x: x * 2)
    async with p:
        await p.process_input_data(1)
        p.close_input()
        p.put_input_sentinel("S")
        await asyncio.wait_for(p.drain(), 5)  # closes the input again, after the sentinel
        first = [x async for x in p.generate_output_stream()]
        second = await asyncio.wait_for(_collect(p), 2)  # type: ignore[arg-type]

    assert (first, second) == ([2], ["S"])


async def test_a_run_left_by_a_plain_break_does_not_leak_into_the_next_run() -> None:
    """``async for x in p.run(...): break``: asyncio closes that iterator only later."""

    def slow_inc(x: int) -> int:
        time.sleep(0.002)
        return x + 1

    p: AsyncTaskPipeline[int, int] = AsyncTaskPipeline()
    p.add_stage("inc", slow_inc)
    async with p:
        first: list[int] = []
        async for x in p.run(_slowly(50)):
            first.append(x)
            if len(first) == 3:
                break
        second = await asyncio.wait_for(_collect_run(p, range(1000, 1010)), 5)

    assert first == [1, 2, 3]
    assert second == list(range(1001, 1011))
