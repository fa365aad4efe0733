"""Introspection and summaries: counters, queues, progress, latency summary and report.

Summaries are computed from the stages' own timing statistics (:mod:`~.stage_timing`), the
consumer's end-to-end aggregates (:class:`~.timing.Aggregator`) and the stages' counters, by
:func:`~.analysis.build_summary`.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from .analysis import LatencySummary, PipelineAnalysis, build_summary, item_breakdown
from .channel import Channel
from .core import PipelineCore, T, U
from .errors import ErrorRecord, StageError
from .item import ItemRecord
from .output_buffer import OutputBuffer


class Reporting(PipelineCore[T, U]):
    """Read-only views of :class:`~.pipeline.AsyncTaskPipeline`."""

    @property
    def counter(self) -> int:
        return self._next_seq - self._failed_puts - self._counter_base

    @property
    def errors(self) -> list[ErrorRecord]:
        with self._lock:
            return list(self._errors)

    @property
    def fatal_error(self) -> StageError | None:
        return self._fatal

    @property
    def queues(self) -> list[Channel | OutputBuffer]:
        out: list[Channel | OutputBuffer] = list(self._channels)
        if self._out is not None:
            out.append(self._out)
        return out

    @property
    def input_queue(self) -> Channel | None:
        return self._channels[0] if self._channels else None

    @property
    def output_queue(self) -> OutputBuffer | None:
        return self._out

    @property
    def completed_items(self) -> list[ItemRecord]:
        return list(self._agg.records) if self._agg is not None else []

    def _duration(self) -> float:
        if self._t_first_in is None:
            return 0.0
        end = self._t_last_out
        if end is None or (self.running and self._in_flight()):
            end = time.perf_counter()
        return max(0.0, end - self._t_first_in)

    def progress(self) -> dict[str, Any]:
        stages: dict[str, dict[str, Any]] = {}
        filtered = errors = 0
        for s in self.stages:
            c = s.counters()
            filtered += int(c["filtered"])
            errors += int(c["errors"])
            stages[s.name] = {
                "queue_depth": s.queue_depth(),
                "processed": int(c["items_in"]),
                "out": int(c["items_out"]),
                "filtered": int(c["filtered"]),
                "errors": int(c["errors"]),
                "busy_time": c["busy_time"],
            }
        return {
            "items_in": self._next_seq - self._failed_puts,
            "items_out": self._delivered,
            "filtered": filtered,
            "errors": errors,
            "in_flight": self._in_flight(),
            "elapsed": time.perf_counter() - self._t_start,
            "stages": stages,
        }

    def _summary(self) -> LatencySummary:
        return build_summary(
            self.stages,
            self._agg,
            duration=self._duration(),
            items_in=self._next_seq - self._failed_puts,
            items_out=self._delivered,
            in_flight=self._in_flight(),
            discarded=self._discarded,
        )

    def latency_histogram(self, bins: int = 30) -> list[tuple[float, float, int]]:
        """End-to-end latency as ``bins`` equal-width ``(low_s, high_s, items)`` bins (timing on),
        from the streaming histogram: every item counts, none is kept."""
        return self._agg.total.bins(bins) if self._agg is not None else []

    def get_latency_summary(self) -> dict[str, Any]:
        """The seed document's summary dict, plus percentiles, counts and throughput."""
        return asdict(self._summary())

    def get_report(self, include_item_details: bool = True) -> PipelineAnalysis | None:
        """Typed report; ``None`` when timing is off or no item has come out yet (as the seed)."""
        agg = self._agg
        if agg is None or agg.delivered == 0:
            return None
        items = None
        if include_item_details:
            items = [item_breakdown(r) for r in agg.records]
        return PipelineAnalysis(
            summary=self._summary(),
            item_breakdowns=items,
            analysis_metadata={
                "timing_enabled": self.enable_timing,
                "error_policy": self.error_policy,
                "max_queue_size": self.max_queue_size,
                "item_records_kept": len(agg.records),
            },
            errors=self.errors,
        )
