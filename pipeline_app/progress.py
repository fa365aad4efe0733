"""The complete, self-contained state of a run as sent to browsers (WebSocket and JSON)."""

from __future__ import annotations

from typing import Any

from pipeline_app.models import PipelineRun, RunStatus

RUN_GROUP_PREFIX = "pipeline-run-"
RUN_LIST_GROUP = "pipeline-runs"


def run_group(run_id: int) -> str:
    return f"{RUN_GROUP_PREFIX}{run_id}"


def run_state(run: PipelineRun) -> dict[str, Any]:
    """Everything a page needs to render a run's live parts, from the run row."""
    return {
        "id": run.pk,
        "pipeline": run.pipeline_name,
        "status": run.status,
        "status_label": RunStatus(run.status).label,
        "is_finished": run.is_finished,
        "cancel_requested": run.cancel_requested,
        "items_in": run.items_in,
        "items_out": run.items_out,
        "items_filtered": run.items_filtered,
        "items_errors": run.items_errors,
        "items_expected": run.items_expected,
        "rate": run.rate,
        "eta_seconds": run.eta_seconds,
        "progress": run.progress or {},
        "created_at": _iso(run.created_at),
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "p50_latency": run.p50_latency,
        "p95_latency": run.p95_latency,
        "throughput": run.throughput,
        "error_message": run.error_message,
        "attempt": run.attempt,
    }


def state_with_snapshot(base: dict[str, Any], snapshot: dict[str, Any]) -> dict[str, Any]:
    """``base`` (a :func:`run_state`) updated with a live progress snapshot of the engine."""
    return {
        **base,
        "items_in": snapshot.get("items_in", 0),
        "items_out": snapshot.get("items_out", 0),
        "items_filtered": snapshot.get("filtered", 0),
        "items_errors": snapshot.get("errors", 0),
        "items_expected": snapshot.get("expected", base.get("items_expected")),
        "rate": snapshot.get("rate"),
        "eta_seconds": snapshot.get("eta_seconds"),
        "progress": snapshot,
    }


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None
