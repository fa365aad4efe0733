"""``ItemTiming.stages`` (JSON, whole microseconds per stage) becomes ``ItemTiming.stamps``
(packed clock readings, see ``pipeline_app.stamps``), existing rows converted both ways; and
``ItemTiming.run`` loses its database constraint and single-column index (see the model)."""

from __future__ import annotations

import struct
from typing import Any

import django.db.models.deletion
from django.db import migrations, models

BATCH = 2_000


def _stage_order(run: Any) -> list[str]:
    order = (run.summary or {}).get("stage_order")
    if order:
        return [str(name) for name in order]
    names = [str(stage["stage"]) for stage in (run.snapshot or {}).get("stages", [])]
    return [n if names.count(n) == 1 else f"{n}#{i}" for i, n in enumerate(names)]


def _runs_with_items(apps: Any, using: str) -> Any:
    run_model = apps.get_model("pipeline_app", "PipelineRun")
    item_model = apps.get_model("pipeline_app", "ItemTiming")
    run_ids = item_model.objects.using(using).values_list("run_id", flat=True).distinct()
    for run in run_model.objects.using(using).filter(pk__in=run_ids).iterator():
        yield run, item_model.objects.using(using).filter(run=run).order_by("pk")


def _convert(apps: Any, schema_editor: Any, field: str, change: Any) -> None:
    using = schema_editor.connection.alias
    item_model = apps.get_model("pipeline_app", "ItemTiming")
    for run, items in _runs_with_items(apps, using):
        order = _stage_order(run)
        batch = []
        for item in items.iterator(chunk_size=BATCH):
            change(item, order)
            batch.append(item)
            if len(batch) >= BATCH:
                item_model.objects.using(using).bulk_update(batch, [field])
                batch = []
        if batch:
            item_model.objects.using(using).bulk_update(batch, [field])


def _to_stamps(item: Any, order: list[str]) -> None:
    stages = item.stages or {}
    names = sorted(stages, key=lambda n: order.index(n) if n in order else len(order))
    stamps = [0.0]
    end = sent = 0.0
    for name in names:
        queue_wait, _, sent, start, end = (v / 1e6 for v in (list(stages[name]) + [0] * 5)[:5])
        stamps += [start - queue_wait, start, end]
    if sent:
        stamps.append(end + sent)
    item.stamps = struct.pack(f">{len(stamps)}d", *stamps) if names else b""


def _to_stages(item: Any, order: list[str]) -> None:
    blob = bytes(item.stamps or b"")
    values = struct.unpack(f">{len(blob) // 8}d", blob)
    count = len(values)
    stages = {}
    for name, base in zip(order, range(1, count - 2, 3), strict=False):
        enqueued, started, ended = values[base : base + 3]
        sent = values[base + 3] - ended if base + 3 < count else 0.0
        parts = (started - enqueued, ended - started, sent, started - values[0], ended - values[0])
        stages[name] = [round(v * 1e6) for v in parts]
    item.stages = stages


def forwards(apps: Any, schema_editor: Any) -> None:
    _convert(apps, schema_editor, "stamps", _to_stamps)


def backwards(apps: Any, schema_editor: Any) -> None:
    _convert(apps, schema_editor, "stages", _to_stages)


class Migration(migrations.Migration):
    dependencies = [("pipeline_app", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="itemtiming",
            name="stamps",
            field=models.BinaryField(
                default=bytes,
                help_text="Per-stage clock readings (see pipeline_app.stamps): enqueue, start "
                "and end of each stage the item reached.",
            ),
        ),
        migrations.RunPython(forwards, backwards, elidable=True),
        migrations.RemoveField(model_name="itemtiming", name="stages"),
        # no per-row foreign key check or single-column index on bulk inserts (see the model)
        migrations.AlterField(
            model_name="itemtiming",
            name="run",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="item_timings",
                to="pipeline_app.pipelinerun",
            ),
        ),
    ]
