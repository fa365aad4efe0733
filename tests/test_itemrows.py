"""Item rows built in columns must equal the engine's per-item records."""

from __future__ import annotations

import json
from typing import Any

from pipeline_app.engine import AsyncTaskPipeline
from pipeline_app.itemrows import StageEncoder, copy_line, encode_rows


def drop_threes(x: int) -> int | None:
    if x % 7 == 0:
        raise ValueError(f"bad\t{x}\n")
    return None if x % 3 == 0 else x


async def records() -> list[Any]:
    collected: list[Any] = []
    pipeline: AsyncTaskPipeline[int, Any] = AsyncTaskPipeline(
        enable_timing=True, on_item_timings=collected.extend
    )
    pipeline.add_stage("double", lambda x: x * 2)
    pipeline.add_stage("drop", drop_threes)

    async def source() -> Any:
        for i in range(60):
            yield i

    async with pipeline:
        async for _ in pipeline.run(source()):
            pass
    return collected


async def test_columnar_rows_match_each_records_stage_timings() -> None:
    collected = await records()
    rows = encode_rows(9, collected, None, StageEncoder())
    assert len(rows) == 60
    by_seq = {row[1]: row for row in rows}
    statuses = {row[3] for row in rows}
    assert statuses == {"ok", "filtered", "error"}
    for record in collected:
        run_id, _, _, status, latency, _, _, stages, error, stage = by_seq[record.seq]
        assert (run_id, status, latency) == (9, record.status, record.total_latency)
        decoded = json.loads(stages)
        assert list(decoded) == list(record.stages)
        for name, values in record.stages.items():
            expected = [
                int(values[key] * 1e6)
                for key in ("queue_wait", "computation", "transmission", "start", "end")
            ]
            assert decoded[name] == expected
        if status == "error":
            assert "bad" in error
            assert stage == "drop"


def test_copy_lines_escape_tabs_newlines_and_backslashes() -> None:
    line = copy_line((1, 2, "", "error", 0.5, 0.25, 0.25, '{"a\\\\b":[1]}', "x\ty\nz", "s"))
    assert line == '1\t2\t\terror\t0.5\t0.25\t0.25\t{"a\\\\\\\\b":[1]}\tx\\ty\\nz\ts\n'
    assert line.count("\n") == 1


async def test_copy_lines_of_a_batch_match_its_rows() -> None:
    collected = await records()
    encoder = StageEncoder()
    rows = encode_rows(9, collected, None, encoder)
    lines = encode_rows(9, collected, None, encoder, copy=True)
    assert lines == [copy_line(row) for row in rows]
