"""The ``PIPELINE_APP`` settings dict, merged over documented defaults and read lazily.

Every setting of the app lives in one dict in the project's settings::

    PIPELINE_APP = {"WORKER_CONCURRENCY": 4, "LEASE_SECONDS": 60}

Read values through :func:`get_config` (never at import time): the merged dict is cached and the
cache is cleared on ``setting_changed`` so ``override_settings`` works in tests.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

SETTING_NAME = "PIPELINE_APP"

CONFIG_DEFAULTS: dict[str, Any] = {
    # Name of the channel the job consumer listens on (wake-up hints and cancel notices).
    "JOB_CHANNEL": "pipeline-jobs",
    # Runs one worker process executes at once, each in its own thread.
    "WORKER_CONCURRENCY": 2,
    # Seconds between polls of the queue table: a lost wake-up message delays a run at most this.
    "POLL_INTERVAL": 2.0,
    # A claimed run's lease; a heartbeat renews it every LEASE_SECONDS / 3.
    "LEASE_SECONDS": 30.0,
    # On the first SIGTERM/SIGINT, running jobs get this long to finish before they are requeued.
    "SHUTDOWN_GRACE_SECONDS": 20.0,
    # Run jobs inside the web server process. None: only when the channel layer is in-memory.
    "EMBEDDED_WORKER": None,
    # Seconds between progress snapshots of a run (row update + WebSocket broadcast).
    "PROGRESS_INTERVAL": 0.25,
    # Item timing rows kept per run: all up to this many; past it, the slowest and the failed
    # items plus a sample. The run summary is always computed from every item.
    "ITEM_TIMING_LIMIT": 100_000,
    # Of the kept rows past the limit: how many slowest items and 1-in-N sampling of the rest.
    "ITEM_TIMING_KEEP_SLOWEST": 1_000,
    "ITEM_TIMING_SAMPLE_EVERY": 1_000,
    # Rows per transaction of the item timing writer thread. None: 20,000 on SQLite, where each
    # commit writes the index pages it touched to the WAL again (fewer commits, less rewriting:
    # a managed run measured ~0.1x closer to the bare engine than with 5,000, and SQLite's write
    # lock is held ~0.1 s at a time), and 5,000 elsewhere.
    "ITEM_TIMING_BATCH_SIZE": None,
    # Outputs kept on the run by the "preview" sink.
    "OUTPUT_PREVIEW_LIMIT": 50,
    # Directories file sources and sinks may touch when a run is started from the web.
    # Command-line runs may use any path the shell user can read.
    "FILE_ROOTS": [],
    # Error messages kept on the run for its error list (the count is always exact).
    "MAX_RECORDED_ERRORS": 200,
}


@cache
def get_config() -> dict[str, Any]:
    user_config: dict[str, Any] = getattr(settings, SETTING_NAME, {}) or {}
    return {**CONFIG_DEFAULTS, **user_config}


def get(name: str) -> Any:
    return get_config()[name]


@receiver(setting_changed)
def _clear_config_cache(*, setting: str, **kwargs: Any) -> None:
    if setting == SETTING_NAME:
        get_config.cache_clear()
