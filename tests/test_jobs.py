"""The queue of record: submission, claims, leases, cancel (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection, transaction
from django.test import override_settings
from django.utils import timezone

from pipeline_app import hints, jobs, runner
from pipeline_app.models import (
    ItemTiming,
    PipelineDefinition,
    PipelineRun,
    RunStatus,
    StageStat,
    Trigger,
)
from pipeline_app.outcome import Outcome, finish
from pipeline_app.params import ParamError
from tests.factories import claimed_run, make_definition

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


def test_submit_validates_stage_parameters_before_anything_is_queued() -> None:
    definition = make_definition(stages=[{"stage": "test-inc", "params": {"by": "lots"}}])
    with pytest.raises(ParamError, match="'by' must be int"):
        jobs.submit(definition)
    definition = make_definition("unknown", stages=[{"stage": "test-inc", "params": {"to": 1}}])
    with pytest.raises(ParamError, match="stage 'test-inc': unknown parameter 'to'"):
        jobs.submit(definition)
    assert PipelineRun.objects.count() == 0


def test_rerun_keeps_the_sink_and_settings_the_run_was_started_with(tmp_path: Path) -> None:
    """``runpipeline NAME --output out.jsonl --no-timing`` records its overrides in the run's
    snapshot; a re-run must write where the run wrote, not to the definition's sink."""
    definition = make_definition(
        stages=[{"stage": "test-fail-every", "params": {"every": 10}}], source_params={"count": 25}
    )
    out = tmp_path / "out.jsonl"
    run = jobs.create_run(
        definition,
        overrides={"sink": "jsonl", "sink_params": {"path": str(out)}, "enable_timing": False},
    )
    assert jobs.claim_run(run, "w")
    run = runner.execute(run)
    assert out.exists()
    again = jobs.rerun(run, failed_only=True)
    assert (again.snapshot["sink"], again.snapshot["sink_params"]) == ("jsonl", {"path": str(out)})
    assert again.snapshot["enable_timing"] is False
    assert again.snapshot_hash == run.snapshot_hash


def test_rerun_of_failed_items_runs_the_pipeline_they_failed_in() -> None:
    """Failed items' sequence numbers refer to the original run's source: after the definition is
    edited, a re-run of them must still read the same inputs."""
    definition = make_definition(
        stages=[{"stage": "test-fail-every", "params": {"every": 10}}],
        source_params={"count": 25, "start": 0},
    )
    run = runner.execute(claimed_run(definition))
    assert run.items_errors == 3  # inputs 0, 10, 20
    PipelineDefinition.objects.filter(pk=definition.pk).update(
        source_params={"count": 25, "start": 5}
    )
    again = jobs.rerun(run, failed_only=True)
    assert again.only_items == [0, 10, 20]
    assert again.snapshot["source_params"] == {"count": 25, "start": 0}
    assert again.definition == definition


@pytest.mark.timeout(60)
def test_rerun_of_failed_items_covers_every_failure_or_refuses() -> None:
    """Only the first MAX_RECORDED_ERRORS errors are kept on the run; item rows hold every failed
    item, but a run without item timing has none: its failures are not all known."""
    stages = [{"stage": "test-fail-every", "params": {"every": 10}}]
    timed = runner.execute(
        claimed_run(make_definition("timed", stages=stages, source_params={"count": 3000}))
    )
    assert timed.items_errors == 300
    assert len(timed.errors) < 300
    assert jobs.rerun(timed, failed_only=True).only_items == list(range(0, 3000, 10))

    untimed = runner.execute(
        claimed_run(
            make_definition(
                "untimed", stages=stages, source_params={"count": 3000}, enable_timing=False
            )
        )
    )
    assert untimed.items_errors == 300
    queued = PipelineRun.objects.count()
    with pytest.raises(ParamError, match="300 failed items but recorded only 200"):
        jobs.rerun(untimed, failed_only=True)
    assert PipelineRun.objects.count() == queued
    assert jobs.rerun(untimed).only_items is None  # the whole run can still be re-run


