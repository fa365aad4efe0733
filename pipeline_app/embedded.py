"""Run jobs inside the web server process (the embedded default: in-memory channel layer).

Daphne has no lifespan hook, so :class:`EmbeddedJobServiceMiddleware` starts the job service on
the server's event loop at the first request it sees, and an ``atexit`` hook requeues whatever
is still running when the server stops. With ``REDIS_URL`` set (or ``EMBEDDED_WORKER=False``)
the middleware does nothing: ``pipelineworker`` processes run the jobs.
"""

from __future__ import annotations

import atexit
import logging
from typing import Any

from pipeline_app.jobs import is_embedded
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


async def start_embedded_service() -> None:
    service = get_service()
    if service.accepting:
        return
    await service.start()
    atexit.register(service.shutdown_from_any_thread)
    logger.info("Embedded job service running in the web process")
