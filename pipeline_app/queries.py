"""Read-side queries of the dashboard and the admin, each bounded so that a page costs the same
with 100 or 100,000 runs and with 1,000 or 1,000,000 item rows.

- Lists page by keyset (``WHERE (created_at, id) < cursor ... LIMIT n + 1``), never ``COUNT(*)``.
- Item tables page by keyset on the ``(run, seq)`` or ``(run, -latency)`` indexes.
- The latency histogram comes from the run summary when the engine stored one; otherwise from an
  evenly spaced sample of at most ``HISTOGRAM_SAMPLE`` rows fetched by ``seq``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from django.conf import settings
from django.db.models import Model, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from pipeline_app.models import (
    FINISHED_STATUSES,
    ItemStatus,
    ItemTiming,
    PipelineDefinition,
    PipelineRun,
    RunStatus,
    StageStat,
)

RUN_PAGE_SIZE = 50
ITEM_PAGE_SIZE = 50
WATERFALL_ITEMS = 10
HISTOGRAM_SAMPLE = 1_000
TREND_RUNS = 20
REGRESSION_RATIO = 1.2

M = TypeVar("M", bound=Model)


@dataclass
class Page(Generic[M]):
    """One keyset page: rows plus the cursors of the neighbouring pages (None at an end)."""

    rows: list[M]
    next_cursor: str | None = None
    prev_cursor: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# -- run lists ---------------------------------------------------------------------------------


def run_cursor(run: PipelineRun) -> str:
    return f"{run.created_at.isoformat()}_{run.pk}"


def parse_run_cursor(value: str | None) -> tuple[datetime, int] | None:
    """``(created_at, pk)`` of a cursor made by :func:`run_cursor`; None for anything else."""
    if not value or "_" not in value:
        return None
    stamp, _, pk_text = value.rpartition("_")
    pk = _cursor_pk(pk_text)
    try:
        moment = parse_datetime(stamp.replace(" ", "+"))
        if moment is not None and timezone.is_aware(moment):
            # converted here, not by the database adapter: 0001-01-01T00:00+01:00 overflows
            moment = moment.astimezone(UTC)
    except (ValueError, OverflowError):  # well-formed but impossible: 2024-02-30, +99:00
        return None
    if moment is None or pk is None or timezone.is_aware(moment) != settings.USE_TZ:
        return None
    return moment, pk


def _cursor_pk(text: str) -> int | None:
    # str.isdigit() alone also accepts digits int() rejects, such as "²"
    return int(text) if text.isascii() and text.isdigit() else None


def filtered_runs(
    *, status: str = "", pipeline: str = "", trigger: str = ""
) -> QuerySet[PipelineRun]:
    runs = PipelineRun.objects.select_related("definition", "user").defer(
        "snapshot", "summary", "progress", "result", "errors", "traceback", "params"
    )
    if status:
        runs = runs.filter(status=status)
    if pipeline:
        runs = runs.filter(definition__slug=pipeline)
    if trigger:
        runs = runs.filter(trigger=trigger)
    return runs


def run_page(
    runs: QuerySet[PipelineRun],
    *,
    after: str | None = None,
    before: str | None = None,
    size: int = RUN_PAGE_SIZE,
) -> Page[PipelineRun]:
    """Newest first; ``after`` pages to older runs, ``before`` to newer ones."""
    older = parse_run_cursor(after)
    newer = parse_run_cursor(before)
    if newer is not None and older is None:
        moment, pk = newer
        rows = list(
            runs.filter(Q(created_at__gt=moment) | Q(created_at=moment, pk__gt=pk)).order_by(
                "created_at", "pk"
            )[: size + 1]
        )
        has_newer = len(rows) > size
        rows = rows[:size][::-1]
        return Page(
            rows,
            next_cursor=run_cursor(rows[-1]) if rows else None,
            prev_cursor=run_cursor(rows[0]) if rows and has_newer else None,
        )
    if older is not None:
        moment, pk = older
        runs = runs.filter(Q(created_at__lt=moment) | Q(created_at=moment, pk__lt=pk))
    rows = list(runs.order_by("-created_at", "-pk")[: size + 1])
    has_older = len(rows) > size
    rows = rows[:size]
    return Page(
        rows,
        next_cursor=run_cursor(rows[-1]) if rows and has_older else None,
        prev_cursor=run_cursor(rows[0]) if rows and older is not None else None,
    )


# -- the run detail ----------------------------------------------------------------------------


def progress_percent(run: PipelineRun) -> float | None:
    """Share of the expected items that have left the pipeline, or None when unknown."""
    if run.status == RunStatus.SUCCEEDED:
        return 100.0
    if not run.items_expected:
        return None
    progress = run.progress or {}
    done = progress.get("done")
    if done is None:
        done = run.items_out + run.items_filtered + run.items_errors
    return round(min(99.0 if not run.is_finished else 100.0, 100.0 * done / run.items_expected), 1)


def stage_names(run: PipelineRun, stats: Sequence[StageStat] = ()) -> list[str]:
    summary = run.summary or {}
    if summary.get("stage_order"):
        return [str(name) for name in summary["stage_order"]]
    if stats:
        return [s.stage for s in stats]
    names = [str(s["stage"]) for s in run.snapshot.get("stages", [])]
    return [n if names.count(n) == 1 else f"{n}#{i}" for i, n in enumerate(names)]


ITEM_SORTS = {"seq": ("seq", "pk"), "slowest": ("-latency", "-pk")}


def item_page(
    run: PipelineRun,
    *,
    sort: str = "seq",
    status: str = "",
    after: str | None = None,
    size: int = ITEM_PAGE_SIZE,
) -> Page[ItemTiming]:
    """Keyset page of a run's items; the cursor is ``<seq or latency>_<pk>`` of the last row."""
    sort = sort if sort in ITEM_SORTS else "seq"
    items = ItemTiming.objects.filter(run=run)
    if status in ItemStatus.values:
        items = items.filter(status=status)
    cursor = _item_cursor(after)
    if cursor is not None:
        value, pk = cursor
        if sort == "seq":
            items = items.filter(Q(seq__gt=int(value)) | Q(seq=int(value), pk__gt=pk))
        else:
            items = items.filter(Q(latency__lt=value) | Q(latency=value, pk__lt=pk))
    rows = list(items.order_by(*ITEM_SORTS[sort])[: size + 1])
    more = len(rows) > size
    rows = rows[:size]
    names = stage_names(run)
    for row in rows:
        row.stage_times = row.stage_seconds(names)  # type: ignore[attr-defined]
    next_cursor = None
    if more and rows:
        last = rows[-1]
        key = last.seq if sort == "seq" else repr(last.latency)
        next_cursor = f"{key}_{last.pk}"
    return Page(rows, next_cursor=next_cursor, extra={"sort": sort, "status": status})


