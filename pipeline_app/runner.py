"""Execute one ``PipelineRun`` from its snapshot: the same code path for the command line, the
workers and the tests.

:func:`execute` builds the engine, feeds it from the registered source, writes outputs to the
registered sink, persists item timings and progress through a :class:`RunRecorder`, honours
cancel requests and the timeout, and always ends the run with a final status. Nothing escapes as
an unhandled exception: a failure becomes a ``failed`` run with its traceback.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
import traceback
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone

from pipeline_app import conf, params
from pipeline_app.builtins import Sink, SinkContext
from pipeline_app.engine import AsyncTaskPipeline, StageError
from pipeline_app.models import (
    ErrorPolicy,
    ItemTiming,
    PipelineRun,
    RunStatus,
    StageStat,
)
from pipeline_app.recorder import RunRecorder
from pipeline_app.registry import registry

logger = logging.getLogger(__name__)

ProgressHook = Callable[[dict[str, Any]], None]


class SinkError(Exception):
    """The sink raised while writing an output; the original is the ``__cause__``."""


@dataclass
class _Outcome:
    status: str = RunStatus.SUCCEEDED
    error_message: str = ""
    traceback: str = ""
    result: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    discarded: int = 0
    source_errors: list[str] = field(default_factory=list)


def validated_params(
    snapshot: dict[str, Any], run_params: dict[str, Any], *, web: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Source and sink parameters of a run: definition defaults, then the run's own values."""
    roots = conf.get("FILE_ROOTS") if web else None
    source = registry.get("source", snapshot["source"])
    sink = registry.get("sink", snapshot["sink"])
    source_values = {**snapshot["source_params"], **run_params.get("source", {})}
    sink_values = {**snapshot["sink_params"], **run_params.get("sink", {})}
    return (
        params.validate(
            f"source {source.name!r}",
            source.params,
            source_values,
            file_params=source.file_params,
            file_roots=roots,
        ),
        params.validate(
            f"sink {sink.name!r}",
            sink.params,
            sink_values,
            file_params=sink.file_params,
            file_roots=roots,
        ),
    )


def build_pipeline(snapshot: dict[str, Any], **engine_options: Any) -> AsyncTaskPipeline[Any, Any]:
    pipeline: AsyncTaskPipeline[Any, Any] = AsyncTaskPipeline(
        max_queue_size=snapshot["max_queue_size"],
        enable_timing=snapshot["enable_timing"],
        error_policy="raise" if snapshot["error_policy"] == ErrorPolicy.FAIL else "drop",
        **engine_options,
    )
    for index, stage in enumerate(snapshot["stages"]):
        registered = registry.get("stage", stage["stage"])
        stage_params = params.validate(
            f"stage {registered.name!r}", registered.params, stage.get("params") or {}
        )
        fn = functools.partial(registered.func, **stage_params) if stage_params else registered.func
        name = stage["stage"] if _unique(snapshot, stage["stage"]) else f"{stage['stage']}#{index}"
        pipeline.add_stage(name, fn, workers=stage["workers"], executor=stage["executor"])
    return pipeline


def _unique(snapshot: dict[str, Any], stage_name: str) -> bool:
    return sum(1 for s in snapshot["stages"] if s["stage"] == stage_name) == 1


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
    outcome = _Outcome()
    seq_map: list[int] | None = sorted(run.only_items) if run.only_items is not None else None
    recorder = RunRecorder(run, seq_map=seq_map, on_progress=progress_hook)
    stops = _Stops(cancel_event or threading.Event(), shutdown_event or threading.Event())
    try:
        missing = registry.missing_names(snapshot)
        if missing:
            raise params.ParamError(
                f"Pipeline {snapshot['name']!r} refers to unregistered {', '.join(missing)}."
            )
        source_params, sink_params = validated_params(
            snapshot, run.params, web=run.trigger not in ("cli", "api")
        )
        expected = _expected_items(snapshot["source"], source_params, seq_map)
        if expected is not None:
            PipelineRun.objects.filter(pk=run.pk, attempt=run.attempt).update(
                items_expected=expected
            )
        pipeline = build_pipeline(snapshot, on_item_timing=recorder.record_item)
        sink: Sink = registry.get("sink", snapshot["sink"]).func(
            SinkContext(run.pk, conf.get("OUTPUT_PREVIEW_LIMIT")), **sink_params
        )
        recorder.start()
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
        outcome.status = RunStatus.FAILED
        outcome.error_message = outcome.error_message or _describe(exc)
        outcome.traceback = outcome.traceback or traceback.format_exc()
    finally:
        recorder.close()
    return _finish(run, outcome, recorder)


