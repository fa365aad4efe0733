"""The admin: definitions with registered stages and "Run now", and the fast run history."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.urls import reverse

from pipeline_app import jobs
from pipeline_app.definitions import sync_code_pipelines
from pipeline_app.models import (
    PipelineDefinition,
    PipelineRun,
    PipelineStageConfig,
    RunStatus,
    Trigger,
)
from tests.factories import make_definition
from tests.test_views import HOSTILE, make_run

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:pipeline_app_pipelinerun_changelist")
ADD_DEFINITION = reverse("admin:pipeline_app_pipelinedefinition_add")


def definition_post(**overrides: Any) -> dict[str, Any]:
    data = {
        "name": "admin-made",
        "slug": "admin-made",
        "description": "",
        "is_active": "on",
        "source": "range",
        "source_params": '{"count": 5}',
        "sink": "discard",
        "sink_params": "{}",
        "max_queue_size": "100",
        "enable_timing": "on",
        "error_policy": "skip",
        "timeout_seconds": "",
        "max_attempts": "1",
        "stages-TOTAL_FORMS": "2",
        "stages-INITIAL_FORMS": "0",
        "stages-MIN_NUM_FORMS": "1",
        "stages-MAX_NUM_FORMS": "1000",
        "stages-0-position": "1",
        "stages-0-stage": "test-inc",
        "stages-0-workers": "1",
        "stages-0-executor": "thread",
        "stages-0-params": '{"by": 2}',
        "stages-1-position": "0",
        "stages-1-stage": "test-drop-odd",
        "stages-1-workers": "2",
        "stages-1-executor": "thread",
        "stages-1-params": "{}",
    }
    data.update(overrides)
    return data


def change_post(definition: PipelineDefinition, **overrides: Any) -> dict[str, Any]:
    """The change form of ``definition`` as the admin would post it unchanged; an override of
    ``None`` leaves the key out (an unchecked checkbox)."""
    stages = list(definition.stages.order_by("position", "id"))
    data: dict[str, Any] = {
        "name": definition.name,
        "slug": definition.slug,
        "description": definition.description,
        "is_active": "on" if definition.is_active else None,
        "source": definition.source,
        "source_params": json.dumps(definition.source_params),
        "sink": definition.sink,
        "sink_params": json.dumps(definition.sink_params),
        "max_queue_size": str(definition.max_queue_size),
        "enable_timing": "on" if definition.enable_timing else None,
        "error_policy": definition.error_policy,
        "timeout_seconds": "" if definition.timeout_seconds is None else definition.timeout_seconds,
        "max_attempts": str(definition.max_attempts),
        "stages-TOTAL_FORMS": str(len(stages)),
        "stages-INITIAL_FORMS": str(len(stages)),
        "stages-MIN_NUM_FORMS": "1",
        "stages-MAX_NUM_FORMS": "1000",
    }
    for index, stage in enumerate(stages):
        prefix = f"stages-{index}"
        data[f"{prefix}-id"] = str(stage.pk)
        data[f"{prefix}-position"] = str(stage.position)
        data[f"{prefix}-stage"] = stage.stage
        data[f"{prefix}-workers"] = str(stage.workers)
        data[f"{prefix}-executor"] = stage.executor
        data[f"{prefix}-params"] = json.dumps(stage.params)
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def change_url(definition: PipelineDefinition) -> str:
    return reverse("admin:pipeline_app_pipelinedefinition_change", args=[definition.pk])


def test_definition_with_registered_stages_is_saved_in_order(admin_client: Client) -> None:
    url = reverse("admin:pipeline_app_pipelinedefinition_add")
    response = admin_client.post(url, definition_post())
    assert response.status_code == 302, response.context["adminform"].form.errors
    definition = PipelineDefinition.objects.get(name="admin-made")
    assert [s["stage"] for s in definition.snapshot()["stages"]] == ["test-drop-odd", "test-inc"]


def test_definitions_named_without_ascii_letters_get_distinct_slugs(admin_client: Client) -> None:
    url = reverse("admin:pipeline_app_pipelinedefinition_add")
    names = ["\u65e5\u672c", "\u4e2d\u6587"]
    for name in names:
        response = admin_client.post(url, definition_post(name=name, slug=""))
        assert response.status_code == 302, response.context["adminform"].form.errors
    slugs = set(PipelineDefinition.objects.filter(name__in=names).values_list("slug", flat=True))
    assert len(slugs) == 2 and all(slug.startswith("pipeline-") for slug in slugs)
    assert admin_client.get(reverse("pipeline_app:pipeline-list")).status_code == 200


def test_definition_form_offers_only_registered_names(admin_client: Client) -> None:
    page = admin_client.get(reverse("admin:pipeline_app_pipelinedefinition_add")).content.decode()
    assert '<option value="test-inc">' in page and '<option value="range">' in page


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("stages-0-stage", "os.system", "Select a valid choice"),
        ("stages-0-params", '{"nope": 1}', "unknown parameter &#x27;nope&#x27;"),
        ("source_params", '{"count": "many"}', "must be int"),
        ("source", "nowhere", "Select a valid choice"),
        ("stages-0-workers", "0", "at least one worker"),
    ],
)
def test_definition_validation_gives_clear_messages(
    admin_client: Client, field: str, value: str, message: str
) -> None:
    url = reverse("admin:pipeline_app_pipelinedefinition_add")
    response = admin_client.post(url, definition_post(**{field: value}))
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not PipelineDefinition.objects.filter(name="admin-made").exists()


@pytest.mark.parametrize("field", ["stages-0-params", "source_params", "sink_params"])
@pytest.mark.parametrize("emptied", ["", "null"])
def test_an_emptied_params_box_saves_no_parameters(
    admin_client: Client, field: str, emptied: str
) -> None:
    response = admin_client.post(ADD_DEFINITION, definition_post(**{field: emptied}))
    assert response.status_code == 302, response.context["adminform"].form.errors
    definition = PipelineDefinition.objects.get(name="admin-made")
    stored = {
        "source_params": definition.source_params,
        "sink_params": definition.sink_params,
        "stages-0-params": definition.stages.get(stage="test-inc").params,
    }
    assert stored[field] == {}
    assert jobs.submit(definition).status == RunStatus.QUEUED


def test_definition_form_applies_the_source_check(admin_client: Client) -> None:
    # range's check= refuses a negative count, which its int type lets through
    response = admin_client.post(ADD_DEFINITION, definition_post(source_params='{"count": -1}'))
    assert response.status_code == 200
    assert "count must be &gt;= 0" in str(response.context["adminform"].form.errors)
    assert not PipelineDefinition.objects.filter(name="admin-made").exists()


@pytest.mark.parametrize("timeout", ["0", "-5"])
def test_definition_form_refuses_a_non_positive_timeout(admin_client: Client, timeout: str) -> None:
    response = admin_client.post(ADD_DEFINITION, definition_post(timeout_seconds=timeout))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "more than 0 seconds" in str(errors["timeout_seconds"])
    assert not PipelineDefinition.objects.filter(name="admin-made").exists()


def test_definition_form_accepts_a_positive_timeout(admin_client: Client) -> None:
    response = admin_client.post(ADD_DEFINITION, definition_post(timeout_seconds="2.5"))
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert PipelineDefinition.objects.get(name="admin-made").timeout_seconds == 2.5


def test_a_code_defined_pipeline_cannot_be_renamed_in_the_admin(admin_client: Client) -> None:
    sync_code_pipelines()
    definition = PipelineDefinition.objects.get(name="test-basic", is_code_defined=True)
    page = admin_client.get(change_url(definition)).content.decode()
    assert "rename it there" in page
    data = change_post(definition, name="test-basic-renamed", slug="test-basic-renamed")
    response = admin_client.post(change_url(definition), data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    definition.refresh_from_db()
    assert (definition.name, definition.slug) == ("test-basic", "test-basic")
    sync_code_pipelines()  # what `migrate` and `syncpipelines` do next
    assert PipelineDefinition.objects.filter(slug__startswith="test-basic").count() == 1


def test_a_definition_whose_stage_left_the_code_can_be_deactivated_not_activated(
    admin_client: Client,
) -> None:
    definition = make_definition("stage-gone", stages=["test-inc", "test-drop-odd"])
    PipelineStageConfig.objects.filter(definition=definition, stage="test-inc").update(
        stage="removed-from-code"
    )
    url = change_url(definition)
    assert "removed-from-code (not registered)" in admin_client.get(url).content.decode()

    response = admin_client.post(url, change_post(definition, is_active="on"))
    assert response.status_code == 200
    stage_errors = response.context["inline_admin_formsets"][0].formset.errors[0]
    assert list(stage_errors) == ["stage"] and "no longer registered" in str(stage_errors)

    response = admin_client.post(url, change_post(definition, is_active=None))
    assert response.status_code == 302
    definition.refresh_from_db()
    assert not definition.is_active
    assert definition.stages.filter(stage="removed-from-code").exists()

    response = admin_client.post(url, change_post(definition, is_active="on"))
    assert response.status_code == 200
    definition.refresh_from_db()
    assert not definition.is_active


def test_a_stage_that_left_the_code_can_be_deleted_from_an_active_definition(
    admin_client: Client,
) -> None:
    definition = make_definition("stage-deleted", stages=["removed-from-code", "test-inc"])
    data = change_post(definition, **{"stages-0-DELETE": "on"})
    response = admin_client.post(change_url(definition), data)
    assert response.status_code == 302
    assert [stage.stage for stage in definition.stages.all()] == ["test-inc"]


def test_a_definition_whose_source_left_the_code_can_be_deactivated_not_activated(
    admin_client: Client,
) -> None:
    definition = make_definition("source-gone", source="removed-from-code")
    url = change_url(definition)

    response = admin_client.post(url, change_post(definition))
    assert response.status_code == 200
    assert "no longer registered" in str(response.context["adminform"].form.errors["source"])

    assert admin_client.post(url, change_post(definition, is_active=None)).status_code == 302
    definition.refresh_from_db()
    assert not definition.is_active and definition.source == "removed-from-code"


def test_run_now_action_queues_a_run_per_definition(admin_client: Client) -> None:
    definition = make_definition("a")
    inactive = make_definition("b", is_active=False)
    response = admin_client.post(
        reverse("admin:pipeline_app_pipelinedefinition_changelist"),
        {"action": "run_now", "_selected_action": [definition.pk, inactive.pk]},
        follow=True,
    )
    run = PipelineRun.objects.get()
    assert run.definition == definition and run.trigger == Trigger.ADMIN
    assert "is inactive" in response.content.decode()


def test_run_now_button_takes_parameters(admin_client: Client) -> None:
    definition = make_definition("with-params")
    change = admin_client.get(
        reverse("admin:pipeline_app_pipelinedefinition_change", args=[definition.pk])
    ).content.decode()
    url = reverse("admin:pipeline_app_pipelinedefinition_run", args=[definition.pk])
    assert url in change
    response = admin_client.post(url, {"run-with-params-source__count": "3"})
    run = PipelineRun.objects.get()
    assert response["Location"] == run.get_absolute_url()
    assert run.params == {"source": {"count": 3}}


def test_run_now_of_a_non_integer_id_is_404(admin_client: Client) -> None:
    assert admin_client.get("/admin/pipeline_app/pipelinedefinition/abc/run/").status_code == 404


def test_run_now_needs_the_run_permission(client: Client, django_user_model: Any) -> None:
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename="view_pipelinedefinition"))
    client.force_login(user)
    definition = make_definition("guarded")
    url = reverse("admin:pipeline_app_pipelinedefinition_run", args=[definition.pk])
    assert client.post(url, {}).status_code == 403
    assert not PipelineRun.objects.exists()


def test_run_changelist_shows_columns_and_does_not_count_everything(
    admin_client: Client, django_assert_max_num_queries: Any
) -> None:
    definition = make_definition("listed")
    make_run(definition)
    with django_assert_max_num_queries(12) as captured:
        page = admin_client.get(CHANGELIST).content.decode()
    for heading in ("Queue wait", "Duration", "p50", "p95", "Items in", "Trigger"):
        assert heading in page
    assert 'class="pa-badge status-succeeded"' in page
    counts = [q["sql"] for q in captured.captured_queries if "COUNT(" in q["sql"].upper()]
    assert all("LIMIT" in sql.upper() for sql in counts), counts
    if connection.vendor == "sqlite":  # the date hierarchy's bounds come from the index
        bounds = [q["sql"] for q in captured.captured_queries if "MIN(" in q["sql"].upper()]
        bounds += [q["sql"] for q in captured.captured_queries if "MAX(" in q["sql"].upper()]
        assert bounds
        with connection.cursor() as cursor:
            for sql in bounds:
                plan = " ".join(str(row[-1]) for row in cursor.execute(f"EXPLAIN QUERY PLAN {sql}"))
                assert "SCAN" not in plan, (sql, plan)


def test_run_changelist_filters_search_and_date_hierarchy(admin_client: Client) -> None:
    definition = make_definition("filtered")
    make_run(definition, status=RunStatus.FAILED)
    make_run(definition)
    response = admin_client.get(CHANGELIST, {"status__exact": "failed"})
    assert [r.status for r in response.context["cl"].result_list] == ["failed"]
    response = admin_client.get(CHANGELIST, {"q": "filtered"})
    assert len(response.context["cl"].result_list) == 2
    page = response.content.decode()
    assert 'class="toplinks"' in page and "created_at__day=" in page
    day_link = page.split('class="toplinks"')[1].split('href="')[2].split('"')[0]
    drilled = admin_client.get(CHANGELIST + day_link.replace("&amp;", "&"))
    assert len(drilled.context["cl"].result_list) == 2


def test_run_detail_is_read_only_with_stage_stats_and_dashboard_link(
    admin_client: Client,
) -> None:
    run = make_run(make_definition("detail"), error_message=f"bad {HOSTILE}")
    url = reverse("admin:pipeline_app_pipelinerun_change", args=[run.pk])
    page = admin_client.get(url).content.decode()
    assert run.get_absolute_url() in page
    assert "test-fail-every" in page and "bottleneck" in page
    assert HOSTILE not in page
    assert 'name="_save"' not in page


def test_run_actions_cancel_rerun_and_rerun_failed(admin_client: Client) -> None:
    definition = make_definition("actions")
    queued = PipelineRun.objects.create(definition=definition, snapshot={"name": "a"})
    failed = make_run(definition, failed=(2,))
    admin_client.post(CHANGELIST, {"action": "cancel_runs", "_selected_action": [queued.pk]})
    queued.refresh_from_db()
    assert queued.status == RunStatus.CANCELLED
    admin_client.post(CHANGELIST, {"action": "rerun_failed_items", "_selected_action": [failed.pk]})
    rerun = PipelineRun.objects.get(rerun_of=failed)
    assert rerun.only_items == [2] and rerun.trigger == Trigger.ADMIN
    admin_client.post(CHANGELIST, {"action": "rerun_runs", "_selected_action": [failed.pk]})
    assert PipelineRun.objects.filter(rerun_of=failed, only_items__isnull=True).count() == 1


@pytest.fixture
def run_only_staff(client: Client, django_user_model: Any) -> Client:
    """Staff that may start runs but not see them: the dashboard refuses it both."""
    user = django_user_model.objects.create_user("runner-only", password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename="run_pipeline"))
    client.force_login(user)
    return client


def test_the_admin_run_form_needs_the_dashboards_permissions(run_only_staff: Client) -> None:
    definition = make_definition("secret", source="lines", source_params={"path": "/srv/x.txt"})
    url = reverse("admin:pipeline_app_pipelinedefinition_run", args=[definition.pk])

    assert run_only_staff.get(definition.get_absolute_url()).status_code == 403
    assert run_only_staff.get(url).status_code == 403
    run_only_staff.post(url, {f"run-{definition.slug}-source__path": "/srv/x.txt"})
    assert not PipelineRun.objects.exists()


def test_names_that_slugify_alike_get_distinct_slugs(admin_client: Client) -> None:
    url = reverse("admin:pipeline_app_pipelinedefinition_add")
    for name in ("a b", "a-b"):
        response = admin_client.post(url, definition_post(name=name, slug=""))
        assert response.status_code == 302
    slugs = sorted(
        PipelineDefinition.objects.filter(name__in=["a b", "a-b"]).values_list("slug", flat=True)
    )
    assert slugs == ["a-b", "a-b-2"]
