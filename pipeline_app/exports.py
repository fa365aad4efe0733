"""Item timings of a run as CSV or JSON, streamed in chunks: a million rows never sit in memory."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from typing import Any

from django.http import Http404

from pipeline_app import queries, stamps
from pipeline_app.models import ItemTiming, PipelineRun

CHUNK = 2_000
FIELDS = ("seq", "sub_index", "status", "latency", "computation", "overhead", "error_stage")
PARTS = stamps.PART_NAMES
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


class _Echo:
    def write(self, value: str) -> str:
        return value


def _rows(run: PipelineRun) -> Iterator[tuple[Any, ...]]:
    rows = (
        ItemTiming.objects.filter(run=run)
        .order_by(*queries.INPUT_ORDER)
        .values_list(*FIELDS, "error", "stamps")
    )
    yield from rows.iterator(chunk_size=CHUNK)


def _cell(value: Any) -> Any:
    """Neutralise spreadsheet formulas in text cells (CSV injection)."""
    if isinstance(value, str) and value.startswith(_FORMULA):
        return "'" + value
    return value


def csv_stream(run: PipelineRun) -> Iterator[str]:
    names = queries.stage_names(run)
    writer = csv.writer(_Echo())
    header = [*FIELDS, "error"] + [f"{name}.{part}" for name in names for part in PARTS]
    yield writer.writerow(header)
    for *fields, error, blob in _rows(run):
        cells = [_cell(v) for v in fields] + [_cell(error)]
        seconds = stamps.stage_seconds(blob, names)
        for name in names:
            cells.extend(seconds.get(name) or [""] * len(PARTS))
        yield writer.writerow(cells)


def json_stream(run: PipelineRun) -> Iterator[str]:
    names = queries.stage_names(run)
    head = {"run": run.pk, "pipeline": run.pipeline_name, "stage_order": names}
    yield json.dumps(head)[:-1] + ', "items": ['
    separator = ""
    for *fields, error, blob in _rows(run):
        record = dict(zip(FIELDS, fields, strict=True))
        record["error"] = error
        record["stages"] = {
            name: dict(zip(PARTS, values, strict=True))
            for name, values in stamps.stage_seconds(blob, names).items()
        }
        yield separator + json.dumps(record)
        separator = ",\n"
    yield "]}\n"


def stream(run: PipelineRun, fmt: str) -> tuple[Iterator[str], str]:
    if fmt == "csv":
        return csv_stream(run), "text/csv; charset=utf-8"
    if fmt == "json":
        return json_stream(run), "application/json"
    raise Http404(f"Unknown export format {fmt!r}: use csv or json.")
