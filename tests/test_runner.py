"""The runner end to end on a real database (run on SQLite and, with -m postgres, PostgreSQL)."""

from __future__ import annotations

import asyncio
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.backends.signals import connection_created
from django.test import override_settings
from django.utils import timezone

from pipeline_app import jobs, recorder, reporting, runner
from pipeline_app.engine import AsyncTaskPipeline
from pipeline_app.models import ItemStatus, ItemTiming, RunStatus, StageStat
from pipeline_app.outcome import Outcome, finish
from pipeline_app.retries import retrying
from tests.factories import claimed_run, make_definition
from tests.helpers import wait_until
from tests.pipelines import COLLECTED

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]


def test_successful_run_records_outputs_summary_stage_stats_and_item_timings() -> None:
    definition = make_definition(stages=["test-inc", "test-drop-odd"], source_params={"count": 40})
    run = runner.execute(claimed_run(definition))

    assert run.status == RunStatus.SUCCEEDED, run.traceback
    assert COLLECTED[run.pk] == [x + 1 for x in range(40) if (x + 1) % 2 == 0]
    assert (run.items_in, run.items_out, run.items_filtered, run.items_errors) == (40, 20, 20, 0)
    assert run.summary["total_items"] >= 20
    histogram = run.summary["latency_histogram"]
    assert sum(count for _, _, count in histogram) == run.summary["total_items"]
    assert run.p95_latency is not None and run.throughput
    assert run.started_at <= run.finished_at
    stats = list(StageStat.objects.filter(run=run).order_by("position"))
    assert [s.stage for s in stats] == ["test-inc", "test-drop-odd"]
    assert stats[1].items_filtered == 20
    timings = ItemTiming.objects.filter(run=run)
    assert timings.count() == 40
    assert timings.filter(status=ItemStatus.FILTERED).count() == 20
    first = timings.get(seq=0)
    seconds = first.stage_seconds(["test-inc", "test-drop-odd"])
    assert list(seconds) == ["test-inc", "test-drop-odd"]
    assert all(value >= 0 for values in seconds.values() for value in values)
    assert first.latency > 0


def test_skip_policy_counts_and_records_failed_items_and_succeeds() -> None:
    definition = make_definition(
        stages=[{"stage": "test-fail-every", "params": {"every": 10}}], source_params={"count": 30}
    )
    run = runner.execute(claimed_run(definition))

    assert run.status == RunStatus.SUCCEEDED
    assert run.items_errors == 3
    assert COLLECTED[run.pk] == [x for x in range(30) if x % 10]
    assert [e["seq"] for e in run.errors] == [0, 10, 20]
    assert "ValueError" in run.errors[0]["traceback"]
    failed = ItemTiming.objects.filter(run=run, status=ItemStatus.ERROR).order_by("seq")
    assert [t.seq for t in failed] == [0, 10, 20]
    assert failed[0].error_stage == "test-fail-every"


def test_fail_policy_fails_the_run_at_the_first_error_with_stage_and_item() -> None:
    definition = make_definition(
        stages=[{"stage": "test-fail-every", "params": {"every": 7}}],
        source_params={"count": 30},
        error_policy="fail",
    )
    run = runner.execute(claimed_run(definition))

    assert run.status == RunStatus.FAILED
    assert "test-fail-every" in run.error_message and "item 0" in run.error_message
    assert "ValueError" in run.traceback


def test_source_failure_fails_the_run_but_keeps_what_was_processed() -> None:
    definition = make_definition(source="test-raising", source_params={"count": 20, "fail_at": 8})
    run = runner.execute(claimed_run(definition))

    assert run.status == RunStatus.FAILED
    assert "Source failed after 8 items" in run.error_message
    assert "source broke at 8" in run.traceback
    assert COLLECTED[run.pk] == [x + 1 for x in range(8)]
    assert ItemTiming.objects.filter(run=run).count() == 8


def test_sink_failure_fails_the_run_with_the_sink_named() -> None:
    definition = make_definition(sink_params={"fail_at": 5}, source_params={"count": 50})
    run = runner.execute(claimed_run(definition))

    assert run.status == RunStatus.FAILED
    assert "Sink 'test-collect' failed: OSError: disk full" in run.error_message


