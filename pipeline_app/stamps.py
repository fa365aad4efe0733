"""The compact form of an item's per-stage timings, as stored in ``ItemTiming.stamps``.

A row keeps the engine's raw clock readings for the item rather than derived numbers:
big-endian float64 values ``[created, enqueue_0, start_0, end_0, enqueue_1, start_1, end_1, ...]``
(plus the enqueue after the last stage the item left, when there is one). Packing them is one
C-level ``struct`` call per row, which is what lets every item of a run be persisted without
slowing the run much, and a database stores them without parsing anything. Readers derive the
per-stage ``[queue_wait, computation, transmission, start, end]`` (seconds, ``start``/``end``
relative to ``created``) with :func:`stage_seconds`; stage ``i`` of a row is stage ``i`` of its
run (:func:`pipeline_app.queries.stage_names`).

Only differences between readings of one item are meaningful: the values are
``time.perf_counter()`` readings of the process that ran the item (or ``created = 0`` for rows
built from derived values, see :func:`from_stage_values`).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from functools import lru_cache

PART_NAMES = ("queue_wait", "computation", "transmission", "start", "end")


@lru_cache(maxsize=64)
def packer(count: int) -> struct.Struct:
    """The ``struct`` that packs ``count`` stamps."""
    return struct.Struct(f">{count}d")


def pack(values: Sequence[float]) -> bytes:
    return packer(len(values)).pack(*values)


def unpack(blob: bytes | memoryview | None) -> tuple[float, ...]:
    if not blob:
        return ()
    return packer(len(blob) // 8).unpack(blob)


def stage_seconds(blob: bytes | memoryview | None, names: Sequence[str]) -> dict[str, list[float]]:
    """``{stage name: [queue_wait, computation, transmission, start, end]}`` in seconds, for the
    stages the item reached (in stage order)."""
    values = unpack(blob)
    count = len(values)
    if count < 4:
        return {}
    created = values[0]
    out: dict[str, list[float]] = {}
    for name, base in zip(names, range(1, count - 2, 3), strict=False):
        enqueued, started, ended = values[base], values[base + 1], values[base + 2]
        sent = values[base + 3] - ended if base + 3 < count else 0.0
        out[name] = [started - enqueued, ended - started, sent, started - created, ended - created]
    return out


def from_stage_values(values: Iterable[Sequence[float]]) -> list[float]:
    """Stamps (``created = 0``) that give back these per-stage
    ``(queue_wait, computation, transmission, start, end)`` values."""
    stamps = [0.0]
    last: Sequence[float] = ()
    for last in values:
        queue_wait, _, _, start, end = last
        stamps += [start - queue_wait, start, end]
    if last and last[2]:  # sent on after the last stage
        stamps.append(last[4] + last[2])
    return stamps
