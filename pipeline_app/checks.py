"""System checks with stable IDs (``pipeline_app.E001`` ...), registered in ``ready()``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning

from pipeline_app import conf


@dataclass(frozen=True, slots=True)
class _NumberRule:
    integer: bool  # counts are used as slice bounds, range sizes and thread counts
    allow_zero: bool
    allow_none: bool = False

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.allow_none
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.integer and not isinstance(value, int):
            return False
        return value > 0 or (value == 0 and self.allow_zero)

    def describe(self) -> str:
        bound = "a non-negative" if self.allow_zero else "a positive"
        kind = "integer" if self.integer else "number"
        return f"{bound} {kind}{' or None' if self.allow_none else ''}"


_POSITIVE_COUNT = _NumberRule(integer=True, allow_zero=False)
_NON_NEGATIVE_COUNT = _NumberRule(integer=True, allow_zero=True)
_POSITIVE_SECONDS = _NumberRule(integer=False, allow_zero=False)
_NON_NEGATIVE_SECONDS = _NumberRule(integer=False, allow_zero=True)

_NUMBER_RULES: dict[str, _NumberRule] = {
    "WORKER_CONCURRENCY": _POSITIVE_COUNT,
    "POLL_INTERVAL": _POSITIVE_SECONDS,
    "LEASE_SECONDS": _POSITIVE_SECONDS,
    "SHUTDOWN_GRACE_SECONDS": _NON_NEGATIVE_SECONDS,
    "PROGRESS_INTERVAL": _POSITIVE_SECONDS,
    "ITEM_TIMING_LIMIT": _NON_NEGATIVE_COUNT,
    "ITEM_TIMING_KEEP_SLOWEST": _NON_NEGATIVE_COUNT,
    "ITEM_TIMING_SAMPLE_EVERY": _POSITIVE_COUNT,
    "ITEM_TIMING_BATCH_SIZE": _NumberRule(integer=True, allow_zero=False, allow_none=True),
    "OUTPUT_PREVIEW_LIMIT": _NON_NEGATIVE_COUNT,
    "MAX_RECORDED_ERRORS": _NON_NEGATIVE_COUNT,
}


def check_settings(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    user_config = getattr(settings, conf.SETTING_NAME, {})
    if not isinstance(user_config, dict):
        return [
            Error(
                f"settings.{conf.SETTING_NAME} must be a dict, not {type(user_config).__name__}.",
                id="pipeline_app.E001",
            )
        ]
    errors: list[CheckMessage] = [
        Error(
            f"Unknown key {key!r} in settings.{conf.SETTING_NAME}.",
            hint=f"Known keys: {', '.join(sorted(conf.CONFIG_DEFAULTS))}.",
            id="pipeline_app.E002",
        )
        for key in user_config
        if key not in conf.CONFIG_DEFAULTS
    ]
    config = conf.get_config()
    invalid_numbers = [
        name for name, rule in _NUMBER_RULES.items() if not rule.accepts(config[name])
    ]
    errors += [
        Error(
            f"PIPELINE_APP[{name!r}] must be {_NUMBER_RULES[name].describe()}, "
            f"got {config[name]!r}.",
            id="pipeline_app.E003",
        )
        for name in invalid_numbers
    ]
    if (
        "LEASE_SECONDS" not in invalid_numbers
        and "PROGRESS_INTERVAL" not in invalid_numbers
        and config["LEASE_SECONDS"] < 3 * config["PROGRESS_INTERVAL"]
    ):
        errors.append(
            Warning(
                "PIPELINE_APP['LEASE_SECONDS'] is shorter than three progress intervals: "
                "healthy runs may be declared lost.",
                id="pipeline_app.W001",
            )
        )
    roots = config["FILE_ROOTS"]
    if not isinstance(roots, list | tuple) or not all(isinstance(r, str) for r in roots):
        errors.append(
            Error(
                "PIPELINE_APP['FILE_ROOTS'] must be a list of directory paths.",
                id="pipeline_app.E004",
            )
        )
    embedded_worker = config["EMBEDDED_WORKER"]
    if embedded_worker is not None and not isinstance(embedded_worker, bool):
        errors.append(
            Error(
                "PIPELINE_APP['EMBEDDED_WORKER'] must be True, False or None (auto), "
                f"got {embedded_worker!r}.",
                id="pipeline_app.E005",
            )
        )
    return errors


def check_registered_pipelines(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Code-defined pipelines must name registered stages, sources and sinks."""
    from pipeline_app.registry import registry

    errors: list[CheckMessage] = []
    for spec in registry.pipelines.values():
        snapshot = {
            "stages": [s.as_dict() for s in spec.stages],
            "source": spec.source,
            "sink": spec.sink,
        }
        for missing in registry.missing_names(snapshot):
            errors.append(
                Error(
                    f"Pipeline {spec.name!r} refers to unregistered {missing}.",
                    hint="Register it with @registry.stage/source/sink in a pipelines.py module.",
                    obj=spec.name,
                    id="pipeline_app.E010",
                )
            )
    return errors


def check_definitions(
    app_configs: Sequence[AppConfig] | None = None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """Definitions in the database must name registered stages, sources and sinks."""
    if not databases:
        return []
    from django.db import DatabaseError

    from pipeline_app.models import PipelineDefinition
    from pipeline_app.registry import registry

    errors: list[CheckMessage] = []
    for database in databases:
        try:
            definitions = list(
                PipelineDefinition.objects.using(database).prefetch_related("stages")
            )
        except DatabaseError:  # not migrated yet
            continue
        for definition in definitions:
            for missing in registry.missing_names(definition.snapshot()):
                errors.append(
                    Error(
                        f"Pipeline definition {definition.name!r} refers to unregistered "
                        f"{missing}.",
                        hint="Register it in code, or edit the definition in the admin.",
                        obj=definition,
                        id="pipeline_app.E011",
                    )
                )
    return errors
