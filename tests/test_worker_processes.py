"""Several `pipelineworker` processes on real PostgreSQL and Redis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from pipeline_app import jobs
from pipeline_app.models import PipelineRun, RunStatus
from tests.factories import make_definition
from tests.helpers import wait_until

REPO = Path(__file__).resolve().parent.parent
LEASE = 2.0
POLL = 0.5
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,
    pytest.mark.postgres_only,
    pytest.mark.slow,
]


@pytest.fixture
def cluster(
    subprocess_env: dict[str, str], redis_url: str
) -> Iterator[Callable[[int], list[subprocess.Popen[str]]]]:
    prefix = f"pipeline-test-{uuid.uuid4().hex[:8]}"
    env = {
        **subprocess_env,
        "REDIS_URL": redis_url,
        "CHANNELS_PREFIX": prefix,
        "PIPELINE_APP_TEST_CONFIG": json.dumps(
            {"LEASE_SECONDS": LEASE, "POLL_INTERVAL": POLL, "SHUTDOWN_GRACE_SECONDS": 5}
        ),
    }
    layers = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [redis_url], "prefix": prefix},
        }
    }
    processes: list[subprocess.Popen[str]] = []

    def start(count: int) -> list[subprocess.Popen[str]]:
        for index in range(count):
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "manage.py",
                        "pipelineworker",
                        "--concurrency",
                        "2",
                        "--worker-id",
                        f"test-worker-{index}-{os.getpid()}",
                    ],
                    cwd=REPO,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
        time.sleep(2.5)  # Django start-up; runs submitted earlier are found by the first poll
        return processes

    with override_settings(CHANNEL_LAYERS=layers):
        yield start
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def slow_definition(name: str = "slow", **fields: Any) -> Any:
    return make_definition(
        name,
        stages=[{"stage": "test-sleep", "params": {"seconds": 0.01}}],
        source_params={"count": 3000},
        sink="discard",
        **fields,
    )


def test_fifty_runs_on_two_workers_each_execute_exactly_once(
    cluster: Callable[[int], Any], tmp_path: Path
) -> None:
    log = tmp_path / "executions.log"
    definition = make_definition(
        source_params={"count": 200}, sink="test-append-log", sink_params={"path": str(log)}
    )
    workers = cluster(2)
    runs = [jobs.submit(definition) for _ in range(50)]
    finished = {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.LOST}
    wait_until(
        lambda: PipelineRun.objects.filter(status__in=finished).count() == 50,
        90,
        "50 runs finished",
    )
    assert set(PipelineRun.objects.values_list("status", flat=True)) == {RunStatus.SUCCEEDED}
    assert set(PipelineRun.objects.values_list("attempt", flat=True)) == {1}
    executions = Counter(line.split()[0] for line in log.read_text().splitlines())
    assert executions == Counter({str(run.pk): 1 for run in runs})
    by_worker = Counter(PipelineRun.objects.values_list("worker_id", flat=True))
    assert len(by_worker) == 2, f"one worker did all the work: {by_worker}"
    assert all(w.poll() is None for w in workers)


def test_killed_worker_run_is_lost_within_the_lease_while_others_go_on(
    cluster: Callable[[int], Any],
) -> None:
    workers = cluster(2)
    victim_run = jobs.submit(slow_definition())
    running = wait_until(
        lambda: PipelineRun.objects.filter(pk=victim_run.pk, status=RunStatus.RUNNING).first(),
        15,
        "slow run claimed",
    )
    victim = next(
        w for w in workers if running.worker_id.startswith(f"test-worker-{workers.index(w)}-")
    )
    victim.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    quick_definition = make_definition("quick", source_params={"count": 50}, sink="discard")
    quick = [jobs.submit(quick_definition) for _ in range(3)]
    lost = wait_until(
        lambda: PipelineRun.objects.filter(pk=victim_run.pk, status=RunStatus.LOST).first(),
        LEASE + POLL + 5,
        "killed worker's run marked lost",
    )
    assert time.monotonic() - killed_at < LEASE + POLL + 3
    assert "stopped renewing its lease" in lost.error_message
    wait_until(
        lambda: all(
            r.status == RunStatus.SUCCEEDED
            for r in PipelineRun.objects.filter(pk__in=[q.pk for q in quick])
        ),
        30,
        "other runs completed",
    )


def test_killed_worker_run_is_requeued_and_completes_when_attempts_remain(
    cluster: Callable[[int], Any],
) -> None:
    workers = cluster(2)
    definition = make_definition(
        "retry",
        stages=[{"stage": "test-sleep", "params": {"seconds": 0.01}}],
        source_params={"count": 300},
        sink="discard",
        max_attempts=2,
    )
    run = jobs.submit(definition)
    running = wait_until(
        lambda: PipelineRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING).first(),
        15,
        "claimed",
    )
    index = int(running.worker_id.split("-")[2])
    workers[index].send_signal(signal.SIGKILL)
    done = wait_until(
        lambda: PipelineRun.objects.filter(pk=run.pk, status=RunStatus.SUCCEEDED).first(),
        30,
        "requeued run completed on the surviving worker",
    )
    assert done.attempt == 2
    assert done.items_out == 300


def test_run_starts_within_the_poll_interval_when_its_wake_up_is_lost(
    cluster: Callable[[int], Any],
) -> None:
    cluster(1)
    run = jobs.create_run(make_definition(source_params={"count": 10}, sink="discard"))
    started = wait_until(
        lambda: PipelineRun.objects.filter(pk=run.pk).exclude(started_at=None).first(),
        10,
        "run started without a hint",
    )
    assert (started.started_at - started.created_at).total_seconds() < POLL + 1.0


def test_cancel_of_a_running_run_ends_it_within_a_second_keeping_timings(
    cluster: Callable[[int], Any],
) -> None:
    cluster(1)
    run = jobs.submit(slow_definition())
    wait_until(
        lambda: PipelineRun.objects.filter(
            pk=run.pk, status=RunStatus.RUNNING, items_out__gt=20
        ).exists(),
        15,
        "running with progress",
    )
    started = time.monotonic()
    jobs.cancel(run)
    cancelled = wait_until(
        lambda: PipelineRun.objects.filter(pk=run.pk, status=RunStatus.CANCELLED).first(),
        5,
        "cancelled",
    )
    assert time.monotonic() - started < 1.0
    assert 0 < cancelled.items_out < 3000
    assert cancelled.item_timings.count() == cancelled.items_out


def test_sigterm_lets_running_jobs_finish_and_leaves_nothing_running(
    cluster: Callable[[int], Any],
) -> None:
    (worker,) = cluster(1)
    run = jobs.submit(
        make_definition(
            "short",
            stages=[{"stage": "test-sleep", "params": {"seconds": 0.01}}],
            source_params={"count": 100},
            sink="discard",
        )
    )
    wait_until(
        lambda: PipelineRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING).exists(),
        15,
        "claimed",
    )
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=15) == 0
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED  # finished within the grace period


def test_plain_runworker_entry_point_executes_submitted_runs(
    subprocess_env: dict[str, str], redis_url: str
) -> None:
    prefix = f"pipeline-test-{uuid.uuid4().hex[:8]}"
    env = {
        **subprocess_env,
        "REDIS_URL": redis_url,
        "CHANNELS_PREFIX": prefix,
        "PIPELINE_APP_TEST_CONFIG": json.dumps({"POLL_INTERVAL": POLL}),
    }
    layers = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [redis_url], "prefix": prefix},
        }
    }
    process = subprocess.Popen(
        [sys.executable, "manage.py", "runworker", "pipeline-jobs"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        time.sleep(2.5)
        with override_settings(CHANNEL_LAYERS=layers):
            run = jobs.submit(make_definition(source_params={"count": 20}, sink="discard"))
        done = wait_until(
            lambda: PipelineRun.objects.filter(pk=run.pk, status=RunStatus.SUCCEEDED).first(),
            20,
            "run executed by `runworker pipeline-jobs`",
        )
        assert done.items_out == 20
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_second_signal_requeues_running_jobs_at_once(cluster: Callable[[int], Any]) -> None:
    (worker,) = cluster(1)
    run = jobs.submit(slow_definition("long"))
    wait_until(
        lambda: PipelineRun.objects.filter(
            pk=run.pk, status=RunStatus.RUNNING, items_out__gt=0
        ).exists(),
        15,
        "running",
    )
    worker.send_signal(signal.SIGTERM)  # grace period is 5 s: the 30 s run cannot finish in it
    time.sleep(0.5)
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=10) == 0
    assert time.monotonic() - started < 3
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED
    assert "worker shut down" in run.error_message
