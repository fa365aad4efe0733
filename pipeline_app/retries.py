"""Retrying database writes that a lost connection or a busy SQLite file made fail.

A run's records are written from long-lived threads, over connections that may outlive a server
restart, a failover or an idle-connection killer, and on SQLite behind other writers. Such a
failure says nothing about the data, so the write is tried again on a fresh connection after a
growing pause; an error about the data itself (a refused value) is not retried.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import TypeVar

from django.db import DatabaseError, InterfaceError, OperationalError, connection

logger = logging.getLogger(__name__)

R = TypeVar("R")

# What a retry can cure: the connection or the server, not the rows (a refused row fails again).
TRANSIENT_ERRORS = (OperationalError, InterfaceError)

RETRY_PAUSES = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0)  # seconds between attempts; then the last one


def pause_after(failures: int) -> float:
    """The pause after ``failures`` consecutive failures."""
    return RETRY_PAUSES[min(failures, len(RETRY_PAUSES)) - 1]


def failed(what: str, exc: Exception, failures: int) -> None:
    """After the ``failures``-th transient error in a row: log the first of them, and close this
    thread's connection, which may be broken (Django reconnects on the next query)."""
    if failures == 1:
        logger.warning("%s: database error (%s: %s); retrying", what, type(exc).__name__, exc)
    with contextlib.suppress(DatabaseError):
        connection.close()


def recovered(what: str, failures: int) -> None:
    """A write went through after ``failures`` transient errors in a row."""
    if failures:
        logger.warning("%s: the database is back after %d failed attempts", what, failures)


def retrying(write: Callable[[], R], *, what: str, seconds: float) -> R:
    """``write()``, tried again on transient errors for up to ``seconds`` (then the last error
    is raised)."""
    give_up_at = time.monotonic() + seconds
    failures = 0
    while True:
        try:
            result = write()
        except TRANSIENT_ERRORS as exc:
            failures += 1
            pause = pause_after(failures)
            if time.monotonic() + pause > give_up_at:
                raise
            failed(what, exc, failures)
            time.sleep(pause)
            continue
        recovered(what, failures)
        return result
