from __future__ import annotations

from django.apps import AppConfig
from django.core import checks


class PipelineAppConfig(AppConfig):
    name = "pipeline_app"
    verbose_name = "Pipelines"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from pipeline_app import checks as app_checks

        checks.register(app_checks.check_settings, "pipeline_app")
