"""``manage.py syncpipelines``: write code-defined pipelines into the definitions table."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from pipeline_app.definitions import sync_code_pipelines


class Command(BaseCommand):
    help = "Create or update PipelineDefinition rows for pipelines registered in code."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--database", default="default")

    def handle(self, *args: Any, database: str, **options: Any) -> None:
        changed = sync_code_pipelines(using=database)
        self.stdout.write(
            f"Synced {len(changed)} pipeline(s): {', '.join(changed)}"
            if changed
            else "Code-defined pipelines are up to date."
        )
