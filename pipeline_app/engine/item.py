"""Items: the engine's internal envelope, the public per-item record and the seed's PipelineItem.

The envelope (:class:`Envelope`) is what travels through the channels. It is a slotted object that
is mutated in place by map stages (no allocation per stage), and it carries timing stamps only when
timing is on (``t is None`` otherwise, so timing off costs no dict or list per item).

With timing on every envelope carries its creation stamp ``c``; enqueue stamps are kept by the
channels, one per queued item next to the queue, and handed to the stage with the batch it takes
(see ``channel.py``), and stage statistics are built in the stage threads from those (see
``stage_timing.py``). Only items whose per-item record is wanted (see ``feeding.py``) also carry
``t``, a flat list of ``time.perf_counter()`` values::

    [created_at, enq_0, start_0, end_0, enq_1, start_1, end_1, ..., enq_out]

appended by each stage and, for ``enq_out`` (the output buffer's stamp, written to ``q`` of the
envelopes that carry ``t``), by the consumer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import repeat
from typing import Any

# Envelope kinds.
VALUE = 0  # a data item to process
SENTINEL = 1  # user pass-through marker, forwarded untouched
HOLE = 2  # filtered/dropped item (only travels when timing is on, for its record)
ERROR = 3  # exception returned in the item's place (error_policy="return")
EOS = 4  # end of an input stream (close_input()); ends one output iteration
FAIL = 5  # fail-fast marker (error_policy="raise"): travels in order, the consumer raises on it


class Envelope:
    """Internal unit of transport."""

    __slots__ = ("c", "data", "info", "kind", "q", "seq", "sub", "t")

    # Timing on only (not set otherwise): ``c`` the creation stamp; ``q`` the output buffer's
    # enqueue stamp, set only on envelopes that carry per-item stamps ``t``.
    c: float
    q: float

    def __init__(
        self,
        kind: int,
        data: Any,
        seq: int = -1,
        t: list[float] | None = None,
        sub: tuple[int, ...] = (),
    ) -> None:
        self.kind = kind
        self.data = data
        self.seq = seq
        self.t = t
        self.sub = sub
        # For HOLE/ERROR with timing: (stage_index, frozen stamps, status, message, stage name)
        self.info: tuple[int, list[float], str, str | None, str] | None = None


_VALUE_KEYS = ("queue_wait", "computation", "transmission", "start", "end")

StageValues = tuple[float, float, float, float, float]
"""``(queue_wait, computation, transmission, start, end)`` of one stage (see ItemRecord)."""


class ItemRecord:
    """Per-item timing record (timing on), handed to ``on_item_timing`` and kept for the report.

    ``stages[name]`` holds ``queue_wait``, ``computation``, ``transmission`` (seconds) and ``start``
    / ``end`` (processing start/end relative to ``created_at``). ``finished_at`` is a
    ``perf_counter`` value: delivery to the consumer (when it took the output batch holding the
    item) for ``ok`` items and returned errors, the end of the failing/filtering stage otherwise.

    The engine builds records cheaply: it keeps the item's raw stamps and computes the per-stage
    values only when asked. :meth:`stage_values` returns them as tuples in stage order (no dict);
    :attr:`stages` builds (once) the ``{name: {...}}`` dict. Treat a record as read-only.
    """

    __slots__ = (
        "_stages",
        "_stamps",
        "computation_time",
        "created_at",
        "error",
        "error_stage",
        "finished_at",
        "overhead_time",
        "seq",
        "stage_names",
        "status",
        "sub_index",
        "total_latency",
    )

    def __init__(
        self,
        seq: int,
        sub_index: tuple[int, ...],
        status: str,
        created_at: float,
        finished_at: float,
        total_latency: float,
        computation_time: float,
        overhead_time: float,
        stages: dict[str, dict[str, float]] | None = None,
        error: str | None = None,
        error_stage: str | None = None,
        stamps: list[float] | None = None,
        stage_names: tuple[str, ...] = (),
    ) -> None:
        self.seq = seq
        self.sub_index = sub_index
        self.status = status
        self.created_at = created_at
        self.finished_at = finished_at
        self.total_latency = total_latency
        self.computation_time = computation_time
        self.overhead_time = overhead_time
        self.error = error
        self.error_stage = error_stage
        self._stages = stages
        self._stamps = stamps
        #: names of the stages the item went through, in stage order (as in stage_values())
        self.stage_names = stage_names if stages is None else tuple(stages)

    @property
    def stamps(self) -> list[float] | None:
        """The raw ``perf_counter`` stamps, or None for a record built from ``stages``:
        ``[created, enqueue_0, start_0, end_0, enqueue_1, ...]`` (plus the next enqueue after
        the last stage when there is one), for persisters that compute in columns."""
        return self._stamps

    def stage_values(self) -> list[StageValues]:
        """Per-stage ``(queue_wait, computation, transmission, start, end)``, in stage order.

        Same values as :attr:`stages` (``start``/``end`` relative to ``created_at``) without
        building dicts; ``zip(record.stage_names, record.stage_values())`` pairs them with names.
        """
        t = self._stamps
        if t is None:
            st = self._stages or {}
            return [tuple(d.get(k, 0.0) for k in _VALUE_KEYS) for d in st.values()]  # type: ignore[misc]
        created = t[0]
        nt = len(t)
        out: list[StageValues] = []
        for b in range(1, nt - 2, 3):  # b = index of the stage's enqueue stamp
            enq = t[b]
            start = t[b + 1]
            end = t[b + 2]
            out.append(
                (
                    start - enq,
                    end - start,
                    t[b + 3] - end if b + 3 < nt else 0.0,
                    start - created,
                    end - created,
                )
            )
        return out

    @property
    def stages(self) -> dict[str, dict[str, float]]:
        st = self._stages
        if st is None:
            keys = _VALUE_KEYS
            st = {
                name: dict(zip(keys, v, strict=True))
                for name, v in zip(self.stage_names, self.stage_values(), strict=False)
            }
            self._stages = st
        return st

    # The seed's PipelineItem methods, from the stamps. As in the seed, a stage's completion is
    # the end of its processing, and latencies end at the last stage's completion (the record's
    # own ``total_latency`` ends at delivery instead). A filtered or failed item's record
    # includes the stage that dropped it.

    def _completions(self) -> list[tuple[str, float]]:
        """``(stage, completion relative to created_at)`` for each stage, in completion order."""
        values = self.stage_values()
        ends = [(name, v[4]) for name, v in zip(self.stage_names, values, strict=False)]
        return sorted(ends, key=lambda name_end: name_end[1])

    def get_total_latency(self) -> float | None:
        """Creation to the last stage's completion; None when no stage processed the item."""
        completions = self._completions()
        return completions[-1][1] if completions else None

    def get_stage_latencies(self) -> dict[str, float] | None:
        """Per stage: its completion minus the previous one (creation for the first)."""
        completions = self._completions()
        if not completions:
            return None
        latencies: dict[str, float] = {}
        previous = 0.0
        for name, completed in completions:
            latencies[name] = completed - previous
            previous = completed
        return latencies

    def get_timing_breakdown(self) -> dict[str, dict[str, float]] | None:
        """Per stage ``queue_wait_time``, ``computation_time``, ``transmission_time``,
        ``total_stage_time``, plus ``totals``: the seed's ``PipelineItem.get_timing_breakdown``."""
        values = self.stage_values()
        if not values:
            return None
        stages = (
            (name, queue_wait, comp, transmission)
            for name, (queue_wait, comp, transmission, _start, _end) in zip(
                self.stage_names, values, strict=False
            )
        )
        return timing_breakdown(stages, self.get_total_latency() or 0.0)

    def _key(self) -> tuple[object, ...]:
        return (
            self.seq,
            self.sub_index,
            self.status,
            self.created_at,
            self.finished_at,
            self.total_latency,
            self.computation_time,
            self.overhead_time,
            self.stages,
            self.error,
            self.error_stage,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ItemRecord):
            return NotImplemented
        return self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"ItemRecord(seq={self.seq!r}, sub_index={self.sub_index!r}, status={self.status!r}, "
            f"created_at={self.created_at!r}, finished_at={self.finished_at!r}, "
            f"total_latency={self.total_latency!r}, computation_time={self.computation_time!r}, "
            f"overhead_time={self.overhead_time!r}, stages={self.stages!r}, "
            f"error={self.error!r}, error_stage={self.error_stage!r})"
        )


