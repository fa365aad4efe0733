"""Module-level stage functions (picklable, for process executors) and test helpers."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any


def inc(x: int) -> int:
    return x + 1


def double(x: int) -> int:
    return x * 2


def keep_even(x: int) -> int | None:
    return x if x % 2 == 0 else None


def split3(x: int) -> Iterator[int]:
    for k in range(3):
        yield x * 10 + k


def fail_on_7(x: int) -> int:
    if x % 10 == 7:
        raise ValueError(f"bad {x}")
    return x


def slow_square(x: int) -> int:
    time.sleep(0.002 if x % 3 else 0.0005)
    return x * x


def cpu_work(x: int) -> int:
    acc = 0
    for i in range(20_000):
        acc = (acc + i * x) % 1_000_003
    return acc


class Unpicklable(Exception):
    def __init__(self, a: int, b: int) -> None:  # pickling re-calls with one arg and fails
        super().__init__(f"{a}/{b}")


def raise_unpicklable(x: int) -> int:
    raise Unpicklable(x, 1)


async def agen(n: int, delay: float = 0.0) -> AsyncIterator[int]:
    import asyncio

    for i in range(n):
        yield i
        if delay:
            await asyncio.sleep(delay)


def apply_sequential(steps: list[tuple[str, Any]], data: list[int]) -> list[Any]:
    """Reference: plain sequential loop with the engine's semantics (error policy "return")."""
    items: list[Any] = list(data)
    for _kind, fn in steps:
        nxt: list[Any] = []
        for x in items:
            if isinstance(x, BaseException):
                nxt.append(x)
                continue
            try:
                r = fn(x)
            except Exception as exc:
                nxt.append(exc)
                continue
            if r is None:
                continue
            if hasattr(r, "__next__"):
                try:
                    for v in r:
                        nxt.append(v)
                except Exception as exc:
                    nxt.append(exc)
                continue
            nxt.append(r)
        items = nxt
    return items


def fail_7_late_27_early(x: int) -> int:
    """Item 7 fails slowly, item 27 at once: with workers > 1, 27 fails first in wall time."""
    if x == 7:
        time.sleep(0.05)
        raise ValueError("bad 7")
    if x == 27:
        raise ValueError("bad 27")
    return x


async def feed_closed_stream(pipeline: Any, items: Iterable[Any]) -> None:
    """Feed ``items`` one by one, close the input and wait until all of it is buffered."""
    for item in items:
        await pipeline.process_input_data(item)
    pipeline.close_input()
    await pipeline.drain()
