"""Error policies, stop/cancel/drain/clear."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator

import pytest

from pipeline_app.engine import AsyncTaskPipeline, ItemRecord, StageError

from .funcs import agen, fail_7_late_27_early, fail_on_7, feed_closed_stream, inc


def _stage_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("pipeline-")]


async def test_drop_policy_logs_counts_and_records(caplog: pytest.LogCaptureFixture) -> None:
    p: AsyncTaskPipeline[int, object] = AsyncTaskPipeline(enable_timing=True)
    p.add_stage("check", fail_on_7)
    p.add_stage("inc", lambda x: x + 1)
    with caplog.at_level(logging.DEBUG, logger="pipeline_app.engine"):
        async with p:
            out = [x async for x in p.run(range(30))]
    assert out == [x + 1 for x in range(30) if x % 10 != 7]
    s = p.get_latency_summary()
    assert s["error_count"] == 3
    assert s["stage_statistics"]["check"]["error_count"] == 3
    errs = p.errors
    assert [e.seq for e in errs] == [7, 17, 27]
    assert errs[0].stage == "check" and errs[0].exc_type == "ValueError"
    assert "fail_on_7" in errs[0].traceback and errs[0].message == "bad 7"
    # logged once per item: first with traceback at ERROR, the rest at DEBUG
    recs = [r for r in caplog.records if "failed on item" in r.getMessage()]
    assert [r.levelno for r in recs] == [logging.ERROR, logging.DEBUG, logging.DEBUG]
    report = p.get_report()
    assert report is not None and len(report.errors) == 3
    failed = [b for b in report.item_breakdowns or [] if b.status == "error"]
    assert [b.seq for b in failed] == [7, 17, 27] and failed[0].error_stage == "check"


async def test_error_records_bounded_but_counted() -> None:
    p: AsyncTaskPipeline[int, object] = AsyncTaskPipeline(max_error_records=5)
    p.add_stage("boom", lambda x: 1 // 0)
    async with p:
        assert [x async for x in p.run(range(40))] == []
    assert len(p.errors) == 5
    assert p.get_latency_summary()["error_count"] == 40


async def test_raise_policy_fails_fast() -> None:
    p: AsyncTaskPipeline[int, object] = AsyncTaskPipeline(error_policy="raise")
    p.add_stage("slow", lambda x: (time.sleep(0.001), x)[1])
    p.add_stage("check", fail_on_7, workers=2)
    t0 = time.perf_counter()
    got: list[object] = []

    async def consume() -> None:
        async with p:
            async for x in p.run(agen(100_000)):
                got.append(x)

    with pytest.raises(StageError) as ei:
        await consume()
    assert time.perf_counter() - t0 < 5
    assert ei.value.stage == "check" and ei.value.seq == 7
    assert isinstance(ei.value.__cause__, ValueError)
    assert all(isinstance(x, int) and x < 7 for x in got)
    assert not p.running and not _stage_threads()


async def test_stop_mid_stream_is_prompt_and_counts_discarded() -> None:
    p: AsyncTaskPipeline[int, object] = AsyncTaskPipeline(max_queue_size=20)
    p.add_stage("slow", lambda x: (time.sleep(0.05), x)[1])
    p.add_stage("fast", lambda x: x)
    await p.start()
    feeder = asyncio.create_task(p.process_input_stream(agen(1000)))
    await asyncio.sleep(0.2)
    t0 = time.perf_counter()
    discarded = await p.stop()
    assert time.perf_counter() - t0 < 0.5
    await asyncio.wait_for(feeder, 1)
    fed = p.progress()["items_in"]
    assert discarded > 0 and discarded == fed - p.progress()["items_out"]
    assert p.get_latency_summary()["discarded_count"] == discarded
    assert not _stage_threads()
    assert await p.stop() == 0  # idempotent


async def test_stop_undrained_output_does_not_block_loop() -> None:
    p: AsyncTaskPipeline[int, object] = AsyncTaskPipeline(max_queue_size=5)
    p.add_stage("a", lambda x: x)
    p.add_stage("b", lambda x: x)
    await p.start()
    for i in range(500):
        await p.process_input_data(i, 0.0)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    t = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)  # nobody reads the output
    discarded = await asyncio.wait_for(p.stop(), 2)
    t.cancel()
    assert discarded == 500 and ticks > 3
    assert not _stage_threads()


async def test_stop_while_consumer_waits_ends_iteration() -> None:
    p: AsyncTaskPipeline[int, object] = AsyncTaskPipeline()
    p.add_stage("a", lambda x: x)
    await p.start()
    got: list[object] = []

    async def consume() -> None:
        async for x in p.generate_output_stream():
            got.append(x)

    task = asyncio.create_task(consume())
    await p.process_input_data(1, 0.0)
    await asyncio.sleep(0.05)
    await p.stop()
    await asyncio.wait_for(task, 1)
    assert got == [1]


async def test_drain_lets_in_flight_items_finish() -> None:
    p: AsyncTaskPipeline[int, object] = AsyncTaskPipeline(max_queue_size=50)
    p.add_stage("slow", lambda x: (time.sleep(0.002), x)[1])
    await p.start()
    for i in range(40):
        await p.process_input_data(i, 0.0)
    await asyncio.wait_for(p.drain(), 5)
    out = [x async for x in p.generate_output_stream()]
    assert out == list(range(40))
    assert await p.stop(drain=True) == 0


async def test_clear_and_interrupt_count_discarded() -> None:
    p: AsyncTaskPipeline[int, object] = AsyncTaskPipeline(max_queue_size=100)
    release = threading.Event()
    p.add_stage("gate", lambda x: (release.wait(5), x)[1])
    assert await p.interrupt() == 0  # not running
    await p.start()
    for i in range(30):
        await p.process_input_data(i, 0.0)
    await asyncio.sleep(0.05)
    n = await p.interrupt()  # items queued; items already in a worker's batch are
    assert 0 <= n <= 29  # dropped by the worker right after its current item
    assert p.counter == 0
    release.set()
    await p.process_input_data(100, 0.0)
    p.close_input()
    out = [x async for x in p.generate_output_stream()]
    assert out == [0, 100]
    assert p.get_latency_summary()["discarded_count"] == 29
    assert await p.stop() == 0


async def test_stop_with_stage_mid_item_is_prompt() -> None:
    p: AsyncTaskPipeline[int, object] = AsyncTaskPipeline()
    p.add_stage("long", lambda x: (time.sleep(0.3), x)[1])
    await p.start()
    await p.process_input_data(1, 0.0)
    await asyncio.sleep(0.05)
    t0 = time.perf_counter()
    assert await p.stop() == 1
    assert time.perf_counter() - t0 < 0.6
    await asyncio.sleep(0.35)
    assert not _stage_threads()


async def test_backpressure_bounds_memory_with_concurrent_consumer() -> None:
    p: AsyncTaskPipeline[int, object] = AsyncTaskPipeline(max_queue_size=10)
    p.add_stage("a", lambda x: x)
    p.add_stage("b", lambda x: x)
    max_seen = 0
    await p.start()
    fed = 0

    async def source():  # type: ignore[no-untyped-def]
        nonlocal fed
        for i in range(400):
            fed += 1
            yield i

    got = 0
    async for _ in p.run(source()):
        got += 1
        max_seen = max(max_seen, fed - got)
        await asyncio.sleep(0.0005)  # slow consumer
    assert got == 400
    # 2 stage queues + output + worker batches + consumer batch: well under 400
    assert max_seen <= 10 * 6
    await p.stop()


@pytest.mark.parametrize("executor", ["thread", "process"])
async def test_raise_policy_is_ordered_with_workers(executor: str) -> None:
    """The earliest failing item in input order wins, not the first failure in wall time."""
    records: list[ItemRecord] = []
    p: AsyncTaskPipeline[int, object] = AsyncTaskPipeline(
        max_queue_size=10, error_policy="raise", enable_timing=True, on_item_timing=records.append
    )
    p.add_stage("check", fail_7_late_27_early, workers=2, executor=executor)
    p.add_stage("inc", lambda x: x + 1, workers=2)
    got: list[object] = []

    async def consume() -> None:
        async with p:
            async for x in p.run(agen(200)):
                got.append(x)

    with pytest.raises(StageError) as ei:
        await consume()
    assert ei.value.stage == "check" and ei.value.seq == 7
    assert isinstance(ei.value.__cause__, ValueError)
    assert got == [x + 1 for x in range(7)]
    assert [r.seq for r in records if r.status == "ok"] == list(range(7))
    assert [(r.seq, r.error_stage) for r in records if r.status == "error"] == [(7, "check")]
    assert not p.running and not _stage_threads()


async def test_a_stop_whose_caller_was_cancelled_still_completes() -> None:
    def slow(x: int) -> int:
        time.sleep(0.3)
        return x

    p: AsyncTaskPipeline[int, int] = AsyncTaskPipeline(stop_timeout=1.0)
    p.add_stage("slow", slow)
    await p.start()
    await p.process_input_data(1)
    await asyncio.sleep(0.05)  # the stage is inside slow()
    first = asyncio.create_task(p.stop())
    await asyncio.sleep(0.05)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first

    assert await p.stop() == 0  # awaits the first stop's work, raises nothing
    assert not p.running
    assert _stage_threads() == []


async def test_stop_with_drain_waits_for_a_concurrent_consumer() -> None:
    p: AsyncTaskPipeline[int, int] = AsyncTaskPipeline(max_queue_size=10)
    p.add_stage("inc", inc)
    await p.start()
    got: list[int] = []

    async def consume() -> None:
        async for x in p.generate_output_stream():
            got.append(x)
            await asyncio.sleep(0.001)  # a little I/O per output

    consumer = asyncio.create_task(consume())
    for i in range(100):
        await p.process_input_data(i)
    discarded = await p.stop(drain=True)
    await asyncio.wait_for(consumer, 5)

    assert (got, discarded) == ([x + 1 for x in range(100)], 0)


async def test_stop_with_drain_inside_the_consumer_loop_returns() -> None:
    p: AsyncTaskPipeline[int, int] = AsyncTaskPipeline(max_queue_size=2)
    p.add_stage("inc", inc)
    await p.start()
    for i in range(50):
        p.put_input_data(i)  # from the event loop thread: never blocks
    got: list[int] = []
    discarded: list[int] = []

    async def consume() -> None:
        async for x in p.generate_output_stream():
            got.append(x)
            if len(got) == 1:
                discarded.append(await p.stop(drain=True))

    await asyncio.wait_for(consume(), 5)

    assert got == [1]  # the loop ends at the stop; the drained rest is counted, not lost
    assert discarded == [49]


@pytest.mark.parametrize("through_wait_for", [False, True])
async def test_drain_inside_the_consumer_loop_then_every_output_comes(
    through_wait_for: bool,
) -> None:
    """Through ``asyncio.wait_for``, ``drain()`` runs in a task of its own on Python 3.11."""
    p: AsyncTaskPipeline[int, int] = AsyncTaskPipeline(max_queue_size=2)
    p.add_stage("inc", inc)
    async with p:
        for i in range(50):
            p.put_input_data(i)
        got: list[int] = []

        async def consume() -> None:
            async for x in p.generate_output_stream():
                got.append(x)
                if len(got) == 1:
                    await (asyncio.wait_for(p.drain(), 5) if through_wait_for else p.drain())

        await asyncio.wait_for(consume(), 10)

    assert got == [x + 1 for x in range(50)]


async def _source_that_breaks() -> AsyncIterator[int]:
    yield 1
    yield 2
    raise ValueError("source broke")


@pytest.mark.parametrize("close_input", [True, False])
async def test_a_source_error_ends_run_and_propagates(close_input: bool) -> None:
    p: AsyncTaskPipeline[int, int] = AsyncTaskPipeline()
    p.add_stage("same", lambda x: x)
    got: list[int] = []

    async def consume() -> None:
        async for x in p.run(_source_that_breaks(), close_input=close_input):
            got.append(x)

    async with p:
        with pytest.raises(ValueError, match="source broke"):
            await asyncio.wait_for(consume(), 3)

    assert got == [1, 2]


async def test_clear_output_queue_counts_what_a_consumer_took_and_left() -> None:
    p: AsyncTaskPipeline[int, int] = AsyncTaskPipeline()
    p.add_stage("same", lambda x: x)
    async with p:
        await feed_closed_stream(p, range(10))
        outputs = p.generate_output_stream()
        async for _ in outputs:
            break  # the other 9 came with the same batch
        await outputs.aclose()
        discarded = p.clear_output_queue()
        rest = [x async for x in p.generate_output_stream()]
        summary = p.get_latency_summary()

    assert (discarded, rest, summary["discarded_count"]) == (9, [], 9)


async def test_clear_drops_outputs_parked_for_order_with_workers() -> None:
    gate = threading.Event()

    def first_is_slow(x: int) -> int:
        if x == 0:
            gate.wait(5)
        return x

    p: AsyncTaskPipeline[int, int] = AsyncTaskPipeline(max_queue_size=100)
    p.add_stage("two", first_is_slow, workers=2)
    async with p:
        for i in range(20):
            await p.process_input_data(i)
        await asyncio.sleep(0.3)  # 1..19 done by the other worker, parked behind item 0
        discarded = p.clear()
        gate.set()
        await p.process_input_data(100)
        p.close_input()
        out = [x async for x in p.generate_output_stream()]
        summary = p.get_latency_summary()

    assert out in ([100], [0, 100])  # item 0 was inside the stage function: it may come out
    assert discarded > 0  # the parked outputs (the slow worker drops the rest of its batch)
    assert summary["in_flight"] == 0
    assert summary["discarded_count"] + summary["items_out"] == summary["items_in"]


async def test_an_item_whose_put_was_cancelled_is_not_counted_in_flight() -> None:
    gate = threading.Event()

    def held(x: int) -> int:
        gate.wait(2)
        return x

    p: AsyncTaskPipeline[int, int] = AsyncTaskPipeline(max_queue_size=1)
    p.add_stage("held", held)
    async with p:
        outputs = p.run(range(100))
        first = asyncio.ensure_future(outputs.__anext__())
        await asyncio.sleep(0.1)  # the feeder waits for room in the full input queue
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        await outputs.aclose()
        gate.set()
        later = await asyncio.wait_for(_collect_run(p, [7, 8]), 5)
        summary = p.get_latency_summary()

    assert later == [7, 8]
    assert summary["in_flight"] == 0
    assert summary["items_in"] == summary["items_out"] + summary["discarded_count"]


async def test_drain_after_every_end_marker_was_read_gives_the_next_reader_one() -> None:
    p: AsyncTaskPipeline[int, int] = AsyncTaskPipeline()
    p.add_stage("same", lambda x: x)
    async with p:
        assert [x async for x in p.run([1, 2])] == [1, 2]
        await p.process_input_stream([], close_input=False)
        await asyncio.wait_for(p.drain(), 3)
        after = await asyncio.wait_for(_collect(p), 3)

    assert after == []


async def _collect_run(p: AsyncTaskPipeline[int, int], source: object) -> list[int]:
    return [x async for x in p.run(source)]  # type: ignore[arg-type]


async def _collect(p: AsyncTaskPipeline[int, int]) -> list[int]:
    return [x async for x in p.generate_output_stream()]
