"""Item rows built in columns must equal the engine's per-item records, on every database."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import pytest
from django.db import connection

from pipeline_app import stamps
from pipeline_app.engine import AsyncTaskPipeline, StampBatch
from pipeline_app.itemrows import (
    RowBlock,
    _statements,
    copy_row,
    encode_batch,
    encode_rows,
    insert_item_rows,
)
from pipeline_app.models import ItemTiming
from tests.factories import claimed_run, make_definition

STAGES = ["double", "split", "drop"]


def drop_threes(x: int) -> int | None:
    if x % 7 == 0:
        raise ValueError(f"bad\t{x}\n\x00 ✓")
    return None if x % 3 == 0 else x


def split_tens(x: int) -> Iterator[int]:
    if x % 10 == 4:  # fan out in two
        yield x
        yield x + 1
    else:
        yield x


async def records(batches: list[StampBatch] | None = None, *, fan_out: bool = True) -> list[Any]:
    collected: list[Any] = []
    pipeline: AsyncTaskPipeline[int, Any] = AsyncTaskPipeline(
        enable_timing=True,
        on_item_timings=collected.extend,
        on_item_stamps=None if batches is None else batches.append,
    )
    pipeline.add_stage("double", lambda x: x * 2)
    pipeline.add_stage("split", split_tens if fan_out else (lambda x: x))
    pipeline.add_stage("drop", drop_threes)

    async with pipeline:
        async for _ in pipeline.run(range(60)):
            pass
    return collected


def key(record: Any) -> tuple[int, str]:
    return record.seq, ".".join(map(str, record.sub_index))


def flat(rows: list[Any]) -> list[Any]:
    """Rows with each :class:`RowBlock` (delivered items in columns) as its short tuples."""
    return [r for row in rows for r in (row.rows() if isinstance(row, RowBlock) else [row])]


def full(run_id: int, row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A row with every column (a delivered item not fanned out has a short one)."""
    if len(row) == 5:
        seq, latency, computation, overhead, blob = row
        return (run_id, seq, "", "ok", latency, computation, overhead, blob, "", "")
    return row


def assert_rows_match(rows: list[tuple[Any, ...]], collected: list[Any], run_id: int) -> None:
    assert len(rows) == len(collected) >= 60  # fan-out children have rows of their own
    rows = [full(run_id, row) for row in rows]
    assert {row[0] for row in rows} == {run_id}
    by_key = {(row[1], row[2]): row for row in rows}
    assert {row[3] for row in rows} == {"ok", "filtered", "error"}
    for record in collected:
        _, _, _, status, latency, computation, overhead, blob, error, stage = by_key[key(record)]
        assert (status, latency) == (record.status, record.total_latency)
        assert (computation, overhead) == (record.computation_time, record.overhead_time)
        decoded = stamps.stage_seconds(blob, STAGES)
        assert list(decoded) == list(record.stages)
        for name, values in record.stages.items():
            assert decoded[name] == [values[part] for part in stamps.PART_NAMES]
        if status == "error":
            assert "bad\t" in error and "\x00" not in error
            assert stage == "drop"


@pytest.mark.parametrize("fan_out", [True, False])
async def test_columnar_rows_match_each_records_stage_timings(fan_out: bool) -> None:
    collected = await records(fan_out=fan_out)
    rows = flat(encode_rows(9, collected, None))
    assert {len(row) for row in rows} == ({10} if fan_out else {5, 10})
    assert_rows_match(rows, collected, 9)


async def test_stamp_batches_give_the_same_rows_as_records() -> None:
    batches: list[StampBatch] = []
    collected = await records(batches)
    for copy in (False, True):
        from_batches = flat(
            [r for batch in batches for r in encode_batch(9, batch, None, copy=copy)]
        )
        assert sorted(from_batches) == sorted(flat(encode_rows(9, collected, None, copy=copy)))


@pytest.mark.parametrize("fan_out", [True, False])
async def test_copy_tuples_of_a_batch_match_its_rows(fan_out: bool) -> None:
    collected = await records(fan_out=fan_out)
    rows = [full(9, row) for row in flat(encode_rows(9, collected, None))]
    assert encode_rows(9, collected, None, copy=True) == [copy_row(row) for row in rows]


def test_stamps_rebuilt_from_stage_values_give_them_back() -> None:
    values = [(0.5, 1.0, 0.25, 2.0, 3.0), (0.0, 2.0, 0.0, 3.25, 5.25)]
    blob = stamps.pack(stamps.from_stage_values(values))
    assert stamps.stage_seconds(blob, ["a", "b"]) == {"a": list(values[0]), "b": list(values[1])}
    assert stamps.stage_seconds(b"", ["a"]) == {}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("fan_out", [True, False])
def test_rows_inserted_in_bulk_read_back_through_the_orm(fan_out: bool) -> None:
    collected = asyncio.run(records(fan_out=fan_out))
    run = claimed_run(make_definition(stages=["test-inc"]))
    copy = connection.vendor == "postgresql"
    insert_item_rows(run.pk, encode_rows(run.pk, collected, None, copy=copy))
    stored = [
        (
            *(run.pk, item.seq, item.sub_index, item.status, item.latency),
            *(item.computation, item.overhead, bytes(item.stamps), item.error, item.error_stage),
        )
        for item in ItemTiming.objects.filter(run=run)
    ]
    assert_rows_match(stored, collected, run.pk)
    run.delete()  # no database constraint on ItemTiming.run: Django cascades
    assert not ItemTiming.objects.filter(run_id=run.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_row_blocks_of_several_widths_and_statements_land_intact() -> None:
    run = claimed_run(make_definition(stages=["test-inc"]))
    count = 7_000  # more rows than one SQLite statement's parameters allow
    blocks = [
        RowBlock(
            width,
            list(range(first, first + count)),
            [seq / 1e3 for seq in range(first, first + count)],
            [0.5] * count,
            [0.25] * count,
            b"".join(stamps.pack([float(seq)] * width) for seq in range(first, first + count)),
        )
        for first, width in ((0, 4), (count, 7))
    ]
    insert_item_rows(run.pk, blocks)
    stored = ItemTiming.objects.filter(run=run).order_by("seq")
    assert stored.count() == 2 * count
    for item in (stored[0], stored[count - 1], stored[count], stored[2 * count - 1]):
        width = 4 if item.seq < count else 7
        assert (item.status, item.sub_index, item.error) == ("ok", "", "")
        assert (item.latency, item.computation, item.overhead) == (item.seq / 1e3, 0.5, 0.25)
        assert stamps.unpack(bytes(item.stamps)) == (float(item.seq),) * width


@pytest.mark.parametrize(("count", "most"), [(0, 10), (1, 10), (7_000, 6_553), (12_345, 999)])
def test_statements_cover_the_rows_with_few_power_of_two_sizes(count: int, most: int) -> None:
    ranges = list(_statements(count, most))
    bounds = [0, *(last for _, last in ranges)]
    assert ranges == list(pairwise(bounds)) and bounds[-1] == count
    sizes = {last - first for first, last in ranges}
    assert all(size <= most and size & (size - 1) == 0 for size in sizes)
