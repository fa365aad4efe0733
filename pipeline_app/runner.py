"""Execute one ``PipelineRun`` from its snapshot: the same code path for the command line, the
workers and the tests.

:func:`execute` builds the engine, feeds it from the registered source, writes outputs to the
registered sink, persists item timings and progress through a :class:`RunRecorder`, honours
cancel requests and the timeout, and always ends the run with a final status. Nothing escapes as
an unhandled exception: a failure becomes a ``failed`` run with its traceback.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import traceback
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline_app import conf, params
from pipeline_app.assembly import build_pipeline, expected_items, validated_params
from pipeline_app.builtins import Sink, SinkContext
from pipeline_app.engine import AsyncTaskPipeline, StageError
from pipeline_app.itemrows import original_seq
from pipeline_app.models import ItemTiming, PipelineRun, RunStatus, StageStat
from pipeline_app.outcome import Outcome, error_dict, finish
from pipeline_app.recorder import RunRecorder
from pipeline_app.registry import registry
from pipeline_app.retries import retrying

logger = logging.getLogger(__name__)

ProgressHook = Callable[[dict[str, Any]], None]


class SinkError(Exception):
    """The sink raised while writing an output; the original is the ``__cause__``."""


def execute(
    run: PipelineRun,
    *,
    progress_hook: ProgressHook | None = None,
    cancel_event: threading.Event | None = None,
    shutdown_event: threading.Event | None = None,
) -> PipelineRun:
    """Run ``run`` (already claimed: status running, attempt set) to a final status.

    ``cancel_event`` ends it as cancelled; ``shutdown_event`` (the worker is stopping) puts it
    back in the queue for another worker. Blocks the calling thread (it runs its own event
    loop); call it from a worker thread or through ``asyncio.to_thread`` in async code.
    Returns the refreshed run.
    """
    snapshot = run.snapshot
    if run.attempt > 1:  # an earlier attempt's partial records are replaced by this one's
        ItemTiming.objects.filter(run=run).delete()
        StageStat.objects.filter(run=run).delete()
    outcome = Outcome()
    seq_map: list[int] | None = sorted(run.only_items) if run.only_items is not None else None
    recorder = RunRecorder(run, seq_map=seq_map, on_progress=progress_hook)
    stops = _Stops(cancel_event or threading.Event(), shutdown_event or threading.Event())
    # The heartbeat runs from here: what comes before the first item (counting the lines of a
    # large input file for the progress bar, opening the sink) can outlast the lease.
    recorder.publish_progress(dict(_NOTHING_YET))
    recorder.start()
    try:
        missing = registry.missing_names(snapshot)
        if missing:
            raise params.ParamError(
                f"Pipeline {snapshot['name']!r} refers to unregistered {', '.join(missing)}."
            )
        source_params, sink_params = validated_params(snapshot, run.params, trigger=run.trigger)
        expected = expected_items(snapshot["source"], source_params, seq_map)
        if expected is not None:
            PipelineRun.objects.filter(pk=run.pk, attempt=run.attempt).update(
                items_expected=expected
            )
        # Every item's stamps go to the recorder; the engine's own report keeps no per-item
        # records on top (nothing reads them here; building them was ~4 % of a profiled run).
        pipeline = build_pipeline(
            snapshot, on_item_stamps=recorder.record_stamps, max_item_records=0
        )
        sink: Sink = registry.get("sink", snapshot["sink"]).func(
            SinkContext(run.pk, conf.get("OUTPUT_PREVIEW_LIMIT")), **sink_params
        )
        asyncio.run(
            _drive(
                pipeline,
                snapshot,
                source_params,
                sink,
                seq_map,
                recorder,
                stops,
                expected,
                outcome,
            )
        )
    except Exception as exc:
        if stops.shutdown.is_set():  # whatever broke, the worker is going away: requeue
            outcome.status, outcome.error_message = _STOP_OUTCOMES["shutdown"]
        else:
            outcome.status = RunStatus.FAILED
            outcome.error_message = outcome.error_message or _describe(exc)
            outcome.traceback = outcome.traceback or traceback.format_exc()
    finally:
        recorder.close()
    if recorder.rows_lost:  # the summary still counts every item; the rows tell fewer
        outcome.summary = {**(outcome.summary or {}), "item_rows_lost": recorder.rows_lost}
    # Until the lease runs out: the run is ours that long, and the final status is its record.
    # (This thread's connection sat idle while the run went on, maybe for hours: if a server
    # restart or an idle timeout ended it, the first attempt fails and the next reconnects.)
    return retrying(
        lambda: finish(run, outcome),
        what=f"Run {run.pk}: final status",
        seconds=conf.get("LEASE_SECONDS"),
    )


async def _drive(
    pipeline: AsyncTaskPipeline[Any, Any],
    snapshot: dict[str, Any],
    source_params: dict[str, Any],
    sink: Sink,
    seq_map: Sequence[int] | None,
    recorder: RunRecorder,
    stops: _Stops,
    expected: int | None,
    outcome: Outcome,
) -> None:
    source_fn = registry.get("source", snapshot["source"]).func
    source = _guarded_source(source_fn(**source_params), seq_map, outcome)
    timeout = snapshot.get("timeout_seconds")
    monitor = asyncio.create_task(_monitor(pipeline, recorder, stops, expected))
    started = time.perf_counter()
    try:
        async with pipeline:
            consume = asyncio.ensure_future(_consume(pipeline, source, sink))
            done, _ = await asyncio.wait(
                {consume, monitor}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if consume in done:
                consume.result()
            else:
                await pipeline.stop()
                consume.cancel()
                await asyncio.gather(consume, return_exceptions=True)
                if monitor in done:
                    outcome.status, outcome.error_message = _STOP_OUTCOMES[monitor.result()]
                    if recorder.failure is not None and monitor.result() == "recorder":
                        outcome.error_message += f" {_describe(recorder.failure)}"
                else:
                    outcome.status = RunStatus.FAILED
                    outcome.error_message = f"Timed out after {timeout:g} s."
    except StageError as exc:
        outcome.status = RunStatus.FAILED
        item = original_seq(exc.seq, seq_map)
        outcome.error_message = f"Stage {exc.stage!r} failed on item {item}: {exc.__cause__!r}"
        outcome.traceback = "".join(traceback.format_exception(exc))
    except SinkError as exc:
        outcome.status = RunStatus.FAILED
        outcome.error_message = f"Sink {snapshot['sink']!r} failed: {exc}"
        outcome.traceback = "".join(traceback.format_exception(exc))
    finally:
        monitor.cancel()
        await asyncio.gather(monitor, return_exceptions=True)
        try:
            outcome.result = await _close_sink(sink)
        except Exception as exc:
            if outcome.status == RunStatus.SUCCEEDED:
                outcome.status = RunStatus.FAILED
                outcome.error_message = f"Sink {snapshot['sink']!r} failed: {_describe(exc)}"
                outcome.traceback = traceback.format_exc()
        outcome.summary = _without_empty_latency(pipeline.get_latency_summary())
        outcome.summary["latency_histogram"] = pipeline.latency_histogram()
        outcome.summary.setdefault("duration", time.perf_counter() - started)
        outcome.summary["errors"] = [
            error_dict(e, seq_map) for e in pipeline.errors[: conf.get("MAX_RECORDED_ERRORS")]
        ]
        recorder.publish_progress(_snapshot(pipeline, expected, final=True))
    if outcome.source_failed and outcome.status == RunStatus.SUCCEEDED:
        outcome.status = RunStatus.FAILED


async def _close_sink(sink: Sink) -> dict[str, Any] | None:
    try:
        return await asyncio.to_thread(sink.close)
    except RuntimeError:  # thread pools refuse work while the interpreter exits
        return sink.close()


async def _consume(
    pipeline: AsyncTaskPipeline[Any, Any], source: AsyncIterator[Any], sink: Sink
) -> None:
    write = sink.write
    async for output in pipeline.run(source):
        try:
            write(output)
        except Exception as exc:
            raise SinkError(_describe(exc)) from exc


async def _guarded_source(
    source: AsyncIterator[Any], seq_map: Sequence[int] | None, outcome: Outcome
) -> AsyncIterator[Any]:
    """Feed the source to the engine; a source failure ends the input (items in flight still
    finish) and is recorded as the run's error instead of escaping."""
    wanted = set(seq_map) if seq_map is not None else None
    index = -1
    try:
        async for item in source:
            index += 1
            if wanted is None or index in wanted:
                yield item
    except Exception as exc:
        outcome.error_message = f"Source failed after {index + 1} items: {_describe(exc)}"
        outcome.traceback = traceback.format_exc()
        outcome.source_failed = True


