"""Item timings written before ``0002`` (per-stage JSON) survive the move to packed stamps."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from pipeline_app import stamps

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]

BEFORE = [("pipeline_app", "0001_initial")]
AFTER = [("pipeline_app", "0002_itemtiming_stamps")]


def migrate(targets: list[tuple[str, str]]) -> object:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def test_json_stage_timings_become_stamps_and_back() -> None:
    old_apps = migrate(BEFORE)
    try:
        definition = old_apps.get_model("pipeline_app", "PipelineDefinition").objects.create(  # type: ignore[attr-defined]
            name="old", slug="old", source="range"
        )
        run = old_apps.get_model("pipeline_app", "PipelineRun").objects.create(  # type: ignore[attr-defined]
            definition=definition,
            snapshot_hash="x",
            snapshot={"stages": [{"stage": "parse"}, {"stage": "score"}]},
        )
        item_model = old_apps.get_model("pipeline_app", "ItemTiming")  # type: ignore[attr-defined]
        # keys out of stage order: PostgreSQL's jsonb does not keep the written order anyway
        item_model.objects.create(
            run=run,
            seq=0,
            latency=0.003,
            stages={"score": [5, 600, 40, 1205, 1805], "parse": [100, 1000, 100, 100, 1100]},
        )
        item_model.objects.create(run=run, seq=1, latency=0.001, status="error", stages={})

        new_apps = migrate(AFTER)
        new_items = new_apps.get_model("pipeline_app", "ItemTiming").objects  # type: ignore[attr-defined]
        first, second = new_items.order_by("seq")
        seconds = stamps.stage_seconds(bytes(first.stamps), ["parse", "score"])
        assert list(seconds) == ["parse", "score"]
        assert seconds["parse"] == pytest.approx([1e-4, 1e-3, 1e-4, 1e-4, 1.1e-3])
        assert seconds["score"] == pytest.approx([5e-6, 6e-4, 4e-5, 1.205e-3, 1.805e-3])
        assert bytes(second.stamps) == b""

        old_apps = migrate(BEFORE)
        first = old_apps.get_model("pipeline_app", "ItemTiming").objects.get(seq=0)  # type: ignore[attr-defined]
        assert first.stages == {
            "parse": [100, 1000, 100, 100, 1100],
            "score": [5, 600, 40, 1205, 1805],
        }
    finally:  # the rest of the suite runs on the latest schema
        migrate(MigrationExecutor(connection).loader.graph.leaf_nodes("pipeline_app"))
