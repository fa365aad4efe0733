"""Small helpers to create definitions and runs in tests."""

from __future__ import annotations

from typing import Any

from pipeline_app import jobs
from pipeline_app.models import PipelineDefinition, PipelineRun, PipelineStageConfig, Trigger


def make_definition(
    name: str = "t",
    *,
    stages: list[Any] | None = None,
    source: str = "range",
    source_params: dict[str, Any] | None = None,
    sink: str = "test-collect",
    **fields: Any,
) -> PipelineDefinition:
    definition = PipelineDefinition.objects.create(
        name=name,
        source=source,
        source_params=source_params or {"count": 20},
        sink=sink,
        **fields,
    )
    for position, stage in enumerate(stages or ["test-inc"]):
        spec = {"stage": stage} if isinstance(stage, str) else stage
        PipelineStageConfig.objects.create(definition=definition, position=position, **spec)
    return definition


def claimed_run(definition: PipelineDefinition, **kwargs: Any) -> PipelineRun:
    kwargs.setdefault("trigger", Trigger.API)
    run = jobs.create_run(definition, **kwargs)
    assert jobs.claim_run(run, "test-worker")
    return run
