"""``ItemTiming`` rows without model instances: encoded in columns, inserted in bulk.

The ORM's per-row cost (model instances, per-field preparation) was ten times the insert itself,
and every managed run writes one row per item, so rows are plain tuples here, or on PostgreSQL
ready-made tuples of a binary ``COPY``. The rows of successful items, nearly all of a run, are
packed in columns: one C-level ``struct`` call per row over the engine's raw stamps, which are
stored as they are (see :mod:`pipeline_app.stamps`), so no number is formatted as text and the
database parses nothing. Elsewhere than PostgreSQL those rows stay in columns until the insert
(:class:`RowBlock`): SQLite then binds four numbers a row and cuts each row's stamps out of one
shared parameter.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain, repeat
from operator import add, sub
from typing import Any

from django.db import connection, transaction

from pipeline_app import stamps
from pipeline_app.engine import StampBatch
from pipeline_app.models import ItemTiming, PipelineRun, RunStatus, storable_text

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
# the constant pieces of a delivered item's tuple (see _copy_delivered_row)
_COPY_ROW_HEAD = struct.Struct(">hiqi")  # field count, run_id, the length of seq
_COPY_FLOAT = _LENGTH.pack(8)
_COPY_OK_THEN_FLOAT = struct.pack(">i2si", 2, b"ok", 8)  # status, the length of latency
_COPY_EMPTY_ERROR = struct.pack(">ii", 0, 0)  # error, error_stage


@dataclass(slots=True)
class RowBlock:
    """Rows of delivered items that were not fanned out, kept in columns: the common row of a
    run on databases without ``COPY``. ``seqs``, ``latency``, ``computation`` and ``overhead``
    are lists and ``stamps`` holds every row's packed stamps back to back (``width`` values a
    row). A few objects per batch rather than a tuple per row: the rows wait for the writer, and
    that many tuples outliving a garbage collection made the collector a tenth of a run's time.
    """

    width: int
    seqs: list[int]
    latency: list[float]
    computation: list[float]
    overhead: list[float]
    stamps: bytes

    def __len__(self) -> int:
        return len(self.seqs)

    @classmethod
    def join(cls, blocks: Sequence[RowBlock]) -> RowBlock:
        """One block of the rows of ``blocks`` (all of the same width)."""
        if len(blocks) == 1:
            return blocks[0]
        return cls(
            blocks[0].width,
            list(chain.from_iterable(block.seqs for block in blocks)),
            list(chain.from_iterable(block.latency for block in blocks)),
            list(chain.from_iterable(block.computation for block in blocks)),
            list(chain.from_iterable(block.overhead for block in blocks)),
            b"".join(block.stamps for block in blocks),
        )

    def rows(self) -> list[tuple[Any, ...]]:
        """The rows as short tuples ``(seq, latency, computation, overhead, stamps)``."""
        size = 8 * self.width
        blobs = [self.stamps[start : start + size] for start in range(0, len(self.stamps), size)]
        columns = (self.seqs, self.latency, self.computation, self.overhead)
        return list(zip(*columns, blobs, strict=True))

    def parameters(self, first: int, last: int) -> list[Any]:
        """The parameters of :func:`_block_insert_sql` for rows ``first`` to ``last``
        (excluded): this part of the stamps, then ``seq, latency, computation, overhead`` and
        the offset of its stamps for each row, put in place column by column."""
        count = last - first
        size = 8 * self.width
        values: list[Any] = [None] * (5 * count + 1)
        values[0] = self.stamps[first * size : last * size]
        values[1::5] = self.seqs[first:last]
        values[2::5] = self.latency[first:last]
        values[3::5] = self.computation[first:last]
        values[4::5] = self.overhead[first:last]
        values[5::5] = range(1, count * size, size)
        return values


def item_row(run_id: int, record: Any, seq: int) -> tuple[Any, ...]:
    """One ``ItemTiming`` row as a tuple for a bulk insert that skips model instances."""
    raw = record.stamps
    if raw is None:  # a record built from derived values
        raw = stamps.from_stage_values(record.stage_values())
    return (
        run_id,
        seq,
        _sub_index_text(record.sub_index),
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
    """Rows for a batch of :class:`~pipeline_app.engine.ItemRecord` (binary ``COPY`` tuples
    with ``copy``); delivered items are encoded in columns from their stamps."""
    rows: list[Any] = []
    delivered: list[Any] = []
    for record in records:
        if record.stamps is None or record.status != "ok":
            row = item_row(run_id, record, original_seq(record.seq, seq_map))
            rows.append(copy_row(row) if copy else row)
        else:
            delivered.append(record)
    if delivered:
        rows += delivered_rows(
            run_id,
            [record.seq for record in delivered],
            [record.sub_index for record in delivered],
            [record.stamps for record in delivered],
            [record.finished_at for record in delivered],
            seq_map,
            copy=copy,
        )
    return rows


def encode_batch(
    run_id: int, batch: StampBatch, seq_map: Sequence[int] | None, *, copy: bool = False
) -> list[Any]:
    """Rows for one :class:`~pipeline_app.engine.StampBatch` (see :func:`encode_rows`)."""
    rows = encode_rows(run_id, batch.others, seq_map, copy=copy)
    if batch.seqs:
        rows += delivered_rows(
            run_id,
            batch.seqs,
            batch.sub_indexes,
            batch.stamps,
            batch.delivered,
            seq_map,
            copy=copy,
        )
    return rows


def delivered_rows(
    run_id: int,
    seqs: list[int],
    sub_indexes: list[tuple[int, ...]],
    stamps_list: list[list[float]],
    delivered: list[float],
    seq_map: Sequence[int] | None,
    *,
    copy: bool,
) -> list[Any]:
    """Rows of delivered items, packed in columns per layout (number of stamps, and the length
    of the fan-out path on PostgreSQL): the values equal those of the engine's records."""
    if seq_map is not None:
        seqs = [original_seq(seq, seq_map) for seq in seqs]
    paths = [_sub_index_text(s) for s in sub_indexes] if any(sub_indexes) else None
    widths = set(map(len, stamps_list))
    if len(widths) == 1 and (paths is None or not copy):
        return list(_columns(run_id, widths.pop(), seqs, paths, stamps_list, delivered, copy))
    groups: dict[tuple[int, int], list[int]] = {}
    for i, stamps_of_item in enumerate(stamps_list):
        layout = (len(stamps_of_item), len(paths[i].encode()) if paths and copy else 0)
        groups.setdefault(layout, []).append(i)
    rows: list[Any] = []
    for (width, _), members in groups.items():
        rows += _columns(
            run_id,
            width,
            [seqs[i] for i in members],
            [paths[i] for i in members] if paths else None,
            [stamps_list[i] for i in members],
            [delivered[i] for i in members],
            copy,
        )
    return rows


