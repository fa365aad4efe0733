"""The seed's public item classes (``async-task-pipeline`` 0.1.10): :class:`PipelineItem` and
:class:`DetailedTiming`, kept for code written against the seed. The engine does not use them
internally (its envelopes and records are in ``item.py``); a standalone :class:`~.stage.
PipelineStage` processes them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .item import timing_breakdown

DataT = TypeVar("DataT")


@dataclass
class DetailedTiming:
    """Timing of one item in one stage (seed API). Properties clamp at 0."""

    queue_enter_time: float
    processing_start_time: float
    processing_end_time: float
    queue_exit_time: float

    @property
    def queue_wait_time(self) -> float:
        return max(0.0, self.processing_start_time - self.queue_enter_time)

    @property
    def computation_time(self) -> float:
        return max(0.0, self.processing_end_time - self.processing_start_time)

    @property
    def transmission_time(self) -> float:
        return max(0.0, self.queue_exit_time - self.processing_end_time)


@dataclass
class PipelineItem(Generic[DataT]):
    """Data container with per-stage timing (seed API). Copies never share timing dicts."""

    data: DataT
    enable_timing: bool = True
    start_timestamp: float = field(default_factory=time.perf_counter)
    _entry: dict[str, float] = field(default_factory=dict, repr=False)
    _completion: dict[str, float] = field(default_factory=dict, repr=False)
    _detailed: dict[str, DetailedTiming] = field(default_factory=dict, repr=False)

    def copy(self, data: Any = None) -> PipelineItem[Any]:
        return PipelineItem(
            data=self.data if data is None else data,
            enable_timing=self.enable_timing,
            start_timestamp=self.start_timestamp,
            _entry=dict(self._entry),
            _completion=dict(self._completion),
            _detailed=dict(self._detailed),
        )

    def record_entry_time(self, stage: str) -> None:
        if self.enable_timing:
            self._entry[stage] = time.perf_counter()

    def record_completion_time(self, stage: str) -> None:
        if self.enable_timing:
            self._completion[stage] = time.perf_counter()

    def record_detailed_timing(self, stage: str, timing: DetailedTiming) -> None:
        if self.enable_timing:
            self._detailed[stage] = timing

    def get_entry_time(self, stage: str) -> float | None:
        return self._entry.get(stage) if self.enable_timing else None

    def get_completion_time(self, stage: str) -> float | None:
        return self._completion.get(stage) if self.enable_timing else None

    def get_detailed_timing(self, stage: str) -> DetailedTiming | None:
        return self._detailed.get(stage) if self.enable_timing else None

    def get_total_latency(self) -> float | None:
        if not self.enable_timing or not self._completion:
            return None
        return max(self._completion.values()) - self.start_timestamp

    def get_stage_latencies(self) -> dict[str, float] | None:
        """Per stage, in completion order: its completion minus the previous stage's completion
        (``start_timestamp`` for the first); None when no stage completed (as the seed)."""
        if not self.enable_timing or not self._completion:
            return None
        latencies: dict[str, float] = {}
        previous = self.start_timestamp
        for stage, completed in sorted(self._completion.items(), key=lambda item: item[1]):
            latencies[stage] = completed - previous
            previous = completed
        return latencies

    def get_timing_breakdown(self) -> dict[str, Any] | None:
        if not self.enable_timing:
            return None
        stages = (
            (stage, d.queue_wait_time, d.computation_time, d.transmission_time)
            for stage, d in self._detailed.items()
        )
        return timing_breakdown(stages, self.get_total_latency() or 0.0)
