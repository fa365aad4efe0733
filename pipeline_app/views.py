"""The browser dashboard: pipelines, run history and run detail. Thin: queries live in
:mod:`pipeline_app.queries`, page context in :mod:`pipeline_app.pages`, exports in
:mod:`pipeline_app.exports`."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from pipeline_app import charts, exports, jobs, pages, queries
from pipeline_app.forms import RunFilterForm, RunParamsForm
from pipeline_app.models import PipelineDefinition, PipelineRun, Trigger
from pipeline_app.params import ParamError
from pipeline_app.progress import run_state

VIEW = "pipeline_app.view_pipelinerun"
RUN = "pipeline_app.run_pipeline"
CANCEL = "pipeline_app.cancel_pipelinerun"

V = TypeVar("V", bound=Callable[..., HttpResponseBase])


def permission(*perms: str) -> Callable[[V], V]:
    """Anonymous users go to the login page; signed-in users without ``perms`` get a 403."""

    def decorator(view: V) -> V:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not request.user.has_perms(perms):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return cast(V, wrapper)

    return decorator


def _run(pk: int) -> PipelineRun:
    return get_object_or_404(PipelineRun.objects.select_related("definition", "user"), pk=pk)


@require_GET
@permission(VIEW)
def pipeline_list(request: HttpRequest) -> HttpResponse:
    definitions = list(PipelineDefinition.objects.order_by("name"))
    latest = queries.last_runs(definitions)
    trends = queries.trend_runs_of(definitions)
    can_run = request.user.has_perm(RUN)
    rows = []
    for definition in definitions:
        trend = trends[definition.pk]
        rows.append(
            {
                "definition": definition,
                "last_run": latest.get(definition.pk),
                "sparkline": charts.sparkline(
                    [r.p95_latency for r in trend], label=f"p95 latency of {definition.name}"
                ),
                "form": RunParamsForm(definition) if can_run and definition.is_active else None,
            }
        )
    return render(request, "pipeline_app/pipeline_list.html", {"rows": rows, "can_run": can_run})


def _pipeline_page(
    request: HttpRequest, definition: PipelineDefinition, form: RunParamsForm | None
) -> HttpResponse:
    can_run = request.user.has_perm(RUN)
    if form is None and can_run and definition.is_active:
        form = RunParamsForm(definition)
    recent = queries.run_page(queries.filtered_runs(pipeline=definition.slug), size=10)
    context = {
        "definition": definition,
        "form": form,
        "can_run": can_run,
        "recent": recent.rows,
        **pages.trend_context(definition),
    }
    return render(request, "pipeline_app/pipeline_detail.html", context)


@require_GET
@permission(VIEW)
def pipeline_detail(request: HttpRequest, slug: str) -> HttpResponse:
    definition = get_object_or_404(PipelineDefinition, slug=slug)
    return _pipeline_page(request, definition, None)


@require_POST
@permission(VIEW, RUN)
def pipeline_run(request: HttpRequest, slug: str) -> HttpResponse:
    definition = get_object_or_404(PipelineDefinition, slug=slug)
    form = RunParamsForm(definition, request.POST)
    if run := form.submit(request.user, Trigger.DASHBOARD):
        messages.success(request, f"Run #{run.pk} of {definition.name} is queued.")
        return redirect(run)
    return _pipeline_page(request, definition, form)


@require_GET
@permission(VIEW)
def run_list(request: HttpRequest) -> HttpResponse:
    form = RunFilterForm(request.GET or None)
    filters = form.filters()
    runs = queries.filtered_runs(**filters)
    if form.errors:
        # no run matches an invalid value (an unknown pipeline): ignoring it would widen the list
        runs = runs.none()
    page = queries.run_page(
        runs,
        after=request.GET.get("after"),
        before=request.GET.get("before"),
    )
    query = urlencode(filters)
    context = {"form": form, "page": page, "filter_query": query}
    return render(request, "pipeline_app/run_list.html", context)


@require_GET
@permission(VIEW)
def run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    run = _run(pk)
    context = pages.run_detail_context(run, request.GET.dict())
    context["can_run"] = request.user.has_perm(RUN)
    context["can_cancel"] = request.user.has_perm(CANCEL)
    return render(request, "pipeline_app/run_detail.html", context)


@require_GET
@permission(VIEW)
def run_items(request: HttpRequest, pk: int) -> HttpResponse:
    run = _run(pk)
    page = queries.item_page(
        run,
        sort=request.GET.get("sort", "seq"),
        status=request.GET.get("status", ""),
        after=request.GET.get("after"),
    )
    return render(request, "pipeline_app/run_items.html", {"run": run, "items": page})


@require_GET
@permission(VIEW)
def run_status(request: HttpRequest, pk: int) -> JsonResponse:
    return JsonResponse({"type": "run.progress", "run": run_state(_run(pk))})


@require_GET
@permission(VIEW)
def run_export(request: HttpRequest, pk: int, fmt: str) -> StreamingHttpResponse:
    run = _run(pk)
    stream, content_type = exports.stream(run, fmt)
    response = StreamingHttpResponse(stream, content_type=content_type)
    filename = f"run-{run.pk}-items.{fmt}"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@require_POST
@permission(VIEW, CANCEL)
def run_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    run = _run(pk)
    if run.is_finished:
        messages.info(request, f"Run #{run.pk} has already finished ({run.status}).")
    else:
        run = jobs.cancel(run)
        messages.success(request, f"Run #{run.pk}: cancel requested ({run.status}).")
    return redirect(run)


@require_POST
@permission(VIEW, RUN)
def run_rerun(request: HttpRequest, pk: int) -> HttpResponse:
    run = _run(pk)
    failed_only = request.POST.get("failed_only") in {"1", "true", "on"}
    try:
        new = jobs.rerun(run, user=request.user, trigger=Trigger.DASHBOARD, failed_only=failed_only)
    except ParamError as exc:
        messages.error(request, str(exc))
        return redirect(run)
    what = "its failed items" if failed_only else "it"
    messages.success(request, f"Run #{new.pk} re-runs {what} (from #{run.pk}).")
    return redirect(new)