def _sub_index_text(sub_index: tuple[int, ...]) -> str:
    return ".".join(map(str, sub_index))[:_SUB_INDEX_MAX]


def _columns(
    run_id: int,
    width: int,
    seqs: list[int],
    paths: list[str] | None,
    stamps_list: list[list[float]],
    delivered: list[float],
    copy: bool,
) -> Iterable[Any]:
    """One layout's rows. ``stamps`` are ``[created, (enqueue, start, end) per stage, enqueue
    into the output]``; the arithmetic is the engine's, in the same order (equal floats)."""
    columns = list(zip(*stamps_list, strict=True))
    latency = list(map(sub, delivered, columns[0]))
    computation: list[float] = [0.0] * len(seqs)
    for end in range(3, width - 1, 3):
        spent = map(sub, columns[end], columns[end - 1])
        computation = list(spent) if end == 3 else list(map(add, computation, spent))
    overhead = [value if value > 0.0 else 0.0 for value in map(sub, latency, computation)]
    again = repeat
    if copy:
        encoded = [path.encode() for path in paths] if paths else []
        path_length = len(encoded[0]) if encoded else 0
        # The constant parts of the tuple (field count, lengths, run, status, empty error)
        # go in as a few pre-packed byte strings: half the arguments per row.
        return map(
            _copy_delivered_row(width, path_length).pack,
            again(_COPY_ROW_HEAD.pack(len(ITEM_COLUMNS), 8, run_id, 8)),
            seqs,
            again(_LENGTH.pack(path_length)),
            encoded or again(b""),
            again(_COPY_OK_THEN_FLOAT),
            latency,
            again(_COPY_FLOAT),
            computation,
            again(_COPY_FLOAT),
            overhead,
            again(_LENGTH.pack(8 * width)),
            *columns,
            again(_COPY_EMPTY_ERROR),
        )
    blobs = map(stamps.packer(width).pack, *columns)
    if paths is None:  # the common row: run, path, status and error go into the SQL instead
        return [RowBlock(width, seqs, latency, computation, overhead, b"".join(blobs))]
    return zip(
        *(again(run_id), seqs, paths, again("ok")),
        *(latency, computation, overhead, blobs, again(""), again("")),
        strict=False,  # the repeats are endless
    )


@lru_cache(maxsize=64)
def _copy_delivered_row(width: int, path_length: int) -> struct.Struct:
    """A whole ``COPY`` tuple of a delivered item: ``width`` stamps, a fan-out path of
    ``path_length`` bytes."""
    return struct.Struct(
        f">{_COPY_ROW_HEAD.size}sq4s{path_length}s{len(_COPY_OK_THEN_FLOAT)}s"
        f"d4sd4sd4s{width}d{len(_COPY_EMPTY_ERROR)}s"
    )


