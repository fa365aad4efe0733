"""Channels routes of the app, for a project's ``asgi.py``."""

from __future__ import annotations

from typing import Any

from django.urls import URLPattern

websocket_urlpatterns: list[URLPattern] = []


def channel_routes() -> dict[str, Any]:
    """Map of channel name to consumer application for ``ChannelNameRouter``."""
    return {}
