from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pipeline_app.checks import check_definitions, check_registered_pipelines
from pipeline_app.definitions import sync_code_pipelines
from pipeline_app.models import PipelineDefinition, PipelineStageConfig
from pipeline_app.registry import Registry, RegistryError, registry


def test_stage_names_default_to_dashed_function_name() -> None:
    local = Registry()

    @local.stage()
    def clean_up_text(text: str, strip: bool = True) -> str:
        return text

    entry = local.get("stage", "clean-up-text")
    assert entry.func is clean_up_text
    assert [(p.name, p.kind, p.required) for p in entry.params] == [("strip", "bool", False)]


def test_registering_another_function_under_a_taken_name_is_refused() -> None:
    local = Registry()
    local.stage("x")(lambda item: item)
    with pytest.raises(RegistryError, match="registered already"):
        local.stage("x")(lambda item: item)


def test_sources_must_be_async_generators() -> None:
    local = Registry()
    with pytest.raises(RegistryError, match="async generator"):
        local.source("bad")(lambda: [1, 2])

    @local.source("good")
    async def good(count: int = 3) -> AsyncIterator[int]:
        yield count

    assert local.get("source", "good").params[0].kind == "int"


def test_unknown_names_give_a_clear_error_listing_known_ones() -> None:
    with pytest.raises(
        RegistryError, match=r"Unknown stage 'nope'\. Registered stages: .*test-inc"
    ):
        registry.get("stage", "nope")


def test_builtins_and_installed_apps_pipelines_are_discovered() -> None:
    assert {"range", "lines", "jsonl", "csv"} <= set(registry.sources)
    assert {"discard", "jsonl", "preview"} <= set(registry.sinks)
    assert {"demo-etl", "demo-words", "demo-hash", "demo-bottleneck", "test-basic"} <= set(
        registry.pipelines
    )


def test_code_pipeline_with_unregistered_stage_is_E010(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "pipelines", dict(registry.pipelines))
    registry.register_pipeline("broken", source="range", stages=["no-such-stage"])
    messages = check_registered_pipelines()
    assert [m.id for m in messages] == ["pipeline_app.E010"]
    assert "no-such-stage" in messages[0].msg


@pytest.mark.django_db
def test_definition_with_unregistered_stage_is_E011_when_databases_checked() -> None:
    definition = PipelineDefinition.objects.create(name="ghost", source="range")
    PipelineStageConfig.objects.create(definition=definition, stage="vanished")
    assert check_definitions(databases=None) == []
    messages = check_definitions(databases=["default"])
    assert [m.id for m in messages] == ["pipeline_app.E011"]
    assert "'vanished'" in messages[0].msg


@pytest.mark.django_db
def test_sync_gives_a_code_pipeline_a_free_slug_when_a_renamed_row_holds_its_own() -> None:
    sync_code_pipelines()
    # renamed in the database (before the admin made the name read-only, or by hand)
    PipelineDefinition.objects.filter(name="test-basic").update(name="test-basic-renamed")
    PipelineDefinition.objects.create(name="hand-made", slug="test-basic-2", source="range")
    assert "test-basic" in sync_code_pipelines()
    slugs = dict(
        PipelineDefinition.objects.filter(
            name__in=["test-basic", "test-basic-renamed", "hand-made"]
        ).values_list("name", "slug")
    )
    assert slugs == {
        "test-basic-renamed": "test-basic",
        "hand-made": "test-basic-2",
        "test-basic": "test-basic-3",
    }
