"""Built-in sources (range, JSON Lines, CSV, text lines) and sinks (discard, JSON Lines,
preview)."""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from pipeline_app.params import ParamError
from pipeline_app.registry import registry

_READ_BATCH = 2_000


class Sink(Protocol):
    """What a sink factory returns: ``write`` runs on the run's event loop, keep it quick."""

    def write(self, output: Any) -> None: ...

    def close(self) -> dict[str, Any] | None:
        """Flush and release; the returned dict is stored as the run's ``result``."""


@dataclass(frozen=True, slots=True)
class SinkContext:
    run_id: int | None
    preview_limit: int = 50


def count_lines(path: str) -> int:
    with open(path, "rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))


async def _batched(lines: Iterator[Any]) -> AsyncIterator[list[Any]]:
    """Read a blocking iterator in batches off the event loop."""

    def take() -> list[Any]:
        return [row for _, row in zip(range(_READ_BATCH), lines, strict=False)]

    while batch := await asyncio.to_thread(take):
        yield batch


def _check_range(params: dict[str, Any]) -> None:
    for name in ("count", "delay"):
        value = params.get(name)
        if name in params and value is None:
            raise ParamError(f"{name} must be a number", param=name)
        if value is not None and value < 0:
            raise ParamError(f"{name} must be >= 0", param=name)


@registry.source(
    "range",
    size_hint=lambda params: max(params.get("count") or 0, 0) if "count" in params else 1000,
    check=_check_range,
    description="Integers start .. start+count-1, optionally paced.",
)
async def range_source(count: int = 1000, start: int = 0, delay: float = 0.0) -> AsyncIterator[int]:
    _check_range({"count": count, "delay": delay})
    for number in range(start, start + count):
        if delay > 0:
            await asyncio.sleep(delay)
        yield number


@registry.source(
    "lines",
    file_params=["path"],
    size_hint=lambda params: count_lines(params["path"]),
    description="Lines of a text file, newline cut.",
)
async def lines_source(path: str, skip_blank: bool = True) -> AsyncIterator[str]:
    handle = await asyncio.to_thread(open, path, encoding="utf-8")
    with handle:
        async for batch in _batched(line.rstrip("\r\n") for line in handle):
            for line in batch:
                if line or not skip_blank:
                    yield line


@registry.source(
    "jsonl",
    file_params=["path"],
    size_hint=lambda params: count_lines(params["path"]),
    description="One JSON value per line.",
)
async def jsonl_source(path: str) -> AsyncIterator[Any]:
    number = 0
    async for line in lines_source(path):
        number += 1
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}, line {number}: invalid JSON ({exc.msg}).") from exc
        yield value


@registry.source(
    "csv",
    file_params=["path"],
    size_hint=lambda params: max(count_lines(params["path"]) - 1, 0),
    description="CSV rows as dicts keyed by header.",
)
async def csv_source(path: str, delimiter: str = ",") -> AsyncIterator[dict[str, str]]:
    handle = await asyncio.to_thread(open, path, encoding="utf-8", newline="")
    with handle:
        async for batch in _batched(iter(csv.DictReader(handle, delimiter=delimiter))):
            for row in batch:
                yield row


@dataclass
class DiscardSink:
    count: int = 0

    def write(self, output: Any) -> None:
        self.count += 1

    def close(self) -> dict[str, Any]:
        return {"written": self.count}


@dataclass
class JsonLinesSink:
    path: str
    count: int = 0
    handle: IO[str] | None = None

    def write(self, output: Any) -> None:
        if self.handle is None:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self.handle = open(self.path, "w", encoding="utf-8")  # noqa: SIM115
        self.handle.write(json.dumps(output, default=str, ensure_ascii=False) + "\n")
        self.count += 1

    def close(self) -> dict[str, Any]:
        if self.handle is not None:
            self.handle.close()
        return {"written": self.count, "path": self.path}


@dataclass
class PreviewSink:
    limit: int
    count: int = 0
    preview: list[Any] = field(default_factory=list)

    def write(self, output: Any) -> None:
        self.count += 1
        if len(self.preview) < self.limit:
            self.preview.append(json.loads(json.dumps(output, default=repr)))

    def close(self) -> dict[str, Any]:
        return {"written": self.count, "preview": self.preview}


@registry.sink("discard", description="Count the outputs and drop them.")
def discard_sink(context: SinkContext) -> Sink:
    return DiscardSink()


@registry.sink("jsonl", file_params=["path"], description="Write each output as a JSON line.")
def jsonl_sink(context: SinkContext, path: str) -> Sink:
    return JsonLinesSink(path)


@registry.sink("preview", description="Keep the first outputs on the run for the dashboard.")
def preview_sink(context: SinkContext, limit: int | None = None) -> Sink:
    return PreviewSink(limit if limit is not None else context.preview_limit)
