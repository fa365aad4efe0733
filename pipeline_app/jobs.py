"""The queue of record: create, claim and finish runs in the database.

Every entry point (admin, dashboard, ``runpipeline``, the Python API) creates runs through
:func:`submit` / :func:`create_run`, so parameters are validated once, the same way.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from pipeline_app import conf
from pipeline_app.assembly import validated_params
from pipeline_app.hints import notify_workers
from pipeline_app.models import (
    ItemStatus,
    ItemTiming,
    PipelineDefinition,
    PipelineRun,
    RunStatus,
    StageStat,
    Trigger,
    snapshot_hash,
)
from pipeline_app.outcome import requeue
from pipeline_app.params import ParamError
from pipeline_app.params import validate as validate_params
from pipeline_app.registry import registry

logger = logging.getLogger(__name__)


def worker_identity(suffix: str = "") -> str:
    return f"{socket.gethostname()}:{os.getpid()}{suffix}"


def submit(
    definition: PipelineDefinition,
    *,
    params: dict[str, Any] | None = None,
    user: Any = None,
    trigger: str = Trigger.API,
    only_items: list[int] | None = None,
    rerun_of: PipelineRun | None = None,
    overrides: dict[str, Any] | None = None,
    wake_workers: bool = True,
) -> PipelineRun:
    """Queue a run of ``definition`` and, once the transaction commits, wake the workers (a
    best-effort hint). Raises :class:`ParamError` for bad parameters, before anything is saved.

    ``overrides`` replace snapshot keys for this run only (e.g. ``{"enable_timing": False}``).
    """
    if not definition.is_active:
        raise ParamError(f"Pipeline {definition.name!r} is inactive.")
    snapshot = {**definition.snapshot(), **(overrides or {})}
    missing = registry.missing_names(snapshot)
    if missing:
        raise ParamError(
            f"Pipeline {definition.name!r} refers to unregistered {', '.join(missing)}."
        )
    validate_stage_params(snapshot)
    run_params = normalise_params(params)
    validated_params(snapshot, run_params, trigger=trigger)
    run = PipelineRun.objects.create(
        definition=definition,
        snapshot=snapshot,
        snapshot_hash=snapshot_hash(snapshot),
        params=run_params,
        trigger=trigger,
        user=user if getattr(user, "is_authenticated", False) else None,
        only_items=only_items,
        rerun_of=rerun_of,
    )
    if wake_workers:
        transaction.on_commit(lambda: notify_workers({"type": "job.wake", "run_id": run.pk}))
    return run


def create_run(definition: PipelineDefinition, **options: Any) -> PipelineRun:
    """:func:`submit` without the wake-up: for runs this process executes itself."""
    return submit(definition, wake_workers=False, **options)


def validate_stage_params(snapshot: dict[str, Any]) -> None:
    """Check every stage's parameters against its signature, as the runner will."""
    for stage in snapshot["stages"]:
        registered = registry.get("stage", stage["stage"])
        validate_params(f"stage {registered.name!r}", registered.params, stage.get("params") or {})


def normalise_params(params: dict[str, Any] | None) -> dict[str, Any]:
    """Run params are ``{"source": {...}, "sink": {...}}``; a flat dict means source params."""
    if not params:
        return {}
    if set(params) <= {"source", "sink"}:
        return {key: dict(value or {}) for key, value in params.items()}
    return {"source": dict(params)}


def claim_run(run: PipelineRun, worker_id: str) -> bool:
    """Claim this queued run (compare-and-set); on success ``run`` is refreshed."""
    now = timezone.now()
    with transaction.atomic():
        updated = PipelineRun.objects.filter(
            pk=run.pk, status=RunStatus.QUEUED, attempt=run.attempt
        ).update(
            status=RunStatus.RUNNING,
            worker_id=worker_id,
            attempt=F("attempt") + 1,
            started_at=now,
            heartbeat_at=now,
            lease_expires_at=now + timedelta(seconds=conf.get("LEASE_SECONDS")),
        )
    if updated:
        run.refresh_from_db()
    return bool(updated)


def rerun(
    run: PipelineRun, *, user: Any = None, trigger: str = Trigger.API, failed_only: bool = False
) -> PipelineRun:
    """Queue the same pipeline again with the same parameters and settings (only failed items if
    asked): the run's snapshot, not the definition as edited since, so the outputs go where they
    went and failed items' sequence numbers still name the same inputs."""
    return submit(
        run.definition,
        params=run.params,
        user=user,
        trigger=trigger,
        only_items=failed_items(run) if failed_only else None,
        rerun_of=run,
        overrides=run.snapshot,
    )