def test_cancel_mid_run_stops_within_a_second_and_keeps_completed_timings() -> None:
    definition = make_definition(
        stages=[{"stage": "test-sleep", "params": {"seconds": 0.01}}], source_params={"count": 2000}
    )
    run = claimed_run(definition)
    cancel = threading.Event()
    timer = threading.Timer(0.6, cancel.set)
    timer.start()
    started = time.monotonic()
    run = runner.execute(run, cancel_event=cancel)
    elapsed_after_cancel = time.monotonic() - started - 0.6

    assert run.status == RunStatus.CANCELLED
    assert elapsed_after_cancel < 1.0
    kept = ItemTiming.objects.filter(run=run).count()
    assert 10 < kept < 2000
    assert kept == run.items_out


def test_cancel_requested_on_the_row_is_seen_by_the_runner() -> None:
    definition = make_definition(
        stages=[{"stage": "test-sleep", "params": {"seconds": 0.01}}], source_params={"count": 2000}
    )
    run = claimed_run(definition)

    def request_cancel() -> None:
        type(run).objects.filter(pk=run.pk).update(cancel_requested=True)

    timer = threading.Timer(0.5, request_cancel)
    timer.start()
    run = runner.execute(run)
    timer.join()
    assert run.status == RunStatus.CANCELLED
    assert 0 < run.items_out < 2000


@override_settings(PIPELINE_APP={"PROGRESS_INTERVAL": 30})
@pytest.mark.parametrize("cancel_requested", [False, True])
def test_a_run_its_worker_stops_is_requeued_unless_a_cancel_was_asked(
    cancel_requested: bool,
) -> None:
    definition = make_definition(
        stages=[{"stage": "test-sleep", "params": {"seconds": 0.01}}], source_params={"count": 2000}
    )
    run = claimed_run(definition)
    shutdown = threading.Event()

    def stop_the_worker() -> None:
        # the cancel is on the row, but the runner reads it only with its next progress write
        type(run).objects.filter(pk=run.pk).update(cancel_requested=cancel_requested)
        shutdown.set()

    timer = threading.Timer(0.3, stop_the_worker)
    timer.start()
    run = runner.execute(run, shutdown_event=shutdown)
    timer.join()

    assert run.status == (RunStatus.CANCELLED if cancel_requested else RunStatus.QUEUED)
    assert run.finished_at is not None if cancel_requested else run.finished_at is None


def test_timeout_fails_the_run_with_a_clear_reason() -> None:
    definition = make_definition(
        stages=[{"stage": "test-sleep", "params": {"seconds": 0.01}}],
        source_params={"count": 2000},
        timeout_seconds=0.5,
    )
    run = runner.execute(claimed_run(definition))
    assert run.status == RunStatus.FAILED
    assert run.error_message == "Timed out after 0.5 s."
    assert run.items_out > 0


@override_settings(
    PIPELINE_APP={
        "ITEM_TIMING_LIMIT": 100,
        "ITEM_TIMING_KEEP_SLOWEST": 10,
        "ITEM_TIMING_SAMPLE_EVERY": 50,
    }
)
def test_item_rows_are_capped_but_the_summary_counts_every_item() -> None:
    definition = make_definition(
        stages=[{"stage": "test-fail-every", "params": {"every": 100}}],
        source_params={"count": 1000},
    )
    run = runner.execute(claimed_run(definition))

    assert run.status == RunStatus.SUCCEEDED
    assert run.summary["total_items"] + run.summary["error_count"] >= 990
    rows = ItemTiming.objects.filter(run=run)
    errors_past_limit = 9  # 100, 200, ... 900 fail; 0 is within the first 100 rows
    assert rows.count() <= 100 + errors_past_limit + 18 + 10
    assert rows.filter(status=ItemStatus.ERROR).count() == 10


def test_rerun_of_selected_items_keeps_their_original_sequence_numbers() -> None:
    definition = make_definition(source_params={"count": 20})
    run = runner.execute(claimed_run(definition, only_items=[3, 7, 11]))
    assert COLLECTED[run.pk] == [4, 8, 12]
    assert sorted(ItemTiming.objects.filter(run=run).values_list("seq", flat=True)) == [3, 7, 11]
    assert run.items_expected == 3


