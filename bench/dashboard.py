"""Dashboard and admin page cost against the size of the data, next to a trivial Django view.

    .venv/bin/python bench/dashboard.py            # 1,000 -> 100,000 runs, 1,000 -> 1,000,000 items
    .venv/bin/python bench/dashboard.py --quick    # 1,000 -> 10,000 runs, 1,000 -> 100,000 items

Builds a throwaway SQLite database under /tmp, measures each page with a small data set, grows
the data, and measures again. Each figure is the median server time over N requests through
Django's test client (a logged-in superuser), alternating with a trivial view that also needs
the session and the user. The growth of a page is large/small with each size's time taken
against the trivial view measured alongside it: the two phases are minutes apart, and on a
shared VM the machine's speed drifts more than that between them (the raw large/small is
printed too). Goals: growth <= 1.5x, every page <= 30x the trivial view, and the same number
of queries at both sizes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import types
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DB = Path("/tmp/pipeline-app-bench-dashboard.sqlite3")
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
os.environ["DATABASE_URL"] = f"sqlite:///{DB}"
os.environ.setdefault("DEBUG", "1")

import django  # noqa: E402

for suffix in ("", "-wal", "-shm"):
    Path(f"{DB}{suffix}").unlink(missing_ok=True)
django.setup()

from django.contrib.auth.decorators import login_required  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.urls import path, reverse  # noqa: E402
from django.utils import timezone  # noqa: E402

from pipeline_app import queries, stamps  # noqa: E402
from pipeline_app.models import (  # noqa: E402
    ItemStatus,
    ItemTiming,
    PipelineDefinition,
    PipelineRun,
    RunStatus,
    StageStat,
)

STAGES = ["quick-step", "slow-step", "quick-step#2"]
ITEM_STAMPS = stamps.pack(
    stamps.from_stage_values(
        [
            (1e-4, 5e-5, 0.0, 1e-4, 1.5e-4),
            (5e-4, 2e-2, 1e-4, 6.5e-4, 2.065e-2),
            (2e-4, 5e-5, 0.0, 2.09e-2, 2.1e-2),
        ]
    )
)
CHUNK = 20_000


@login_required
def trivial(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


def urlconf() -> str:
    import project.urls

    module = types.ModuleType("bench_dashboard_urls")
    module.urlpatterns = [path("trivial/", trivial), *project.urls.urlpatterns]  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    return module.__name__


def add_runs(definition: PipelineDefinition, count: int, start: int) -> None:
    now = timezone.now()
    statuses = [RunStatus.SUCCEEDED] * 8 + [RunStatus.FAILED, RunStatus.CANCELLED]
    snapshot = definition.snapshot()
    for offset in range(0, count, CHUNK):
        rows = []
        for i in range(offset, min(count, offset + CHUNK)):
            n = start + i
            created = now - timedelta(days=400) + timedelta(seconds=300 * n)
            rows.append(
                PipelineRun(
                    definition=definition,
                    snapshot=snapshot,
                    snapshot_hash="bench",
                    status=statuses[n % len(statuses)],
                    created_at=created,
                    started_at=created + timedelta(seconds=1),
                    finished_at=created + timedelta(seconds=5),
                    items_in=200,
                    items_out=200,
                    p50_latency=0.02 + (n % 7) * 0.001,
                    p95_latency=0.03 + (n % 11) * 0.001,
                    throughput=45.0 + n % 5,
                )
            )
        created_at: Any = PipelineRun._meta.get_field("created_at")
        created_at.auto_now_add = False  # keep the spread-out creation times given above
        try:
            PipelineRun.objects.bulk_create(rows, batch_size=2_000)
        finally:
            created_at.auto_now_add = True


def make_item_run(definition: PipelineDefinition, items: int) -> PipelineRun:
    now = timezone.now()
    run = PipelineRun.objects.create(
        definition=definition,
        snapshot=definition.snapshot(),
        snapshot_hash="bench-items",
        status=RunStatus.SUCCEEDED,
        started_at=now - timedelta(seconds=items / 1000),
        finished_at=now,
        items_in=items,
        items_out=items - items // 100,
        items_errors=items // 100,
        items_expected=items,
        p50_latency=0.021,
        p95_latency=0.035,
        throughput=1000.0,
        summary={
            "stage_order": STAGES,
            "p99_total_latency": 0.05,
            "total_items": items,
            # As the runner stores it: 30 bins over every item, from the streaming histogram.
            "latency_histogram": [
                [0.02 + i * 0.001, 0.021 + i * 0.001, items // 30] for i in range(30)
            ],
        },
        errors=[
            {
                "seq": s,
                "stage": "slow-step",
                "type": "ValueError",
                "message": "bad",
                "traceback": "Traceback ...\nValueError: bad",
            }
            for s in range(0, min(items, 20_000), 100)
        ],
    )
    StageStat.objects.bulk_create(
        StageStat(
            run=run,
            position=i,
            stage=name,
            processed=items,
            items_in=items,
            items_out=items,
            computation_avg=0.02 if i == 1 else 0.0001,
            queue_wait_avg=0.001,
            busy_ratio=0.95 if i == 1 else 0.05,
            is_bottleneck=i == 1,
        )
        for i, name in enumerate(STAGES)
    )
    for offset in range(0, items, CHUNK):
        rows = []
        for seq in range(offset, min(items, offset + CHUNK)):
            latency = 0.02 + (seq * 7919 % 1000) / 50_000
            failed = seq % 100 == 0
            rows.append(
                ItemTiming(
                    run=run,
                    seq=seq,
                    status=ItemStatus.ERROR if failed else ItemStatus.OK,
                    latency=latency,
                    computation=0.0201,
                    overhead=latency - 0.0201,
                    stamps=ITEM_STAMPS,
                    error="ValueError: bad" if failed else "",
                    error_stage="slow-step" if failed else "",
                )
            )
        ItemTiming.objects.bulk_create(rows, batch_size=5_000)
    return run


def measure(client: Client, url: str, reps: int) -> tuple[float, float, int]:
    """(median ms of the page, median ms of the trivial view, queries of the page)."""
    page_times, base_times = [], []
    queries = 0
    for rep in range(reps + 2):
        start = time.perf_counter()
        base = client.get("/trivial/")
        base_elapsed = time.perf_counter() - start
        with CaptureQueriesContext(connection) as captured:
            start = time.perf_counter()
            response = client.get(url)
            if getattr(response, "streaming", False):
                b"".join(response.streaming_content)
            elapsed = time.perf_counter() - start
        assert response.status_code == 200 and base.status_code == 200, (url, response)
        if rep >= 2:  # warm-up
            page_times.append(elapsed * 1e3)
            base_times.append(base_elapsed * 1e3)
        queries = len(captured.captured_queries)
    return statistics.median(page_times), statistics.median(base_times), queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller data set")
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args()
    small_runs, large_runs = 1_000, 10_000 if args.quick else 100_000
    small_items, large_items = 1_000, 100_000 if args.quick else 1_000_000

    call_command("migrate", verbosity=0)
    User.objects.create_superuser("bench", password="bench")
    definition, created = PipelineDefinition.objects.get_or_create(
        name="demo-bottleneck", defaults={"source": "range", "sink": "discard"}
    )
    if created:
        for position, stage in enumerate(["quick-step", "slow-step", "quick-step"]):
            definition.stages.create(position=position, stage=stage)
    client = Client()
    client.login(username="bench", password="bench")

    pages: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("run list", lambda d: reverse("pipeline_app:run-list")),
        ("run list, status=failed", lambda d: reverse("pipeline_app:run-list") + "?status=failed"),
        ("run list, older page", lambda d: d["older"]),
        ("run detail", lambda d: reverse("pipeline_app:run-detail", args=[d["run"].pk])),
        (
            "items, slowest first",
            lambda d: reverse("pipeline_app:run-items", args=[d["run"].pk]) + "?sort=slowest",
        ),
        ("run status.json", lambda d: reverse("pipeline_app:run-status", args=[d["run"].pk])),
        ("pipelines", lambda d: reverse("pipeline_app:pipeline-list")),
        ("admin run changelist", lambda d: reverse("admin:pipeline_app_pipelinerun_changelist")),
        (
            "admin changelist, status=failed",
            lambda d: (
                reverse("admin:pipeline_app_pipelinerun_changelist") + "?status__exact=failed"
            ),
        ),
    ]
    results: dict[str, list[tuple[float, float, int]]] = {name: [] for name, _ in pages}
    with override_settings(ROOT_URLCONF=urlconf(), DEBUG=False):
        for phase, (runs, items) in enumerate(
            ((small_runs, small_items), (large_runs, large_items))
        ):
            started = time.perf_counter()
            have = PipelineRun.objects.count()
            add_runs(definition, runs - have - 1, have)
            run = make_item_run(definition, items)
            print(
                f"phase {phase + 1}: {runs:,} runs, detail run with {items:,} items "
                f"(data built in {time.perf_counter() - started:.0f} s)",
                file=sys.stderr,
            )
            page = queries.run_page(queries.filtered_runs())
            data = {
                "run": run,
                "older": f"{reverse('pipeline_app:run-list')}?after={page.next_cursor}",
            }
            for name, url in pages:
                results[name].append(measure(client, url(data), args.reps))

    small_label = f"{small_runs:,} runs / {small_items:,} items"
    large_label = f"{large_runs:,} runs / {large_items:,} items"
    print(
        f"\n| page | {small_label}: ms (queries) | {large_label}: ms (queries) "
        "| large/small raw | growth (vs trivial) | xtrivial (large) | goals |"
    )
    print("|---|---|---|---|---|---|---|")
    trivial = [statistics.median([rows[phase][1] for rows in results.values()]) for phase in (0, 1)]
    for name, ((s_ms, s_base, s_q), (l_ms, l_base, l_q)) in results.items():
        vs_trivial = l_ms / l_base
        growth = vs_trivial / (s_ms / s_base)
        ok = growth <= 1.5 and vs_trivial <= 30 and s_q == l_q
        print(
            f"| {name} | {s_ms:.2f} ({s_q}) | {l_ms:.2f} ({l_q}) | {l_ms / s_ms:.2f}x "
            f"| {growth:.2f}x | {vs_trivial:.1f}x | {'ok' if ok else 'MISSED'} |"
        )
    print(
        f"| trivial view (login required) | {trivial[0]:.2f} (2) | {trivial[1]:.2f} (2) "
        f"| {trivial[1] / trivial[0]:.2f}x | | 1x | |"
    )


if __name__ == "__main__":
    main()
