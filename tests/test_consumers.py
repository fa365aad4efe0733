"""Job consumer, job service and live-progress WebSockets, in one process (in-memory layer)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import ApplicationCommunicator, WebsocketCommunicator
from django.contrib.auth.models import Permission
from django.test import Client, override_settings

from pipeline_app import jobs, worker
from pipeline_app.consumers import JobConsumer
from pipeline_app.models import PipelineRun, RunStatus
from tests.factories import claimed_run, make_definition

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def service() -> AsyncIterator[worker.JobService]:
    """The process's job service on this test's loop, stopped and forgotten afterwards."""
    worker._service = None
    svc = worker.get_service()
    yield svc
    await svc.shutdown(grace=5)
    worker._service = None


def session_cookie(user: Any) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


@pytest.fixture
def viewer_cookie(django_user_model: Any) -> str:
    user = django_user_model.objects.create_user("viewer", password="x")
    user.user_permissions.add(Permission.objects.get(codename="view_pipelinerun"))
    return session_cookie(user)


def communicator(path: str, cookie: str | None = None, origin: str = "http://127.0.0.1") -> Any:
    from project.asgi import application

    headers = [(b"origin", origin.encode()), (b"host", b"127.0.0.1")]
    if cookie:
        headers.append((b"cookie", f"sessionid={cookie}".encode()))
    return WebsocketCommunicator(application, path, headers=headers)


async def wait_for_status(run_id: int, statuses: set[str], within: float = 20) -> PipelineRun:
    async def poll() -> PipelineRun:
        while True:
            run = await PipelineRun.objects.aget(pk=run_id)
            if run.status in statuses:
                return run
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(poll(), within)


async def test_anonymous_and_unauthorised_users_are_refused(django_user_model: Any) -> None:
    definition = await sync_to_async(make_definition)()
    run = await sync_to_async(jobs.create_run)(definition)
    anonymous = communicator(f"/ws/pipeline/runs/{run.pk}/")
    connected, _ = await anonymous.connect()
    assert not connected
    plain = await django_user_model.objects.acreate(username="plain")
    cookie = await sync_to_async(session_cookie)(plain)
    for path in (f"/ws/pipeline/runs/{run.pk}/", "/ws/pipeline/runs/"):
        connected, _ = await communicator(path, cookie).connect()
        assert not connected


async def test_cross_origin_handshake_is_refused(viewer_cookie: str) -> None:
    ws = communicator("/ws/pipeline/runs/", viewer_cookie, origin="http://evil.example")
    connected, _ = await ws.connect()
    assert not connected


async def test_watcher_gets_state_on_connect_progress_and_the_final_state(
    viewer_cookie: str, service: worker.JobService
) -> None:
    definition = await sync_to_async(make_definition)(
        stages=[{"stage": "test-sleep", "params": {"seconds": 0.005}}],
        source_params={"count": 300},
    )
    run = await sync_to_async(jobs.create_run)(definition)
    ws = communicator(f"/ws/pipeline/runs/{run.pk}/", viewer_cookie)
    connected, _ = await ws.connect()
    assert connected
    first = await ws.receive_json_from(timeout=5)
    assert first["seq"] == 0
    assert first["run"]["status"] == "queued"

    await service.start()
    messages = []
    while True:
        message = await ws.receive_json_from(timeout=20)
        messages.append(message)
        if message["run"]["is_finished"]:
            break
    await ws.disconnect()

    progress = [m for m in messages if m["run"]["status"] == "running"]
    assert progress, "no progress snapshot while running"
    assert any(0 < m["run"]["items_in"] < 300 for m in progress)
    seqs = [m["seq"] for m in messages]
    assert seqs == sorted(seqs)
    final = messages[-1]["run"]
    assert final["status"] == "succeeded"
    assert final["items_out"] == 300
    duration = 300 * 0.005
    assert len(progress) <= duration * 4 + 4  # throttled to ~4 snapshots a second


async def test_job_consumer_starts_the_service_and_runs_queued_work() -> None:
    worker._service = None
    definition = await sync_to_async(make_definition)(source_params={"count": 10})
    run = await sync_to_async(jobs.create_run)(definition)  # no hint sent
    app = ApplicationCommunicator(
        JobConsumer.as_asgi(), {"type": "channel", "channel": "pipeline-jobs"}
    )
    await app.send_input({"type": "job.wake"})
    try:
        finished = await wait_for_status(run.pk, {RunStatus.SUCCEEDED, RunStatus.FAILED})
        assert finished.status == RunStatus.SUCCEEDED
        assert finished.items_out == 10
    finally:
        await worker.get_service().shutdown(grace=5)
        worker._service = None
        app.stop()


async def start_long_run(service: worker.JobService) -> PipelineRun:
    """A 5,000-item run of 10 ms items, submitted and running on ``service``."""
    definition = await sync_to_async(make_definition)(
        stages=[{"stage": "test-sleep", "params": {"seconds": 0.01}}],
        source_params={"count": 5000},
    )
    run = await sync_to_async(jobs.submit)(definition)
    await service.start()
    return await wait_for_status(run.pk, {RunStatus.RUNNING})


async def test_cancel_of_a_running_job_ends_it_within_a_second(
    service: worker.JobService,
) -> None:
    run = await start_long_run(service)
    await asyncio.sleep(0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await sync_to_async(jobs.cancel)(run)
    cancelled = await wait_for_status(run.pk, {RunStatus.CANCELLED}, within=5)
    assert loop.time() - started < 1.0
    assert 0 < cancelled.items_out < 5000


async def test_shutdown_requeues_unfinished_runs_and_leaves_nothing_running(
    service: worker.JobService,
) -> None:
    run = await start_long_run(service)
    await service.shutdown(grace=0.2)
    requeued = await PipelineRun.objects.aget(pk=run.pk)
    assert requeued.status == RunStatus.QUEUED
    assert "worker shut down" in requeued.error_message
    assert requeued.worker_id == ""
    assert (requeued.items_in, requeued.progress, requeued.started_at) == (0, {}, None)


async def test_progress_seq_keeps_increasing_when_a_requeued_run_runs_again(
    viewer_cookie: str,
) -> None:
    """A page keeps only messages whose seq is above the last one it saw: after a worker shut
    down and the next attempt ran, the page must still get that attempt's progress."""
    definition = await sync_to_async(make_definition)(
        stages=[{"stage": "test-sleep", "params": {"seconds": 0.005}}],
        source_params={"count": 400},
    )
    run = await sync_to_async(jobs.submit)(definition)
    ws = communicator(f"/ws/pipeline/runs/{run.pk}/", viewer_cookie)
    connected, _ = await ws.connect()
    assert connected
    messages: list[dict[str, Any]] = [await ws.receive_json_from(timeout=5)]

    worker._service = None
    first = worker.get_service()
    await first.start()
    await wait_for_status(run.pk, {RunStatus.RUNNING})
    await asyncio.sleep(1.2)
    await first.shutdown(grace=0)
    worker._service = None
    second = worker.get_service()
    try:
        await second.start()
        while not messages[-1]["run"]["is_finished"]:
            messages.append(await ws.receive_json_from(timeout=20))
    finally:
        await second.shutdown(grace=5)
        worker._service = None
        await ws.disconnect()
    seqs = [m["seq"] for m in messages]
    assert seqs == sorted(set(seqs)), seqs  # strictly increasing
    assert {m["run"]["attempt"] for m in messages if m["run"]["status"] == "running"} == {1, 2}
    assert messages[-1]["run"]["status"] == "succeeded"


