from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core import checks
from django.db.models.signals import post_migrate


class PipelineAppConfig(AppConfig):
    name = "pipeline_app"
    verbose_name = "Pipelines"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from pipeline_app import checks as app_checks
        from pipeline_app.registry import autodiscover

        checks.register(app_checks.check_settings, "pipeline_app")
        checks.register(app_checks.check_registered_pipelines, "pipeline_app")
        checks.register(app_checks.check_definitions, "pipeline_app", checks.Tags.database)
        autodiscover()
        post_migrate.connect(_sync_after_migrate, sender=self)


def _sync_after_migrate(using: str = "default", **kwargs: Any) -> None:
    from pipeline_app.definitions import sync_code_pipelines

    sync_code_pipelines(using=using)
