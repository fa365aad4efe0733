"""Jobs through real workers on PostgreSQL and Redis, in one invocation.

    python bench/jobs.py [--quick]

1. submit-to-start latency with an idle worker (goal p50 <= 50 ms), measured from the run's
   ``created_at`` to its ``started_at``;
2. small-job throughput with 1 and with 2 ``pipelineworker`` processes (runs/s and the ratio);
3. the live-progress message rate seen by a watcher of a ~100,000 items/s run (bounded ~4/s).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
DATABASE = "pipeline_bench_jobs"


def prepare_database() -> str:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DATABASE}")
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{DATABASE}"


def setup_django(database_url: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DEBUG": "1",
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return env


def definition(name: str, count: int, timing: bool) -> Any:
    from pipeline_app.models import PipelineDefinition, PipelineStageConfig

    found, created = PipelineDefinition.objects.get_or_create(
        name=name,
        defaults={
            "source": "range",
            "source_params": {"count": count},
            "sink": "discard",
            "enable_timing": timing,
        },
    )
    if created:
        PipelineStageConfig.objects.create(definition=found, position=0, stage="quick-step")
    return found


def start_workers(env: dict[str, str], count: int) -> list[subprocess.Popen[bytes]]:
    workers = [
        subprocess.Popen(
            [sys.executable, "manage.py", "pipelineworker", "--concurrency", "2"],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]
    time.sleep(3)
    return workers


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    for worker in workers:
        worker.wait(timeout=30)


def wait_finished(run_ids: list[int], timeout: float = 300) -> None:
    from pipeline_app.models import PipelineRun

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = PipelineRun.objects.filter(pk__in=run_ids, finished_at=None).count()
        if not pending:
            return
        time.sleep(0.02)
    raise SystemExit(f"runs did not finish within {timeout} s")


def submit_to_start(samples: int) -> list[float]:
    from pipeline_app import jobs
    from pipeline_app.models import PipelineRun

    tiny = definition("bench-tiny", 10, timing=False)
    latencies = []
    for _ in range(samples):
        run = jobs.submit(tiny)
        wait_finished([run.pk])
        run = PipelineRun.objects.get(pk=run.pk)
        latencies.append((run.started_at - run.created_at).total_seconds())
        time.sleep(0.05)
    return latencies


def throughput(count: int) -> float:
    from pipeline_app import jobs

    tiny = definition("bench-tiny", 10, timing=False)
    started = time.perf_counter()
    ids = [jobs.submit(tiny).pk for _ in range(count)]
    wait_finished(ids)
    return count / (time.perf_counter() - started)


def progress_rate(items: int) -> tuple[float, float, int]:
    """Messages per second a watcher of one fast run receives, and that run's items/s."""
    from channels.layers import get_channel_layer

    from pipeline_app import hints, jobs
    from pipeline_app.models import PipelineRun
    from pipeline_app.progress import run_group

    fast = definition("bench-fast", items, timing=False)

    async def watch() -> tuple[int, int]:
        layer = get_channel_layer()
        channel = await layer.new_channel()
        run = await asyncio.to_thread(jobs.create_run, fast)
        await layer.group_add(run_group(run.pk), channel)
        await asyncio.to_thread(hints.notify_workers, {"type": "job.wake", "run_id": run.pk})
        received = 0
        while True:
            message = await asyncio.wait_for(layer.receive(channel), 120)
            received += 1
            if message["run"]["is_finished"]:
                return run.pk, received

    run_id, received = asyncio.run(watch())
    run = PipelineRun.objects.get(pk=run_id)
    duration = (run.finished_at - run.started_at).total_seconds()
    return received / duration, run.items_in / duration, received


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    samples, jobs_count, items = (10, 40, 300_000) if args.quick else (30, 200, 1_000_000)
    env = setup_django(prepare_database())

    workers = start_workers(env, 1)
    try:
        latencies = submit_to_start(samples)
        one = throughput(jobs_count)
        rate, items_per_second, received = progress_rate(items)
    finally:
        stop_workers(workers)
    workers = start_workers(env, 2)
    try:
        two = throughput(jobs_count)
    finally:
        stop_workers(workers)

    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p95 = latencies[int(len(latencies) * 0.95) - 1] * 1000
    print(f"{'measure':<44} {'value':>14} {'goal':>14}")
    print("-" * 74)
    print(f"{'submit-to-start p50 (idle worker)':<44} {p50:>11.1f} ms {'<= 50 ms':>14}")
    print(f"{'submit-to-start p95':<44} {p95:>11.1f} ms {'':>14}")
    print(f"{f'throughput, 1 worker ({jobs_count} small runs)':<44} {one:>9.1f} runs/s")
    print(f"{f'throughput, 2 workers ({jobs_count} small runs)':<44} {two:>9.1f} runs/s")
    print(f"{'2 workers / 1 worker':<44} {two / one:>13.2f}x")
    print(f"{'progress messages to a watcher':<44} {rate:>10.1f} msg/s {'~4/s bounded':>14}")
    print(
        f"{'  (run speed, messages received)':<44} {items_per_second:>9,.0f} it/s "
        f"{received:>6} msgs"
    )


if __name__ == "__main__":
    main()