async def test_a_run_claimed_as_the_service_stops_goes_back_to_the_queue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Stopping cancels the claim loop while the claim query runs in its thread; the query still
    claims, and the run must not stay running with nobody executing it."""
    definition = await sync_to_async(make_definition)(source_params={"count": 3}, max_attempts=1)
    run = await sync_to_async(jobs.create_run)(definition)
    claiming, release = threading.Event(), threading.Event()
    claim_next = jobs.claim_next

    def slow_claim_next(worker_id: str) -> PipelineRun | None:
        claiming.set()
        release.wait(10)
        return claim_next(worker_id)

    monkeypatch.setattr(jobs, "claim_next", slow_claim_next)
    service = worker.JobService(worker_id="w", concurrency=1)
    await service.start()
    while not claiming.is_set():
        await asyncio.sleep(0.01)
    stopping = asyncio.ensure_future(service.shutdown(grace=2))
    await asyncio.sleep(0.1)
    release.set()
    await stopping
    requeued = await PipelineRun.objects.aget(pk=run.pk)
    assert requeued.status == RunStatus.QUEUED
    assert (requeued.worker_id, requeued.lease_expires_at) == ("", None)
    assert "shut down as it claimed it" in requeued.error_message
    assert service.jobs == {}


async def test_job_service_keeps_tracking_a_run_it_claimed_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sweeper requeued a run while this service still ran its old attempt, and the service
    claimed it again: the old attempt's end must not drop the new attempt's job."""
    release = {1: threading.Event(), 2: threading.Event()}

    def execute(run: PipelineRun, **options: Any) -> PipelineRun:
        release[run.attempt].wait(20)
        return run

    monkeypatch.setattr(worker.runner, "execute", execute)
    definition = await sync_to_async(make_definition)(max_attempts=2)
    run = await sync_to_async(claimed_run)(definition)
    service = worker.JobService(worker_id="w", concurrency=4)
    service.loop = asyncio.get_running_loop()
    service._start_job(run)
    stale = service.jobs[run.pk]
    claimed_again = PipelineRun(pk=run.pk, definition=definition, snapshot=run.snapshot, attempt=2)
    service._start_job(claimed_again)
    current = service.jobs[run.pk]
    release[1].set()
    assert stale.done is not None and current.done is not None
    await asyncio.wait_for(stale.done, 5)
    assert service.jobs == {run.pk: current}
    service.cancel_local(run.pk)
    assert current.cancel.is_set()
    release[2].set()
    await asyncio.wait_for(current.done, 5)
    assert service.jobs == {}


@pytest.mark.timeout(30)
@override_settings(PIPELINE_APP={"POLL_INTERVAL": 5.0, "EMBEDDED_WORKER": False})
async def test_a_wake_hint_during_a_claim_that_found_nothing_claims_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    definition = await sync_to_async(make_definition)(source_params={"count": 3}, sink="discard")
    claim_next = jobs.claim_next
    claims = 0
    submitted: list[PipelineRun] = []

    def claim_then_submit(worker_id: str) -> PipelineRun | None:
        """The queue is empty when the claim looks; a run (and its hint) comes right after."""
        nonlocal claims
        claims += 1
        found = claim_next(worker_id)
        if claims == 2:
            submitted.append(jobs.submit(definition))
        return found

    monkeypatch.setattr(jobs, "claim_next", claim_then_submit)
    service = worker.JobService(worker_id="w", concurrency=1)
    await service.start()
    try:
        while claims < 1:
            await asyncio.sleep(0.01)
        service.wake()  # the second claim races with the submission
        while not submitted:
            await asyncio.sleep(0.01)
        started = asyncio.get_running_loop().time()
        while (await PipelineRun.objects.aget(pk=submitted[0].pk)).status == RunStatus.QUEUED:
            assert asyncio.get_running_loop().time() - started < 1.0, "waited for the poll"
            await asyncio.sleep(0.05)
    finally:
        await service.shutdown(grace=5)
