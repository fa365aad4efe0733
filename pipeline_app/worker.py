"""The job service: claims queued runs and executes them, one thread per run.

One :class:`JobService` runs per process, on that process's event loop: in ``manage.py
pipelineworker`` (and ``runworker pipeline-jobs``) or inside the web server on the embedded
default. The database is the queue of record; the channel layer only carries hints:

- it joins the job group and wakes on ``job.wake`` hints, and also polls every
  ``POLL_INTERVAL`` seconds, so a lost or duplicated hint never loses or doubles a run;
- claims are atomic (compare-and-set, ``SKIP LOCKED`` on PostgreSQL) and bump ``attempt``,
  the fencing token of every later write of the run;
- a sweeper requeues (or marks lost) runs whose lease expired, whoever owned them;
- progress snapshots reach the channel layer through this loop
  (``run_coroutine_threadsafe``), throttled by the runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from django.db import connection

from pipeline_app import conf, hints, jobs, runner
from pipeline_app.dbexec import run_db
from pipeline_app.models import PipelineRun
from pipeline_app.progress import RUN_LIST_GROUP, run_group, run_state, state_with_snapshot

logger = logging.getLogger(__name__)


# Progress messages of one attempt number from 1 up; pages keep only messages whose seq is above
# the last one seen, so each attempt numbers its messages above every earlier attempt's.
SEQ_PER_ATTEMPT = 2**32


def progress_seq(attempt: int, sequence: int) -> int:
    """The ``seq`` of an attempt's ``sequence``-th progress message: increasing across attempts
    (and exact in JavaScript: attempts are small integers)."""
    return attempt * SEQ_PER_ATTEMPT + sequence


@dataclass
class _Job:
    run: PipelineRun
    cancel: threading.Event = field(default_factory=threading.Event)
    shutdown: threading.Event = field(default_factory=threading.Event)
    done: asyncio.Future[None] | None = None
    thread: threading.Thread | None = None
    sequence: int = 0
    attempt: int = field(init=False)

    def __post_init__(self) -> None:
        # As claimed: ``run`` is refreshed when the attempt ends, maybe after a later one began.
        self.attempt = self.run.attempt


class JobService:
    def __init__(
        self,
        *,
        worker_id: str | None = None,
        concurrency: int | None = None,
        channel_layer: Any = None,
    ) -> None:
        self.worker_id = worker_id or jobs.worker_identity()
        self.concurrency: int = concurrency or conf.get("WORKER_CONCURRENCY")
        self.poll_interval: float = conf.get("POLL_INTERVAL")
        self.lease_seconds: float = conf.get("LEASE_SECONDS")
        self.channel_layer = channel_layer
        self.jobs: dict[int, _Job] = {}
        self.accepting = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._channel: str | None = None

    # -- life cycle ------------------------------------------------------------------------
    async def start(self) -> None:
        if self.accepting:
            return
        self.loop = asyncio.get_running_loop()
        self.accepting = True
        self._tasks = [
            asyncio.create_task(self._claim_loop(), name="pipeline-claim"),
            asyncio.create_task(self._sweep_loop(), name="pipeline-sweep"),
        ]
        hints.add_listener(self.hint_threadsafe)
        if self.channel_layer is not None:
            self._channel = await self.channel_layer.new_channel("pipeline-worker.")
            await self.channel_layer.group_add(conf.get("JOB_CHANNEL"), self._channel)
            self._tasks.append(asyncio.create_task(self._listen(), name="pipeline-listen"))
        logger.info("Job service %s started (%s at once)", self.worker_id, self.concurrency)

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop claiming; let running jobs finish within ``grace``; requeue the rest."""
        grace = conf.get("SHUTDOWN_GRACE_SECONDS") if grace is None else grace
        self.accepting = False
        hints.remove_listener(self.hint_threadsafe)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._channel is not None:
            try:
                await self.channel_layer.group_discard(conf.get("JOB_CHANNEL"), self._channel)
            except Exception:
                logger.debug("Could not leave the job group", exc_info=True)
        pending = [job.done for job in self.jobs.values() if job.done is not None]
        if pending:
            logger.info("Waiting up to %.0f s for %d running job(s)", grace, len(pending))
            await asyncio.wait(pending, timeout=grace)
        for job in list(self.jobs.values()):
            logger.warning("Run %s did not finish in the grace period; requeuing", job.run.pk)
            job.shutdown.set()
        remaining = [job.done for job in self.jobs.values() if job.done is not None]
        if remaining:
            await asyncio.wait(remaining)
        logger.info("Job service %s stopped", self.worker_id)

    def shutdown_from_any_thread(self, timeout: float = 10.0) -> None:
        """For interpreter exit, when the loop may be gone: requeue running jobs and wait."""
        self.accepting = False
        for job in list(self.jobs.values()):
            job.shutdown.set()
        for job in list(self.jobs.values()):
            if job.thread is not None:
                job.thread.join(timeout)

    def force_stop(self) -> None:
        """Second signal: ask every job to requeue now, without waiting for the grace period."""
        for job in self.jobs.values():
            job.shutdown.set()

    def wake(self) -> None:
        self._wake.set()

    def cancel_local(self, run_id: int) -> None:
        job = self.jobs.get(run_id)
        if job is not None:
            job.cancel.set()

    def hint_threadsafe(self, message: dict[str, Any]) -> None:
        """A hint from any thread of this process (see :mod:`pipeline_app.hints`)."""
        loop = self.loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._handle_hint, message)

    def _handle_hint(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "job.wake":
            self.wake()
        elif kind == "job.cancel" and message.get("run_id") is not None:
            self.cancel_local(int(message["run_id"]))

    async def handle_message(self, message: dict[str, Any]) -> None:
        self._handle_hint(message)

    # -- loops -------------------------------------------------------------------------------
    async def _listen(self) -> None:
        assert self._channel is not None
        while True:
            try:
                message = await self.channel_layer.receive(self._channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("Channel layer receive failed; retrying", exc_info=True)
                await asyncio.sleep(1)
                continue
            await self.handle_message(message)

    async def _claim_loop(self) -> None:
        while self.accepting:
            claimed = False
            # cleared before the claim looks: a hint arriving while it runs claims again
            self._wake.clear()
            if len(self.jobs) < self.concurrency:
                try:
                    run = await self._claim()
                except Exception:
                    logger.exception("Claiming a run failed")
                    run = None
                if run is not None:
                    self._start_job(run)
                    claimed = True
            if claimed:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)

    async def _claim(self) -> PipelineRun | None:
        """Claim the oldest queued run; if the service stops meanwhile, give the claim back."""
        claiming = asyncio.ensure_future(run_db(jobs.claim_next, self.worker_id))
        try:
            return await asyncio.shield(claiming)
        except asyncio.CancelledError:
            # Cancelling this task cannot stop the query in its thread: a run it claims would
            # stay running, with nobody executing it, until its lease ran out.
            run = None
            with contextlib.suppress(Exception):  # a claim that failed claimed nothing
                run = await claiming
            if run is not None:
                try:
                    await run_db(
                        jobs.release_claim, run, "Requeued: its worker shut down as it claimed it."
                    )
                    logger.info("Run %s: claimed while shutting down, requeued", run.pk)
                except Exception:
                    logger.exception("Run %s: claimed while shutting down, not requeued", run.pk)
            raise

    async def _sweep_loop(self) -> None:
        interval = max(min(self.poll_interval, self.lease_seconds / 3), 0.2)
        while True:
            try:
                swept = await run_db(jobs.sweep_expired_leases)
                if swept:
                    self.wake()
                if self._channel is not None:  # group membership expires on Redis
                    await self.channel_layer.group_add(conf.get("JOB_CHANNEL"), self._channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("Lease sweep failed")
            await asyncio.sleep(interval)

    # -- one job -----------------------------------------------------------------------------
    def _start_job(self, run: PipelineRun) -> None:
        assert self.loop is not None
        job = _Job(run=run, done=self.loop.create_future())
        self.jobs[run.pk] = job
        job.thread = threading.Thread(
            target=self._run_job, args=(job,), name=f"pipeline_app-job-{run.pk}", daemon=True
        )
        job.thread.start()
        logger.info(
            "Run %s (%s) claimed by %s, attempt %s",
            run.pk,
            run.pipeline_name,
            self.worker_id,
            run.attempt,
        )

    def _run_job(self, job: _Job) -> None:
        assert self.loop is not None
        loop = self.loop
        base = run_state(job.run)
        try:
            result = runner.execute(
                job.run,
                cancel_event=job.cancel,
                shutdown_event=job.shutdown,
                progress_hook=lambda snapshot: self._publish(
                    job, state_with_snapshot(base, snapshot)
                ),
            )
            self._publish(job, run_state(result))
        except Exception:
            logger.exception("Run %s: the runner raised", job.run.pk)
        finally:
            connection.close()
            with contextlib.suppress(RuntimeError):  # the loop is gone: the process is exiting
                loop.call_soon_threadsafe(self._job_finished, job)

    def _job_finished(self, job: _Job) -> None:
        if self.jobs.get(job.run.pk) is job:  # not a later attempt of the run, claimed again
            del self.jobs[job.run.pk]
        if job.done is not None and not job.done.done():
            job.done.set_result(None)
        self.wake()

    def _publish(self, job: _Job, state: dict[str, Any]) -> None:
        """Called from the job's thread: hand the state to this service's loop."""
        if self.channel_layer is None or self.loop is None or self.loop.is_closed():
            return
        job.sequence += 1
        message = {
            "type": "run.progress",
            "seq": progress_seq(job.attempt, job.sequence),
            "run": state,
        }
        with contextlib.suppress(RuntimeError):  # the loop closed under us: best effort
            asyncio.run_coroutine_threadsafe(self._broadcast(job.run.pk, message), self.loop)

    async def _broadcast(self, run_id: int, message: dict[str, Any]) -> None:
        try:
            await self.channel_layer.group_send(run_group(run_id), message)
            await self.channel_layer.group_send(
                RUN_LIST_GROUP, {"type": "runs.progress", "runs": [message["run"]]}
            )
        except Exception:
            logger.debug("Progress broadcast of run %s failed", run_id, exc_info=True)


_service: JobService | None = None
_service_lock = threading.Lock()


def get_service(channel_layer: Any = None) -> JobService:
    """The process-wide job service (created on first use, started by the caller)."""
    global _service
    with _service_lock:
        if _service is None:
            if channel_layer is None:
                from channels.layers import get_channel_layer

                channel_layer = get_channel_layer()
            _service = JobService(channel_layer=channel_layer)
        return _service
