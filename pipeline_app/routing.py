"""Channels routes of the app, for a project's ``asgi.py``::

"websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
"channel": ChannelNameRouter(channel_routes())
"""

from __future__ import annotations

from typing import Any

from django.urls import path

from pipeline_app import conf
from pipeline_app.consumers import JobConsumer, RunListConsumer, RunProgressConsumer

websocket_urlpatterns = [
    path("ws/pipeline/runs/", RunListConsumer.as_asgi()),
    path("ws/pipeline/runs/<int:run_id>/", RunProgressConsumer.as_asgi()),
]


def channel_routes() -> dict[str, Any]:
    """Map of channel name to consumer application for ``ChannelNameRouter``."""
    return {conf.get("JOB_CHANNEL"): JobConsumer.as_asgi()}
