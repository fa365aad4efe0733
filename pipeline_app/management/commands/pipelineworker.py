"""``manage.py pipelineworker``: a Channels worker for pipeline jobs, with leases and clean stops.

Unlike plain ``runworker pipeline-jobs`` (which starts its job service only when a first message
arrives, and exits at once on SIGTERM), this worker starts the service immediately, polls the
queue table, and on the first SIGTERM/SIGINT stops claiming and lets running jobs finish within
``SHUTDOWN_GRACE_SECONDS`` before requeuing them; a second signal requeues them at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from channels.layers import get_channel_layer
from channels.routing import ChannelNameRouter
from channels.worker import Worker
from django.core.management.base import BaseCommand, CommandError, CommandParser

from pipeline_app import conf
from pipeline_app.consumers import JobConsumer
from pipeline_app.worker import JobService, get_service

logger = logging.getLogger("pipeline_app.worker")


class JobWorker(Worker):  # type: ignore[misc]
    """Channels' worker on the job channel, running the job service and handling signals."""

    def __init__(self, service: JobService, grace: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.service = service
        self.grace = grace
        self.stopping: asyncio.Event | None = None
        self.signals = 0

    async def handle(self) -> None:
        loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        await self.service.start()
        # The consumer instance exists from the start, not at the first message.
        channel = conf.get("JOB_CHANNEL")
        self.get_or_create_application_instance(channel, {"type": "channel", "channel": channel})
        listener = asyncio.ensure_future(super().handle())
        await self.stopping.wait()
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        await self.service.shutdown(self.grace)

    def _on_signal(self, signum: int) -> None:
        self.signals += 1
        assert self.stopping is not None
        if self.signals == 1:
            logger.info(
                "%s: finishing running jobs (up to %.0f s); send again to requeue them now",
                signal.Signals(signum).name,
                self.grace,
            )
            self.stopping.set()
        else:
            logger.warning("Second signal: requeuing running jobs now")
            self.service.force_stop()


class Command(BaseCommand):
    help = "Run pipeline jobs: claim queued runs, execute them, renew leases, sweep lost runs."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--concurrency", type=int, help="Runs at once (WORKER_CONCURRENCY).")
        parser.add_argument("--grace", type=float, help="Seconds to finish jobs on shutdown.")
        parser.add_argument("--worker-id", help="Identity recorded on claimed runs.")

    def handle(self, *args: Any, **options: Any) -> None:
        layer = get_channel_layer()
        if layer is None:
            raise CommandError("No CHANNEL_LAYERS configured: the worker needs a channel layer.")
        service = get_service(layer)
        if options["concurrency"] is not None:
            if options["concurrency"] < 1:
                raise CommandError("--concurrency must be 1 or more.", returncode=2)
            service.concurrency = options["concurrency"]
        if options["worker_id"]:
            service.worker_id = options["worker_id"]
        grace = (
            options["grace"] if options["grace"] is not None else conf.get("SHUTDOWN_GRACE_SECONDS")
        )
        channel = conf.get("JOB_CHANNEL")
        worker = JobWorker(
            service=service,
            grace=grace,
            application=ChannelNameRouter({channel: JobConsumer.as_asgi()}),
            channels=[channel],
            channel_layer=layer,
        )
        self.stdout.write(f"Pipeline worker {service.worker_id}: {service.concurrency} at once")
        asyncio.run(worker.arun())
