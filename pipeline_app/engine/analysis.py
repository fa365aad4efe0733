"""Typed report (dataclasses), its construction from streaming aggregates, and the log helper."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from .errors import ErrorRecord
from .item import ItemRecord
from .timing import Aggregator, Histogram

if TYPE_CHECKING:
    from .stage import PipelineStage

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DistributionStats:
    avg: float = 0.0
    min: float = 0.0
    max: float = 0.0
    p50: float = 0.0
    p95: float = 0.0
    p99: float = 0.0


def _dist(h: Histogram | None) -> DistributionStats:
    return DistributionStats(**h.stats()) if h is not None else DistributionStats()


@dataclass(frozen=True, slots=True)
class TimingBreakdown:
    avg_computation_time: float = 0.0
    avg_queue_wait_time: float = 0.0
    avg_transmission_time: float = 0.0
    computation_ratio: float = 0.0


@dataclass(frozen=True, slots=True)
class StageStatistics:
    # seed keys
    avg_latency: float
    min_latency: float
    max_latency: float
    processed_count: int
    avg_processing_time: float
    timing_breakdown: TimingBreakdown
    # beyond the seed
    items_in: int = 0
    items_out: int = 0
    filtered_count: int = 0
    error_count: int = 0
    p50_latency: float = 0.0
    p95_latency: float = 0.0
    p99_latency: float = 0.0
    computation: DistributionStats = field(default_factory=DistributionStats)
    queue_wait: DistributionStats = field(default_factory=DistributionStats)
    transmission: DistributionStats = field(default_factory=DistributionStats)
    busy_time: float = 0.0
    busy_ratio: float = 0.0
    workers: int = 1
    executor: str = "thread"


@dataclass(frozen=True, slots=True)
class EfficiencyMetrics:
    computation_efficiency: float = 0.0
    overhead_ratio: float = 0.0


@dataclass(frozen=True, slots=True)
class LatencySummary:
    total_items: int
    avg_total_latency: float
    min_total_latency: float
    max_total_latency: float
    stage_statistics: dict[str, StageStatistics]
    overall_efficiency: EfficiencyMetrics
    p50_total_latency: float = 0.0
    p95_total_latency: float = 0.0
    p99_total_latency: float = 0.0
    throughput: float = 0.0
    duration: float = 0.0
    error_count: int = 0
    filtered_count: int = 0
    items_in: int = 0
    items_out: int = 0
    in_flight: int = 0
    discarded_count: int = 0
    stage_order: list[str] = field(default_factory=list)
    bottleneck_stage: str | None = None
    timing_enabled: bool = False


class _FieldsAsMapping(Mapping[str, float]):
    """Read-only dict-style access to a dataclass's float fields (``totals["total_latency"]``),
    for callers written when these were plain dicts."""

    __slots__ = ()
    __dataclass_fields__: ClassVar[dict[str, Any]]

    def __getitem__(self, key: str) -> float:
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        value: float = getattr(self, key)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self.__dataclass_fields__)

    def __len__(self) -> int:
        return len(self.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class ItemTimingTotals(_FieldsAsMapping):
    total_computation_time: float
    total_overhead_time: float
    total_latency: float
    computation_ratio: float


@dataclass(frozen=True, slots=True)
class StageTimingDetail(_FieldsAsMapping):
    queue_wait_time: float
    computation_time: float
    transmission_time: float
    total_stage_time: float


@dataclass(frozen=True, slots=True)
class ItemTimingBreakdown:
    """Seed shape: ``totals`` and per-stage ``stages`` (attribute or ``["key"]`` access)."""

    seq: int
    sub_index: tuple[int, ...]
    status: str
    totals: ItemTimingTotals
    stages: dict[str, StageTimingDetail]
    error: str | None = None
    error_stage: str | None = None


@dataclass(frozen=True, slots=True)
class PipelineAnalysis:
    summary: LatencySummary
    item_breakdowns: list[ItemTimingBreakdown] | None = None
    analysis_metadata: dict[str, Any] | None = None
    errors: list[ErrorRecord] = field(default_factory=list)


def build_summary(
    stages: list[PipelineStage],
    agg: Aggregator | None,
    *,
    duration: float,
    items_in: int,
    items_out: int,
    in_flight: int,
    discarded: int,
) -> LatencySummary:
    stats: dict[str, StageStatistics] = {}
    filtered_total = errors_total = 0
    best: tuple[float, str] | None = None
    # computation efficiency: an item's average computation (summed over the stages, each
    # averaged over what that stage processed) over the average end-to-end latency
    comp_per_item = 0.0
    for stage in stages:
        c = stage.counters()
        tstats = stage.timing_stats if agg is not None else None
        st = tstats.timing if tstats is not None else None
        if tstats is not None and st is not None:
            with tstats.lock:  # the stage's threads keep adding to it
                tstats.fold()
                comp = _dist(st.computation)
                qw = _dist(st.queue_wait)
                tr = _dist(st.transmission)
                lat = _dist(st.latency)
                comp_count = st.computation.count
        else:
            comp = qw = tr = lat = DistributionStats()
            comp_count = 0
        comp_per_item += comp.avg
        processed = int(c["items_in"])
        busy = float(c["busy_time"])
        busy_ratio = busy / (duration * stage.workers) if duration > 0 else 0.0
        avg_proc = comp.avg if comp_count else (busy / processed if processed else 0.0)
        filtered_total += int(c["filtered"])
        errors_total += int(c["errors"])
        key = busy_ratio if duration > 0 else avg_proc
        if processed and (best is None or key > best[0]):
            best = (key, stage.name)
        stats[stage.name] = StageStatistics(
            avg_latency=lat.avg,
            min_latency=lat.min,
            max_latency=lat.max,
            processed_count=processed,
            avg_processing_time=avg_proc,
            timing_breakdown=TimingBreakdown(
                avg_computation_time=comp.avg,
                avg_queue_wait_time=qw.avg,
                avg_transmission_time=tr.avg,
                computation_ratio=comp.avg / lat.avg if lat.avg > 0 else 0.0,
            ),
            items_in=processed,
            items_out=int(c["items_out"]),
            filtered_count=int(c["filtered"]),
            error_count=int(c["errors"]),
            p50_latency=lat.p50,
            p95_latency=lat.p95,
            p99_latency=lat.p99,
            computation=comp,
            queue_wait=qw,
            transmission=tr,
            busy_time=busy,
            busy_ratio=min(1.0, busy_ratio),
            workers=stage.workers,
            executor=stage.executor,
        )
    total = _dist(agg.total if agg is not None else None)
    eff = EfficiencyMetrics()
    if agg is not None and total.avg > 0:
        ce = min(1.0, comp_per_item / total.avg)
        eff = EfficiencyMetrics(computation_efficiency=ce, overhead_ratio=1.0 - ce)
    return LatencySummary(
        total_items=agg.delivered if agg is not None else items_out,
        avg_total_latency=total.avg,
        min_total_latency=total.min,
        max_total_latency=total.max,
        stage_statistics=stats,
        overall_efficiency=eff,
        p50_total_latency=total.p50,
        p95_total_latency=total.p95,
        p99_total_latency=total.p99,
        throughput=items_out / duration if duration > 0 else 0.0,
        duration=duration,
        error_count=errors_total,
        filtered_count=filtered_total,
        items_in=items_in,
        items_out=items_out,
        in_flight=in_flight,
        discarded_count=discarded,
        stage_order=[s.name for s in stages],
        bottleneck_stage=best[1] if best else None,
        timing_enabled=agg is not None,
    )


def item_breakdown(rec: ItemRecord) -> ItemTimingBreakdown:
    stages = {
        name: StageTimingDetail(
            queue_wait_time=d["queue_wait"],
            computation_time=d["computation"],
            transmission_time=d["transmission"],
            total_stage_time=d["queue_wait"] + d["computation"] + d["transmission"],
        )
        for name, d in rec.stages.items()
    }
    total = rec.total_latency
    totals = ItemTimingTotals(
        total_computation_time=rec.computation_time,
        total_overhead_time=rec.overhead_time,
        total_latency=total,
        computation_ratio=rec.computation_time / total if total > 0 else 0.0,
    )
    return ItemTimingBreakdown(
        rec.seq, rec.sub_index, rec.status, totals, stages, rec.error, rec.error_stage
    )


def log_pipeline_performance_analysis(pipeline: Any, max_items: int = 5) -> None:
    """Log the pipeline's analysis at INFO (overall, per stage, the first few items)."""
    if not pipeline.enable_timing:
        logger.info("Pipeline timing is disabled. No analysis available.")
        return
    report = pipeline.get_report(include_item_details=True)
    if report is None:
        logger.info("No items processed. No analysis available.")
        return
    s = report.summary
    logger.info(
        "Pipeline: %d items, %.1f items/s, latency avg %.3f ms p50 %.3f p95 %.3f p99 %.3f ms, "
        "errors %d, filtered %d, bottleneck %s",
        s.total_items,
        s.throughput,
        s.avg_total_latency * 1e3,
        s.p50_total_latency * 1e3,
        s.p95_total_latency * 1e3,
        s.p99_total_latency * 1e3,
        s.error_count,
        s.filtered_count,
        s.bottleneck_stage,
    )
    logger.info(
        "Overall efficiency: computation %.1f%%, overhead %.1f%%",
        s.overall_efficiency.computation_efficiency * 100,
        s.overall_efficiency.overhead_ratio * 100,
    )
    for name, st in s.stage_statistics.items():
        tb = st.timing_breakdown
        logger.info(
            "Stage %s: processed %d, computation %.3f ms, queue wait %.3f ms, "
            "transmission %.3f ms, computation ratio %.1f%%, busy %.1f%%",
            name,
            st.processed_count,
            tb.avg_computation_time * 1e3,
            tb.avg_queue_wait_time * 1e3,
            tb.avg_transmission_time * 1e3,
            tb.computation_ratio * 100,
            st.busy_ratio * 100,
        )
    for item in (report.item_breakdowns or [])[:max_items]:
        t = item.totals
        logger.info(
            "Item %d%s (%s): total %.3f ms, computation %.3f ms, overhead %.3f ms",
            item.seq,
            "".join(f".{k}" for k in item.sub_index),
            item.status,
            t.total_latency * 1e3,
            t.total_computation_time * 1e3,
            t.total_overhead_time * 1e3,
        )
