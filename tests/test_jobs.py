"""The queue of record: submission, claims, leases, cancel (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from pipeline_app import hints, jobs
from pipeline_app.models import PipelineRun, RunStatus, Trigger
from pipeline_app.params import ParamError
from tests.factories import make_definition

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]


def test_submit_validates_parameters_before_anything_is_queued() -> None:
    definition = make_definition()
    with pytest.raises(ParamError, match="'count' must be int"):
        jobs.submit(definition, params={"count": "many"})
    with pytest.raises(ParamError, match="outside the directories"):
        jobs.submit(
            make_definition("files", source="lines", source_params={"path": "/etc/passwd"}),
            trigger=Trigger.DASHBOARD,
        )
    assert PipelineRun.objects.count() == 0


def test_submit_snapshots_the_definition_and_hints_after_commit() -> None:
    definition = make_definition(source_params={"count": 5})
    received: list[dict[str, object]] = []
    hints.add_listener(received.append)
    try:
        with transaction.atomic():
            run = jobs.submit(definition, params={"count": 7})
            assert received == []  # nothing before the commit
    finally:
        hints.remove_listener(received.append)
    assert received == [{"type": "job.wake", "run_id": run.pk}]
    assert run.status == RunStatus.QUEUED
    assert run.params == {"source": {"count": 7}}
    assert run.snapshot["stages"][0]["stage"] == "test-inc"
    definition.stages.update(stage="test-drop-odd")
    run.refresh_from_db()
    assert run.snapshot["stages"][0]["stage"] == "test-inc"  # history stays true after edits


def test_claim_next_takes_the_oldest_and_bumps_the_attempt() -> None:
    definition = make_definition()
    first, second = jobs.submit(definition), jobs.submit(definition)
    claimed = jobs.claim_next("w1")
    assert claimed is not None
    assert claimed.pk == first.pk
    assert (claimed.status, claimed.attempt, claimed.worker_id) == (RunStatus.RUNNING, 1, "w1")
    assert claimed.lease_expires_at > timezone.now()
    assert jobs.claim_next("w2").pk == second.pk  # type: ignore[union-attr]
    assert jobs.claim_next("w3") is None


def test_concurrent_claims_never_give_a_run_twice() -> None:
    definition = make_definition()
    runs = [jobs.submit(definition) for _ in range(30)]
    claimed: list[int] = []
    lock = threading.Lock()

    def claim_all(worker: str) -> None:
        try:
            while (run := jobs.claim_next(worker)) is not None:
                with lock:
                    claimed.append(run.pk)
        finally:
            connection.close()

    threads = [threading.Thread(target=claim_all, args=(f"w{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == sorted(run.pk for run in runs)


def expire(run: PipelineRun) -> None:
    PipelineRun.objects.filter(pk=run.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1), heartbeat_at=timezone.now()
    )


def test_expired_lease_is_requeued_while_attempts_remain_then_lost() -> None:
    definition = make_definition(max_attempts=2)
    run = jobs.submit(definition)
    run = jobs.claim_next("dead-worker")  # type: ignore[assignment]
    expire(run)
    assert jobs.sweep_expired_leases() == [run.pk]
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED
    assert "Requeued (attempt 1/2)" in run.error_message
    assert (run.worker_id, run.started_at, run.lease_expires_at) == ("", None, None)

    run = jobs.claim_next("dead-again")  # type: ignore[assignment]
    assert run.attempt == 2
    expire(run)
    jobs.sweep_expired_leases()
    run.refresh_from_db()
    assert run.status == RunStatus.LOST
    assert "dead-again" in run.error_message
    assert run.finished_at is not None


def test_sweep_leaves_live_leases_alone() -> None:
    run = jobs.submit(make_definition())
    jobs.claim_next("alive")
    assert jobs.sweep_expired_leases() == []
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING


def test_cancel_of_a_queued_run_is_immediate_and_it_is_never_claimed() -> None:
    run = jobs.cancel(jobs.submit(make_definition()))
    assert run.status == RunStatus.CANCELLED
    assert run.finished_at is not None
    assert jobs.claim_next("w") is None


def test_cancel_of_a_running_run_sets_the_flag_for_its_worker() -> None:
    jobs.submit(make_definition())
    run = jobs.claim_next("w")
    run = jobs.cancel(run)  # type: ignore[arg-type]
    assert run.status == RunStatus.RUNNING
    assert run.cancel_requested is True


def test_rerun_failed_items_only_queues_their_sequence_numbers() -> None:
    from pipeline_app import runner

    definition = make_definition(
        stages=[{"stage": "test-fail-every", "params": {"every": 5}}], source_params={"count": 12}
    )
    jobs.submit(definition)
    original = runner.execute(jobs.claim_next("w"))  # type: ignore[arg-type]
    assert original.items_errors == 3
    again = jobs.rerun(original, failed_only=True)
    assert again.only_items == [0, 5, 10]
    assert again.rerun_of == original
    jobs.cancel(again)
    jobs.submit(make_definition("clean"))
    clean = runner.execute(jobs.claim_next("w"))  # type: ignore[arg-type]
    with pytest.raises(ParamError, match="no failed items"):
        jobs.rerun(clean, failed_only=True)
