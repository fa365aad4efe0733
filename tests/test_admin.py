"""The admin: definitions with registered stages and "Run now", and the fast run history."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.urls import reverse

from pipeline_app.models import PipelineDefinition, PipelineRun, RunStatus, Trigger
from tests.factories import make_definition
from tests.test_views import HOSTILE, make_run

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:pipeline_app_pipelinerun_changelist")


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
