"""Admin for definitions (stages inline, "Run now") and runs (fast history, read-only detail)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from pipeline_app import jobs
from pipeline_app.charts import fmt_seconds
from pipeline_app.forms import (
    PipelineDefinitionForm,
    RunParamsForm,
    StageConfigForm,
    StageConfigFormSet,
)
from pipeline_app.models import (
    PipelineDefinition,
    PipelineRun,
    PipelineStageConfig,
    StageStat,
    Trigger,
)
from pipeline_app.params import ParamError
from pipeline_app.queries import stat_value

RUN_PERM = "pipeline_app.run_pipeline"
VIEW_RUNS_PERM = "pipeline_app.view_pipelinerun"


class CappedCountPaginator(Paginator):  # type: ignore[type-arg]
    """Counts at most ``CAP`` rows (``SELECT COUNT(*) FROM (... LIMIT CAP)``): past that the
    admin shows CAP results and the last pages are reached by filtering instead."""

    CAP = 10_000

    @cached_property
    def count(self) -> int:
        object_list: Any = self.object_list
        if isinstance(object_list, QuerySet):
            return object_list.order_by()[: self.CAP].count()
        return min(len(object_list), self.CAP)


def status_badge(run: PipelineRun) -> SafeString:
    return format_html(
        '<span class="pa-badge status-{}">{}</span>', run.status, run.get_status_display()
    )


# -- definitions --------------------------------------------------------------------------------


class StageInline(admin.TabularInline):  # type: ignore[type-arg]
    model = PipelineStageConfig
    form = StageConfigForm
    formset = StageConfigFormSet
    extra = 0
    min_num = 1
    ordering = ["position", "id"]
    fields = ["position", "stage", "workers", "executor", "params"]


@admin.register(PipelineDefinition)
class PipelineDefinitionAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    form = PipelineDefinitionForm
    inlines = [StageInline]
    list_display = ["name", "source", "sink", "is_active", "is_code_defined", "dashboard_link"]
    list_filter = ["is_active", "is_code_defined"]
    search_fields = ["name", "description"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["is_code_defined", "created_at", "updated_at", "recent_runs"]
    actions = ["run_now"]
    change_form_template = "admin/pipeline_app/pipelinedefinition/change_form.html"
    fieldsets = [
        (None, {"fields": ["name", "slug", "description", "is_active"]}),
        ("Input and output", {"fields": ["source", "source_params", "sink", "sink_params"]}),
        (
            "Execution",
            {
                "fields": [
                    "max_queue_size",
                    "enable_timing",
                    "error_policy",
                    "timeout_seconds",
                    "max_attempts",
                ]
            },
        ),
        ("History", {"fields": ["recent_runs", "is_code_defined", "created_at", "updated_at"]}),
    ]

    def has_run_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(RUN_PERM)

    @admin.display(description="Dashboard")
    def dashboard_link(self, obj: PipelineDefinition) -> SafeString:
        return format_html('<a href="{}">open</a>', obj.get_absolute_url())

    @admin.display(description="Recent runs")
    def recent_runs(self, obj: PipelineDefinition) -> SafeString:
        if not obj.pk:
            return format_html("{}", "\u2013")
        runs = obj.runs.only(
            "pk", "status", "created_at", "p95_latency", "items_out", "definition_id"
        ).order_by("-created_at", "-pk")[:10]
        rows = format_html_join(
            "",
            '<li><a href="{}">#{}</a> {} · {} · {} items out · p95 {}</li>',
            (
                (
                    reverse("admin:pipeline_app_pipelinerun_change", args=[r.pk]),
                    r.pk,
                    status_badge(r),
                    r.created_at.strftime("%Y-%m-%d %H:%M"),
                    r.items_out,
                    fmt_seconds(r.p95_latency),
                )
                for r in runs
            ),
        )
        return format_html("<ul>{}</ul>", rows) if rows else format_html("{}", "No runs yet.")

    @admin.action(description="Run now (default parameters)", permissions=["run"])
    def run_now(self, request: HttpRequest, queryset: QuerySet[PipelineDefinition]) -> None:
        for definition in queryset:
            try:
                run = jobs.submit(definition, user=request.user, trigger=Trigger.ADMIN)
            except ParamError as exc:
                self.message_user(request, f"{definition.name}: {exc}", messages.ERROR)
            else:
                self.message_user(
                    request,
                    format_html(
                        '{}: run <a href="{}">#{}</a> queued.',
                        definition.name,
                        run.get_absolute_url(),
                        run.pk,
                    ),
                    messages.SUCCESS,
                )

    def get_urls(self) -> list[URLPattern]:
        run_view = self.admin_site.admin_view(self.run_view)
        custom = [
            path(
                "<path:object_id>/run/",
                run_view,
                name="pipeline_app_pipelinedefinition_run",
            )
        ]
        return custom + super().get_urls()

    def run_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The "Run now" button: a form with the source and sink parameters."""
        definition = self.get_object(request, object_id)
        if definition is None:
            raise Http404("No such pipeline definition.")
        # as the dashboard's run form: starting a run shows its parameters and then its run
        if not (self.has_run_permission(request) and request.user.has_perm(VIEW_RUNS_PERM)):
            raise PermissionDenied
        form = RunParamsForm(definition, request.POST or None)
        if request.method == "POST" and (run := form.submit(request.user, Trigger.ADMIN)):
            self.message_user(request, f"Run #{run.pk} of {definition.name} queued.")
            return HttpResponseRedirect(run.get_absolute_url())
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": definition,
            "title": f"Run {definition.name}",
            "form": form,
        }
        return TemplateResponse(request, "admin/pipeline_app/pipelinedefinition/run.html", context)