_NOTHING_YET: dict[str, Any] = {
    "items_in": 0,
    "items_out": 0,
    "filtered": 0,
    "errors": 0,
    "rate": None,
    "eta_seconds": None,
    "in_flight": 0,
    "elapsed": 0.0,
    "stages": {},
    "expected": None,
    "done": 0,
    "final": False,
}

_STOP_OUTCOMES = {
    "cancel": (RunStatus.CANCELLED, "Cancelled on request."),
    "shutdown": (RunStatus.QUEUED, "Requeued: its worker shut down before the run finished."),
    "fenced": (
        RunStatus.FAILED,
        "This attempt lost its lease: the run was requeued, marked lost or taken over.",
    ),
    "recorder": (
        RunStatus.FAILED,
        "Its progress and timings could not be written (see the worker's log); it was stopped.",
    ),
}


@dataclass(frozen=True)
class _Stops:
    cancel: threading.Event
    shutdown: threading.Event


async def _monitor(
    pipeline: AsyncTaskPipeline[Any, Any],
    recorder: RunRecorder,
    stops: _Stops,
    expected: int | None,
) -> str:
    """Publish throttled progress; return why the run must stop (a key of _STOP_OUTCOMES)."""
    interval = min(conf.get("PROGRESS_INTERVAL"), 0.25)
    publish_every = conf.get("PROGRESS_INTERVAL")
    last_publish = 0.0
    meter = RateMeter()
    while True:
        if stops.cancel.is_set() or recorder.cancel_requested.is_set():
            return "cancel"
        if stops.shutdown.is_set():
            return "shutdown"
        if recorder.fenced_out.is_set():
            return "fenced"
        if recorder.broken.is_set():
            return "recorder"
        now = time.monotonic()
        if now - last_publish >= publish_every:
            recorder.publish_progress(_snapshot(pipeline, expected, meter=meter))
            last_publish = now
        await asyncio.sleep(interval)