def insert_item_rows(run_id: int, rows: Sequence[Any], *, attempt: int | None = None) -> bool:
    """Insert a run's rows (binary COPY tuples on PostgreSQL; elsewhere tuples and
    :class:`RowBlock` objects) in as few statements as the database allows, without the ORM.

    With ``attempt``, the rows go in only while the run still belongs to that attempt, checked
    in the same transaction with the run row locked until the commit (a newer attempt deletes
    the earlier one's rows when it starts, so none may land after that); returns False, having
    written nothing, when a newer attempt owns the run.

    One statement per few thousand rows also matters for the GIL: a per-row ``executemany``
    releases and re-acquires it for every row and then waits behind the pipeline's threads.
    """
    quote = connection.ops.quote_name
    table = quote(ItemTiming._meta.db_table)
    columns = ", ".join(quote(column) for column in ITEM_COLUMNS)
    # The driver's own cursors below raise the driver's exceptions: wrapped as Django's, a
    # caller can tell a lost connection (OperationalError) from refused rows.
    with transaction.atomic(), connection.cursor() as cursor, connection.wrap_database_errors:
        if attempt is not None and not _owned_by(run_id, attempt):
            return False
        if connection.vendor == "postgresql":
            raw = cursor.cursor
            # Timings are telemetry: a crash may lose the last fraction of a second of them,
            # never corrupt anything, and the batch then skips the wait for the WAL flush.
            raw.execute("SET LOCAL synchronous_commit TO OFF")
            with raw.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.write(b"".join((_COPY_HEADER, *rows, _COPY_TRAILER)))
            return True
        blocks = [row for row in rows if type(row) is RowBlock]
        tuples = [row for row in rows if type(row) is not RowBlock]
        if connection.vendor == "sqlite":
            # sqlite3's own cursor: Django's would rewrite "%s" markers in the whole statement
            # with a regular expression, holding the GIL meanwhile.
            execute, marker = connection.connection.execute, "?"
            for width, same in _by_width(blocks).items():
                block = RowBlock.join(same)
                for first, last in _statements(len(block), (_max_params() - 1) // 5):
                    sql = _block_insert_sql(table, columns, run_id, width, last - first)
                    execute(sql, block.parameters(first, last))
        else:
            execute, marker = cursor.execute, "%s"
            tuples += chain.from_iterable(block.rows() for block in blocks)
        short = f"({int(run_id)}, {marker}, '', 'ok', {', '.join([marker] * 4)}, '', '')"
        full = "(" + ", ".join([marker] * len(ITEM_COLUMNS)) + ")"
        for row_sql, width in ((short, 5), (full, len(ITEM_COLUMNS))):
            same_width = [row for row in tuples if len(row) == width]
            for start, end in _statements(len(same_width), _max_params() // width):
                chunk = same_width[start:end]
                values = ", ".join([row_sql] * len(chunk))
                execute(
                    f"INSERT INTO {table} ({columns}) VALUES {values}",
                    list(chain.from_iterable(chunk)),
                )
    return True


def _owned_by(run_id: int, attempt: int) -> bool:
    """Whether ``attempt`` still owns the run (and it still runs: the sweeper may have requeued
    it or marked it lost), holding its row until the transaction ends (on PostgreSQL: a claim
    by another worker waits; SQLite's writers take turns anyway)."""
    owner = PipelineRun.objects.select_for_update(no_key=True).filter(
        pk=run_id, attempt=attempt, status=RunStatus.RUNNING
    )
    return bool(owner.values_list("pk", flat=True))


def _statements(count: int, most: int) -> Iterator[tuple[int, int]]:
    """``(first, last)`` row ranges of one statement each, for ``count`` rows and at most
    ``most`` rows a statement: only power-of-two sizes, so the few statements that exist stay in
    the connection's statement cache and are compiled once (the recorder keeps its connection
    for the whole run; one compiled statement per batch size would pile up there)."""
    largest = 1 << (max(most, 1).bit_length() - 1)
    first = 0
    while first < count:
        size = min(largest, 1 << ((count - first).bit_length() - 1))
        yield first, first + size
        first += size


def _by_width(blocks: list[RowBlock]) -> dict[int, list[RowBlock]]:
    groups: dict[int, list[RowBlock]] = {}
    for block in blocks:
        groups.setdefault(block.width, []).append(block)
    return groups


def _block_insert_sql(table: str, columns: str, run_id: int, width: int, count: int) -> str:
    """SQLite's statement for ``count`` rows of a :class:`RowBlock`: the first parameter holds
    their stamps back to back, and each row takes its part of them by offset."""
    values = ", ".join(["(?, ?, ?, ?, ?)"] * count)
    return (
        f"INSERT INTO {table} ({columns}) SELECT {int(run_id)}, column1, '', 'ok', column2, "
        f"column3, column4, substr(?, column5, {8 * width}), '', '' FROM (VALUES {values})"
    )


def _max_params() -> int:
    if connection.vendor == "sqlite":
        import sqlite3

        return int(connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
    return int(connection.features.max_query_params or 65_535)


def original_seq(seq: int, seq_map: Sequence[int] | None) -> int:
    """The input position in the source (differs from ``seq`` in a re-run of chosen items)."""
    return seq_map[seq] if seq_map is not None and seq < len(seq_map) else seq
