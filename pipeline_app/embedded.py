"""Run jobs inside the web server process (the embedded default: in-memory channel layer).

Daphne has no lifespan hook, so :class:`EmbeddedJobServiceMiddleware` starts the job service on
the server's event loop at the first request it sees, and an exit hook requeues whatever is
still running when the server stops. With ``REDIS_URL`` set (or ``EMBEDDED_WORKER=False``)
the middleware does nothing: ``pipelineworker`` processes run the jobs.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Callable
from typing import Any

from pipeline_app import conf
from pipeline_app.hints import is_in_memory
from pipeline_app.worker import get_service

logger = logging.getLogger(__name__)

Scope = dict[str, Any]


class EmbeddedJobServiceMiddleware:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.checked = False

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> Any:
        if not self.checked and scope["type"] in ("http", "websocket"):
            self.checked = True
            if is_embedded():
                await start_embedded_service()
        return await self.app(scope, receive, send)


def is_embedded() -> bool:
    """Do jobs run inside the web process? (EMBEDDED_WORKER, or auto: in-memory layer.)"""
    setting = conf.get("EMBEDDED_WORKER")
    if setting is not None:
        return setting is True  # anything else is E005 (daphne runs no system checks)
    from channels.layers import get_channel_layer

    return is_in_memory(get_channel_layer())


async def start_embedded_service() -> None:
    service = get_service()
    if service.accepting:
        return
    await service.start()
    _at_interpreter_exit(service.shutdown_from_any_thread)
    logger.info("Embedded job service running in the web process")


def _at_interpreter_exit(callback: Callable[[], None]) -> None:
    """Run ``callback`` when the server's main thread ends, before thread pools refuse work.

    A plain ``atexit`` hook runs after ``concurrent.futures`` has shut its executors down, when
    a stopping run can no longer use ``asyncio.to_thread`` to close its sink; hooks registered
    with ``threading``'s exit list run first (last registered, first run), which is how
    ``concurrent.futures`` itself registers.
    """
    register = getattr(threading, "_register_atexit", None)
    if register is None:
        atexit.register(callback)
    else:
        register(callback)
