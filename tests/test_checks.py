from __future__ import annotations

import pytest
from django.test import override_settings

from pipeline_app.checks import check_settings


def ids(messages: list) -> list[str]:  # type: ignore[type-arg]
    return [m.id for m in messages]


def test_valid_settings_pass() -> None:
    with override_settings(PIPELINE_APP={"WORKER_CONCURRENCY": 4}):
        assert check_settings() == []


def test_non_dict_setting_is_E001() -> None:
    with override_settings(PIPELINE_APP=["nope"]):
        assert ids(check_settings()) == ["pipeline_app.E001"]


def test_unknown_key_is_E002_with_hint() -> None:
    with override_settings(PIPELINE_APP={"WORKER_CONCURENCY": 4}):
        messages = check_settings()
    assert ids(messages) == ["pipeline_app.E002"]
    assert "WORKER_CONCURRENCY" in (messages[0].hint or "")


def test_bad_numbers_are_E003() -> None:
    with override_settings(PIPELINE_APP={"WORKER_CONCURRENCY": 0, "POLL_INTERVAL": "2"}):
        assert ids(check_settings()) == ["pipeline_app.E003", "pipeline_app.E003"]


@pytest.mark.parametrize(
    "config",
    [{"LEASE_SECONDS": "30"}, {"PROGRESS_INTERVAL": "0.25"}, {"PROGRESS_INTERVAL": None}],
)
def test_numbers_of_the_wrong_type_are_E003_not_a_crash(config: dict[str, object]) -> None:
    with override_settings(PIPELINE_APP=config):
        assert ids(check_settings()) == ["pipeline_app.E003"]


@pytest.mark.parametrize(
    "config",
    [
        {"MAX_RECORDED_ERRORS": 2.5},  # a slice bound: every run with item errors would fail
        {"MAX_RECORDED_ERRORS": 1e3},
        {"WORKER_CONCURRENCY": 2.0},
        {"ITEM_TIMING_LIMIT": 1e5},
        {"ITEM_TIMING_SAMPLE_EVERY": True},
        {"OUTPUT_PREVIEW_LIMIT": 50.0},
        {"ITEM_TIMING_BATCH_SIZE": 5000.0},
    ],
)
def test_counts_must_be_integers_E003(config: dict[str, object]) -> None:
    with override_settings(PIPELINE_APP=config):
        messages = check_settings()
    assert ids(messages) == ["pipeline_app.E003"]
    assert "integer" in messages[0].msg


def test_durations_may_be_integers_or_floats() -> None:
    config = {"POLL_INTERVAL": 1, "LEASE_SECONDS": 60, "SHUTDOWN_GRACE_SECONDS": 0.5}
    with override_settings(PIPELINE_APP=config):
        assert check_settings() == []


def test_a_lease_shorter_than_three_progress_intervals_is_W001() -> None:
    with override_settings(PIPELINE_APP={"LEASE_SECONDS": 0.5, "PROGRESS_INTERVAL": 0.25}):
        assert ids(check_settings()) == ["pipeline_app.W001"]


def test_the_item_timing_batch_size_is_a_positive_integer_or_none() -> None:
    with override_settings(PIPELINE_APP={"ITEM_TIMING_BATCH_SIZE": None}):
        assert check_settings() == []
    with override_settings(PIPELINE_APP={"ITEM_TIMING_BATCH_SIZE": 0}):
        messages = check_settings()
    assert ids(messages) == ["pipeline_app.E003"]
    assert "positive integer or None" in messages[0].msg


def test_file_roots_must_be_a_list_E004() -> None:
    with override_settings(PIPELINE_APP={"FILE_ROOTS": "/tmp"}):
        assert ids(check_settings()) == ["pipeline_app.E004"]


@pytest.mark.parametrize("value", [True, False, None])
def test_embedded_worker_may_be_a_bool_or_none(value: bool | None) -> None:
    with override_settings(PIPELINE_APP={"EMBEDDED_WORKER": value}):
        assert check_settings() == []


@pytest.mark.parametrize("value", ["false", 0, "auto"])
def test_any_other_embedded_worker_is_E005(value: object) -> None:
    """``is_embedded`` reads a truthy value such as "false" as True."""
    with override_settings(PIPELINE_APP={"EMBEDDED_WORKER": value}):
        assert ids(check_settings()) == ["pipeline_app.E005"]
