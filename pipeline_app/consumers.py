"""Channels consumers: the job consumer (channel ``pipeline-jobs``) and live-progress WebSockets.

Both are thin. The job consumer hands hints to the process's :class:`JobService`; the
WebSocket consumers only watch: they send the run's state from the database on connect, then
forward the throttled snapshots the job service broadcasts. A run never depends on them.
"""

from __future__ import annotations

from typing import Any

from channels.consumer import AsyncConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from pipeline_app.dbexec import run_db
from pipeline_app.models import PipelineRun
from pipeline_app.progress import RUN_LIST_GROUP, run_group, run_state
from pipeline_app.worker import get_service

VIEW_PERMISSION = "pipeline_app.view_pipelinerun"


class JobConsumer(AsyncConsumer):  # type: ignore[misc]
    """``runworker pipeline-jobs`` / ``pipelineworker``: start the job service, pass hints."""

    async def _service(self) -> Any:
        service = get_service(self.channel_layer)
        await service.start()
        return service

    async def job_wake(self, message: dict[str, Any]) -> None:
        (await self._service()).wake()

    async def job_cancel(self, message: dict[str, Any]) -> None:
        (await self._service()).cancel_local(int(message["run_id"]))


def _can_view(user: Any) -> bool:
    return bool(user is not None and user.is_authenticated and user.has_perm(VIEW_PERMISSION))


class RunProgressConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    """``ws/pipeline/runs/<id>/``: the run's complete state on connect, then live snapshots."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        run_id = int(self.scope["url_route"]["kwargs"]["run_id"])
        if not await run_db(_can_view, user):
            await self.close(code=4403)
            return
        run = await run_db(PipelineRun.objects.filter(pk=run_id).first)
        if run is None:
            await self.close(code=4404)
            return
        self.group = run_group(run_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send_json({"type": "run.progress", "seq": 0, "run": run_state(run)})

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def run_progress(self, event: dict[str, Any]) -> None:
        await self.send_json(event)


class RunListConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    """``ws/pipeline/runs/``: states of runs that change, for the history page."""

    async def connect(self) -> None:
        if not await run_db(_can_view, self.scope.get("user")):
            await self.close(code=4403)
            return
        await self.channel_layer.group_add(RUN_LIST_GROUP, self.channel_name)
        await self.accept()
        active = await run_db(_active_states)
        await self.send_json({"type": "runs.progress", "runs": active})

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(RUN_LIST_GROUP, self.channel_name)

    async def runs_progress(self, event: dict[str, Any]) -> None:
        await self.send_json(event)


def _active_states() -> list[dict[str, Any]]:
    runs = PipelineRun.objects.filter(status__in=["queued", "running"]).order_by("-id")[:100]
    return [run_state(run) for run in runs]
