from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models.signals import post_save

from pipeline_app import jobs
from pipeline_app.models import ItemTiming, PipelineRun, RunStatus, Trigger
from tests.factories import make_definition

REPO = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("synced_pipelines")]


def run_command(*args: str) -> tuple[str, CommandError | None]:
    out = io.StringIO()
    try:
        call_command("runpipeline", *args, stdout=out, stderr=io.StringIO())
    except CommandError as exc:
        return out.getvalue(), exc
    return out.getvalue(), None


def test_json_output_has_the_run_record_and_summary() -> None:
    out, error = run_command("test-basic", "--param", "count=30", "--json")
    assert error is None
    data = json.loads(out)
    assert data["status"] == "succeeded"
    assert (data["items_in"], data["items_out"], data["filtered_count"]) == (30, 15, 15)
    assert data["error_count"] == 0
    assert data["duration"] > 0
    assert {"total_items", "p95_total_latency", "stage_statistics"} <= set(data["summary"])
    run = PipelineRun.objects.get(pk=data["run_id"])
    assert run.trigger == Trigger.CLI
    assert ItemTiming.objects.filter(run=run).count() == 30


def test_summary_table_names_stages_and_the_bottleneck() -> None:
    out, error = run_command("test-slow", "--param", "count=40")
    assert error is None
    assert "test-sleep" in out and "<- bottleneck" in out
    assert "p95" in out


def test_no_timing_and_output_file(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    out, error = run_command("test-basic", "--no-timing", "--output", str(target), "--json")
    assert error is None
    run = PipelineRun.objects.get(pk=json.loads(out)["run_id"])
    assert run.snapshot["enable_timing"] is False
    assert ItemTiming.objects.filter(run=run).count() == 0
    assert [json.loads(line) for line in target.read_text().splitlines()] == [
        x + 1 for x in range(50) if (x + 1) % 2 == 0
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("no-such",), "Unknown pipeline 'no-such'"),
        (("test-basic", "--param", "count=lots"), "'count' must be int"),
        (("test-basic", "--param", "colour=red"), "unknown parameter 'colour'"),
        (("test-basic", "--param", "oops"), "key=value"),
        (("test-basic", "--param", "typo.count=3"), "use KEY=VALUE for a source parameter"),
        (("test-basic", "--param", "sink.=3"), "use KEY=VALUE for a source parameter"),
        (("test-basic", "--param", "count=-5"), "source 'range': count must be >= 0"),
        ((), "Give a pipeline name"),
    ],
)
def test_bad_usage_is_exit_code_2_with_a_one_line_message(
    args: tuple[str, ...], message: str
) -> None:
    _, error = run_command(*args)
    assert error is not None and error.returncode == 2
    assert message in str(error)
    assert PipelineRun.objects.count() == 0


