"""The end of a run: its final status, summary and stage statistics, written once and fenced
by the run's attempt (a superseded attempt writes nothing)."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from pipeline_app.itemrows import original_seq
from pipeline_app.models import PipelineRun, RunStatus, StageStat, storable_text
from pipeline_app.retries import TRANSIENT_ERRORS

logger = logging.getLogger(__name__)


@dataclass
class Outcome:
    """How a run ended, collected while it runs and written once by :func:`finish`."""

    status: str = RunStatus.SUCCEEDED
    error_message: str = ""
    traceback: str = ""
    result: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    source_failed: bool = False


def error_dict(error: Any, seq_map: Sequence[int] | None = None) -> dict[str, Any]:
    """An engine error record as stored on the run, the item named by its input position
    (``seq_map``: a re-run of chosen items numbers them from 0)."""
    return {
        "seq": original_seq(error.seq, seq_map),
        "stage": error.stage,
        "type": error.exc_type,
        "message": storable_text(error.message),
        "traceback": storable_text(error.traceback),
    }


def finish(run: PipelineRun, outcome: Outcome) -> PipelineRun:
    """Write the final status, summary and stage stats, fenced by the run's attempt."""
    if outcome.status == RunStatus.QUEUED:
        if requeue(run, outcome.error_message) or not _cancel_requested(run):
            run.refresh_from_db()
            return run
        # asked to stop both ways: the user's cancel wins over the worker's shutdown (another
        # worker would only claim the run to cancel it)
        outcome = replace(
            outcome, status=RunStatus.CANCELLED, error_message="Cancelled on request."
        )
    summary = dict(outcome.summary or {})  # a copy: a retried call finds the outcome intact
    now = timezone.now()
    fields: dict[str, Any] = {
        "status": outcome.status,
        "finished_at": now,
        "summary": summary or None,
        "result": outcome.result,
        "errors": summary.pop("errors", []) if summary else [],
        "error_message": storable_text(outcome.error_message, 10_000),
        "traceback": storable_text(outcome.traceback),
        "p50_latency": summary.get("p50_total_latency"),
        "p95_latency": summary.get("p95_total_latency"),
        "throughput": summary.get("throughput"),
        "eta_seconds": None,
        "lease_expires_at": None,
    }
    ours = PipelineRun.objects.filter(pk=run.pk, attempt=run.attempt, status=RunStatus.RUNNING)
    try:
        with transaction.atomic():
            updated = ours.update(**fields)
            if updated and summary:
                StageStat.objects.filter(run=run).delete()
                StageStat.objects.bulk_create(stage_stats(run, summary))
    except TRANSIENT_ERRORS:  # nothing wrong with the results: the caller tries again
        raise
    except Exception as exc:  # e.g. a sink result the database cannot store: still end the run
        logger.exception("Run %s: its results could not be stored", run.pk)
        updated = ours.update(
            status=RunStatus.FAILED,
            finished_at=now,
            error_message=storable_text(f"The run's results could not be stored: {exc!r}", 10_000),
            traceback=storable_text(traceback.format_exc()),
            eta_seconds=None,
            lease_expires_at=None,
        )
    if not updated:
        logger.warning(
            "Run %s: final status of attempt %s not written (superseded)", run.pk, run.attempt
        )
    run.refresh_from_db()
    return run


def requeue(run: PipelineRun, reason: str) -> bool:
    """Put the attempt's run back in the queue (its worker is stopping), unless a cancel was
    requested; the shutdown outcome and ``jobs.release_claim`` both hand runs back this way."""
    ours = PipelineRun.objects.filter(
        pk=run.pk, attempt=run.attempt, status=RunStatus.RUNNING, cancel_requested=False
    )
    return bool(
        ours.update(
            **PipelineRun.REQUEUE_FIELDS,
            handed_back=F("handed_back") + 1,  # its worker stopped cleanly: not a dead worker
            error_message=storable_text(reason, 10_000),
        )
    )


def _cancel_requested(run: PipelineRun) -> bool:
    return PipelineRun.objects.filter(
        pk=run.pk, attempt=run.attempt, status=RunStatus.RUNNING, cancel_requested=True
    ).exists()


def stage_stats(run: PipelineRun, summary: dict[str, Any]) -> list[StageStat]:
    stats = summary.get("stage_statistics", {})
    bottleneck = summary.get("bottleneck_stage")
    rows = []
    for position, name in enumerate(summary.get("stage_order") or list(stats)):
        stat = stats[name]
        values: dict[str, Any] = {}
        for kind in ("computation", "queue_wait", "transmission"):
            for key, value in (stat.get(kind) or {}).items():
                values[f"{kind}_{key}"] = value or 0.0
        rows.append(
            StageStat(
                run=run,
                position=position,
                stage=name,
                items_in=stat.get("items_in", 0),
                items_out=stat.get("items_out", 0),
                items_filtered=stat.get("filtered_count", 0),
                items_errors=stat.get("error_count", 0),
                processed=stat.get("processed_count", 0),
                busy_ratio=stat.get("busy_ratio", 0.0),
                is_bottleneck=name == bottleneck,
                **values,
            )
        )
    return rows