def test_a_rerun_names_failed_items_by_their_input_position() -> None:
    definition = make_definition(
        stages=[{"stage": "test-fail-every", "params": {"every": 10}}], source_params={"count": 45}
    )
    run = runner.execute(claimed_run(definition, only_items=[10, 20, 30]))

    assert run.items_errors == 3
    assert sorted(error["seq"] for error in run.errors) == [10, 20, 30]
    again = jobs.rerun(run, failed_only=True)  # a re-run of the re-run's failures
    assert again.only_items == [10, 20, 30]


def test_a_rerun_failing_fast_names_the_item_by_its_input_position() -> None:
    definition = make_definition(
        stages=[{"stage": "test-fail-every", "params": {"every": 10}}],
        source_params={"count": 45},
        error_policy="fail",
    )
    run = runner.execute(claimed_run(definition, only_items=[5, 20]))

    assert run.status == RunStatus.FAILED
    assert "on item 20:" in run.error_message


def test_stale_attempt_cannot_overwrite_a_newer_one() -> None:
    definition = make_definition(source_params={"count": 10})
    run = claimed_run(definition)
    type(run).objects.filter(pk=run.pk).update(attempt=run.attempt + 1)  # another worker took it
    result = runner.execute(run)
    assert result.status == RunStatus.RUNNING  # untouched by the stale attempt
    assert result.summary is None


def test_error_text_with_awkward_characters_is_stored() -> None:
    definition = make_definition(stages=["test-awkward-error"], source_params={"count": 6})
    run = runner.execute(claimed_run(definition))
    failed = ItemTiming.objects.get(run=run, status=ItemStatus.ERROR)
    assert failed.seq == 3
    assert "tab\there\nnew line \\ backslash, NUL \\0, ünïcode ✓" in failed.error
    assert failed.error_stage == "test-awkward-error"
    assert list(failed.stage_seconds(["test-awkward-error"])) == ["test-awkward-error"]


def test_results_the_database_cannot_store_still_end_the_run_as_failed() -> None:
    definition = make_definition(sink="test-unstorable-result", source_params={"count": 5})
    run = runner.execute(claimed_run(definition))
    assert run.status == RunStatus.FAILED
    assert "could not be stored" in run.error_message
    assert "TypeError" in run.traceback
    assert run.finished_at is not None and run.lease_expires_at is None


@override_settings(PIPELINE_APP={"ITEM_TIMING_BATCH_SIZE": 5})
def test_the_recorder_writes_a_whole_run_over_one_connection() -> None:
    opened: list[str] = []

    def count(sender: object, connection: object, **kwargs: object) -> None:
        opened.append(threading.current_thread().name)

    definition = make_definition(
        stages=[{"stage": "test-sleep", "params": {"seconds": 0.005}}],
        source_params={"count": 60},
    )
    connection_created.connect(count)
    try:
        run = runner.execute(claimed_run(definition))
    finally:
        connection_created.disconnect(count)

    assert run.status == RunStatus.SUCCEEDED
    assert ItemTiming.objects.filter(run=run).count() == 60  # written in batches of ~5
    assert sum(name.startswith("pipeline_app-recorder") for name in opened) == 1


