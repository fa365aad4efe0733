"""``on_item_stamps``: every item's raw stamps in columns, the same timings as the records."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pipeline_app.engine import AsyncTaskPipeline, ItemRecord, StampBatch


def split_fives(x: int) -> Iterator[int]:
    yield x
    if x % 5 == 0:
        yield -x


def drop_or_fail(x: int) -> int | None:
    if x == 7:
        raise ValueError("seven")
    return None if x % 3 == 0 else x


async def run(**callbacks: Any) -> list[int]:
    pipeline: AsyncTaskPipeline[int, int] = AsyncTaskPipeline(
        max_queue_size=8, enable_timing=True, **callbacks
    )
    pipeline.add_stage("split", split_fives)
    pipeline.add_stage("drop", drop_or_fail, workers=2)
    async with pipeline:
        return [x async for x in pipeline.run(range(40))]


def key(record: ItemRecord) -> tuple[int, tuple[int, ...]]:
    return record.seq, record.sub_index


async def test_stamp_batches_hold_every_item_with_the_records_timings() -> None:
    batches: list[StampBatch] = []
    records: list[ItemRecord] = []
    outputs = await run(on_item_stamps=batches.append, on_item_timings=records.extend)

    from_batches = [record for batch in batches for record in batch.records()]
    assert sum(len(batch) for batch in batches) == len(records) == len(from_batches)
    assert sorted(map(key, from_batches)) == sorted(map(key, records))
    by_key = {key(record): record for record in records}
    for record in from_batches:
        assert record == by_key[key(record)]
    delivered = [seq for batch in batches for seq in batch.seqs]
    assert len(delivered) == len(outputs)
    assert {r.status for batch in batches for r in batch.others} == {"filtered", "error"}
    for batch in batches:
        assert batch.stage_names == ("split", "drop")
        for stamps, sub_index in zip(batch.stamps, batch.sub_indexes, strict=True):
            assert len(stamps) == 1 + 3 * 2 + 1  # created, 3 per stage, into the output
            assert stamps == sorted(stamps)
            assert len(sub_index) == 1


async def test_stamp_batches_alone_still_keep_the_reports_first_records() -> None:
    batches: list[StampBatch] = []
    pipeline: AsyncTaskPipeline[int, int] = AsyncTaskPipeline(
        enable_timing=True, on_item_stamps=batches.append, max_item_records=5
    )
    pipeline.add_stage("inc", lambda x: x + 1)
    async with pipeline:
        outputs = [x async for x in pipeline.run(range(30))]
        kept = pipeline.completed_items
    assert outputs == list(range(1, 31))
    assert [record.seq for record in kept] == [0, 1, 2, 3, 4]
    assert sum(len(batch.seqs) for batch in batches) == 30


async def test_a_failing_stamp_callback_is_disabled_not_fatal() -> None:
    calls: list[int] = []

    def broken(batch: StampBatch) -> None:
        calls.append(len(batch))
        raise RuntimeError("boom")

    assert await run(on_item_stamps=broken) != []
    assert len(calls) == 1