def test_sink_parameters_take_the_sink_prefix(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    _, error = run_command(
        "test-basic", "--output", "ignored.jsonl", "--param", f"sink.path={target}", "--quiet"
    )
    assert error is None
    assert PipelineRun.objects.get().params["sink"] == {"path": str(target)}
    assert target.exists()


def test_json_parameters_are_decoded_from_the_command_line() -> None:
    make_definition("json-params", source="test-json-params", source_params={"label": "x"})
    _, error = run_command(
        "json-params", "--param", 'label="hello"', "--param", 'tags=["a", "b"]', "--quiet"
    )
    assert error is None
    run = PipelineRun.objects.get()
    assert run.status == RunStatus.SUCCEEDED
    assert run.params["source"] == {"label": "hello", "tags": ["a", "b"]}
    _, error = run_command("json-params", "--param", "label=hello")
    assert error is not None and error.returncode == 2
    assert "'label' must be json, got 'hello'" in str(error)


def test_failed_run_is_exit_code_1() -> None:
    _, error = run_command("test-errors", "--quiet")  # skip policy: still succeeds
    assert error is None
    from pipeline_app.models import PipelineDefinition

    PipelineDefinition.objects.filter(name="test-errors").update(error_policy="fail")
    _, error = run_command("test-errors", "--quiet")
    assert error is not None and error.returncode == 1


def test_list_shows_pipelines_with_their_stages() -> None:
    out, _ = run_command("--list")
    assert "test-basic: range -> test-inc -> test-drop-odd -> test-collect" in out


def manage(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "manage.py", "runpipeline", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_subprocess_exit_codes(subprocess_env: dict[str, str]) -> None:
    ok = manage(subprocess_env, "test-basic", "--json")
    out, err = ok.communicate(timeout=60)
    assert ok.returncode == 0, err
    assert json.loads(out)["status"] == "succeeded"
    bad = manage(subprocess_env, "test-basic", "--param", "count=x")
    out, err = bad.communicate(timeout=60)
    assert bad.returncode == 2
    assert "Traceback" not in err and "'count' must be int" in err


def _slow_run_under_way(subprocess_env: dict[str, str]) -> subprocess.Popen[str]:
    """``runpipeline`` of a slow pipeline in a subprocess, once its first outputs are out."""
    process = manage(subprocess_env, "test-slow", "--param", "count=5000", "--json")
    deadline = time.monotonic() + 30
    while not PipelineRun.objects.filter(status=RunStatus.RUNNING, items_out__gt=0).exists():
        assert time.monotonic() < deadline, process.stderr.read() if process.stderr else ""
        time.sleep(0.1)
    return process


def test_ctrl_c_cancels_cleanly_with_exit_130_and_keeps_partial_results(
    subprocess_env: dict[str, str],
) -> None:
    process = _slow_run_under_way(subprocess_env)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    run = PipelineRun.objects.get()
    assert run.status == RunStatus.CANCELLED
    assert 0 < run.items_out < 5000
    assert json.loads(out)["status"] == "cancelled"
    assert ItemTiming.objects.filter(run=run).count() == run.items_out


def test_enqueue_queues_a_run_for_the_workers_and_follow_reports_it() -> None:
    out, error = run_command("test-basic", "--enqueue")
    assert error is None
    run = PipelineRun.objects.get(pk=int(out.strip()))
    assert run.status == RunStatus.QUEUED
    assert run.trigger == Trigger.CLI

    from pipeline_app import jobs, runner

    runner.execute(jobs.claim_next("elsewhere"))  # type: ignore[arg-type]
    out, error = run_command("--follow", str(run.pk), "--json")
    assert error is None
    assert json.loads(out)["status"] == "succeeded"
    _, error = run_command("--follow", "999999")
    assert error is not None
    assert error.returncode == 2


def test_progress_bar_is_drawn_on_a_terminal(subprocess_env: dict[str, str]) -> None:
    import os
    import pty

    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "manage.py", "runpipeline", "test-slow", "--param", "count=150"],
        cwd=REPO,
        env=subprocess_env,
        stdout=subprocess.PIPE,
        stderr=follower,
        text=True,
    )
    os.close(follower)
    out, _ = process.communicate(timeout=60)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    drawn = b"".join(chunks).decode(errors="replace")
    assert process.returncode == 0
    assert "items/s" in drawn
    assert "/150" in drawn
    assert "queues test-inc:" in drawn
    assert "<- bottleneck" in out


@pytest.mark.timeout(90)
def test_a_second_ctrl_c_forces_the_end_and_still_records_the_run_cancelled(
    subprocess_env: dict[str, str],
) -> None:
    process = _slow_run_under_way(subprocess_env)
    process.send_signal(signal.SIGINT)
    time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    run = PipelineRun.objects.get()
    assert run.status == RunStatus.CANCELLED
    assert 0 < run.items_out < 5000
    assert json.loads(out)["status"] == "cancelled"


def test_no_worker_can_see_the_run_before_the_command_claimed_it() -> None:
    """A worker polling the queue would take a run the command created queued."""
    seen_queued: list[bool] = []

    def look_from_another_connection(instance: PipelineRun, created: bool, **_: Any) -> None:
        if not created:
            return

        def look() -> None:
            try:
                queued = PipelineRun.objects.filter(pk=instance.pk, status=RunStatus.QUEUED)
                seen_queued.append(queued.exists())
            finally:
                connection.close()

        worker = threading.Thread(target=look)
        worker.start()
        worker.join()

    post_save.connect(look_from_another_connection, sender=PipelineRun)
    try:
        _, error = run_command("test-basic", "--param", "count=3")
    finally:
        post_save.disconnect(look_from_another_connection, sender=PipelineRun)

    assert error is None
    assert seen_queued == [False]


def test_following_a_run_cancelled_elsewhere_exits_1_not_130() -> None:
    run = jobs.submit(make_definition("followed"))
    jobs.cancel(run)  # from the dashboard, by someone else: no Ctrl-C here
    _, error = run_command("--follow", str(run.pk), "--quiet")

    assert error is not None and error.returncode == 1