def _item_cursor(value: str | None) -> tuple[float, int] | None:
    if not value or "_" not in value:
        return None
    key, _, pk_text = value.rpartition("_")
    try:
        number = float(key)
    except ValueError:
        return None
    pk = _cursor_pk(pk_text)
    if pk is None or not math.isfinite(number):
        return None
    return number, pk


def waterfall_items(run: PipelineRun) -> tuple[list[ItemTiming], list[ItemTiming]]:
    """The first items (input order) and the slowest ones, each an index range scan."""
    items = ItemTiming.objects.filter(run=run).only(
        "seq", "sub_index", "status", "latency", "stamps"
    )
    first = list(items.order_by("seq", "pk")[:WATERFALL_ITEMS])
    seen = {item.pk for item in first}
    slowest = [
        item
        for item in items.order_by("-latency", "-pk")[: WATERFALL_ITEMS * 2]
        if item.pk not in seen
    ][:WATERFALL_ITEMS]
    return first, slowest


def latency_sample(run: PipelineRun) -> tuple[list[float], bool]:
    """End-to-end latencies for the histogram: all of a small run, else an even sample by seq.

    Returns ``(latencies, sampled)``. Never scans more than ``HISTOGRAM_SAMPLE`` rows.
    """
    items = ItemTiming.objects.filter(run_id=run.pk).exclude(status=ItemStatus.FILTERED)
    top = max(run.items_in, run.items_expected or 0)
    if top <= HISTOGRAM_SAMPLE:
        rows = items.order_by("seq").values_list("latency", flat=True)[:HISTOGRAM_SAMPLE]
        return list(rows), False
    step = top / HISTOGRAM_SAMPLE
    seqs = sorted({int(i * step) for i in range(HISTOGRAM_SAMPLE)})
    rows = items.filter(seq__in=seqs).values_list("latency", flat=True)[:HISTOGRAM_SAMPLE]
    return list(rows), True


def summary_histogram(run: PipelineRun) -> list[tuple[float, float, int]] | None:
    """``summary["latency_histogram"]`` as ``[(low_s, high_s, count)]`` if the engine stored one."""
    raw = (run.summary or {}).get("latency_histogram")
    if not isinstance(raw, list) or not raw:
        return None
    try:
        return [(float(low), float(high), int(count)) for low, high, count in raw]
    except (TypeError, ValueError):
        return None


def previous_run(run: PipelineRun) -> PipelineRun | None:
    """The same pipeline's latest finished run with a summary before ``run``."""
    return (
        PipelineRun.objects.filter(
            definition_id=run.definition_id,
            created_at__lt=run.created_at,
            status=RunStatus.SUCCEEDED,
        )
        .defer("snapshot", "progress", "errors", "traceback", "result")
        .order_by("-created_at", "-pk")
        .first()
    )


