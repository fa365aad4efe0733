"""Database calls from async code on the app's own small thread pool.

Channels' ``database_sync_to_async`` runs every thread-sensitive ORM call of a process on one
shared thread, so one slow query stalls every consumer; job bookkeeping and WebSocket lookups
use this pool instead, and each call starts by dropping stale connections.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from django.db import close_old_connections

P = ParamSpec("P")
R = TypeVar("R")

_executor: ThreadPoolExecutor | None = None


def executor() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="pipeline_app-db")
    return _executor


def _fresh(func: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    close_old_connections()
    return func(*args, **kwargs)


async def run_db(func: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    loop = asyncio.get_running_loop()
    call = functools.partial(_fresh, func, *args, **kwargs)
    return await loop.run_in_executor(executor(), call)
