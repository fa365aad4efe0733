"""Plain-text rendering of progress and summaries for the command line."""

from __future__ import annotations

from typing import Any

from pipeline_app.models import PipelineRun


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.2f} ms"


def progress_line(snapshot: dict[str, Any], width: int = 24) -> str:
    done = snapshot.get("items_in", 0)
    expected = snapshot.get("expected")
    rate = snapshot.get("rate") or 0.0
    if expected:
        fraction = min(done / expected, 1.0)
        filled = int(fraction * width)
        bar = f"[{'#' * filled}{'.' * (width - filled)}] {fraction:6.1%} {done}/{expected}"
    else:
        bar = f"{done} items"
    eta = snapshot.get("eta_seconds")
    eta_text = f" ETA {eta:5.1f}s" if eta is not None else ""
    depths = " ".join(
        f"{name}:{stage.get('queue_depth', 0)}"
        for name, stage in snapshot.get("stages", {}).items()
    )
    return (
        f"{bar}  {rate:,.0f} items/s{eta_text}  out {snapshot.get('items_out', 0)}"
        f"  err {snapshot.get('errors', 0)}  queues {depths}"
    )


def summary_table(run: PipelineRun) -> str:
    summary = run.summary or {}
    lines = [
        f"Run #{run.pk} {run.pipeline_name}: {run.status}"
        + (f" ({run.error_message})" if run.error_message else ""),
        f"  items in {run.items_in}, out {run.items_out}, filtered {run.items_filtered}, "
        f"errors {run.items_errors}",
    ]
    if summary:
        lines.append(
            f"  duration {summary.get('duration', 0):.3f} s, throughput "
            f"{summary.get('throughput') or 0:,.0f} items/s, latency p50 "
            f"{ms(summary.get('p50_total_latency'))} p95 {ms(summary.get('p95_total_latency'))} "
            f"p99 {ms(summary.get('p99_total_latency'))}"
        )
        header = f"  {'stage':<20} {'in':>8} {'out':>8} {'err':>6} {'compute':>11} {'queue':>11}"
        lines += [header + f" {'transmit':>11} {'busy':>6}", "  " + "-" * (len(header) + 16)]
        bottleneck = summary.get("bottleneck_stage")
        stats = summary.get("stage_statistics", {})
        for name in summary.get("stage_order") or list(stats):
            stat = stats[name]
            mark = " <- bottleneck" if name == bottleneck else ""
            lines.append(
                f"  {name:<20} {stat.get('items_in', 0):>8} {stat.get('items_out', 0):>8} "
                f"{stat.get('error_count', 0):>6} "
                f"{ms((stat.get('computation') or {}).get('avg')):>11} "
                f"{ms((stat.get('queue_wait') or {}).get('avg')):>11} "
                f"{ms((stat.get('transmission') or {}).get('avg')):>11} "
                f"{stat.get('busy_ratio', 0):>6.0%}{mark}"
            )
    return "\n".join(lines)


def run_json(run: PipelineRun) -> dict[str, Any]:
    summary = run.summary or {}
    return {
        "run_id": run.pk,
        "pipeline": run.pipeline_name,
        "status": run.status,
        "items_in": run.items_in,
        "items_out": run.items_out,
        "error_count": run.items_errors,
        "filtered_count": run.items_filtered,
        "duration": run.duration.total_seconds() if run.duration else summary.get("duration"),
        "error_message": run.error_message,
        "result": run.result,
        "summary": summary,
    }