@dataclass(frozen=True)
class Delta:
    label: str
    current: float | None
    previous: float | None
    unit: str
    higher_is_better: bool = False

    @property
    def ratio(self) -> float | None:
        if not self.current or not self.previous:
            return None
        return self.current / self.previous

    @property
    def is_regression(self) -> bool:
        ratio = self.ratio
        if ratio is None:
            return False
        if self.higher_is_better:
            return ratio < 1 / REGRESSION_RATIO
        return ratio > REGRESSION_RATIO

    @property
    def change_percent(self) -> float | None:
        ratio = self.ratio
        return None if ratio is None else (ratio - 1) * 100


def stat_value(stat: StageStat, name: str) -> float:
    """A timing field of a stage's statistics (declared in a loop, so typed here)."""
    return float(getattr(stat, name))


def compare_runs(
    run: PipelineRun, previous: PipelineRun, stats: Iterable[StageStat] = ()
) -> list[Delta]:
    """Latency, throughput and per-stage computation of ``run`` against ``previous``."""
    deltas = [
        Delta("p50 latency", run.p50_latency, previous.p50_latency, "s"),
        Delta("p95 latency", run.p95_latency, previous.p95_latency, "s"),
        Delta("Throughput", run.throughput, previous.throughput, "items/s", True),
    ]
    stats = list(stats)
    earlier = {s.stage: s for s in StageStat.objects.filter(run=previous)} if stats else {}
    for stat in stats:
        before = earlier.get(stat.stage)
        if before is not None:
            deltas.append(
                Delta(
                    f"{stat.stage}: computation p95",
                    stat_value(stat, "computation_p95"),
                    stat_value(before, "computation_p95"),
                    "s",
                )
            )
    return deltas


TREND_FIELDS = (
    "pk",
    "definition",
    "created_at",
    "status",
    "p50_latency",
    "p95_latency",
    "throughput",
)
# Definitions per query of trend_runs_of: SQLite refuses expressions nested deeper than 1000, and
# each definition adds one OR to the WHERE clause.
TREND_DEFINITIONS_PER_QUERY = 500


def _trend_candidates() -> QuerySet[PipelineRun]:
    runs = PipelineRun.objects.filter(status__in=FINISHED_STATUSES, p95_latency__isnull=False)
    return runs.only(*TREND_FIELDS)


def _rows_of(definitions: Sequence[PipelineDefinition]) -> QuerySet[PipelineDefinition]:
    return PipelineDefinition.objects.filter(pk__in=[d.pk for d in definitions]).order_by()


def trend_runs(definition: PipelineDefinition, limit: int = TREND_RUNS) -> list[PipelineRun]:
    """The definition's latest finished runs with latency figures, oldest first."""
    rows = _trend_candidates().filter(definition=definition).order_by("-created_at", "-pk")
    return list(rows[:limit])[::-1]


def trend_runs_of(
    definitions: Sequence[PipelineDefinition], limit: int = TREND_RUNS
) -> dict[int, list[PipelineRun]]:
    """:func:`trend_runs` of each definition in two queries, plus one per further
    ``TREND_DEFINITIONS_PER_QUERY`` definitions.

    The first finds where each definition's trend starts (the ``created_at`` of its ``limit``-th
    latest candidate, one index lookup per definition); the second fetches, per definition, the
    runs from that point on, an index range scan each.
    """
    if not definitions:
        return {}
    latest_first = _trend_candidates().order_by("-created_at", "-pk")
    starts = _rows_of(definitions).values_list(
        "pk",
        Subquery(
            latest_first.filter(definition=OuterRef("pk")).values("created_at")[limit - 1 : limit]
        ),
    )
    ranges = [
        Q(definition_id=pk) if start is None else Q(definition_id=pk, created_at__gte=start)
        for pk, start in starts
    ]
    trends: dict[int, list[PipelineRun]] = {d.pk: [] for d in definitions}
    for first in range(0, len(ranges), TREND_DEFINITIONS_PER_QUERY):
        chunk = ranges[first : first + TREND_DEFINITIONS_PER_QUERY]
        for run in latest_first.filter(Q(*chunk, _connector=Q.OR)):
            trends[run.definition_id].append(run)
    # runs created at the same moment as a trend's first run may exceed the limit
    return {pk: runs[:limit][::-1] for pk, runs in trends.items()}


def last_runs(definitions: Sequence[PipelineDefinition]) -> dict[int, PipelineRun]:
    """The latest run of each definition in one query: an index lookup per definition."""
    if not definitions:
        return {}
    latest = PipelineRun.objects.filter(definition=OuterRef("pk")).order_by("-created_at", "-pk")
    latest_pks = _rows_of(definitions).values(latest_pk=Subquery(latest.values("pk")[:1]))
    runs = PipelineRun.objects.filter(pk__in=latest_pks).defer(
        "snapshot", "summary", "progress", "errors", "traceback", "result"
    )
    return {run.definition_id: run for run in runs}
