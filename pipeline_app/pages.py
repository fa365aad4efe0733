"""Context of the dashboard pages: the queries of :mod:`pipeline_app.queries` turned into cards,
tables and charts. Views stay thin; templates only lay things out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.utils.safestring import SafeString

from pipeline_app import charts, queries
from pipeline_app.models import ItemTiming, PipelineDefinition, PipelineRun, StageStat
from pipeline_app.progress import run_state


@dataclass(frozen=True)
class StageRow:
    name: str
    stat: StageStat | None
    queue_depth: int | None = None
    processed: int | None = None


def stage_rows(run: PipelineRun, stats: list[StageStat]) -> list[StageRow]:
    if stats:
        return [StageRow(s.stage, s, processed=s.processed) for s in stats]
    live = (run.progress or {}).get("stages") or {}
    return [
        StageRow(
            name,
            None,
            queue_depth=(live.get(name) or {}).get("queue_depth"),
            processed=(live.get(name) or {}).get("processed"),
        )
        for name in queries.stage_names(run)
    ]


@dataclass(frozen=True)
class CardPart:
    """Text of a summary card; with ``field``, live.js replaces it from the run state's ``field``
    formatted by ``format`` (its ``data-format``), ``prefix`` first, both left out when empty."""

    text: str
    field: str = ""
    format: str = ""
    prefix: str = ""


@dataclass(frozen=True)
class SummaryCard:
    label: str
    parts: tuple[CardPart, ...]
    hint: str = ""


def _card(label: str, text: str, hint: str = "") -> SummaryCard:
    return SummaryCard(label, (CardPart(text),), hint)


def summary_cards(run: PipelineRun) -> list[SummaryCard]:
    """The run's figures; while it runs, the live ones follow its progress (live.js) and the
    latencies, known once it has finished, say so."""
    if not run.is_finished:
        return _live_cards(run)
    summary = run.summary or {}
    fmt = charts.fmt_seconds
    expected = f" of {run.items_expected:,}" if run.items_expected else ""
    # expected counts inputs: a fan-out run puts out more items than it takes in
    items = f"{run.items_in:,}{expected} in · {run.items_out:,} out"
    throughput = f"{run.throughput:,.1f} items/s" if run.throughput else "\u2013"
    queue_wait = run.queue_wait.total_seconds() if run.queue_wait else None
    duration = run.duration.total_seconds() if run.duration else None
    return [
        _card("Items", items),
        _card("Filtered · errors", f"{run.items_filtered:,} · {run.items_errors:,}"),
        _card("Throughput", throughput),
        _card("Queue wait", fmt(queue_wait)),
        _card("Duration", fmt(duration)),
        _card("p50 latency", fmt(run.p50_latency)),
        _card("p95 latency", fmt(run.p95_latency)),
        _card("p99 latency", fmt(summary.get("p99_total_latency"))),
    ]


def _live_cards(run: PipelineRun) -> list[SummaryCard]:
    fmt = charts.fmt_seconds
    expected = f" of {run.items_expected:,}" if run.items_expected else ""
    rate = f"{run.rate:,.1f} items/s" if run.rate else "\u2013"
    queue_wait = run.queue_wait.total_seconds() if run.queue_wait else None
    elapsed = (run.progress or {}).get("elapsed") if run.started_at else None
    later = "when finished"
    return [
        SummaryCard(
            "Items",
            (
                CardPart(f"{run.items_in:,}", "items_in", "count"),
                CardPart(expected, "items_expected", "count", prefix=" of "),
                CardPart(" in · "),
                CardPart(f"{run.items_out:,}", "items_out", "count"),
                CardPart(" out"),
            ),
        ),
        SummaryCard(
            "Filtered · errors",
            (
                CardPart(f"{run.items_filtered:,}", "items_filtered", "count"),
                CardPart(" · "),
                CardPart(f"{run.items_errors:,}", "items_errors", "count"),
            ),
        ),
        SummaryCard("Throughput", (CardPart(rate, "rate", "rate"),), "current"),
        SummaryCard("Queue wait", (CardPart(fmt(queue_wait), "queue_wait_seconds", "seconds"),)),
        SummaryCard("Duration", (CardPart(fmt(elapsed), "elapsed_seconds", "seconds"),), "so far"),
        _card("p50 latency", "\u2013", later),
        _card("p95 latency", "\u2013", later),
        _card("p99 latency", "\u2013", later),
    ]


def _waterfall(run: PipelineRun, names: list[str]) -> SafeString | None:
    first, slowest = queries.waterfall_items(run)
    if not first:
        return None

    def row(item: ItemTiming, prefix: str) -> charts.WaterfallRow:
        label = f"{prefix} #{item.seq}{'.' + item.sub_index if item.sub_index else ''}"
        return charts.WaterfallRow(label, item.stage_seconds(names), item.latency, item.status)

    rows = [row(i, "first") for i in first] + [row(i, "slow") for i in slowest]
    return charts.waterfall_chart(rows, names)


def _histogram(run: PipelineRun) -> SafeString | None:
    stored = queries.summary_histogram(run)
    if stored:
        return charts.histogram_chart(stored)
    latencies, sampled = queries.latency_sample(run)
    if not latencies:
        return None
    note = f" (an even sample of {len(latencies):,} of the run's items)" if sampled else ""
    return charts.histogram_chart(charts.bin_latencies(latencies), note=note)


def run_charts(run: PipelineRun, stats: list[StageStat]) -> dict[str, SafeString | None]:
    names = queries.stage_names(run, stats)
    split = None
    if stats:
        split = charts.stage_split_chart(
            [
                charts.StageSplit(
                    s.stage,
                    queries.stat_value(s, "queue_wait_avg"),
                    queries.stat_value(s, "computation_avg"),
                    queries.stat_value(s, "transmission_avg"),
                    s.is_bottleneck,
                )
                for s in stats
            ]
        )
    return {"split": split, "histogram": _histogram(run), "waterfall": _waterfall(run, names)}


def run_detail_context(run: PipelineRun, params: dict[str, str]) -> dict[str, Any]:
    stats = list(StageStat.objects.filter(run=run).order_by("position"))
    previous = queries.previous_run(run) if run.is_finished else None
    deltas = queries.compare_runs(run, previous, stats) if previous else []
    return {
        "run": run,
        "cards": summary_cards(run),
        "progress_percent": queries.progress_percent(run),
        "stage_rows": stage_rows(run, stats),
        "charts": run_charts(run, stats) if run.is_finished or run.items_out else {},
        "previous": previous,
        "deltas": deltas,
        "regressions": [d for d in deltas if d.is_regression],
        "items": queries.item_page(
            run, sort=params.get("sort", "seq"), status=params.get("status", "")
        ),
        "payload": run_state(run),
    }


def trend_context(definition: PipelineDefinition) -> dict[str, Any]:
    runs = queries.trend_runs(definition)
    if not runs:
        return {"trend_runs": []}
    labels = [f"#{r.pk}" for r in runs]
    last_runs = "last run" if len(runs) == 1 else f"last {len(runs)} runs"
    latency = charts.line_chart(
        {"p50": [r.p50_latency for r in runs], "p95": [r.p95_latency for r in runs]},
        title=f"Latency of {definition.name}'s {last_runs}",
        unit="ms",
        x_labels=labels,
        scale=1e3,
    )
    throughput = charts.line_chart(
        {"throughput": [r.throughput for r in runs]},
        title=f"Throughput of {definition.name}'s {last_runs}",
        unit="items/s",
        x_labels=labels,
    )
    latest = runs[-1]
    previous = runs[-2] if len(runs) > 1 else None
    deltas = queries.compare_runs(latest, previous) if previous else []
    return {
        "trend_runs": runs,
        "latency_chart": latency,
        "throughput_chart": throughput,
        "latest": latest,
        "previous": previous,
        "deltas": deltas,
    }
