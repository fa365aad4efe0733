from __future__ import annotations

from django.test import override_settings

from pipeline_app import conf


def test_defaults_apply_without_setting() -> None:
    with override_settings(PIPELINE_APP={}):
        assert conf.get("WORKER_CONCURRENCY") == conf.CONFIG_DEFAULTS["WORKER_CONCURRENCY"]


def test_user_values_override_defaults_and_cache_clears_on_change() -> None:
    with override_settings(PIPELINE_APP={"WORKER_CONCURRENCY": 7}):
        assert conf.get("WORKER_CONCURRENCY") == 7
        with override_settings(PIPELINE_APP={"WORKER_CONCURRENCY": 3}):
            assert conf.get("WORKER_CONCURRENCY") == 3
        assert conf.get("WORKER_CONCURRENCY") == 7
    assert conf.get("LEASE_SECONDS") == conf.CONFIG_DEFAULTS["LEASE_SECONDS"]