def failed_items(run: PipelineRun) -> list[int]:
    """The input sequence numbers of every item that failed in ``run``.

    Raises :class:`ParamError` when there are none, or when they are not all known: without
    item timings only the first ``MAX_RECORDED_ERRORS`` errors are kept, and a re-run of some
    of the failures must not pass for a re-run of all of them.
    """
    if not run.is_finished:
        raise ParamError(
            f"Run #{run.pk} is still {run.status}: re-run its failed items once it has finished."
        )
    failed_rows = run.item_timings.filter(status=ItemStatus.ERROR)
    recorded_errors = [e for e in run.errors if e.get("seq") is not None]
    seqs = sorted(
        set(failed_rows.values_list("seq", flat=True)) | {int(e["seq"]) for e in recorded_errors}
    )
    if not seqs:
        raise ParamError(f"Run #{run.pk} has no failed items to re-run.")
    if max(failed_rows.count(), len(recorded_errors)) < run.items_errors:
        raise ParamError(
            f"Run #{run.pk} had {run.items_errors} failed items but recorded only "
            f"{len(seqs)} of them (item timing was off or item rows were lost), so they cannot "
            "all be re-run; re-run the whole run instead."
        )
    return seqs


def cancel(run: PipelineRun) -> PipelineRun:
    """Cancel a queued run at once; ask a running one to stop (its worker ends it within ~1 s)."""
    now = timezone.now()
    with transaction.atomic():
        cancelled = PipelineRun.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(
            status=RunStatus.CANCELLED,
            finished_at=now,
            cancel_requested=True,
            error_message="Cancelled before it started.",
        )
        if cancelled:  # a requeued run: the abandoned attempt's records go, as its counts did
            ItemTiming.objects.filter(run_id=run.pk).delete()
            StageStat.objects.filter(run_id=run.pk).delete()
    PipelineRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(cancel_requested=True)
    run.refresh_from_db()
    if run.status == RunStatus.RUNNING:
        transaction.on_commit(lambda: notify_workers({"type": "job.cancel", "run_id": run.pk}))
    return run


def claim_next(worker_id: str) -> PipelineRun | None:
    """Claim the oldest queued run, or None. One winner however many workers race."""
    queued = PipelineRun.objects.filter(status=RunStatus.QUEUED).order_by("created_at", "id")
    if connection.features.has_select_for_update_skip_locked:
        with transaction.atomic():
            candidate = queued.select_for_update(skip_locked=True).first()
            if candidate is None:
                return None
            return candidate if claim_run(candidate, worker_id) else None
    for candidate in queued[:10]:
        if claim_run(candidate, worker_id):
            return candidate
    return None


def release_claim(run: PipelineRun, reason: str) -> bool:
    """Put back in the queue a run this worker claimed but never started (it is stopping).

    The attempt stays counted: it is the fencing token, and a token is never handed out twice.
    """
    if requeue(run, reason):
        return True
    # a cancel was asked meanwhile: it wins (another worker would only claim it to cancel it)
    ours = PipelineRun.objects.filter(pk=run.pk, attempt=run.attempt, status=RunStatus.RUNNING)
    return bool(
        ours.update(
            status=RunStatus.CANCELLED,
            finished_at=timezone.now(),
            lease_expires_at=None,
            error_message="Cancelled on request.",
        )
    )


def requeue_or_lose(run_id: int, attempt: int, reason: str) -> str | None:
    """A run whose lease expired: queued again while attempts remain, else ``lost``."""
    with transaction.atomic():
        run = (
            PipelineRun.objects.select_for_update()
            .filter(pk=run_id, attempt=attempt, status=RunStatus.RUNNING)
            .first()
        )
        if run is None:
            return None
        max_attempts = int(run.snapshot.get("max_attempts") or 1)
        died = attempt - run.handed_back  # attempts whose worker died, this one included
        if run.cancel_requested:
            status, message = RunStatus.CANCELLED, f"Cancelled; {reason}"
        elif died < max_attempts:
            status, message = (
                RunStatus.QUEUED,
                f"Requeued (attempt {died}/{max_attempts}): {reason}",
            )
        else:
            status, message = (
                RunStatus.LOST,
                f"Lost after {died}/{max_attempts} attempts: {reason}",
            )
        fields: dict[str, Any] = (
            dict(PipelineRun.REQUEUE_FIELDS)
            if status == RunStatus.QUEUED
            else {"status": status, "lease_expires_at": None, "finished_at": timezone.now()}
        )
        PipelineRun.objects.filter(pk=run_id, attempt=attempt).update(
            **fields, error_message=message
        )
    logger.warning("Run %s: %s", run_id, message)
    return status


def sweep_expired_leases() -> list[int]:
    """Requeue or mark lost every running run whose lease has expired; returns their ids."""
    now = timezone.now()
    expired = PipelineRun.objects.filter(
        status=RunStatus.RUNNING, lease_expires_at__lt=now
    ).values_list("pk", "attempt", "worker_id", "heartbeat_at")
    swept = []
    for run_id, attempt, worker, heartbeat in expired:
        reason = (
            f"worker {worker or '?'} stopped renewing its lease "
            f"(last heartbeat {heartbeat:%H:%M:%S})."
        )
        if requeue_or_lose(run_id, attempt, reason):
            swept.append(run_id)
    return swept
