"""Compatibility with the public API of async-task-pipeline 0.1.10 (see the seed's api-reference):
report presence, report models, the seed's item methods, standalone stages, the exported logger."""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import pipeline_app.engine as engine
from pipeline_app.engine import (
    AsyncTaskPipeline,
    ItemRecord,
    ItemTimingTotals,
    PipelineItem,
    PipelineStage,
    StageTimingDetail,
    log_pipeline_performance_analysis,
)
from pipeline_app.engine.item import delivered_record


async def _run_to_completion(*, timing: bool) -> AsyncTaskPipeline[int, object]:
    pipeline: AsyncTaskPipeline[int, object] = AsyncTaskPipeline(enable_timing=timing)
    pipeline.add_stage("a", lambda x: x + 1)
    pipeline.add_stage("b", lambda x: x * 2)
    async with pipeline:
        outputs = [x async for x in pipeline.run(range(5))]
    assert outputs == [2, 4, 6, 8, 10]
    return pipeline


# ------------------------------------------------------------------ get_report() and the log helper


async def test_get_report_is_none_when_timing_is_off() -> None:
    pipeline = await _run_to_completion(timing=False)
    assert pipeline.get_report() is None


async def test_get_report_is_none_before_any_item_has_come_out() -> None:
    pipeline: AsyncTaskPipeline[int, object] = AsyncTaskPipeline(enable_timing=True)
    pipeline.add_stage("a", lambda x: x)
    await pipeline.start()
    try:
        await pipeline.process_input_data(1)
        assert pipeline.get_report() is None  # fed, but nobody has read the output yet
    finally:
        await pipeline.stop()