async def _drive(
    pipeline: AsyncTaskPipeline[Any, Any],
    snapshot: dict[str, Any],
    source_params: dict[str, Any],
    sink: Sink,
    seq_map: Sequence[int] | None,
    recorder: RunRecorder,
    stops: _Stops,
    expected: int | None,
    outcome: _Outcome,
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
                outcome.discarded = await pipeline.stop()
                consume.cancel()
                await asyncio.gather(consume, return_exceptions=True)
                if monitor in done:
                    outcome.status, outcome.error_message = _STOP_OUTCOMES[monitor.result()]
                else:
                    outcome.status = RunStatus.FAILED
                    outcome.error_message = f"Timed out after {timeout:g} s."
    except StageError as exc:
        outcome.status = RunStatus.FAILED
        outcome.error_message = f"Stage {exc.stage!r} failed on item {exc.seq}: {exc.__cause__!r}"
        outcome.traceback = "".join(traceback.format_exception(exc))
    except SinkError as exc:
        outcome.status = RunStatus.FAILED
        outcome.error_message = f"Sink {snapshot['sink']!r} failed: {exc}"
        outcome.traceback = "".join(traceback.format_exception(exc))
    finally:
        monitor.cancel()
        await asyncio.gather(monitor, return_exceptions=True)
        try:
            outcome.result = await asyncio.to_thread(sink.close)
        except Exception as exc:
            if outcome.status == RunStatus.SUCCEEDED:
                outcome.status = RunStatus.FAILED
                outcome.error_message = f"Sink {snapshot['sink']!r} failed: {_describe(exc)}"
                outcome.traceback = traceback.format_exc()
        outcome.summary = pipeline.get_latency_summary()
        outcome.summary.setdefault("duration", time.perf_counter() - started)
        outcome.summary["errors"] = [
            _error_dict(e) for e in pipeline.errors[: conf.get("MAX_RECORDED_ERRORS")]
        ]
        recorder.publish_progress(_snapshot(pipeline, expected, final=True))
    if outcome.source_errors and outcome.status == RunStatus.SUCCEEDED:
        outcome.status = RunStatus.FAILED


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
    source: AsyncIterator[Any], seq_map: Sequence[int] | None, outcome: _Outcome
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
        outcome.source_errors.append(outcome.error_message)


_STOP_OUTCOMES = {
    "cancel": (RunStatus.CANCELLED, "Cancelled on request."),
    "shutdown": (RunStatus.QUEUED, "Requeued: its worker shut down before the run finished."),
    "fenced": (RunStatus.FAILED, "Another attempt took over this run (lease expired)."),
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
    while True:
        if stops.cancel.is_set() or recorder.cancel_requested.is_set():
            return "cancel"
        if stops.shutdown.is_set():
            return "shutdown"
        if recorder.fenced_out.is_set():
            return "fenced"
        now = time.monotonic()
        if now - last_publish >= publish_every:
            recorder.publish_progress(_snapshot(pipeline, expected))
            last_publish = now
        await asyncio.sleep(interval)


def _snapshot(
    pipeline: AsyncTaskPipeline[Any, Any], expected: int | None, *, final: bool = False
) -> dict[str, Any]:
    progress = dict(pipeline.progress())
    elapsed = progress.get("elapsed") or 0.0
    done = progress["items_out"] + progress["filtered"] + progress["errors"]
    rate = progress["items_in"] / elapsed if elapsed > 0 else None
    progress["rate"] = rate
    progress["expected"] = expected
    progress["eta_seconds"] = None
    if expected and rate and not final:
        progress["eta_seconds"] = max(expected - progress["items_in"], 0) / rate
    progress["done"] = done
    progress["final"] = final
    return progress


def _expected_items(
    source: str, source_params: dict[str, Any], seq_map: Sequence[int] | None
) -> int | None:
    if seq_map is not None:
        return len(seq_map)
    hint = registry.get("source", source).size_hint
    if hint is None:
        return None
    try:
        return hint(source_params)
    except Exception:
        return None


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _error_dict(error: Any) -> dict[str, Any]:
    return {
        "seq": error.seq,
        "stage": error.stage,
        "type": error.exc_type,
        "message": error.message,
        "traceback": error.traceback,
    }


def _finish(run: PipelineRun, outcome: _Outcome, recorder: RunRecorder) -> PipelineRun:
    if outcome.status == RunStatus.QUEUED:
        return _requeue(run, outcome)
    summary = outcome.summary or {}
    now = timezone.now()
    fields: dict[str, Any] = {
        "status": outcome.status,
        "finished_at": now,
        "summary": summary or None,
        "result": outcome.result,
        "errors": summary.pop("errors", []) if summary else [],
        "error_message": outcome.error_message[:10_000],
        "traceback": outcome.traceback,
        "p50_latency": summary.get("p50_total_latency"),
        "p95_latency": summary.get("p95_total_latency"),
        "throughput": summary.get("throughput"),
        "eta_seconds": None,
        "lease_expires_at": None,
    }
    with transaction.atomic():
        updated = PipelineRun.objects.filter(
            pk=run.pk, attempt=run.attempt, status=RunStatus.RUNNING
        ).update(**fields)
        if updated and summary:
            StageStat.objects.filter(run=run).delete()
            StageStat.objects.bulk_create(stage_stats(run, summary))
    if not updated:
        logger.warning(
            "Run %s: final status of attempt %s not written (superseded)", run.pk, run.attempt
        )
    run.refresh_from_db()
    return run


def _requeue(run: PipelineRun, outcome: _Outcome) -> PipelineRun:
    PipelineRun.objects.filter(pk=run.pk, attempt=run.attempt, status=RunStatus.RUNNING).update(
        status=RunStatus.QUEUED,
        worker_id="",
        started_at=None,
        lease_expires_at=None,
        error_message=outcome.error_message,
    )
    run.refresh_from_db()
    return run


def stage_stats(run: PipelineRun, summary: dict[str, Any]) -> list[StageStat]:
    stats = summary.get("stage_statistics", {})
    bottleneck = summary.get("bottleneck_stage")
    rows = []
    for position, name in enumerate(summary.get("stage_order") or list(stats)):
        stat = stats[name]
        values: dict[str, Any] = {}
        for kind in ("computation", "queue_wait", "transmission"):
            for key, value in (stat.get(kind) or {}).items():
                values[f"{kind}_{key}"] = value or 0.0
        rows.append(
            StageStat(
                run=run,
                position=position,
                stage=name,
                items_in=stat.get("items_in", 0),
                items_out=stat.get("items_out", 0),
                items_filtered=stat.get("filtered_count", 0),
                items_errors=stat.get("error_count", 0),
                processed=stat.get("processed_count", 0),
                busy_ratio=stat.get("busy_ratio", 0.0),
                is_bottleneck=name == bottleneck,
                **values,
            )
        )
    return rows
