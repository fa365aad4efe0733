"""Engine benchmark: our engine vs the seed package (async-task-pipeline 0.1.10) vs a plain loop.

Run ``python bench/engine.py`` (``--quick`` for a short run). Implementations are run
alternately, ``--repeats`` times each; the table shows medians and ratios. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import logging
import os
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline_app.engine import AsyncTaskPipeline

# the seed configures the root logger at import: undo it, keep the table readable
with contextlib.suppress(ImportError):
    import async_task_pipeline  # noqa: F401
logging.getLogger().handlers.clear()
logging.getLogger().setLevel(logging.WARNING)
logging.getLogger("async_task_pipeline").setLevel(logging.CRITICAL)

BLOCK = b"x" * 65536


def inc(x: Any) -> Any:
    return x + 1


def sha_task(x: int) -> int:
    h = hashlib.sha256()
    for _ in range(20):
        h.update(BLOCK)
    return x + h.digest()[0] * 0


def small_task(x: int) -> int:
    """About 7 us of pure-Python work here (a light real stage: a parse, a lookup, a check)."""
    acc = 0
    for i in range(400):
        acc += i
    return x + acc * 0


def py_task(x: int) -> int:
    acc = 0
    for i in range(60_000):
        acc = (acc + i * x) % 1_000_003
    return x + acc * 0


# ------------------------------------------------------------------------------------ runners
async def _agen(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


async def ours(
    fns: list[Callable[[Any], Any]],
    n: int,
    *,
    timing: bool = False,
    executor: str = "thread",
    workers: int = 1,
    qsize: int = 1000,
) -> float:
    p: AsyncTaskPipeline[Any, Any] = AsyncTaskPipeline(max_queue_size=qsize, enable_timing=timing)
    for i, fn in enumerate(fns):
        p.add_stage(f"s{i}", fn, executor=executor, workers=workers)
    async with p:
        if executor == "process":  # warm the process pools up (a first, untimed epoch)
            _ = [x async for x in p.run(range(4 * workers))]
        t0 = time.perf_counter()
        count = 0
        async for _ in p.run(_agen(n)):
            count += 1
        dt = time.perf_counter() - t0
    assert count == n, count
    return n / dt


async def seed(
    fns: list[Callable[[Any], Any]],
    n: int,
    *,
    timing: bool = False,
    qsize: int = 1000,
    limit_s: float = 60.0,
) -> float:
    """The seed hangs in its quick start: feed concurrently, stop after n outputs."""
    import async_task_pipeline as atp

    p = atp.AsyncTaskPipeline(max_queue_size=qsize, enable_timing=timing)
    for i, fn in enumerate(fns):
        p.add_stage(f"s{i}", fn)
    await p.start()
    t0 = time.perf_counter()
    count = 0

    async def consume() -> None:
        nonlocal count
        async for _ in p.generate_output_stream():
            count += 1
            if count >= n:
                break

    feeder = asyncio.create_task(p.process_input_stream(_agen(n)))
    try:
        await asyncio.wait_for(consume(), limit_s)
    except TimeoutError:
        print(f"  [seed timed out after {limit_s}s with {count}/{n} outputs]", file=sys.stderr)
    dt = time.perf_counter() - t0
    feeder.cancel()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(p.stop(), 5)
    return count / dt


def plain(fns: list[Callable[[Any], Any]], n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        x: Any = i
        for fn in fns:
            x = fn(x)
    return n / (time.perf_counter() - t0)


async def paced_latency(kind: str, n: int, rate: float = 1000.0) -> tuple[float, float]:
    """Added latency (created -> consumer) of 3 trivial stages at ``rate`` items/s."""
    lat: list[float] = []
    fns = [inc, inc, inc]

    async def source() -> AsyncIterator[float]:
        t0 = time.perf_counter()
        for i in range(n):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            yield time.perf_counter()

    if kind == "ours":
        p: AsyncTaskPipeline[Any, Any] = AsyncTaskPipeline(max_queue_size=100)
        for i, fn in enumerate(fns):
            p.add_stage(f"s{i}", fn)
        async with p:
            async for out in p.run(source()):
                lat.append(time.perf_counter() - (out - 3))
    else:
        import async_task_pipeline as atp

        sp = atp.AsyncTaskPipeline(max_queue_size=100)
        for i, fn in enumerate(fns):
            sp.add_stage(f"s{i}", fn)
        await sp.start()
        feeder = asyncio.create_task(sp.process_input_stream(source()))

        async def consume() -> None:
            async for out in sp.generate_output_stream():
                lat.append(time.perf_counter() - (out - 3))
                if len(lat) >= n:
                    break

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(consume(), n / rate + 30)
        feeder.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(sp.stop(), 5)
    lat = lat[len(lat) // 20 :]  # drop the warm-up
    lat.sort()
    return statistics.fmean(lat) * 1e3, lat[int(0.99 * (len(lat) - 1))] * 1e3


async def timing_callback_run(n: int, mode: str) -> float:
    """3 x (x+1), timing on, items/s; ``mode``: "off" (no timing), "on" (no callback),
    "cb" (a trivial per-item callback), "batch" (a trivial batch callback, if supported)."""
    sink: list[Any] = []
    kw: dict[str, Any] = {"enable_timing": mode != "off"}
    if mode == "cb":
        kw["on_item_timing"] = sink.append
    elif mode == "batch":
        kw["on_item_timings"] = sink.extend
    p: AsyncTaskPipeline[Any, Any] = AsyncTaskPipeline(max_queue_size=1000, **kw)
    for i in range(3):
        p.add_stage(f"s{i}", inc)
    async with p:
        t0 = time.perf_counter()
        count = 0
        async for _ in p.run(_agen(n)):
            count += 1
        dt = time.perf_counter() - t0
    assert count == n
    if mode in ("cb", "batch"):
        assert len(sink) == n
    return n / dt


def micro(n: int, repeats: int, modes: list[str]) -> None:
    res: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(repeats):
        for m in modes:
            res[m].append(asyncio.run(timing_callback_run(n, m)))
    for m in modes:
        print(f"micro {m:>5}: {med(res[m]):>10,.0f} items/s  (median of {repeats}, n={n:,})")


def memory_child(n: int) -> None:
    import resource

    async def main() -> None:
        await ours([inc, inc, inc], n, timing=True)

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    asyncio.run(main())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{base} {peak}")


def peak_rss_mib(n: int) -> tuple[float, float]:
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--memory-child", str(n)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return int(out[0]) / 1024, int(out[1]) / 1024


# ------------------------------------------------------------------------------------ main
def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=0)
    ap.add_argument("--memory-child", type=int, default=0)
    ap.add_argument(
        "--micro",
        default="",
        help="timing micro-benchmark only: comma-separated "
        "modes among off,on,cb,batch (3 x (x+1), 100k items)",
    )
    args = ap.parse_args()
    if args.micro:
        micro(100_000, args.repeats or 5, args.micro.split(","))
        return
    if args.memory_child:
        memory_child(args.memory_child)
        return
    q = args.quick
    reps = args.repeats or (2 if q else 3)
    n_fast, n_seed = (50_000, 2_000) if q else (300_000, 6_000)
    n_lat = 600 if q else 3000
    n_sha, n_py = (120, 40) if q else (300, 120)
    n_mem = 200_000 if q else 1_000_000
    n_small = 20_000 if q else 60_000
    trivial = [inc, inc, inc]
    rows: list[tuple[str, str, str]] = []
    r: dict[str, list[float]] = {}

    def add(key: str, v: float) -> None:
        r.setdefault(key, []).append(v)

    for rep in range(reps):
        print(f"round {rep + 1}/{reps} ...", file=sys.stderr)
        add("tp_ours_off", asyncio.run(ours(trivial, n_fast)))
        add("tp_seed_off", asyncio.run(seed(trivial, n_seed)))
        add("tp_plain", plain(trivial, n_fast))
        add("tp_ours_on", asyncio.run(ours(trivial, n_fast, timing=True)))
        add("small_off", asyncio.run(ours([small_task] * 3, n_small)))
        add("small_on", asyncio.run(ours([small_task] * 3, n_small, timing=True)))
        add("tp_seed_on", asyncio.run(seed(trivial, n_seed, timing=True)))
        m, p99 = asyncio.run(paced_latency("ours", n_lat))
        add("lat_ours_mean", m)
        add("lat_ours_p99", p99)
        m, p99 = asyncio.run(paced_latency("seed", n_lat))
        add("lat_seed_mean", m)
        add("lat_seed_p99", p99)
        add("sha_ours", asyncio.run(ours([sha_task, sha_task], n_sha, qsize=100)))
        add("sha_seed", asyncio.run(seed([sha_task, sha_task], n_sha, qsize=100)))
        add("sha_plain", plain([sha_task, sha_task], n_sha))
        add(
            "py_ours",
            asyncio.run(ours([py_task, py_task], n_py, executor="process", workers=2, qsize=100)),
        )
        add("py_plain", plain([py_task, py_task], n_py))
    base_mem, peak_big = peak_rss_mib(n_mem)
    _, peak_small = peak_rss_mib(n_mem // 10)

    M = {k: med(v) for k, v in r.items()}
    rows.append(
        (
            "1. 3x(x+1) items/s, timing off",
            f"ours {M['tp_ours_off']:,.0f} | seed "
            f"{M['tp_seed_off']:,.0f} | plain loop {M['tp_plain']:,.0f}",
            f"ours/seed {M['tp_ours_off'] / M['tp_seed_off']:.1f}x (goal >= 30x)",
        )
    )
    rows.append(
        (
            "1. 3x(x+1) items/s, timing on",
            f"ours {M['tp_ours_on']:,.0f} | seed {M['tp_seed_on']:,.0f}",
            f"ours/seed {M['tp_ours_on'] / M['tp_seed_on']:.1f}x",
        )
    )
    rows.append(
        (
            "2. added latency @1000/s (ms)",
            f"ours mean {M['lat_ours_mean']:.3f} p99 "
            f"{M['lat_ours_p99']:.3f} | seed mean {M['lat_seed_mean']:.3f} p99 "
            f"{M['lat_seed_p99']:.3f}",
            "goal mean <= 0.25, p99 <= 0.6",
        )
    )
    rows.append(
        (
            "3. 2x sha256 (GIL-free) items/s",
            f"ours {M['sha_ours']:.1f} | seed {M['sha_seed']:.1f} | plain {M['sha_plain']:.1f}",
            f"ours/plain {M['sha_ours'] / M['sha_plain']:.2f}x (goal >= 1.7x), seed/plain "
            f"{M['sha_seed'] / M['sha_plain']:.2f}x",
        )
    )
    rows.append(
        (
            "4. 2x pure-Python, process x2",
            f"ours {M['py_ours']:.1f} | plain {M['py_plain']:.1f} items/s",
            f"ours/plain {M['py_ours'] / M['py_plain']:.2f}x (goal >= 1.6x)",
        )
    )
    rows.append(
        (
            "5. timing on vs off",
            f"{M['tp_ours_on']:,.0f} vs {M['tp_ours_off']:,.0f} items/s",
            f"{(1 - M['tp_ours_on'] / M['tp_ours_off']) * 100:.0f}% slower (goal <= 10%)",
        )
    )
    rows.append(
        (
            "5. same, 3 stages of ~7 us work",
            f"{M['small_on']:,.0f} vs {M['small_off']:,.0f} items/s",
            f"{(1 - M['small_on'] / M['small_off']) * 100:.1f}% slower",
        )
    )
    rows.append(
        (
            f"5. peak RSS, timing on, {n_mem:,} items",
            f"{peak_big:.0f} MiB (vs {peak_small:.0f} MiB for {n_mem // 10:,}; "
            f"interpreter {base_mem:.0f} MiB)",
            "flat = same peak for 10x items",
        )
    )
    w0 = max(len(a) for a, _, _ in rows)
    w1 = max(len(b) for _, b, _ in rows)
    print(
        f"\nmedians of {reps} alternating rounds, cores={os.cpu_count()}, "
        f"python {sys.version.split()[0]}"
    )
    print(f"{'benchmark':<{w0}}  {'result':<{w1}}  ratio / goal")
    print("-" * (w0 + w1 + 30))
    for a, b, c in rows:
        print(f"{a:<{w0}}  {b:<{w1}}  {c}")


if __name__ == "__main__":
    main()