# -- runs ---------------------------------------------------------------------------------------


def _avg_p95(stat: StageStat, kind: str) -> str:
    avg, p95 = stat_value(stat, f"{kind}_avg"), stat_value(stat, f"{kind}_p95")
    return f"{fmt_seconds(avg)} / {fmt_seconds(p95)}"


class StageStatInline(admin.TabularInline):  # type: ignore[type-arg]
    model = StageStat
    extra = 0
    can_delete = False
    ordering = ["position"]
    fields = readonly_fields = (
        "stage",
        "processed",
        "items_errors",
        "computation",
        "queue_wait",
        "busy",
    )

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="Computation avg / p95")
    def computation(self, obj: StageStat) -> str:
        return _avg_p95(obj, "computation")

    @admin.display(description="Queue wait avg / p95")
    def queue_wait(self, obj: StageStat) -> str:
        return _avg_p95(obj, "queue_wait")

    @admin.display(description="Busy")
    def busy(self, obj: StageStat) -> str:
        mark = " — bottleneck" if obj.is_bottleneck else ""
        return f"{obj.busy_ratio * 100:.0f}%{mark}"


@admin.register(PipelineRun)
class PipelineRunAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = [
        "run_label",
        "status_display",
        "definition",
        "trigger",
        "user",
        "created_at",
        "queue_wait_display",
        "duration_display",
        "items_in",
        "items_out",
        "items_errors",
        "p50_display",
        "p95_display",
    ]
    list_display_links = ["run_label"]
    list_filter = ["status", "definition", "trigger", "created_at"]
    list_select_related = ["definition", "user"]
    date_hierarchy = "created_at"
    search_fields = ["=id", "definition__name", "user__username"]
    show_full_result_count = False
    paginator = CappedCountPaginator
    list_per_page = 50
    actions = ["cancel_runs", "rerun_runs", "rerun_failed_items"]
    inlines = [StageStatInline]
    readonly_fields = (
        "dashboard_link",
        "status_display",
        "definition",
        "trigger",
        "user",
        "created_at",
        "started_at",
        "finished_at",
        "queue_wait_display",
        "duration_display",
        "items_in",
        "items_out",
        "items_filtered",
        "items_errors",
        "p50_display",
        "p95_display",
        "throughput",
        "params",
        "rerun_of",
        "attempt",
        "worker_id",
        "error_message",
        "traceback",
    )
    fields = readonly_fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[PipelineRun]:
        runs = super().get_queryset(request)
        url_name = request.resolver_match.url_name if request.resolver_match else None
        if url_name and url_name.endswith("changelist"):
            # not "snapshot": __str__ (the action checkbox label) reads it
            runs = runs.defer("summary", "progress", "result", "errors", "traceback", "params")
        return runs

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("pipeline_app.cancel_pipelinerun")

    def has_run_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(RUN_PERM)

    @admin.display(description="Run", ordering="-pk")
    def run_label(self, obj: PipelineRun) -> str:
        return f"#{obj.pk}"

    @admin.display(description="Status", ordering="status")
    def status_display(self, obj: PipelineRun) -> SafeString:
        return status_badge(obj)

    @admin.display(description="Queue wait")
    def queue_wait_display(self, obj: PipelineRun) -> str:
        return fmt_seconds(obj.queue_wait.total_seconds()) if obj.queue_wait else "\u2013"

    @admin.display(description="Duration")
    def duration_display(self, obj: PipelineRun) -> str:
        return fmt_seconds(obj.duration.total_seconds()) if obj.duration else "\u2013"

    @admin.display(description="p50", ordering="p50_latency")
    def p50_display(self, obj: PipelineRun) -> str:
        return fmt_seconds(obj.p50_latency)

    @admin.display(description="p95", ordering="p95_latency")
    def p95_display(self, obj: PipelineRun) -> str:
        return fmt_seconds(obj.p95_latency)

    @admin.display(description="Dashboard")
    def dashboard_link(self, obj: PipelineRun) -> SafeString:
        return format_html(
            '<a href="{}">Timings, charts and items on the dashboard</a>', obj.get_absolute_url()
        )

    @admin.action(description="Cancel selected runs", permissions=["cancel"])
    def cancel_runs(self, request: HttpRequest, queryset: QuerySet[PipelineRun]) -> None:
        cancelled = [jobs.cancel(run).pk for run in queryset if not run.is_finished]
        self.message_user(request, f"Cancel requested for {len(cancelled)} run(s).")

    @admin.action(description="Re-run selected runs", permissions=["run"])
    def rerun_runs(self, request: HttpRequest, queryset: QuerySet[PipelineRun]) -> None:
        self._rerun(request, queryset, failed_only=False)

    @admin.action(description="Re-run only the failed items", permissions=["run"])
    def rerun_failed_items(self, request: HttpRequest, queryset: QuerySet[PipelineRun]) -> None:
        self._rerun(request, queryset, failed_only=True)

    def _rerun(
        self, request: HttpRequest, queryset: QuerySet[PipelineRun], *, failed_only: bool
    ) -> None:
        for run in queryset.select_related("definition"):
            try:
                new = jobs.rerun(
                    run, user=request.user, trigger=Trigger.ADMIN, failed_only=failed_only
                )
            except ParamError as exc:
                self.message_user(request, f"Run #{run.pk}: {exc}", messages.WARNING)
            else:
                self.message_user(request, f"Run #{new.pk} queued (re-run of #{run.pk}).")
