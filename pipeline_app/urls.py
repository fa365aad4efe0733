"""Dashboard URLs, mounted by a project with
``path("pipelines/", include("pipeline_app.urls"))``."""

from __future__ import annotations

from django.urls import path, register_converter

from pipeline_app import views


class ExportFormatConverter:
    regex = "csv|json"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(ExportFormatConverter, "exportfmt")

app_name = "pipeline_app"

urlpatterns = [
    path("", views.pipeline_list, name="pipeline-list"),
    path("p/<slug:slug>/", views.pipeline_detail, name="pipeline-detail"),
    path("p/<slug:slug>/run/", views.pipeline_run, name="pipeline-run"),
    path("runs/", views.run_list, name="run-list"),
    path("runs/<int:pk>/", views.run_detail, name="run-detail"),
    path("runs/<int:pk>/items/", views.run_items, name="run-items"),
    path("runs/<int:pk>/items.<exportfmt:fmt>", views.run_export, name="run-export"),
    path("runs/<int:pk>/status.json", views.run_status, name="run-status"),
    path("runs/<int:pk>/cancel/", views.run_cancel, name="run-cancel"),
    path("runs/<int:pk>/rerun/", views.run_rerun, name="run-rerun"),
]