class RateMeter:
    """Inputs done per second over the last ``window`` seconds of progress snapshots."""

    def __init__(self, window: float = 5.0) -> None:
        self.window = window
        self._points: deque[tuple[float, int]] = deque()

    def rate(self, elapsed: float, done: int) -> float | None:
        points = self._points
        points.append((elapsed, done))
        while len(points) > 2 and elapsed - points[1][0] >= self.window:
            points.popleft()
        first_elapsed, first_done = points[0]
        if elapsed - first_elapsed <= 0:
            return done / elapsed if elapsed > 0 else None
        return (done - first_done) / (elapsed - first_elapsed)


def _snapshot(
    pipeline: AsyncTaskPipeline[Any, Any],
    expected: int | None,
    *,
    final: bool = False,
    meter: RateMeter | None = None,
) -> dict[str, Any]:
    progress = dict(pipeline.progress())
    elapsed = progress.get("elapsed") or 0.0
    done = _inputs_done(progress)
    # what came out, not what went in: a source reads ahead into the queues
    if meter is not None and not final:
        rate = meter.rate(elapsed, done)
    else:
        rate = done / elapsed if elapsed > 0 else None
    progress["rate"] = rate
    progress["expected"] = expected
    progress["eta_seconds"] = None
    if expected and rate and not final:
        progress["eta_seconds"] = max(expected - done, 0) / rate
    progress["done"] = done
    progress["final"] = final
    return progress


def _inputs_done(progress: dict[str, Any]) -> int:
    """How many inputs have left the pipeline, for the progress bar against the expected inputs.

    Without fan-out it is the outputs, filtered and failed items. A fan-out multiplies what
    leaves per input, so those are divided by the leaves an input has made so far on average
    (from each stage's counts, last stage first: an output of the last stage is one leaf)."""
    leaves = progress["items_out"] + progress["filtered"] + progress["errors"]
    per_input = 1.0
    for stage in reversed(list(progress.get("stages", {}).values())):
        if stage["processed"]:  # counted with the stage's results, at its flushes
            leaves_of_stage = stage["filtered"] + stage["errors"] + stage["out"] * per_input
            per_input = leaves_of_stage / stage["processed"]
    if per_input <= 0:
        return 0
    return min(int(leaves / per_input), int(progress["items_in"]))


_LATENCY_FIGURES = tuple(
    f"{kind}_total_latency" for kind in ("avg", "min", "max", "p50", "p95", "p99")
)


def _without_empty_latency(summary: dict[str, Any]) -> dict[str, Any]:
    """The engine's summary, its latency figures None when nothing was timed (timing off, or no
    item came out): the engine reports 0.0 then, as the seed did, and a run would show 0 us."""
    if not summary.get("timing_enabled") or not summary.get("total_items"):
        summary.update(dict.fromkeys(_LATENCY_FIGURES))
    return summary


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