def _in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Start ``call()`` on its own thread (with its own connection, as a job's); the list gets
    its result."""
    results: list[Any] = []

    def target() -> None:
        try:
            results.append(call())
        finally:
            connections.close_all()  # this thread's

    thread = threading.Thread(target=target)
    thread.start()
    return thread, results


def _run_in_thread(run: Any) -> tuple[threading.Thread, list[Any]]:
    return _in_thread(lambda: runner.execute(run))


@contextmanager
def _sqlite_write_lock() -> Iterator[None]:
    """SQLite's write lock, held as another busy writer would hold it."""
    blocker = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


def _assert_every_row_once(run: Any, count: int) -> None:
    rows = ItemTiming.objects.filter(run=run)
    assert rows.count() == count
    assert rows.values("seq").distinct().count() == count
    assert "item_rows_lost" not in run.summary


def _timed_records(count: int) -> list[Any]:
    """``count`` items' timing records from a real engine run."""
    records: list[Any] = []

    async def run() -> None:
        pipeline: AsyncTaskPipeline[int, int] = AsyncTaskPipeline(
            enable_timing=True, on_item_timings=records.extend
        )
        pipeline.add_stage("inc", lambda x: x + 1)
        async with pipeline:
            _ = [x async for x in pipeline.run(range(count))]

    asyncio.run(run())
    return records


@pytest.fixture
def short_sqlite_busy_timeout() -> Iterator[None]:
    """New SQLite connections (the recorder's) give up on a lock after 0.1 s instead of 20 s."""
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's write lock")
    options = connections.settings[DEFAULT_DB_ALIAS]["OPTIONS"]
    saved = options.get("timeout")
    options["timeout"] = 0.1
    yield
    options["timeout"] = saved


@override_settings(PIPELINE_APP={"ITEM_TIMING_BATCH_SIZE": 20, "PROGRESS_INTERVAL": 0.1})
def test_a_locked_database_delays_item_rows_and_progress_but_loses_none(
    short_sqlite_busy_timeout: None, caplog: pytest.LogCaptureFixture
) -> None:
    definition = make_definition(
        stages=[{"stage": "test-sleep", "params": {"seconds": 0.004}}],
        source_params={"count": 400},
    )
    run = claimed_run(definition)
    thread, finished = _run_in_thread(run)
    wait_until(lambda: ItemTiming.objects.filter(run=run).exists(), 10, "first item rows")
    with _sqlite_write_lock():
        time.sleep(1.0)
    thread.join(30)

    run = finished[0]
    assert run.status == RunStatus.SUCCEEDED, run.error_message
    _assert_every_row_once(run, 400)
    assert "database is locked" in caplog.text
    assert "the database is back" in caplog.text


@pytest.mark.postgres_only
@override_settings(PIPELINE_APP={"ITEM_TIMING_BATCH_SIZE": 20, "PROGRESS_INTERVAL": 0.1})
def test_a_killed_database_connection_is_replaced_and_no_item_row_is_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    definition = make_definition(
        stages=[{"stage": "test-sleep", "params": {"seconds": 0.004}}],
        source_params={"count": 400},
    )
    run = claimed_run(definition)
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        (before_run,) = cursor.fetchone()
    thread, finished = _run_in_thread(run)
    wait_until(lambda: ItemTiming.objects.filter(run=run).exists(), 10, "first item rows")
    with connection.cursor() as cursor:  # as a server restart or an idle-connection killer would
        cursor.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND backend_start >= %s",
            [before_run],
        )
        # the recorder's connection and the runner thread's, idle until the final write
        assert cursor.fetchone() == (2,)
    thread.join(30)

    run = finished[0]
    assert run.status == RunStatus.SUCCEEDED, run.error_message
    _assert_every_row_once(run, 400)
    assert "database error" in caplog.text
    assert "the database is back" in caplog.text


