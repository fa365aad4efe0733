"""Read-side queries of the dashboard and the admin, each bounded so that a page costs the same
with 100 or 100,000 runs and with 1,000 or 1,000,000 item rows.

- Lists page by keyset (``WHERE (created_at, id) < cursor ... LIMIT n + 1``), never ``COUNT(*)``.
- Item tables page by keyset on the ``(run, seq)`` or ``(run, -latency)`` indexes.
- The latency histogram comes from the run summary when the engine stored one; otherwise from an
  evenly spaced sample of at most ``HISTOGRAM_SAMPLE`` rows fetched by ``seq``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from django.conf import settings
from django.db.models import Func, Model, OuterRef, Q, QuerySet, Subquery, TextField, Value
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

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.models.sql.compiler import SQLCompiler, _AsSqlType

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


class FanOutOrder(Func):
    """Sort key of a fan-out path (``ItemTiming.sub_index``, such as ``2.10``): its numbers in
    turn, compared as numbers (``2.9`` before ``2.10``); a path before its own children."""

    arity = 1
    output_field = TextField()

    def as_sql(
        self,
        compiler: SQLCompiler,
        connection: BaseDatabaseWrapper,
        function: str | None = None,
        template: str | None = None,
        arg_joiner: str | None = None,
        **extra_context: Any,
    ) -> _AsSqlType:
        # other backends: the path as text, in order only while no fan-out has ten children
        return compiler.compile(self.source_expressions[0])

    def as_postgresql(
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra_context: Any
    ) -> _AsSqlType:
        path, params = compiler.compile(self.source_expressions[0])
        # a path cut at the column's length may end with a dot
        return f"string_to_array(rtrim({path}, '.'), '.')::numeric[]", params

    def as_sqlite(
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra_context: Any
    ) -> _AsSqlType:
        path, params = compiler.compile(self.source_expressions[0])
        # each number zero-padded to 20 digits (more than any index has), so text order is
        # number order
        numbers = f"json_each('[' || replace(rtrim({path}, '.'), '.', ',') || ']')"
        padded = f"SELECT substr('{'0' * 20}' || value, -20) AS part FROM {numbers} ORDER BY key"
        sql = (
            f"CASE WHEN {path} = '' THEN '' "
            f"ELSE (SELECT group_concat(part, '.') FROM ({padded})) END"
        )
        return sql, (*params, *params)


INPUT_ORDER = ("seq", FanOutOrder("sub_index"), "pk")
ITEM_SORTS = {"seq": INPUT_ORDER, "slowest": ("-latency", "-pk")}
_FAN_OUT_PATH = re.compile(r"(?:(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*\.?)?")  # JSON numbers


def item_page(
    run: PipelineRun,
    *,
    sort: str = "seq",
    status: str = "",
    after: str | None = None,
    size: int = ITEM_PAGE_SIZE,
) -> Page[ItemTiming]:
    """Keyset page of a run's items; the cursor is ``<seq>_<sub_index>_<pk>`` (input order) or
    ``<latency>_<pk>`` (slowest first) of the last row."""
    sort = sort if sort in ITEM_SORTS else "seq"
    items = ItemTiming.objects.filter(run=run)
    if status in ItemStatus.values:
        items = items.filter(status=status)
    if sort == "seq":
        position = _input_order_cursor(after)
        if position is not None:
            seq, path, pk = position
            path_order = FanOutOrder(Value(path))
            # seq__gte lets the (run, seq) index start the scan at the cursor
            items = (
                items.alias(path_order=FanOutOrder("sub_index"))
                .filter(seq__gte=seq)
                .filter(
                    Q(seq__gt=seq)
                    | Q(seq=seq, path_order__gt=path_order)
                    | Q(seq=seq, path_order=path_order, pk__gt=pk)
                )
            )
    else:
        cursor = _item_cursor(after)
        if cursor is not None:
            latency, pk = cursor
            items = items.filter(Q(latency__lt=latency) | Q(latency=latency, pk__lt=pk))
    rows = list(items.order_by(*ITEM_SORTS[sort])[: size + 1])
    more = len(rows) > size
    rows = rows[:size]
    names = stage_names(run)
    for row in rows:
        row.stage_times = row.stage_seconds(names)  # type: ignore[attr-defined]
    next_cursor = None
    if more and rows:
        last = rows[-1]
        if sort == "seq":
            next_cursor = f"{last.seq}_{last.sub_index}_{last.pk}"
        else:
            next_cursor = f"{last.latency!r}_{last.pk}"
    return Page(rows, next_cursor=next_cursor, extra={"sort": sort, "status": status})


def _input_order_cursor(value: str | None) -> tuple[int, str, int] | None:
    """``(seq, sub_index, pk)`` of an input-order cursor; None for anything else."""
    parts = (value or "").split("_")
    if len(parts) != 3:
        return None
    seq_text, path, pk_text = parts
    seq, pk = _cursor_pk(seq_text), _cursor_pk(pk_text)
    if seq is None or pk is None or not _FAN_OUT_PATH.fullmatch(path):
        return None
    if len(path) > (ItemTiming._meta.get_field("sub_index").max_length or 0):
        return None
    return seq, path, pk


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
    first = list(items.order_by(*INPUT_ORDER)[:WATERFALL_ITEMS])
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
    # The candidates' conditions are checked here, not in SQL: with them, SQLite reads every
    # finished run through the status index (65 ms at 100,000 runs) instead of one range of
    # the (definition, created_at) index per definition (1 ms); the ranges hold little else.
    in_ranges = PipelineRun.objects.only(*TREND_FIELDS).order_by("-created_at", "-pk")
    for first in range(0, len(ranges), TREND_DEFINITIONS_PER_QUERY):
        chunk = ranges[first : first + TREND_DEFINITIONS_PER_QUERY]
        for run in in_ranges.filter(Q(*chunk, _connector=Q.OR)):
            if run.status in FINISHED_STATUSES and run.p95_latency is not None:
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