def _lease_ran_out(run: PipelineRun) -> None:
    PipelineRun.objects.filter(pk=run.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )


@pytest.mark.parametrize("handed_back_by", ["shutdown", "claim at shutdown"])
def test_attempts_handed_back_cleanly_do_not_count_towards_max_attempts(
    handed_back_by: str,
) -> None:
    """max_attempts counts workers that died: a rolling deploy does not use the budget up."""
    jobs.submit(make_definition(max_attempts=2))
    run = jobs.claim_next("deploying")
    assert run is not None
    if handed_back_by == "shutdown":  # SIGTERM, grace over: the runner's outcome requeues
        finish(run, Outcome(status=RunStatus.QUEUED, error_message="Requeued: shut down"))
    else:
        assert jobs.release_claim(run, "Requeued: its worker shut down as it claimed it.")
    run = jobs.claim_next("then-killed")
    assert run is not None
    _lease_ran_out(run)  # SIGKILL
    jobs.sweep_expired_leases()
    run.refresh_from_db()

    assert run.status == RunStatus.QUEUED
    assert "attempt 1/2" in run.error_message
    run = jobs.claim_next("killed-again")
    assert run is not None
    _lease_ran_out(run)
    jobs.sweep_expired_leases()
    run.refresh_from_db()
    assert run.status == RunStatus.LOST
    assert "after 2/2 attempts" in run.error_message


@pytest.mark.timeout(60)
@override_settings(PIPELINE_APP={"PROGRESS_INTERVAL": 0.1})
def test_a_requeued_run_cancelled_while_queued_keeps_no_rows_of_the_abandoned_attempt() -> None:
    definition = make_definition(
        stages=[{"stage": "test-sleep", "params": {"seconds": 0.01}}], source_params={"count": 2000}
    )
    jobs.submit(definition)
    run = jobs.claim_next("w")
    assert run is not None
    shutdown = threading.Event()
    timer = threading.Timer(0.8, shutdown.set)
    timer.start()
    run = runner.execute(run, shutdown_event=shutdown)
    timer.join()
    assert run.status == RunStatus.QUEUED

    run = jobs.cancel(run)

    assert run.status == RunStatus.CANCELLED
    assert ItemTiming.objects.filter(run=run).count() == 0 == run.items_out
    assert StageStat.objects.filter(run=run).count() == 0


@pytest.mark.parametrize("trigger", [Trigger.DASHBOARD, Trigger.CLI])
def test_a_file_parameter_must_be_one_path(trigger: str, tmp_path: Path) -> None:
    """str() of a list is not where its paths point: the roots check would pass it."""
    root = tmp_path / "root"
    root.mkdir()
    definition = make_definition("many", source="test-many-files", source_params={"paths": []})
    crafted = ["/.." * 60 + str(root) + "/x", "/etc/passwd"]
    with (
        override_settings(PIPELINE_APP={"FILE_ROOTS": [str(root)]}),
        pytest.raises(ParamError, match="must be one path"),
    ):
        jobs.submit(definition, params={"source": {"paths": crafted}}, trigger=trigger)
    assert not PipelineRun.objects.exists()


@pytest.mark.parametrize("name", ["count", "delay"])
def test_a_null_range_parameter_is_refused_at_submit(name: str) -> None:
    definition = make_definition(source_params={"count": 3})
    with pytest.raises(ParamError, match=f"{name} must be a number"):
        jobs.submit(definition, params={"source": {name: None}})
    assert not PipelineRun.objects.exists()


def test_a_claim_handed_back_while_a_cancel_is_asked_ends_cancelled() -> None:
    run = claimed_run(make_definition())
    jobs.cancel(run)  # running: only asked
    assert jobs.release_claim(run, "Requeued: its worker shut down as it claimed it.")
    run.refresh_from_db()

    assert run.status == RunStatus.CANCELLED
    assert run.finished_at is not None


def test_failed_items_of_a_run_still_going_are_not_all_known_yet() -> None:
    run = claimed_run(make_definition())
    with pytest.raises(ParamError, match="still running"):
        jobs.rerun(run, failed_only=True)
