"""Stages, sources, sinks and pipelines the tests run (discovered like any app's pipelines.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from pipeline_app import registry
from pipeline_app.builtins import SinkContext

COLLECTED: dict[int | None, list[Any]] = {}


@registry.stage("test-inc")
def inc(x: int, by: int = 1) -> int:
    return x + by


@registry.stage("test-fail-every")
def fail_every(x: int, every: int = 10) -> int:
    if x % every == 0:
        raise ValueError(f"item {x} is divisible by {every} <script>alert(1)</script>")
    return x


@registry.stage("test-sleep")
def sleep_stage(x: int, seconds: float = 0.01) -> int:
    time.sleep(seconds)
    return x


@registry.stage("test-drop-odd")
def drop_odd(x: int) -> int | None:
    return x if x % 2 == 0 else None


@registry.stage("test-fanout")
def fanout(x: int, copies: int = 2) -> Iterator[int]:
    for i in range(copies):
        yield x * 10 + i


@registry.source("test-raising")
async def raising_source(count: int = 10, fail_at: int = 5) -> AsyncIterator[int]:
    for i in range(count):
        if i == fail_at:
            raise RuntimeError(f"source broke at {i}")
        yield i
        await asyncio.sleep(0)


class CollectSink:
    def __init__(self, run_id: int | None, fail_at: int | None) -> None:
        self.items: list[Any] = COLLECTED.setdefault(run_id, [])
        self.fail_at = fail_at

    def write(self, output: Any) -> None:
        if self.fail_at is not None and len(self.items) == self.fail_at:
            raise OSError("disk full (test)")
        self.items.append(output)

    def close(self) -> dict[str, Any]:
        return {"written": len(self.items)}


@registry.sink("test-collect")
def collect_sink(context: SinkContext, fail_at: int | None = None) -> CollectSink:
    return CollectSink(context.run_id, fail_at)


registry.register_pipeline(
    "test-basic",
    source="range",
    source_params={"count": 50},
    stages=["test-inc", "test-drop-odd"],
    sink="test-collect",
)
registry.register_pipeline(
    "test-errors",
    source="range",
    source_params={"count": 50},
    stages=["test-fail-every"],
    sink="test-collect",
)
registry.register_pipeline(
    "test-slow",
    source="range",
    source_params={"count": 400},
    stages=["test-inc", {"stage": "test-sleep", "params": {"seconds": 0.01}}],
    sink="test-collect",
)


class AppendLogSink:
    """Appends one line per finished execution to a file: duplicates would show as two lines."""

    def __init__(self, run_id: int | None, path: str) -> None:
        self.run_id, self.path, self.count = run_id, path, 0

    def write(self, output: Any) -> None:
        self.count += 1

    def close(self) -> dict[str, Any]:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(f"{self.run_id} {self.count}\n")
        return {"written": self.count}


@registry.sink("test-append-log")
def append_log_sink(context: SinkContext, path: str) -> AppendLogSink:
    return AppendLogSink(context.run_id, path)


@registry.stage("test-awkward-error")
def awkward_error(x: int) -> int:
    if x == 3:
        raise ValueError("tab\there\nnew line \\ backslash, NUL \x00, ünïcode ✓")
    return x


class UnstorableResultSink:
    def write(self, output: Any) -> None:
        pass

    def close(self) -> dict[str, Any]:
        return {"not JSON": object()}


@registry.sink("test-unstorable-result")
def unstorable_result_sink(context: SinkContext) -> UnstorableResultSink:
    return UnstorableResultSink()


@registry.source("test-json-params")
async def json_params_source(label: Any = "x", tags: list[str] | None = None) -> AsyncIterator[Any]:
    """``Any`` and list parameters are of kind "json"."""
    yield label
    for tag in tags or []:
        yield tag


def _slow_to_count(params: dict[str, Any]) -> int:
    time.sleep(params.get("counting_seconds", 2.0))  # as counting a very large file's lines
    return int(params.get("count", 3))


@registry.source("test-slow-to-count", size_hint=_slow_to_count)
async def slow_to_count_source(count: int = 3, counting_seconds: float = 2.0) -> AsyncIterator[int]:
    for i in range(count):
        yield i


@registry.source("test-many-files", file_params=["paths"])
async def many_files_source(paths: list[str]) -> AsyncIterator[str]:
    """A file parameter that is not one path: refused whatever it holds."""
    for path in paths:
        yield path
