"""Sync code-defined pipelines (``registry.register_pipeline``) into ``PipelineDefinition`` rows."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from pipeline_app.models import PipelineDefinition, PipelineStageConfig, free_slug
from pipeline_app.registry import PipelineSpec, registry


def sync_code_pipelines(using: str = "default") -> list[str]:
    """Create or update a definition per registered pipeline; returns the names changed."""
    changed = []
    for spec in registry.pipelines.values():
        if _sync_one(spec, using):
            changed.append(spec.name)
    return changed


def _sync_one(spec: PipelineSpec, using: str) -> bool:
    values: dict[str, Any] = {
        "description": spec.description,
        "source": spec.source,
        "source_params": dict(spec.source_params),
        "sink": spec.sink,
        "sink_params": dict(spec.sink_params),
        "max_queue_size": spec.max_queue_size,
        "enable_timing": spec.enable_timing,
        "error_policy": spec.error_policy,
        "timeout_seconds": spec.timeout_seconds,
        "max_attempts": spec.max_attempts,
        "is_code_defined": True,
    }
    stages = [s.as_dict() for s in spec.stages]
    with transaction.atomic(using=using):
        definition = (
            PipelineDefinition.objects.using(using)
            .select_for_update()
            .filter(name=spec.name)
            .first()
        )
        if definition is not None:
            current = definition.snapshot()
            wanted = {key: values[key] for key in current if key in values}
            unchanged = (
                {**current, **wanted, "stages": stages} == current
                and definition.description == spec.description
                and definition.is_code_defined
            )
            if unchanged:
                return False
            for key, value in values.items():
                setattr(definition, key, value)
            definition.save(using=using)
            definition.stages.all().delete()
        else:
            slug = free_slug(spec.name, using)
            definition = PipelineDefinition(name=spec.name, slug=slug, **values)
            definition.save(using=using)
        PipelineStageConfig.objects.using(using).bulk_create(
            PipelineStageConfig(definition=definition, position=i, **stage)
            for i, stage in enumerate(stages)
        )
    return True
