"""``ItemTiming`` rows without model instances: encoded in columns, inserted in bulk.

The ORM's per-row cost (model instances, per-field preparation) was ten times the insert itself,
and every managed run writes one row per item, so rows are plain tuples here, or on PostgreSQL
ready-made tuples of a binary ``COPY``. The rows of successful items, nearly all of a run, are
packed in columns: one C-level ``struct`` call per row over the engine's raw stamps, which are
stored as they are (see :mod:`pipeline_app.stamps`), so no number is formatted as text and the
database parses nothing.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from functools import lru_cache
from itertools import chain, repeat
from typing import Any

from django.db import connection, transaction

from pipeline_app import stamps
from pipeline_app.models import ItemTiming, storable_text

ITEM_COLUMNS = (
    "run_id",
    "seq",
    "sub_index",
    "status",
    "latency",
    "computation",
    "overhead",
    "stamps",
    "error",
    "error_stage",
)
_SUB_INDEX_MAX = ItemTiming._meta.get_field("sub_index").max_length or 50
_ERROR_STAGE_MAX = ItemTiming._meta.get_field("error_stage").max_length or 100
ERROR_MAX = 5000

# PostgreSQL's binary COPY: a signature, a flags word and an empty header extension; each tuple is
# a field count then (length, bytes) per field; a field count of -1 ends the data.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)
_COPY_ROW_START = struct.Struct(">hiqiq")  # field count, run_id, seq
_COPY_FLOATS = struct.Struct(">ididid")  # latency, computation, overhead
_LENGTH = struct.Struct(">i")


def item_row(run_id: int, record: Any, seq: int) -> tuple[Any, ...]:
    """One ``ItemTiming`` row as a tuple for a bulk insert that skips model instances."""
    raw = record.stamps
    if raw is None:  # a record built from derived values
        raw = stamps.from_stage_values(record.stage_values())
    return (
        run_id,
        seq,
        ".".join(map(str, record.sub_index))[:_SUB_INDEX_MAX],
        record.status,
        record.total_latency,
        record.computation_time,
        record.overhead_time,
        stamps.pack(raw),
        storable_text(record.error or "", ERROR_MAX),
        (record.error_stage or "")[:_ERROR_STAGE_MAX],
    )


def copy_row(row: tuple[Any, ...]) -> bytes:
    """One row as a tuple of PostgreSQL's binary ``COPY`` format."""
    run_id, seq, sub_index, status, latency, computation, overhead, blob, error, stage = row
    parts = [_COPY_ROW_START.pack(len(ITEM_COLUMNS), 8, run_id, 8, seq)]
    for text in (sub_index, status):
        parts += _field(text.encode())
    parts.append(_COPY_FLOATS.pack(8, latency, 8, computation, 8, overhead))
    parts += _field(blob)
    for text in (error, stage):
        parts += _field(text.encode())
    return b"".join(parts)


def _field(data: bytes) -> tuple[bytes, bytes]:
    return _LENGTH.pack(len(data)), data


def encode_rows(
    run_id: int, records: Sequence[Any], seq_map: Sequence[int] | None, *, copy: bool = False
) -> list[Any]:
    """Rows for a batch of records (binary ``COPY`` tuples with ``copy``); successful items
    with the same number of stamps, not fanned out, are packed in columns."""
    rows: list[Any] = []
    groups: dict[int, list[Any]] = {}
    for record in records:
        raw = record.stamps
        if raw is None or record.status != "ok" or record.sub_index:
            row = item_row(run_id, record, original_seq(record.seq, seq_map))
            rows.append(copy_row(row) if copy else row)
        else:
            groups.setdefault(len(raw), []).append(record)
    for width, group in groups.items():
        seqs = [record.seq for record in group]
        if seq_map is not None:
            seqs = [original_seq(seq, seq_map) for seq in seqs]
        latency = [record.total_latency for record in group]
        computation = [record.computation_time for record in group]
        overhead = [record.overhead_time for record in group]
        columns = zip(*[record.stamps for record in group], strict=True)
        again = repeat
        if copy:
            rows += map(
                _copy_ok_row(width).pack,
                *(again(len(ITEM_COLUMNS)), again(8), again(run_id), again(8), seqs),
                *(again(0), again(2), again(b"ok")),
                *(again(8), latency, again(8), computation, again(8), overhead),
                *(again(8 * width), *columns),
                *(again(0), again(0)),
            )
        else:
            blobs = map(stamps.packer(width).pack, *columns)
            rows += zip(
                *(again(run_id), seqs, again(""), again("ok"), latency, computation, overhead),
                *(blobs, again(""), again("")),
                strict=False,  # the repeats are endless
            )
    return rows


@lru_cache(maxsize=16)
def _copy_ok_row(width: int) -> struct.Struct:
    """A whole ``COPY`` tuple of a successful, not fanned out item with ``width`` stamps."""
    return struct.Struct(f">hiqiqii2sidididi{width}dii")


def insert_item_rows(rows: Sequence[Any]) -> None:
    """Insert rows (binary COPY tuples on PostgreSQL, tuples elsewhere) in as few statements
    as the database allows, without the ORM.

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
            with raw.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.write(b"".join((_COPY_HEADER, *rows, _COPY_TRAILER)))
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


def _max_params() -> int:
    if connection.vendor == "sqlite":
        import sqlite3

        return int(connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
    return int(connection.features.max_query_params or 65_535)


def original_seq(seq: int, seq_map: Sequence[int] | None) -> int:
    """The input position in the source (differs from ``seq`` in a re-run of chosen items)."""
    return seq_map[seq] if seq_map is not None and seq < len(seq_map) else seq
