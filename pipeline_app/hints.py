"""Wake-up and cancel hints to job services: best effort, never on the submitter's critical path.

A hint only shortens the wait: the database is the queue of record and services poll it. Hints
go to the job services of this process directly (the embedded default, where an in-memory layer
cannot reach other processes anyway), and through the channel layer to every other process.
Channel-layer sends happen on one background event loop, fire and forget, so a web request never
waits on Redis and the layer keeps one connection instead of one per call.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

from pipeline_app import conf

logger = logging.getLogger(__name__)

Listener = Callable[[dict[str, Any]], None]

_listeners: list[Listener] = []
_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def add_listener(listener: Listener) -> None:
    """Receive hints sent from this process (must be thread-safe and return at once)."""
    _listeners.append(listener)


def remove_listener(listener: Listener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def notify_workers(message: dict[str, Any]) -> None:
    for listener in list(_listeners):
        try:
            listener(message)
        except Exception:
            logger.warning("A local hint listener failed on %s", message, exc_info=True)
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if layer is None or is_in_memory(layer):
        return
    asyncio.run_coroutine_threadsafe(_send(layer, message), _background_loop())


def is_in_memory(layer: Any) -> bool:
    """Channels' in-memory layer reaches this process only."""
    return type(layer).__name__ == "InMemoryChannelLayer"


async def _send(layer: Any, message: dict[str, Any]) -> None:
    channel = conf.get("JOB_CHANNEL")
    try:
        # The group reaches every running job service; the named channel also wakes a plain
        # `runworker pipeline-jobs` that has not started its service yet.
        await layer.group_send(channel, message)
        await layer.send(channel, message)
    except Exception:
        logger.warning("Could not send hint %s through the channel layer", message, exc_info=True)


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            _loop = asyncio.new_event_loop()
            threading.Thread(
                target=_loop.run_forever, name="pipeline_app-hints", daemon=True
            ).start()
        return _loop
