"""Turn a run's snapshot into parameters and an engine, checked against the registry."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from pipeline_app import conf, params
from pipeline_app.engine import AsyncTaskPipeline
from pipeline_app.models import ErrorPolicy, Trigger
from pipeline_app.registry import registry

WEB_TRIGGERS = frozenset({Trigger.ADMIN, Trigger.DASHBOARD})


def validated_params(
    snapshot: dict[str, Any], run_params: dict[str, Any], *, trigger: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Source and sink parameters of a run: definition defaults, then the run's own values.

    File parameters of runs started from the web must lie under ``FILE_ROOTS``; command-line
    and Python API runs may use any path their user can read.
    """
    roots = conf.get("FILE_ROOTS") if trigger in WEB_TRIGGERS else None
    source = registry.get("source", snapshot["source"])
    sink = registry.get("sink", snapshot["sink"])
    source_values = {**snapshot["source_params"], **run_params.get("source", {})}
    sink_values = {**snapshot["sink_params"], **run_params.get("sink", {})}
    try:
        checked_source = params.validate(
            f"source {source.name!r}",
            source.params,
            source_values,
            file_params=source.file_params,
            file_roots=roots,
        )
        if source.check is not None:
            try:
                source.check(checked_source)
            except (ValueError, TypeError) as exc:
                blamed = exc.param if isinstance(exc, params.ParamError) else None
                raise params.ParamError(f"source {source.name!r}: {exc}", param=blamed) from None
    except params.ParamError as exc:
        exc.kind = "source"
        raise
    try:
        checked_sink = params.validate(
            f"sink {sink.name!r}",
            sink.params,
            sink_values,
            file_params=sink.file_params,
            file_roots=roots,
        )
    except params.ParamError as exc:
        exc.kind = "sink"
        raise
    return checked_source, checked_sink


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


def expected_items(
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