@dataclass(slots=True)
class StampBatch:
    """One output batch's per-item timings in raw form, for ``on_item_stamps``.

    The cheapest form for persisting every item: no record object per item. Delivered outputs
    are columns -- ``seqs``, ``sub_indexes``, ``stamps`` (each item's raw ``perf_counter``
    stamps ``[created, enqueue_0, start_0, end_0, ..., enqueue_out]``, as in
    :attr:`ItemRecord.stamps`) and ``delivered`` (when the consumer took the output batch holding
    it) -- and the rest (filtered and failed items, returned exceptions) are ordinary
    :class:`ItemRecord` objects in ``others``. The lists belong to the callback; :meth:`records`
    builds the records of all of them, in output order for each kind.
    """

    stage_names: tuple[str, ...]
    seqs: list[int]
    sub_indexes: list[tuple[int, ...]]
    stamps: list[list[float]]
    delivered: list[float]
    others: list[ItemRecord]

    def __len__(self) -> int:
        return len(self.seqs) + len(self.others)

    def records(self) -> list[ItemRecord]:
        """Every item of the batch as an :class:`ItemRecord` (delivered ones first)."""
        delivered = map(
            delivered_record,
            self.seqs,
            self.sub_indexes,
            self.stamps,
            self.delivered,
            repeat(self.stage_names, len(self.seqs)),
        )
        return [*delivered, *self.others]


def delivered_record(
    seq: int,
    sub_index: tuple[int, ...],
    stamps: list[float],
    delivered: float,
    stage_names: tuple[str, ...] = (),
) -> ItemRecord:
    """The record of a delivered output from its raw stamps (layout in the module docstring)."""
    computation = 0.0
    for b in range(2, len(stamps) - 2, 3):
        computation += stamps[b + 1] - stamps[b]
    total = delivered - stamps[0]
    overhead = total - computation
    return ItemRecord(
        seq,
        sub_index,
        "ok",
        stamps[0],
        delivered,
        total,
        computation,
        overhead if overhead > 0.0 else 0.0,
        stamps=stamps,
        stage_names=stage_names,
    )


def timing_breakdown(
    stages: Iterable[tuple[str, float, float, float]], total: float
) -> dict[str, dict[str, float]]:
    """The seed's per-item breakdown from ``(stage, queue wait, computation, transmission)``:
    per stage the three and their sum, plus ``totals`` against the item's ``total`` latency.
    One item's stages never overlap, so the seed's union of computation intervals is their sum."""
    breakdown: dict[str, dict[str, float]] = {}
    computation = 0.0
    for name, queue_wait, comp, transmission in stages:
        breakdown[name] = {
            "queue_wait_time": queue_wait,
            "computation_time": comp,
            "transmission_time": transmission,
            "total_stage_time": queue_wait + comp + transmission,
        }
        computation += comp
    breakdown["totals"] = {
        "total_computation_time": computation,
        "total_overhead_time": max(0.0, total - computation),
        "total_latency": total,
        "computation_ratio": computation / total if total > 0 else 0.0,
    }
    return breakdown
