"""Pipeline definitions and the record of every run: status, progress, summary and timings."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, ClassVar

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils.text import slugify

from pipeline_app import stamps as stamp_codec


def storable_text(text: str, limit: int | None = None) -> str:
    """Error text as every database stores it: PostgreSQL text and JSON cannot hold NUL."""
    return text[:limit].replace("\x00", "\\0")


class ErrorPolicy(models.TextChoices):
    SKIP = "skip", "Skip failed items (record and count them)"
    FAIL = "fail", "Fail the run at the first failed item"


class Executor(models.TextChoices):
    THREAD = "thread", "Thread (I/O or GIL-releasing work)"
    PROCESS = "process", "Process (pure-Python CPU work)"


def default_slug(name: str) -> str:
    """``slugify(name)``, or ``pipeline-<hash of the name>`` for a name without ASCII letters or
    digits (such as "日本語"): the dashboard's URLs take ASCII slugs only, and names are unique."""
    slug = slugify(name)[:100]
    if not slug:
        slug = f"pipeline-{hashlib.sha256(name.encode()).hexdigest()[:12]}"
    return slug


def free_slug(name: str, using: str = "default") -> str:
    """The default slug of ``name``, or ``<slug>-2``, ``-3``... when another row holds it (a
    code pipeline renamed in the database keeps its slug; "a b" and "a-b" slugify alike)."""
    base = default_slug(name)
    max_length = PipelineDefinition._meta.get_field("slug").max_length or 100
    rows = PipelineDefinition.objects.using(using)
    candidate, number = base, 1
    while rows.filter(slug=candidate).exists():
        number += 1
        suffix = f"-{number}"
        candidate = base[: max_length - len(suffix)] + suffix
    return candidate


class PipelineDefinition(models.Model):
    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=100, unique=True, blank=True)
    description = models.TextField(blank=True)
    source = models.CharField(max_length=100, help_text="A registered input source.")
    source_params = models.JSONField(default=dict, blank=True)
    sink = models.CharField(max_length=100, default="discard", help_text="A registered sink.")
    sink_params = models.JSONField(default=dict, blank=True)
    max_queue_size = models.PositiveIntegerField(default=100)
    enable_timing = models.BooleanField(default=True)
    error_policy = models.CharField(
        max_length=10, choices=ErrorPolicy.choices, default=ErrorPolicy.SKIP
    )
    timeout_seconds = models.FloatField(null=True, blank=True, help_text="Empty: no timeout.")
    max_attempts = models.PositiveSmallIntegerField(
        default=1, help_text="Attempts before a run whose worker died is marked lost."
    )
    is_active = models.BooleanField(default=True)
    is_code_defined = models.BooleanField(
        default=False, editable=False, help_text="Synced from a pipelines.py module."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self.slug:
            self.slug = free_slug(self.name, kwargs.get("using") or "default")
        super().save(*args, **kwargs)

    def get_absolute_url(self) -> str:
        return reverse("pipeline_app:pipeline-detail", args=[self.slug])

    def snapshot(self) -> dict[str, Any]:
        """Everything a run needs, frozen at submission so history stays true after edits."""
        return {
            "name": self.name,
            "stages": [
                {"stage": s.stage, "workers": s.workers, "executor": s.executor, "params": s.params}
                for s in self.stages.all()
            ],
            "source": self.source,
            "source_params": self.source_params,
            "sink": self.sink,
            "sink_params": self.sink_params,
            "max_queue_size": self.max_queue_size,
            "enable_timing": self.enable_timing,
            "error_policy": self.error_policy,
            "timeout_seconds": self.timeout_seconds,
            "max_attempts": self.max_attempts,
        }


def snapshot_hash(snapshot: dict[str, Any]) -> str:
    encoded = json.dumps(snapshot, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]


class PipelineStageConfig(models.Model):
    definition = models.ForeignKey(
        PipelineDefinition, on_delete=models.CASCADE, related_name="stages"
    )
    position = models.PositiveSmallIntegerField(default=0)
    stage = models.CharField(max_length=100, help_text="A registered stage function.")
    workers = models.PositiveSmallIntegerField(default=1)
    executor = models.CharField(max_length=10, choices=Executor.choices, default=Executor.THREAD)
    params = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["definition", "position", "id"]
        verbose_name = "stage"

    def __str__(self) -> str:
        return f"{self.position}. {self.stage}"


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    """Waiting for a worker to claim it."""
    RUNNING = "running", "Running"
    """Claimed by a worker that renews its lease."""
    SUCCEEDED = "succeeded", "Succeeded"
    """Every input was processed (failed items under the skip policy are counted, not fatal)."""
    FAILED = "failed", "Failed"
    """A source, stage (fail policy), sink or timeout ended it; see the error and traceback."""
    CANCELLED = "cancelled", "Cancelled"
    """Stopped on request; completed items and their timings are kept."""
    LOST = "lost", "Lost"
    """Its worker stopped renewing the lease and no attempts remained."""


FINISHED_STATUSES = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.LOST)


