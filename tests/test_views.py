"""The dashboard through Django's test client: permissions, CSRF, escaping, paging, exports."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import include, path, reverse
from django.utils import timezone

from pipeline_app import queries, stamps
from pipeline_app.models import (
    ItemStatus,
    ItemTiming,
    PipelineDefinition,
    PipelineRun,
    RunStatus,
    StageStat,
    Trigger,
)
from tests.factories import make_definition

# test-inc waits 100 µs and runs 200 µs, test-fail-every waits 200 µs and runs 500 µs
ITEM_STAMPS = stamps.pack(
    stamps.from_stage_values([(1e-4, 2e-4, 0.0, 1e-4, 3e-4), (2e-4, 5e-4, 0.0, 5e-4, 1e-3)])
)

pytestmark = pytest.mark.django_db

# The dashboard mounted as the README shows, without the admin's URLs (the ROOT_URLCONF of
# test_dashboard_works_without_the_admin_urls).
urlpatterns = [path("pipelines/", include("pipeline_app.urls"))]

HOSTILE = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
STAGES = ["test-inc", "test-fail-every"]


def make_run(
    definition: PipelineDefinition,
    *,
    status: str = RunStatus.SUCCEEDED,
    items: int = 30,
    failed: tuple[int, ...] = (),
    **fields: Any,
) -> PipelineRun:
    """A finished run with summary, stage statistics and item timings, as the runner leaves it."""
    now = timezone.now()
    run = PipelineRun.objects.create(
        definition=definition,
        snapshot=definition.snapshot(),
        snapshot_hash="x",
        status=status,
        started_at=now - timedelta(seconds=3),
        finished_at=now if status != RunStatus.RUNNING else None,
        items_in=items,
        items_out=items - len(failed),
        items_errors=len(failed),
        items_expected=items,
        p50_latency=0.01,
        p95_latency=0.02,
        throughput=100.0,
        summary={"stage_order": STAGES, "p99_total_latency": 0.03, "total_items": items},
        errors=[
            {
                "seq": s,
                "stage": "test-fail-every",
                "type": "ValueError",
                "message": HOSTILE,
                "traceback": f"Traceback ... {HOSTILE}",
            }
            for s in failed
        ],
        **fields,
    )
    for position, name in enumerate(STAGES):
        StageStat.objects.create(
            run=run,
            position=position,
            stage=name,
            processed=items,
            items_in=items,
            computation_avg=0.001 * (position + 1),
            queue_wait_avg=0.002,
            transmission_avg=0.0005,
            busy_ratio=0.4 * (position + 1),
            is_bottleneck=position == 1,
        )
    ItemTiming.objects.bulk_create(
        ItemTiming(
            run=run,
            seq=seq,
            status=ItemStatus.ERROR if seq in failed else ItemStatus.OK,
            latency=0.001 * (seq % 17 + 1),
            computation=0.0005,
            stamps=ITEM_STAMPS,
            error=f"ValueError: {HOSTILE}" if seq in failed else "",
            error_stage="test-fail-every" if seq in failed else "",
        )
        for seq in range(items)
    )
    return run


@pytest.fixture
def definition() -> PipelineDefinition:
    return make_definition("views", stages=STAGES, source_params={"count": 30})


def user_with(django_user_model: Any, *codenames: str) -> Any:
    user = django_user_model.objects.create_user("viewer", password="pw")
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return user


@pytest.fixture
def viewer_client(django_user_model: Any) -> Client:
    client = Client()
    client.force_login(user_with(django_user_model, "view_pipelinerun"))
    return client


def test_anonymous_users_are_sent_to_the_login_page(client: Client, definition: Any) -> None:
    run = make_run(definition)
    for url in (
        reverse("pipeline_app:pipeline-list"),
        reverse("pipeline_app:run-list"),
        run.get_absolute_url(),
        reverse("pipeline_app:run-export", args=[run.pk, "csv"]),
    ):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))


def test_a_dashboard_user_who_is_not_staff_can_log_in(django_user_model: Any) -> None:
    user_with(django_user_model, "view_pipelinerun")
    client = Client()
    page = client.get(reverse("pipeline_app:pipeline-list"), follow=True)
    assert b'name="password"' in page.content

    response = client.post(
        reverse("login"),
        {"username": "viewer", "password": "pw", "next": reverse("pipeline_app:pipeline-list")},
        follow=True,
    )

    assert response.status_code == 200
    assert response.redirect_chain[-1][0] == reverse("pipeline_app:pipeline-list")
    assert response.context["user"].is_authenticated


def test_users_without_the_view_permission_get_403(client: Client, django_user_model: Any) -> None:
    client.force_login(user_with(django_user_model))
    assert client.get(reverse("pipeline_app:run-list")).status_code == 403


def test_starting_and_cancelling_need_their_permissions(
    viewer_client: Client, definition: Any
) -> None:
    run = make_run(definition, status=RunStatus.RUNNING)
    run_url = reverse("pipeline_app:pipeline-run", args=[definition.slug])
    assert viewer_client.post(run_url, {}).status_code == 403
    assert viewer_client.post(reverse("pipeline_app:run-cancel", args=[run.pk])).status_code == 403
    assert viewer_client.post(reverse("pipeline_app:run-rerun", args=[run.pk])).status_code == 403
    assert PipelineRun.objects.count() == 1
    page = viewer_client.get(run.get_absolute_url()).content.decode()
    assert "Cancel run" not in page and "Re-run" not in page


def test_csrf_token_is_required_to_start_a_run(admin_user: Any, definition: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    url = reverse("pipeline_app:pipeline-run", args=[definition.slug])
    assert client.post(url, {}).status_code == 403
    page = client.get(definition.get_absolute_url())
    token = page.cookies["csrftoken"].value
    response = client.post(url, {"csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert PipelineRun.objects.filter(trigger=Trigger.DASHBOARD).count() == 1


def test_run_form_submits_typed_parameters_and_redirects_to_the_run(
    admin_client: Client, definition: Any
) -> None:
    url = reverse("pipeline_app:pipeline-run", args=[definition.slug])
    response = admin_client.post(url, {f"run-{definition.slug}-source__count": "7"})
    run = PipelineRun.objects.get()
    assert response["Location"] == run.get_absolute_url()
    assert run.params == {"source": {"count": 7}}
    assert run.trigger == Trigger.DASHBOARD


def test_bad_parameters_are_shown_as_form_errors(admin_client: Client, definition: Any) -> None:
    url = reverse("pipeline_app:pipeline-run", args=[definition.slug])
    response = admin_client.post(url, {f"run-{definition.slug}-source__count": "many"})
    assert response.status_code == 200
    assert "Enter a whole number" in response.content.decode()
    definition.is_active = False
    definition.save()
    response = admin_client.post(url, {})
    assert "is inactive" in response.content.decode()
    assert not PipelineRun.objects.exists()


def test_json_parameter_default_is_shown_encoded_once(admin_client: Client) -> None:
    definition = make_definition(
        "json-params", source="test-json-params", source_params={"tags": ["a", "b"]}
    )
    response = admin_client.get(definition.get_absolute_url())
    assert response.context["form"]["source__tags"].value() == '["a", "b"]'
    assert "[&quot;a&quot;, &quot;b&quot;]</textarea>" in response.content.decode()


def test_bool_default_stored_as_a_string_is_not_inverted_by_the_run_form(
    admin_client: Client,
) -> None:
    """The admin accepts {"skip_blank": "false"}, which a run reads as False: an unchanged
    submit of the form must not turn it into True."""
    definition = make_definition(
        "string-bool", source="lines", source_params={"path": "words.txt", "skip_blank": "false"}
    )
    form = admin_client.get(definition.get_absolute_url()).context["form"]
    assert form["source__skip_blank"].value() is False
    assert "checked" not in str(form["source__skip_blank"])
    assert form.fields["source__skip_blank"].help_text == "default: false"


def test_a_pipeline_name_without_ascii_letters_gets_a_usable_slug(admin_client: Client) -> None:
    japanese = make_definition("\u65e5\u672c\u8a9e")
    chinese = make_definition("\u4e2d\u6587")
    assert japanese.slug.startswith("pipeline-") and chinese.slug.startswith("pipeline-")
    assert japanese.slug != chinese.slug
    assert make_definition("Nightly import").slug == "nightly-import"
    assert admin_client.get(reverse("pipeline_app:pipeline-list")).status_code == 200
    assert admin_client.get(japanese.get_absolute_url()).context["definition"] == japanese


def test_hostile_item_and_error_text_is_escaped(admin_client: Client, definition: Any) -> None:
    run = make_run(
        definition,
        status=RunStatus.FAILED,
        failed=(0, 10),
        error_message=f"boom {HOSTILE}",
        traceback=f"Traceback {HOSTILE}",
    )
    for url in (
        run.get_absolute_url(),
        reverse("pipeline_app:run-items", args=[run.pk]) + "?status=error",
    ):
        page = admin_client.get(url).content.decode()
        assert HOSTILE not in page
        assert ESCAPED in page


def test_hostile_pipeline_and_stage_names_are_escaped_in_charts(admin_client: Client) -> None:
    definition = make_definition(f"evil {HOSTILE}", stages=STAGES)
    run = make_run(definition)
    StageStat.objects.filter(run=run, position=0).update(stage=HOSTILE)
    for url in (
        run.get_absolute_url(),
        reverse("pipeline_app:pipeline-list"),
        definition.get_absolute_url(),
    ):
        page = admin_client.get(url).content.decode()
        assert HOSTILE not in page, url


def test_run_detail_shows_cards_stage_table_bottleneck_and_charts(
    admin_client: Client, definition: Any
) -> None:
    previous = make_run(definition)
    PipelineRun.objects.filter(pk=previous.pk).update(
        created_at=timezone.now() - timedelta(hours=1), p95_latency=0.01
    )
    run = make_run(definition, failed=(3,))
    page = admin_client.get(run.get_absolute_url()).content.decode()
    assert "p95 latency" in page and "Throughput" in page
    assert 'class="bottleneck"' in page and "Bottleneck" in page
    for chart in ("chart-split", "chart-histogram", "chart-waterfall"):
        assert f'id="{chart}"' in page
    assert page.count('role="img"') >= 3
    assert f"run #{previous.pk}" in page and "Regression" in page  # p95 doubled
    assert "Re-run failed items" in page


def test_run_detail_says_how_many_item_rows_were_lost(
    admin_client: Client, definition: Any
) -> None:
    run = make_run(definition)
    assert "could not be written" not in admin_client.get(run.get_absolute_url()).content.decode()
    PipelineRun.objects.filter(pk=run.pk).update(summary={**run.summary, "item_rows_lost": 7})
    page = admin_client.get(run.get_absolute_url()).content.decode()
    assert "7 item timing rows could not be written" in page


def test_running_run_has_a_live_progress_bar(admin_client: Client, definition: Any) -> None:
    run = make_run(definition, status=RunStatus.RUNNING, items=10)
    PipelineRun.objects.filter(pk=run.pk).update(
        items_expected=40, progress={"done": 10, "stages": {"test-inc": {"queue_depth": 3}}}
    )
    page = admin_client.get(run.get_absolute_url()).content.decode()
    assert 'role="progressbar"' in page and 'aria-valuenow="25.0"' in page
    assert f'data-live-run="{run.pk}"' in page and 'data-live-finished="0"' in page
    assert "Cancel run" in page


def test_status_json_has_the_websocket_run_shape(admin_client: Client, definition: Any) -> None:
    run = make_run(definition, status=RunStatus.RUNNING)
    data = admin_client.get(reverse("pipeline_app:run-status", args=[run.pk])).json()
    assert data["type"] == "run.progress"
    assert data["run"]["id"] == run.pk and data["run"]["is_finished"] is False
    assert {"items_in", "rate", "eta_seconds", "progress", "p95_latency"} <= set(data["run"])


def test_run_list_pages_by_keyset_without_counting(
    admin_client: Client, definition: Any, django_assert_max_num_queries: Any
) -> None:
    PipelineRun.objects.bulk_create(
        PipelineRun(definition=definition, snapshot={"name": "views"}, snapshot_hash="x")
        for _ in range(120)
    )
    url = reverse("pipeline_app:run-list")
    seen: list[int] = []
    next_url = url
    while next_url:
        with django_assert_max_num_queries(6) as queries:
            response = admin_client.get(next_url)
        assert not any("COUNT(" in q["sql"].upper() for q in queries.captured_queries)
        page = response.context["page"]
        seen.extend(run.pk for run in page.rows)
        next_url = f"{url}?after={page.next_cursor}" if page.next_cursor else ""
    assert seen == sorted(seen, reverse=True) and len(set(seen)) == 120
    first_page = admin_client.get(f"{url}?before={page.prev_cursor}").context["page"]
    assert first_page.rows and first_page.rows[0].pk > page.rows[0].pk


def test_run_list_filters_by_status_and_pipeline(admin_client: Client, definition: Any) -> None:
    make_run(definition, status=RunStatus.FAILED)
    other = make_definition("other")
    make_run(other)
    url = reverse("pipeline_app:run-list")
    rows = admin_client.get(url, {"status": "failed"}).context["page"].rows
    assert [r.status for r in rows] == ["failed"]
    rows = admin_client.get(url, {"pipeline": "other"}).context["page"].rows
    assert [r.definition.name for r in rows] == ["other"]


@pytest.mark.postgres
@pytest.mark.parametrize("key", ["after", "before"])
@pytest.mark.parametrize(
    "cursor",
    [
        "2024-02-30T00:00:00+00:00_1",  # well-formed, but no such day
        "2024-01-01T00:00:00+99:00_1",  # no such offset
        "0001-01-01T00:00:00+01:00_1",  # before year 1 in UTC
        "2024-01-01T00:00:00+00:00_\u00b2",  # "²".isdigit(), but not a number int() reads
        "2024-01-01T00:00:00_1",  # naive, while USE_TZ is on
    ],
)
def test_malformed_run_list_cursors_are_ignored(
    admin_client: Client, definition: Any, key: str, cursor: str
) -> None:
    run = make_run(definition, items=1)
    response = admin_client.get(reverse("pipeline_app:run-list"), {key: cursor})
    assert response.status_code == 200
    assert [r.pk for r in response.context["page"].rows] == [run.pk]


def test_an_invalid_filter_value_lists_no_runs_and_says_why(
    admin_client: Client, definition: Any
) -> None:
    """Dropping the unknown pipeline and keeping status=failed would still list runs the query
    excludes; no run matches it."""
    make_run(definition, status=RunStatus.FAILED)
    response = admin_client.get(
        reverse("pipeline_app:run-list"), {"status": "failed", "pipeline": "no-such-pipeline"}
    )
    assert response.context["page"].rows == []
    assert "Pipeline: Select a valid choice. no-such-pipeline" in response.content.decode()
    assert response.context["form"].filters() == {"status": "failed"}


def test_item_table_sorts_slowest_first_and_pages(admin_client: Client, definition: Any) -> None:
    run = make_run(definition, items=120)
    url = reverse("pipeline_app:run-items", args=[run.pk])
    page = admin_client.get(url, {"sort": "slowest"}).context["items"]
    latencies = [item.latency for item in page.rows]
    assert latencies == sorted(latencies, reverse=True) and len(latencies) == 50
    rest = admin_client.get(url, {"sort": "slowest", "after": page.next_cursor}).context["items"]
    assert rest.rows[0].latency <= latencies[-1]
    assert not {i.pk for i in rest.rows} & {i.pk for i in page.rows}
    seq_pages = []
    after = ""
    while True:
        items = admin_client.get(url, {"after": after} if after else {}).context["items"]
        seq_pages.extend(i.seq for i in items.rows)
        if not items.next_cursor:
            break
        after = items.next_cursor
    assert seq_pages == list(range(120))


@pytest.mark.postgres
@pytest.mark.parametrize("sort", ["seq", "slowest"])
@pytest.mark.parametrize("cursor", ["5_\u00b2", "5_x", "nan_1", "inf_1", "1e400_1"])
def test_malformed_item_cursors_are_ignored(
    admin_client: Client, definition: Any, sort: str, cursor: str
) -> None:
    run = make_run(definition, items=3)
    url = reverse("pipeline_app:run-items", args=[run.pk])
    response = admin_client.get(url, {"sort": sort, "after": cursor})
    assert response.status_code == 200
    assert len(response.context["items"].rows) == 3


def test_exports_stream_every_item_as_csv_and_json(admin_client: Client, definition: Any) -> None:
    run = make_run(definition, items=25, failed=(4,))
    response = admin_client.get(reverse("pipeline_app:run-export", args=[run.pk, "csv"]))
    assert response.streaming and response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == 25 and rows[4]["status"] == "error"
    assert rows[0]["test-fail-every.computation"] == "0.0005"
    response = admin_client.get(reverse("pipeline_app:run-export", args=[run.pk, "json"]))
    data = json.loads(b"".join(response.streaming_content))
    assert data["stage_order"] == STAGES and len(data["items"]) == 25
    assert data["items"][4]["error"] == f"ValueError: {HOSTILE}"


def test_csv_export_neutralises_spreadsheet_formulas(admin_client: Client, definition: Any) -> None:
    run = make_run(definition, items=2)
    ItemTiming.objects.filter(run=run, seq=0).update(error='=HYPERLINK("http://x")')
    response = admin_client.get(reverse("pipeline_app:run-export", args=[run.pk, "csv"]))
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0]["error"].startswith("'=")


def test_rerun_of_failed_items_queues_only_those(admin_client: Client, definition: Any) -> None:
    run = make_run(definition, failed=(3, 7))
    response = admin_client.post(
        reverse("pipeline_app:run-rerun", args=[run.pk]), {"failed_only": "1"}
    )
    new = PipelineRun.objects.exclude(pk=run.pk).get()
    assert response["Location"] == new.get_absolute_url()
    assert new.only_items == [3, 7] and new.rerun_of_id == run.pk


def test_rerun_of_failed_items_without_failures_reports_it(
    admin_client: Client, definition: Any
) -> None:
    run = make_run(definition)
    response = admin_client.post(
        reverse("pipeline_app:run-rerun", args=[run.pk]), {"failed_only": "1"}, follow=True
    )
    assert "no failed items" in response.content.decode()
    assert PipelineRun.objects.count() == 1


def test_cancel_of_a_queued_run_cancels_it(admin_client: Client, definition: Any) -> None:
    run = PipelineRun.objects.create(
        definition=definition, snapshot={"name": "v"}, snapshot_hash=""
    )
    admin_client.post(reverse("pipeline_app:run-cancel", args=[run.pk]))
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED


def test_pipeline_pages_show_last_run_trend_and_form(admin_client: Client, definition: Any) -> None:
    for _ in range(3):
        make_run(definition)
    page = admin_client.get(reverse("pipeline_app:pipeline-list")).content.decode()
    assert definition.name in page and "p95 latency of views" in page
    assert f'name="run-{definition.slug}-source__count"' in page
    detail = admin_client.get(definition.get_absolute_url()).content.decode()
    assert "p50 and p95" in detail and "Throughput" in detail and "Compared with" in detail


@pytest.mark.postgres
def test_pipeline_list_queries_do_not_grow_with_the_pipelines(admin_client: Client) -> None:
    def page_queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get(reverse("pipeline_app:pipeline-list")).status_code == 200
        return len(captured.captured_queries)

    for number in range(2):
        make_run(make_definition(f"pipeline {number}"), items=1)
    with_two = page_queries()
    for number in range(2, 12):
        make_run(make_definition(f"pipeline {number}"), items=1)
    assert page_queries() == with_two


@pytest.mark.postgres
def test_pipeline_list_shows_the_runs_of_the_pipeline_pages() -> None:
    """The list's batched queries pick the runs the per-pipeline ones do, ties included."""
    busy, quiet, idle = (make_definition(name) for name in ("busy", "quiet", "idle"))
    now = timezone.now()
    for number in range(queries.TREND_RUNS + 7):
        run = PipelineRun.objects.create(
            definition=busy,
            snapshot={},
            status=RunStatus.SUCCEEDED if number % 4 else RunStatus.FAILED,
            p95_latency=None if number % 5 == 0 else number / 100,
        )
        # three runs per instant: the trend's first instant is shared with older runs
        PipelineRun.objects.filter(pk=run.pk).update(
            created_at=now - timedelta(seconds=number // 3)
        )
    make_run(quiet)
    make_run(quiet, status=RunStatus.RUNNING)
    definitions = [busy, quiet, idle]
    trends = queries.trend_runs_of(definitions)
    assert len(trends[busy.pk]) == queries.TREND_RUNS and trends[idle.pk] == []
    for definition in definitions:
        expected = [run.pk for run in queries.trend_runs(definition)]
        assert [run.pk for run in trends[definition.pk]] == expected
    latest = queries.last_runs(definitions)
    assert idle.pk not in latest
    for definition in (busy, quiet):
        assert latest[definition.pk] == definition.runs.order_by("-created_at", "-pk").first()


@override_settings(ROOT_URLCONF=__name__, LOGIN_URL="/login/")
def test_dashboard_works_without_the_admin_urls(admin_client: Client) -> None:
    run = make_run(make_definition("plain"), items=3)
    for url in ("/pipelines/", "/pipelines/runs/", run.get_absolute_url()):
        response = admin_client.get(url)
        assert response.status_code == 200, url
        page = response.content.decode()
        assert "/admin/" not in page and "Log out" not in page


def test_root_redirects_to_the_dashboard(client: Client) -> None:
    assert client.get("/")["Location"] == "/pipelines/"


def add_fan_out_children(run: PipelineRun, paths_by_seq: dict[int, list[str]]) -> None:
    """Item rows written as the recorder may: filtered children first, then the others."""
    rows = [
        ItemTiming(
            run=run,
            seq=seq,
            sub_index=path,
            status=ItemStatus.FILTERED if filtered else ItemStatus.OK,
            latency=0.001,
            stamps=ITEM_STAMPS,
        )
        for filtered in (True, False)
        for seq, paths in paths_by_seq.items()
        for number, path in enumerate(paths)
        if (number % 2 == 1) == filtered
    ]
    ItemTiming.objects.bulk_create(rows)


@pytest.mark.postgres
def test_input_order_lists_fan_out_children_by_number(
    admin_client: Client, definition: Any
) -> None:
    run = make_run(definition, items=0)
    flat = [str(number) for number in range(12)]
    nested = ["0.0", "0.10", "0.9", "1", "1.0", "10.2", "2.1", "9.0"]
    add_fan_out_children(run, {0: flat[::-1], 1: nested, 2: [""]})
    in_order = (
        [(0, path) for path in flat]
        + [(1, path) for path in ["0.0", "0.9", "0.10", "1", "1.0", "2.1", "9.0", "10.2"]]
        + [(2, "")]
    )
    export = admin_client.get(reverse("pipeline_app:run-export", args=[run.pk, "csv"]))
    rows = csv.DictReader(io.StringIO(b"".join(export.streaming_content).decode()))
    assert [(int(row["seq"]), row["sub_index"]) for row in rows] == in_order
    paged: list[tuple[int, str]] = []
    after = None
    while True:
        page = queries.item_page(run, after=after, size=5)
        paged.extend((item.seq, item.sub_index) for item in page.rows)
        if page.next_cursor is None:
            break
        after = page.next_cursor
    assert paged == in_order  # each row once, pages cut inside a fan-out included
    first, _ = queries.waterfall_items(run)
    assert [(item.seq, item.sub_index) for item in first] == in_order[:10]


@pytest.mark.postgres
@pytest.mark.parametrize(
    "cursor", ["0_1..2_1", "0_x_1", "0_.1_1", "0_1_\u00b2", "1e3_1_1", f"0_{'1' * 51}_1"]
)
def test_malformed_input_order_cursors_are_ignored(
    admin_client: Client, definition: Any, cursor: str
) -> None:
    run = make_run(definition, items=3)
    url = reverse("pipeline_app:run-items", args=[run.pk])
    response = admin_client.get(url, {"sort": "seq", "after": cursor})
    assert response.status_code == 200
    assert len(response.context["items"].rows) == 3


def test_items_card_of_a_fan_out_run_gives_the_expected_count_to_the_inputs(
    admin_client: Client, definition: Any
) -> None:
    run = make_run(definition, items=4)
    PipelineRun.objects.filter(pk=run.pk).update(items_out=12)
    page = admin_client.get(reverse("pipeline_app:run-detail", args=[run.pk])).content.decode()
    assert "4 of 4 in · 12 out" in page


def test_a_value_the_source_refuses_is_shown_at_its_field(
    admin_client: Client, definition: Any
) -> None:
    url = reverse("pipeline_app:pipeline-run", args=[definition.slug])
    response = admin_client.post(url, {f"run-{definition.slug}-source__count": "-5"})

    assert response.status_code == 200
    form = response.context["form"]
    assert form.errors["source__count"] == ["source 'range': count must be >= 0"]
    assert not form.non_field_errors()
    assert not PipelineRun.objects.exists()


@pytest.mark.postgres
@pytest.mark.parametrize("cursor", ["0_01_1", "0_1.007_1"])
def test_input_order_cursors_with_leading_zeros_are_ignored(cursor: str) -> None:
    """Not JSON numbers: SQLite's json_each refused them with an error (a 500)."""
    run = make_run(make_definition("views", stages=["test-inc"]), items=3)
    page = queries.item_page(run, sort="seq", after=cursor)
    assert [item.seq for item in page.rows] == [0, 1, 2]


def test_the_trends_of_the_pipeline_list_read_index_ranges_only() -> None:
    """Not every finished run through the status index (65 ms at 100,000 runs on SQLite)."""
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's query plan")
    definitions = [make_definition(f"trend-{n}") for n in range(7)]
    counts = (queries.TREND_RUNS + 5, 2, 0, 0, 0, 0, 0)
    for definition, count in zip(definitions, counts, strict=True):
        runs = PipelineRun.objects.bulk_create(
            PipelineRun(definition=definition, snapshot={}, snapshot_hash="x") for _ in range(count)
        )
        for minutes, run in enumerate(runs):  # created a minute apart, finished, timed
            PipelineRun.objects.filter(pk=run.pk).update(
                created_at=timezone.now() - timedelta(minutes=minutes),
                status=RunStatus.SUCCEEDED,
                p95_latency=0.02,
            )
    with CaptureQueriesContext(connection) as captured:
        trends = queries.trend_runs_of(definitions)

    assert [len(trends[d.pk]) for d in definitions] == [queries.TREND_RUNS, 2, 0, 0, 0, 0, 0]
    with connection.cursor() as cursor:
        for query in captured.captured_queries:
            cursor.execute("EXPLAIN QUERY PLAN " + query["sql"])
            plan = " ".join(str(row[-1]) for row in cursor.fetchall())
            assert "pipeline_run_lease" not in plan and "SCAN pipeline_app_pipelinerun" not in plan