def test_rows_the_database_never_takes_are_counted_once_the_retry_time_is_up(
    short_sqlite_busy_timeout: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(recorder, "CLOSE_RETRY_SECONDS", 0.5)
    records = _timed_records(30)
    run = claimed_run(make_definition(stages=["test-inc"]))
    writer = recorder.RunRecorder(run)
    with _sqlite_write_lock():
        writer.start()
        writer.record_items(records)
        started = time.monotonic()
        writer.close()
        waited = time.monotonic() - started

    assert 0.5 <= waited < 5
    assert writer.rows_lost == 30
    assert not ItemTiming.objects.filter(run=run).exists()
    assert "30 item rows were not written" in caplog.text


def test_item_rows_stop_as_soon_as_a_newer_attempt_owns_the_run() -> None:
    records = _timed_records(30)
    run = claimed_run(make_definition(stages=["test-inc"]))
    writer = recorder.RunRecorder(run)
    writer.start()
    writer.record_items(records[:15])
    wait_until(lambda: ItemTiming.objects.filter(run=run).exists(), 10, "first item rows")
    # another worker took the run over (this attempt's lease ran out, say in a long outage)
    type(run).objects.filter(pk=run.pk).update(attempt=run.attempt + 1)
    writer.record_items(records[15:])
    writer.close()

    assert ItemTiming.objects.filter(run=run).count() == 15
    assert writer.fenced_out.is_set()


@pytest.mark.timeout(60)
def test_a_run_the_sweeper_marked_lost_stops_on_its_stale_worker() -> None:
    """The sweeper leaves the attempt as it is when it marks a run lost (or requeues it): the
    status fences the old worker as a newer attempt would."""
    definition = make_definition(
        stages=[{"stage": "test-sleep", "params": {"seconds": 0.01}}],
        source_params={"count": 400},
        max_attempts=1,
    )
    run = claimed_run(definition)
    thread, _ = _run_in_thread(run)
    wait_until(
        lambda: type(run).objects.filter(pk=run.pk, items_out__gt=20).exists(), 20, "progress"
    )
    # the worker stalled long enough for its lease to run out
    type(run).objects.filter(pk=run.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert jobs.sweep_expired_leases() == [run.pk]
    swept_at = time.monotonic()
    thread.join(30)

    assert time.monotonic() - swept_at < 2.0  # stopped like a fenced attempt
    assert len(COLLECTED[run.pk]) < 400
    run.refresh_from_db()
    assert run.status == RunStatus.LOST
    assert run.lease_expires_at is None  # not renewed: the run does not look alive


@pytest.mark.timeout(60)
def test_item_rows_stop_once_the_sweeper_requeued_the_run() -> None:
    records = _timed_records(30)
    run = claimed_run(make_definition(stages=["test-inc"], max_attempts=2))
    writer = recorder.RunRecorder(run)
    writer.start()
    writer.record_items(records[:15])
    wait_until(lambda: ItemTiming.objects.filter(run=run).exists(), 10, "first item rows")
    type(run).objects.filter(pk=run.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert jobs.sweep_expired_leases() == [run.pk]  # queued again, same attempt number
    writer.record_items(records[15:])
    writer.close()

    assert ItemTiming.objects.filter(run=run).count() == 15
    assert writer.fenced_out.is_set()


def test_a_locked_database_delays_the_final_status_but_does_not_falsify_it(
    short_sqlite_busy_timeout: None, caplog: pytest.LogCaptureFixture
) -> None:
    run = claimed_run(make_definition(stages=["test-inc"]))
    error = {"seq": 3, "stage": "s", "type": "ValueError", "message": "m", "traceback": "t"}
    outcome = Outcome(summary={"errors": [error], "p50_total_latency": 0.25})
    with _sqlite_write_lock():  # as runner.execute ends, on the run's own thread
        writer, finished = _in_thread(
            lambda: retrying(lambda: finish(run, outcome), what="final status", seconds=10)
        )
        time.sleep(0.6)
    writer.join(10)

    run = finished[0]
    assert run.status == RunStatus.SUCCEEDED, run.error_message
    assert run.errors == [error] and run.p50_latency == 0.25
    assert "database is locked" in caplog.text


def test_a_recorder_that_cannot_go_on_says_so_and_stops_the_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A write the database refuses for good (here a progress snapshot JSON cannot hold)
    ends the writer thread: the run must learn it, since nothing renews its lease any more."""
    run = claimed_run(make_definition(stages=["test-inc"]))
    writer = recorder.RunRecorder(run)
    writer.start()
    writer.record_items(_timed_records(10))
    writer.publish_progress(
        {"items_in": 1, "items_out": 1, "filtered": 0, "errors": 0, "rate": math.nan}
    )

    assert writer.broken.wait(10)
    writer.record_items(_timed_records(5))  # the run goes on until its monitor notices
    writer.close()
    assert writer.failure is not None
    assert writer.rows_lost + ItemTiming.objects.filter(run=run).count() == 15
    assert "the run stops" in caplog.text
    assert not writer.fenced_out.is_set()


@override_settings(PIPELINE_APP={"LEASE_SECONDS": 1, "PROGRESS_INTERVAL": 0.1})
@pytest.mark.timeout(60)
def test_the_lease_is_renewed_while_the_input_is_being_counted() -> None:
    run = claimed_run(
        make_definition(
            source="test-slow-to-count", source_params={"count": 3, "counting_seconds": 2.5}
        )
    )
    thread, results = _run_in_thread(run)
    time.sleep(1.8)  # counting still goes on, past the lease the claim took
    swept = jobs.sweep_expired_leases()
    thread.join(30)

    assert swept == []
    assert results[0].status == RunStatus.SUCCEEDED
    assert results[0].attempt == 1


def test_a_stage_keeps_its_busy_time_when_the_run_stops_mid_batch() -> None:
    definition = make_definition(
        stages=[
            {"stage": "test-sleep", "params": {"seconds": 0.003}},
            {"stage": "test-fail-every", "params": {"every": 20}},
        ],
        source_params={"count": 200, "start": 1},
        error_policy="fail",
    )
    run = runner.execute(claimed_run(definition))

    assert run.status == RunStatus.FAILED
    sleep = StageStat.objects.get(run=run, stage="test-sleep")
    assert sleep.processed >= 20
    assert sleep.busy_ratio > 0.5  # it worked through the whole run (0.0 before)
    assert sleep.is_bottleneck


@pytest.mark.parametrize(
    "case",
    [
        {"enable_timing": False, "source_params": {"count": 20}},
        {"source_params": {"count": 0}},
        {"source": "test-raising", "source_params": {"count": 5, "fail_at": 0}},
    ],
    ids=["timing-off", "no-items", "source-failed-first"],
)
def test_a_run_without_latency_data_records_none_rather_than_zero(case: dict[str, Any]) -> None:
    run = runner.execute(claimed_run(make_definition(stages=["test-inc"], **case)))

    assert (run.p50_latency, run.p95_latency) == (None, None)
    assert run.summary["p99_total_latency"] is None
    assert "p50 -" in reporting.summary_table(run)


@override_settings(PIPELINE_APP={"PROGRESS_INTERVAL": 0.05})
def test_progress_of_a_fan_out_run_counts_inputs_not_children() -> None:
    definition = make_definition(
        stages=[
            {"stage": "test-fanout", "params": {"copies": 4}},
            {"stage": "test-sleep", "params": {"seconds": 0.005}},
        ],
        source_params={"count": 10},
    )
    snapshots: list[dict[str, Any]] = []
    run = runner.execute(claimed_run(definition), progress_hook=snapshots.append)

    assert run.status == RunStatus.SUCCEEDED
    during = [s for s in snapshots if s["stages"] and not s["final"]]
    assert during
    for snapshot in during:
        children_through = snapshot["stages"]["test-sleep"]["out"]
        assert snapshot["done"] <= snapshot["items_in"] <= 10
        assert snapshot["done"] <= children_through / 4 + 1  # 4 children make one input


@override_settings(PIPELINE_APP={"PROGRESS_INTERVAL": 0.05})
def test_live_rate_and_eta_follow_what_comes_out_not_what_was_read() -> None:
    """The source reads far ahead into the queues; 100 items/s come out (10 ms each)."""
    definition = make_definition(
        stages=[{"stage": "test-sleep", "params": {"seconds": 0.01}}], source_params={"count": 60}
    )
    snapshots: list[dict[str, Any]] = []
    runner.execute(claimed_run(definition), progress_hook=snapshots.append)

    during = [s for s in snapshots if not s["final"] and s["done"] >= 10]
    assert during
    for snapshot in during:
        assert 50 < snapshot["rate"] < 150  # items_in / elapsed said several hundred
        left = (60 - snapshot["done"]) / 100
        assert snapshot["eta_seconds"] == pytest.approx(left, rel=0.5, abs=0.05)


def test_the_rate_meter_measures_over_its_window() -> None:
    meter = runner.RateMeter(window=1.0)
    assert meter.rate(0.5, 0) == 0.0
    assert meter.rate(1.0, 100) == pytest.approx(200.0)  # 100 done in 0.5 s
    assert meter.rate(2.0, 110) == pytest.approx(10.0)  # the last second only
