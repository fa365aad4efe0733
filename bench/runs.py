"""Managed runs versus the bare engine, on SQLite and PostgreSQL, in one invocation.

    python bench/runs.py [--items 100000] [--repeat 3] [--memory-items 1000000] [--quick]

For each database (each in its own subprocess, since Django settings are per process) the same
pipeline (range -> 3 x ``x + 1`` -> discard, timing on) runs alternately bare (the engine alone)
and managed (``runner.execute``: run record, progress, every item timing persisted). Prints
medians and the ratio managed / bare, the item rows persisted per second, and the peak RSS of a
managed run of ``--memory-items`` items next to one of ``--items`` (flat memory: ratio ~1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
STAGES = 3


def child_setup(database_url: str, *, keep_every_row: bool) -> None:
    sys.path.insert(0, str(REPO))
    config = {"ITEM_TIMING_LIMIT": 10_000_000} if keep_every_row else {}
    os.environ.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        DATABASE_URL=database_url,
        PIPELINE_APP_TEST_CONFIG=json.dumps(config),
    )
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def add_one(x: int) -> int:
    return x + 1


async def bare_run(items: int) -> float:
    from pipeline_app.engine import AsyncTaskPipeline

    async def source() -> Any:
        for i in range(items):
            yield i

    pipeline: AsyncTaskPipeline[Any, Any] = AsyncTaskPipeline(enable_timing=True)
    for index in range(STAGES):
        pipeline.add_stage(f"inc{index}", add_one)
    started = time.perf_counter()
    count = 0
    async with pipeline:
        async for _ in pipeline.run(source()):
            count += 1
    assert count == items
    return time.perf_counter() - started


INSERT_SECONDS = [0.0]
TAIL_SECONDS = [0.0]


def time_inserts() -> None:
    """Count the time the recorder spends inside its bulk inserts (the writer's own speed), and
    the time the run waits for the writer after the pipeline ended (its backlog)."""
    from pipeline_app import recorder

    insert = recorder.insert_item_rows
    close = recorder.RunRecorder.close

    def timed(run_id: int, rows: Any, **kwargs: Any) -> bool:
        started = time.perf_counter()
        written = insert(run_id, rows, **kwargs)
        INSERT_SECONDS[0] += time.perf_counter() - started
        return written

    def timed_close(self: Any) -> None:
        started = time.perf_counter()
        close(self)
        TAIL_SECONDS[0] += time.perf_counter() - started

    recorder.insert_item_rows = timed
    recorder.RunRecorder.close = timed_close  # type: ignore[method-assign]


def managed_run(items: int) -> tuple[float, int]:
    from pipeline_app import jobs, registry, runner
    from pipeline_app.models import ItemTiming, PipelineDefinition, PipelineStageConfig

    if "bench-inc" not in registry.registry.stages:
        registry.stage("bench-inc")(add_one)
    definition, created = PipelineDefinition.objects.get_or_create(
        name="bench-runs", defaults={"source": "range", "sink": "discard"}
    )
    if created:
        for position in range(STAGES):
            PipelineStageConfig.objects.create(
                definition=definition, position=position, stage="bench-inc"
            )
    run = jobs.create_run(definition, params={"count": items})
    assert jobs.claim_run(run, "bench")
    started = time.perf_counter()
    run = runner.execute(run)
    elapsed = time.perf_counter() - started
    assert run.status == "succeeded", run.error_message
    rows = ItemTiming.objects.filter(run=run).count()
    ItemTiming.objects.filter(run=run).delete()
    return elapsed, rows


def child_main(args: argparse.Namespace) -> None:
    child_setup(args.database_url, keep_every_row=args.memory is None)
    if args.memory is not None:
        managed_run(args.memory)
        print(json.dumps({"maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
        return
    bare, managed, rates, writer_rates, tails = [], [], [], [], []
    time_inserts()
    asyncio.run(bare_run(min(args.items, 10_000)))  # warm up
    for _ in range(args.repeat):
        bare.append(asyncio.run(bare_run(args.items)))
        INSERT_SECONDS[0] = TAIL_SECONDS[0] = 0.0
        elapsed, rows = managed_run(args.items)
        tails.append(TAIL_SECONDS[0])
        writer_rates.append(rows / INSERT_SECONDS[0])
        assert rows == args.items, f"persisted {rows} of {args.items} item rows"
        managed.append(elapsed)
        rates.append(rows / elapsed)
    print(
        json.dumps(
            {
                "bare": bare,
                "managed": managed,
                "rates": rates,
                "writer": writer_rates,
                "tails": tails,
            }
        )
    )


def database_urls() -> dict[str, str]:
    """Fresh databases for this invocation (a schema from an older checkout never lingers)."""
    sqlite_path = Path("/tmp/pipeline-bench-runs.sqlite3")
    for leftover in sqlite_path.parent.glob(sqlite_path.name + "*"):
        leftover.unlink()
    urls = {"sqlite": f"sqlite:///{sqlite_path}"}
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS pipeline_bench WITH (FORCE)")
            conn.execute("CREATE DATABASE pipeline_bench")
        urls["postgresql"] = PG_ADMIN_URL.rsplit("/", 1)[0] + "/pipeline_bench"
    except Exception as exc:
        print(f"PostgreSQL unavailable ({exc}); SQLite only", file=sys.stderr)
    return urls


def run_child(url: str, *extra: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, __file__, "--child", "--database-url", url, *extra],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    if result.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{result.stderr[-3000:]}")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


LEGEND = """rows/s run: item rows persisted per second of the whole managed run;
rows/s insert: rows per second inside the recorder's bulk inserts (the writer's own speed);
writer tail: how long the finished pipeline waited for the writer's backlog."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--memory-items", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="20,000 items, 2 repeats, 200k mem")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    parser.add_argument("--memory", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.items, args.repeat, args.memory_items = 20_000, 2, 200_000
    if args.child:
        child_main(args)
        return
    print(f"{args.items:,} items, {STAGES} stages of x + 1, timing on; medians of {args.repeat}")
    header = (
        f"{'database':<11} {'bare s':>8} {'managed s':>10} {'managed/bare':>13} "
        f"{'rows/s run':>11} {'rows/s insert':>14} {'writer tail s':>14} {'goal':>22}"
    )
    print(header)
    print("-" * len(header))
    urls = database_urls()
    for name, url in urls.items():
        data = run_child(url, "--items", str(args.items), "--repeat", str(args.repeat))
        bare = statistics.median(data["bare"])
        managed = statistics.median(data["managed"])
        rate = statistics.median(data["rates"])
        writer = statistics.median(data["writer"])
        tail = statistics.median(data["tails"])
        print(
            f"{name:<11} {bare:>8.3f} {managed:>10.3f} {managed / bare:>12.2f}x "
            f"{rate:>11,.0f} {writer:>14,.0f} {tail:>14.3f} {'<= 1.5x, >= 50,000/s':>22}"
        )
    print(LEGEND)
    small = run_child(urls["sqlite"], "--memory", str(args.items))["maxrss_kib"]
    large = run_child(urls["sqlite"], "--memory", str(args.memory_items))["maxrss_kib"]
    print(
        f"\npeak RSS, managed run on SQLite (default retention): {args.items:,} items "
        f"{small / 1024:.0f} MiB, {args.memory_items:,} items {large / 1024:.0f} MiB "
        f"(ratio {large / small:.2f}, flat is ~1)"
    )


if __name__ == "__main__":
    main()