class Trigger(models.TextChoices):
    ADMIN = "admin", "Admin"
    DASHBOARD = "dashboard", "Dashboard"
    CLI = "cli", "Command line"
    API = "api", "Python API"


class PipelineRun(models.Model):
    definition = models.ForeignKey(
        PipelineDefinition, on_delete=models.PROTECT, related_name="runs"
    )
    snapshot = models.JSONField()
    snapshot_hash = models.CharField(max_length=16)
    params = models.JSONField(default=dict, blank=True)
    only_items = models.JSONField(
        null=True, blank=True, help_text="Input sequence numbers to run (a re-run of failures)."
    )
    rerun_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="reruns"
    )
    status = models.CharField(
        max_length=10, choices=RunStatus.choices, default=RunStatus.QUEUED, db_index=True
    )
    trigger = models.CharField(max_length=10, choices=Trigger.choices, default=Trigger.API)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    worker_id = models.CharField(max_length=200, blank=True)
    attempt = models.PositiveSmallIntegerField(default=0)
    handed_back = models.PositiveSmallIntegerField(
        default=0,
        help_text="Attempts given back by a worker that stopped cleanly (they do not count "
        "towards max_attempts, which counts workers that died).",
    )
    cancel_requested = models.BooleanField(default=False)
    items_in = models.PositiveBigIntegerField(default=0)
    items_out = models.PositiveBigIntegerField(default=0)
    items_filtered = models.PositiveBigIntegerField(default=0)
    items_errors = models.PositiveBigIntegerField(default=0)
    items_expected = models.PositiveBigIntegerField(null=True, blank=True)
    rate = models.FloatField(null=True, blank=True, help_text="Items per second, recent.")
    eta_seconds = models.FloatField(null=True, blank=True)
    progress = models.JSONField(default=dict, blank=True, help_text="Latest progress snapshot.")
    summary = models.JSONField(null=True, blank=True, help_text="The engine's latency summary.")
    p50_latency = models.FloatField(null=True, blank=True)
    p95_latency = models.FloatField(null=True, blank=True)
    throughput = models.FloatField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True, help_text="What the sink reported.")
    errors = models.JSONField(default=list, blank=True, help_text="First failed items.")
    error_message = models.TextField(blank=True)
    traceback = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["status", "created_at"], name="pipeline_run_status_created"),
            models.Index(fields=["definition", "-created_at"], name="pipeline_run_def_created"),
            models.Index(fields=["trigger", "-created_at"], name="pipeline_run_trigger_created"),
            models.Index(fields=["status", "lease_expires_at"], name="pipeline_run_lease"),
        ]
        permissions = [
            ("run_pipeline", "Can start pipeline runs"),
            ("cancel_pipelinerun", "Can cancel pipeline runs"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.snapshot.get('name', '?')} ({self.status})"

    def get_absolute_url(self) -> str:
        return reverse("pipeline_app:run-detail", args=[self.pk])

    # Field values that put a run back in the queue: the next attempt starts from zero.
    REQUEUE_FIELDS: ClassVar[dict[str, Any]] = {
        "status": RunStatus.QUEUED,
        "worker_id": "",
        "started_at": None,
        "finished_at": None,
        "lease_expires_at": None,
        "items_in": 0,
        "items_out": 0,
        "items_filtered": 0,
        "items_errors": 0,
        "rate": None,
        "eta_seconds": None,
        "progress": {},
    }

    @property
    def pipeline_name(self) -> str:
        return str(self.snapshot.get("name", ""))

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    @property
    def queue_wait(self) -> timedelta | None:
        return self.started_at - self.created_at if self.started_at else None

    @property
    def duration(self) -> timedelta | None:
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None


class StageStat(models.Model):
    """One row per stage per run, so stage times can be compared across runs."""

    run = models.ForeignKey(PipelineRun, on_delete=models.CASCADE, related_name="stage_stats")
    position = models.PositiveSmallIntegerField()
    stage = models.CharField(max_length=100, db_index=True)
    items_in = models.PositiveBigIntegerField(default=0)
    items_out = models.PositiveBigIntegerField(default=0)
    items_filtered = models.PositiveBigIntegerField(default=0)
    items_errors = models.PositiveBigIntegerField(default=0)
    processed = models.PositiveBigIntegerField(default=0)
    busy_ratio = models.FloatField(default=0.0)
    is_bottleneck = models.BooleanField(default=False)
    computation_avg = models.FloatField(default=0.0)
    computation_min = models.FloatField(default=0.0)
    computation_max = models.FloatField(default=0.0)
    computation_p50 = models.FloatField(default=0.0)
    computation_p95 = models.FloatField(default=0.0)
    computation_p99 = models.FloatField(default=0.0)
    queue_wait_avg = models.FloatField(default=0.0)
    queue_wait_min = models.FloatField(default=0.0)
    queue_wait_max = models.FloatField(default=0.0)
    queue_wait_p50 = models.FloatField(default=0.0)
    queue_wait_p95 = models.FloatField(default=0.0)
    queue_wait_p99 = models.FloatField(default=0.0)
    transmission_avg = models.FloatField(default=0.0)
    transmission_min = models.FloatField(default=0.0)
    transmission_max = models.FloatField(default=0.0)
    transmission_p50 = models.FloatField(default=0.0)
    transmission_p95 = models.FloatField(default=0.0)
    transmission_p99 = models.FloatField(default=0.0)

    class Meta:
        ordering = ["run", "position"]
        constraints = [
            models.UniqueConstraint(fields=["run", "position"], name="pipeline_stagestat_unique")
        ]

    def __str__(self) -> str:
        return f"{self.stage} of run #{self.run_id}"


class ItemStatus(models.TextChoices):
    OK = "ok", "OK"
    FILTERED = "filtered", "Filtered"
    ERROR = "error", "Error"


class ItemTiming(models.Model):
    """One processed input item (or fan-out output) of a run, with its per-stage breakdown."""

    # No database-level constraint: PostgreSQL's per-row foreign key check was half the cost of
    # bulk-inserting timings. Rows are written only by their run's recorder, after the run row,
    # and deleted through Django (cascade) or before their runs (prunepipelineruns). The
    # (run, seq) index serves lookups by run.
    run = models.ForeignKey(
        PipelineRun,
        on_delete=models.CASCADE,
        related_name="item_timings",
        db_constraint=False,
        db_index=False,
    )
    seq = models.PositiveBigIntegerField()
    sub_index = models.CharField(max_length=50, blank=True, help_text="Fan-out path, e.g. 2.0")
    status = models.CharField(max_length=10, choices=ItemStatus.choices, default=ItemStatus.OK)
    latency = models.FloatField(help_text="End to end, seconds.")
    computation = models.FloatField(default=0.0)
    overhead = models.FloatField(default=0.0)
    stamps = models.BinaryField(
        default=bytes,
        help_text="Per-stage clock readings (see pipeline_app.stamps): enqueue, start and end "
        "of each stage the item reached.",
    )
    error = models.TextField(blank=True)
    error_stage = models.CharField(max_length=100, blank=True)

    class Meta:
        ordering = ["run", "seq", "sub_index"]
        indexes = [
            models.Index(fields=["run", "seq"], name="pipeline_item_run_seq"),
            models.Index(fields=["run", "-latency"], name="pipeline_item_run_slowest"),
            # "Errors only" / "filtered only": partial indexes hold just those rows, so the
            # bulk inserts of successful items (nearly all rows) do not maintain them.
            models.Index(
                fields=["run", "seq"],
                condition=models.Q(status="error"),
                name="pipeline_item_run_errors",
            ),
            models.Index(
                fields=["run", "seq"],
                condition=models.Q(status="filtered"),
                name="pipeline_item_run_filtered",
            ),
        ]

    def __str__(self) -> str:
        return f"item {self.seq}{'.' + self.sub_index if self.sub_index else ''} of #{self.run_id}"

    def stage_seconds(self, names: Sequence[str]) -> dict[str, list[float]]:
        """``{stage: [queue_wait, computation, transmission, start, end]}`` in seconds;
        ``names`` are the run's stage names in order (``queries.stage_names``)."""
        return stamp_codec.stage_seconds(self.stamps, names)
