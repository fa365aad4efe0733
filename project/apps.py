from __future__ import annotations

from django.apps import AppConfig


class DemoProjectConfig(AppConfig):
    name = "project"
    verbose_name = "Demo project"
