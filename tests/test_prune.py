from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from pipeline_app import jobs
from pipeline_app.models import ItemTiming, PipelineRun, RunStatus, StageStat
from tests.factories import make_definition

pytestmark = pytest.mark.django_db


def old_run(status: str, days: int) -> PipelineRun:
    run = jobs.create_run(make_definition(f"d-{status}-{days}"))
    PipelineRun.objects.filter(pk=run.pk).update(
        status=status, created_at=timezone.now() - timedelta(days=days)
    )
    ItemTiming.objects.bulk_create(ItemTiming(run=run, seq=i, latency=0.001) for i in range(30))
    StageStat.objects.create(run=run, position=0, stage="test-inc")
    return run


def prune(*args: str) -> str:
    out = io.StringIO()
    call_command("prunepipelineruns", *args, stdout=out)
    return out.getvalue()


def test_prune_deletes_old_finished_runs_with_their_rows_in_batches() -> None:
    old_ok = old_run(RunStatus.SUCCEEDED, 40)
    old_failed = old_run(RunStatus.FAILED, 40)
    recent = old_run(RunStatus.SUCCEEDED, 2)
    running = old_run(RunStatus.RUNNING, 40)

    assert "Would delete 2 run(s)" in prune("--older-than", "30d", "--dry-run")
    assert PipelineRun.objects.count() == 4

    output = prune("--older-than", "30d", "--keep-failed", "--batch-size", "1")
    assert "Deleted 1 run(s) and 30 item timing(s)" in output
    remaining = set(PipelineRun.objects.values_list("pk", flat=True))
    assert remaining == {old_failed.pk, recent.pk, running.pk}
    assert not ItemTiming.objects.filter(run_id=old_ok.pk).exists()
    assert not StageStat.objects.filter(run_id=old_ok.pk).exists()

    prune("--older-than", "30d")
    assert set(PipelineRun.objects.values_list("pk", flat=True)) == {recent.pk, running.pk}


def test_prune_rejects_an_unreadable_age() -> None:
    with pytest.raises(CommandError, match="30 days"):
        prune("--older-than", "30 days")


@pytest.mark.parametrize("size", ["0", "-1", "many"])
def test_the_batch_size_must_be_a_positive_integer(size: str) -> None:
    old_run(RunStatus.SUCCEEDED, 40)
    with pytest.raises(CommandError, match=r"--batch-size: .* is not a positive integer"):
        prune("--older-than", "30d", "--batch-size", size)
    assert PipelineRun.objects.count() == 1


def test_a_long_run_that_finished_recently_is_not_old() -> None:
    long_run = old_run(RunStatus.SUCCEEDED, 40)
    PipelineRun.objects.filter(pk=long_run.pk).update(
        finished_at=timezone.now() - timedelta(days=1)
    )
    ended_long_ago = old_run(RunStatus.SUCCEEDED, 41)
    PipelineRun.objects.filter(pk=ended_long_ago.pk).update(
        finished_at=timezone.now() - timedelta(days=39)
    )

    assert "Deleted 1 run(s)" in prune("--older-than", "30d")
    assert set(PipelineRun.objects.values_list("pk", flat=True)) == {long_run.pk}
