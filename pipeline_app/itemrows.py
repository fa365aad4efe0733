"""``ItemTiming`` rows without model instances: encoded in columns, inserted in bulk.

The ORM's per-row cost (model instances, per-field preparation) was ten times the insert itself,
and every managed run writes one row per item, so rows are plain tuples here: built in columns
with C-level ``map``/``zip`` over the engine's raw stamps, and inserted with ``COPY`` on
PostgreSQL or ``executemany`` elsewhere. Stage timings are whole microseconds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from itertools import chain, repeat
from operator import mul, sub
from typing import Any

from django.db import connection, transaction

from pipeline_app.models import ItemTiming

ITEM_COLUMNS = (
    "run_id",
    "seq",
    "sub_index",
    "status",
    "latency",
    "computation",
    "overhead",
    "stages",
    "error",
    "error_stage",
)


class StageEncoder:
    """Encodes an item's per-stage timings as the JSON of ``ItemTiming.stages``.

    Stage timings are stored as whole microseconds: a prepared ``%``-format per stage layout
    encodes them several times faster than ``json.dumps`` of floats (the hot path of every
    managed run), and a microsecond is finer than anything the dashboard draws.
    """

    def __init__(self) -> None:
        self._formats: dict[tuple[str, ...], str] = {}

    def template(self, names: tuple[str, ...]) -> str:
        """A ``%`` format taking five values per stage, in seconds times 1e6."""
        template = self._formats.get(names)
        if template is None:
            template = "{%s}" % ",".join(  # noqa: UP031
                json.dumps(name).replace("%", "%%") + ":[%d,%d,%d,%d,%d]" for name in names
            )
            self._formats[names] = template
        return template

    def needs_escaping(self, names: tuple[str, ...]) -> bool:
        """Does this layout's JSON hold characters COPY's text format must escape?"""
        return any(ch in self.template(names) for ch in "\\\t\n\r")

    def encode(self, names: tuple[str, ...], values: Sequence[Sequence[float]]) -> str:
        return self.template(names) % tuple(value * 1e6 for stage in values for value in stage)


def item_row(
    run_id: int, record: Any, seq: int, encoder: StageEncoder | None = None
) -> tuple[Any, ...]:
    """One ``ItemTiming`` row as a tuple for a bulk insert that skips model instances."""
    stages = (encoder or StageEncoder()).encode(record.stage_names, record.stage_values())
    return (
        run_id,
        seq,
        ".".join(map(str, record.sub_index)),
        record.status,
        record.total_latency,
        record.computation_time,
        record.overhead_time,
        stages,
        (record.error or "")[:5000],
        record.error_stage or "",
    )


def insert_item_rows(rows: Sequence[Any]) -> None:
    """Insert rows (COPY lines on PostgreSQL, tuples elsewhere) in as few statements as the
    database allows, without the ORM.

    One statement per few thousand rows also matters for the GIL: a per-row ``executemany``
    releases and re-acquires it for every row and then waits behind the pipeline's threads.
    """
    quote = connection.ops.quote_name
    table = quote(ItemTiming._meta.db_table)
    columns = ", ".join(quote(column) for column in ITEM_COLUMNS)
    with transaction.atomic(), connection.cursor() as cursor:
        raw = cursor.cursor
        if connection.vendor == "postgresql":
            # Timings are telemetry: a crash may lose the last fraction of a second of them,
            # never corrupt anything, and the batch then skips the wait for the WAL flush.
            raw.execute("SET LOCAL synchronous_commit TO OFF")
            with raw.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                copy.write("".join(rows))
            return
        marker = "?" if connection.vendor == "sqlite" else "%s"
        row_sql = "(" + ", ".join([marker] * len(ITEM_COLUMNS)) + ")"
        per_statement = max(_max_params() // len(ITEM_COLUMNS), 1)
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            values = ", ".join([row_sql] * len(chunk))
            raw.execute(
                f"INSERT INTO {table} ({columns}) VALUES {values}",
                list(chain.from_iterable(chunk)),
            )


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


_COPY_LINE = "%d\t%d\t%s\t%s\t%r\t%r\t%r\t%s\t%s\t%s\n"


def copy_line(row: tuple[Any, ...]) -> str:
    """One row in PostgreSQL's COPY text format (text columns escaped)."""
    *numbers, stages, error, error_stage = row
    escapes = _COPY_ESCAPES
    return _COPY_LINE % (
        *numbers,
        stages.translate(escapes),
        error.translate(escapes),
        error_stage.translate(escapes),
    )


def _max_params() -> int:
    if connection.vendor == "sqlite":
        import sqlite3

        return int(connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
    return int(connection.features.max_query_params or 65_535)


def encode_rows(
    run_id: int,
    records: Sequence[Any],
    seq_map: Sequence[int] | None,
    encoder: StageEncoder,
    *,
    copy: bool = False,
) -> list[Any]:
    """Rows for a batch of records; records sharing a stage layout are computed in columns.

    With ``copy`` the rows are COPY text lines, so the writer thread (which gets only a share of
    the GIL next to the pipeline's threads) has nothing left to do per row but send them.
    """
    rows: list[Any] = []
    groups: dict[tuple[tuple[str, ...], int], list[Any]] = {}
    for record in records:
        stamps = record.stamps
        if stamps is None or record.status != "ok":
            row = item_row(run_id, record, original_seq(record.seq, seq_map), encoder)
            rows.append(copy_line(row) if copy else row)
        else:
            groups.setdefault((record.stage_names, len(stamps)), []).append(record)
    for (names, width), group in groups.items():
        group_rows = _group_rows(run_id, names, width, group, seq_map, encoder)
        if not copy:
            rows.extend(group_rows)
        elif encoder.needs_escaping(names):
            rows.extend(map(copy_line, group_rows))
        else:  # digits, dots and plain JSON: the format needs no escaping
            rows.extend(map(_COPY_LINE.__mod__, group_rows))
    return rows


def _group_rows(
    run_id: int,
    names: tuple[str, ...],
    width: int,
    group: list[Any],
    seq_map: Sequence[int] | None,
    encoder: StageEncoder,
) -> Any:
    columns = list(zip(*[record.stamps for record in group], strict=True))
    created = columns[0]
    values: list[Any] = []
    for b in range(1, width - 2, 3):
        enqueued, started, ended = columns[b], columns[b + 1], columns[b + 2]
        sent = map(sub, columns[b + 3], ended) if b + 3 < width else repeat(0.0, len(group))
        for column in (
            map(sub, started, enqueued),
            map(sub, ended, started),
            sent,
            map(sub, started, created),
            map(sub, ended, created),
        ):
            values.append(map(mul, column, repeat(1e6)))
    stages = map(encoder.template(names).__mod__, zip(*values, strict=True))
    seqs = [record.seq for record in group]
    if seq_map is not None:
        seqs = [original_seq(seq, seq_map) for seq in seqs]
    subs = [".".join(map(str, r.sub_index)) if r.sub_index else "" for r in group]
    return zip(
        repeat(run_id),
        seqs,
        subs,
        repeat("ok"),
        [record.total_latency for record in group],
        [record.computation_time for record in group],
        [record.overhead_time for record in group],
        stages,
        repeat(""),
        repeat(""),
    )


def original_seq(seq: int, seq_map: Sequence[int] | None) -> int:
    """The input position in the source (differs from ``seq`` in a re-run of chosen items)."""
    return seq_map[seq] if seq_map is not None and seq < len(seq_map) else seq
