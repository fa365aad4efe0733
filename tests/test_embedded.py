"""The embedded default: daphne runs submitted jobs itself and requeues them when it stops."""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from django.test import override_settings

from pipeline_app import jobs
from pipeline_app.embedded import is_embedded
from pipeline_app.models import PipelineRun, RunStatus
from tests.factories import make_definition
from tests.helpers import free_port, wait_until

REPO = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_daphne_runs_jobs_in_process_and_requeues_them_when_stopped(
    subprocess_env: dict[str, str],
) -> None:
    port = free_port()
    server = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("daphne")),
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "project.asgi:application",
        ],
        cwd=REPO,
        env={**subprocess_env, "PIPELINE_APP_TEST_CONFIG": '{"EMBEDDED_WORKER": true}'},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def answers() -> bool:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/login/", timeout=1)
            except OSError:
                return False
            return True

        wait_until(answers, 20, "daphne did not answer")  # the first request starts the service
        definition = make_definition(
            stages=[{"stage": "test-sleep", "params": {"seconds": 0.01}}],
            source_params={"count": 3000},
            sink="discard",
        )
        run = jobs.submit(definition)
        wait_until(
            lambda: PipelineRun.objects.filter(pk=run.pk, items_out__gt=10).exists(),
            20,
            "the web process did not run the job",
        )
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)
    finally:
        if server.poll() is None:
            server.kill()
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED, run.error_message
    assert "worker shut down" in run.error_message
    assert run.items_out == 0


@pytest.mark.parametrize(("setting", "embedded"), [(True, True), (False, False), ("false", False)])
def test_only_true_turns_the_embedded_worker_on(setting: object, embedded: bool) -> None:
    # "false" is E005 for the system checks, which daphne does not run
    with override_settings(PIPELINE_APP={"EMBEDDED_WORKER": setting}):
        assert is_embedded() is embedded
