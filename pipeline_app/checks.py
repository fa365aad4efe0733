"""System checks with stable IDs (``pipeline_app.E001`` ...), registered in ``ready()``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning

from pipeline_app import conf

_POSITIVE_NUMBERS = (
    "WORKER_CONCURRENCY",
    "POLL_INTERVAL",
    "LEASE_SECONDS",
    "PROGRESS_INTERVAL",
    "ITEM_TIMING_SAMPLE_EVERY",
)
_POSITIVE_NUMBERS_OR_NONE = ("ITEM_TIMING_BATCH_SIZE",)
_NON_NEGATIVE_NUMBERS = (
    "SHUTDOWN_GRACE_SECONDS",
    "ITEM_TIMING_LIMIT",
    "ITEM_TIMING_KEEP_SLOWEST",
    "OUTPUT_PREVIEW_LIMIT",
    "MAX_RECORDED_ERRORS",
)


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
    errors += _check_numbers(config, _POSITIVE_NUMBERS, allow_zero=False)
    errors += _check_numbers(config, _POSITIVE_NUMBERS_OR_NONE, allow_zero=False, allow_none=True)
    errors += _check_numbers(config, _NON_NEGATIVE_NUMBERS, allow_zero=True)
    if (
        config["LEASE_SECONDS"]
        and config["POLL_INTERVAL"]
        and (config["LEASE_SECONDS"] < 3 * config["PROGRESS_INTERVAL"])
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
    return errors


def _check_numbers(
    config: dict[str, Any], names: Iterable[str], *, allow_zero: bool, allow_none: bool = False
) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    for name in names:
        value = config[name]
        if value is None and allow_none:
            continue
        valid = isinstance(value, int | float) and not isinstance(value, bool)
        if valid and (value < 0 or (value == 0 and not allow_zero)):
            valid = False
        if not valid:
            bound = "a non-negative" if allow_zero else "a positive"
            alternative = " or None" if allow_none else ""
            errors.append(
                Error(
                    f"PIPELINE_APP[{name!r}] must be {bound} number{alternative}, got {value!r}.",
                    id="pipeline_app.E003",
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