async def test_log_helper_with_timing_off_logs_no_analysis(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pipeline = await _run_to_completion(timing=False)
    with caplog.at_level(logging.INFO, logger="pipeline_app.engine"):
        log_pipeline_performance_analysis(pipeline)
    assert "timing is disabled" in caplog.text
    assert "Stage a" not in caplog.text


# ------------------------------------------------------------------ report models


async def test_item_breakdown_totals_and_stages_have_attribute_and_key_access() -> None:
    pipeline = await _run_to_completion(timing=True)
    report = pipeline.get_report()
    assert report is not None and report.item_breakdowns
    breakdown = report.item_breakdowns[0]
    totals = breakdown.totals
    assert isinstance(totals, ItemTimingTotals)
    assert totals.total_latency > 0
    assert totals["total_latency"] == totals.total_latency
    assert dict(totals) == {
        "total_computation_time": totals.total_computation_time,
        "total_overhead_time": totals.total_overhead_time,
        "total_latency": totals.total_latency,
        "computation_ratio": totals.computation_ratio,
    }
    stage = breakdown.stages["a"]
    assert isinstance(stage, StageTimingDetail)
    assert stage.computation_time >= 0
    assert stage["computation_time"] == stage.computation_time
    assert math.isclose(
        stage.total_stage_time,
        stage.queue_wait_time + stage.computation_time + stage.transmission_time,
    )
    with pytest.raises(KeyError):
        stage["computation"]


# ------------------------------------------------------------------ the seed's item methods


def _two_stage_record() -> ItemRecord:
    # created 10; a: queued 11, runs 12..14; b: queued 15, runs 16..19; output queued 20
    stamps = [10.0, 11.0, 12.0, 14.0, 15.0, 16.0, 19.0, 20.0]
    return delivered_record(0, (), stamps, 21.0, ("a", "b"))


def test_item_record_seed_methods_measure_up_to_the_last_stage_completion() -> None:
    record = _two_stage_record()
    assert record.total_latency == 11.0  # the record's own latency ends at delivery
    assert record.get_total_latency() == 9.0
    assert record.get_stage_latencies() == {"a": 4.0, "b": 5.0}
    assert record.get_timing_breakdown() == {
        "a": {
            "queue_wait_time": 1.0,
            "computation_time": 2.0,
            "transmission_time": 1.0,
            "total_stage_time": 4.0,
        },
        "b": {
            "queue_wait_time": 1.0,
            "computation_time": 3.0,
            "transmission_time": 1.0,
            "total_stage_time": 5.0,
        },
        "totals": {
            "total_computation_time": 5.0,
            "total_overhead_time": 4.0,
            "total_latency": 9.0,
            "computation_ratio": 5.0 / 9.0,
        },
    }


def test_item_record_seed_methods_without_stages_return_none() -> None:
    record = ItemRecord(0, (), "ok", 0.0, 1.0, 1.0, 0.0, 1.0, stages={})
    assert record.get_total_latency() is None
    assert record.get_stage_latencies() is None
    assert record.get_timing_breakdown() is None


async def test_completed_items_have_the_seed_item_methods() -> None:
    pipeline = await _run_to_completion(timing=True)
    record = pipeline.completed_items[0]
    total = record.get_total_latency()
    latencies = record.get_stage_latencies()
    breakdown = record.get_timing_breakdown()
    assert total is not None and 0 < total <= record.total_latency
    assert latencies is not None and list(latencies) == ["a", "b"]
    assert math.isclose(sum(latencies.values()), total)
    assert breakdown is not None and breakdown["totals"]["total_latency"] == total


def _item_stamped_by_a_fake_clock(monkeypatch: pytest.MonkeyPatch) -> PipelineItem[int]:
    clock = iter([1.0, 3.0, 4.0, 9.0])
    monkeypatch.setattr(time, "perf_counter", lambda: next(clock))
    item = PipelineItem(data=1, start_timestamp=0.0)
    item.record_entry_time("a")  # 1.0
    item.record_completion_time("a")  # 3.0
    item.record_entry_time("b")  # 4.0
    item.record_completion_time("b")  # 9.0
    return item


def test_pipeline_item_stage_latencies_run_from_the_previous_completion(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    item = _item_stamped_by_a_fake_clock(monkeypatch)
    # what the published PipelineItem returns for the same stamps
    assert item.get_stage_latencies() == {"a": 3.0, "b": 6.0}


def test_pipeline_item_stage_latencies_need_no_entry_times() -> None:
    item = PipelineItem(data=1, start_timestamp=0.0)
    assert item.get_stage_latencies() is None  # nothing completed yet
    item.record_completion_time("a")
    latencies = item.get_stage_latencies()
    assert latencies is not None and set(latencies) == {"a"}


# ------------------------------------------------------------------ standalone PipelineStage


def _split(x: int) -> Iterator[int]:
    yield x
    yield x + 100


def _fail_on_3(x: int) -> int:
    if x == 3:
        raise ValueError("bad 3")
    return x


def _drain(q: queue.Queue[Any], n: int) -> list[Any]:
    return [q.get(timeout=5) for _ in range(n)]


def test_standalone_stage_clear_input_queue() -> None:
    inbox: queue.Queue[Any] = queue.Queue()
    outbox: queue.Queue[Any] = queue.Queue()
    stage = PipelineStage("s", lambda x: x, inbox, outbox)
    inbox.put(PipelineItem(1))
    inbox.put(PipelineItem(2))
    assert stage.queue_depth() == 2
    assert stage.clear_input_queue() == 2
    assert inbox.empty()


def test_standalone_stage_processes_items_from_a_queue() -> None:
    inbox: queue.Queue[Any] = queue.Queue()
    outbox: queue.Queue[Any] = queue.Queue()
    stage = PipelineStage("s", lambda x: None if x == 2 else x * 10, inbox, outbox)
    marker = object()
    stage.start()
    try:
        was_running = stage.running
        for x in (1, 2, 3):
            inbox.put(PipelineItem(x))
        inbox.put(marker)
        outputs = _drain(outbox, 3)
    finally:
        stage.stop()
    assert [o.data for o in outputs[:2]] == [10, 30]  # 2 was filtered out
    assert outputs[2] is marker  # not an item: forwarded untouched
    timing = outputs[0].get_detailed_timing("s")
    assert timing is not None and timing.computation_time >= 0
    assert set(outputs[0].get_stage_latencies() or {}) == {"s"}
    assert stage.processed_count == 3
    assert was_running and not stage.running
    assert not stage.alive_threads()


def test_standalone_stage_fans_out_and_returns_exceptions() -> None:
    inbox: queue.Queue[Any] = queue.Queue()
    outbox: queue.Queue[Any] = queue.Queue()
    splitter = PipelineStage("split", _split, inbox, outbox)
    splitter.start()
    try:
        inbox.put(PipelineItem(1))
        children = _drain(outbox, 2)
    finally:
        splitter.stop()
    assert [c.data for c in children] == [1, 101]
    assert children[0] is not children[1]

    checker = PipelineStage("check", _fail_on_3, inbox, outbox, return_exceptions=True)
    checker.start()
    try:
        inbox.put(PipelineItem(3))
        inbox.put(PipelineItem(4))
        failed, passed = _drain(outbox, 2)
    finally:
        checker.stop()
    assert isinstance(failed, ValueError) and str(failed) == "bad 3"
    assert passed.data == 4


def test_standalone_stage_can_be_restarted_after_stop() -> None:
    inbox: queue.Queue[Any] = queue.Queue()
    outbox: queue.Queue[Any] = queue.Queue()
    stage = PipelineStage("s", lambda x: x + 1, inbox, outbox)
    stage.start()
    stage.stop()
    stage.start()  # a wake-up left in the input by the first stop() must not end this run
    try:
        inbox.put(PipelineItem(1))
        assert _drain(outbox, 1)[0].data == 2
    finally:
        stage.stop()


def test_standalone_stage_rejects_what_needs_a_pipeline() -> None:
    inbox: queue.Queue[Any] = queue.Queue()
    outbox: queue.Queue[Any] = queue.Queue()
    with pytest.raises(ValueError, match="AsyncTaskPipeline"):
        PipelineStage("s", lambda x: x, inbox, outbox, workers=2).start()
    with pytest.raises(RuntimeError, match="AsyncTaskPipeline"):
        PipelineStage("s", lambda x: x).start()
    assert not [t for t in threading.enumerate() if t.name.startswith("pipeline-s-")]


# ------------------------------------------------------------------ utilities


def test_logger_is_exported_and_unconfigured() -> None:
    assert "logger" in engine.__all__
    assert engine.logger is logging.getLogger("pipeline_app.engine")
    assert not engine.logger.handlers
