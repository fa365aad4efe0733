"""``manage.py prunepipelineruns --older-than 30d``: delete old runs in batches."""

from __future__ import annotations

import argparse
import re
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from pipeline_app.models import FINISHED_STATUSES, ItemTiming, PipelineRun, RunStatus, StageStat

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_age(text: str) -> timedelta:
    match = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", text)
    if not match:
        raise CommandError(f"--older-than {text!r}: use a number and a unit, e.g. 30d, 12h, 2w.")
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer.")
    return value


class Command(BaseCommand):
    help = "Delete runs (and their stage stats and item timings) that finished over an age ago."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than", required=True, type=parse_age, metavar="AGE")
        parser.add_argument("--keep-failed", action="store_true", help="Keep failed/lost runs.")
        parser.add_argument("--dry-run", action="store_true")
        parser.add_argument(
            "--batch-size", type=positive_int, default=500, help="Runs per transaction."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        cutoff = timezone.now() - options["older_than"]
        statuses = list(FINISHED_STATUSES)
        if options["keep_failed"]:
            statuses = [s for s in statuses if s not in (RunStatus.FAILED, RunStatus.LOST)]
        # aged by when they finished: a long run that just ended is not old
        finished_before = Q(finished_at__lt=cutoff) | Q(finished_at=None, created_at__lt=cutoff)
        runs = PipelineRun.objects.filter(finished_before, status__in=statuses)
        if options["dry_run"]:
            self.stdout.write(
                f"Would delete {runs.count()} run(s) finished before {cutoff:%Y-%m-%d %H:%M}."
            )
            return
        deleted_runs = deleted_items = 0
        while True:
            ids = list(runs.order_by("pk").values_list("pk", flat=True)[: options["batch_size"]])
            if not ids:
                break
            with transaction.atomic():
                deleted_items += self._delete_items(ids)
                StageStat.objects.filter(run_id__in=ids).delete()
                PipelineRun.objects.filter(pk__in=ids).update(rerun_of=None)
                PipelineRun.objects.filter(rerun_of_id__in=ids).update(rerun_of=None)
                deleted_runs += PipelineRun.objects.filter(pk__in=ids)._raw_delete(runs.db)
        self.stdout.write(f"Deleted {deleted_runs} run(s) and {deleted_items} item timing(s).")

    @staticmethod
    def _delete_items(run_ids: list[int], chunk: int = 50_000) -> int:
        total = 0
        for run_id in run_ids:
            while True:
                pks = list(
                    ItemTiming.objects.filter(run_id=run_id).values_list("pk", flat=True)[:chunk]
                )
                if not pks:
                    break
                total += ItemTiming.objects.filter(pk__in=pks)._raw_delete(ItemTiming.objects.db)
        return total
