from __future__ import annotations

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


def test_the_item_timing_batch_size_is_a_positive_number_or_none() -> None:
    with override_settings(PIPELINE_APP={"ITEM_TIMING_BATCH_SIZE": None}):
        assert check_settings() == []
    with override_settings(PIPELINE_APP={"ITEM_TIMING_BATCH_SIZE": 0}):
        messages = check_settings()
    assert ids(messages) == ["pipeline_app.E003"]
    assert "positive number or None" in messages[0].msg


def test_file_roots_must_be_a_list_E004() -> None:
    with override_settings(PIPELINE_APP={"FILE_ROOTS": "/tmp"}):
        assert ids(check_settings()) == ["pipeline_app.E004"]
