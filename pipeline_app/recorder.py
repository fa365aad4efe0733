"""Writes a running run's records from one background thread, so the pipeline never waits on the
database: item timings in bulk batches (with the retention cap), the throttled progress snapshot
with the lease heartbeat, and the cancel flag read back on each of those writes.

Every write is fenced by the run's ``attempt`` and its ``running`` status: once another attempt
owns the run, or the lease sweeper requeued it or marked it lost, nothing more is written and
:attr:`RunRecorder.fenced_out` is set so the runner stops.

A database that is briefly unreachable or locked (a restart, a failover, a killed connection,
SQLite's busy timeout) does not end the recording: the unwritten rows stay queued and the writer
reconnects and retries with a growing pause, and so do the progress, heartbeat and cancel checks.
Only when the run has ended and the database still refuses the last rows after
``CLOSE_RETRY_SECONDS`` are they given up, and counted (:attr:`RunRecorder.rows_lost`, which the
runner puts in the run's summary).
"""

from __future__ import annotations

import heapq
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from functools import partial
from itertools import chain
from typing import Any

from django.db import DatabaseError, connection
from django.utils import timezone

from pipeline_app import conf, retries
from pipeline_app.engine import StampBatch
from pipeline_app.itemrows import (
    RowBlock,
    copy_row,
    encode_batch,
    encode_rows,
    insert_item_rows,
    item_row,
    original_seq,
)
from pipeline_app.models import ItemStatus, PipelineRun, RunStatus
from pipeline_app.retries import TRANSIENT_ERRORS

logger = logging.getLogger(__name__)

# Rows per transaction unless ITEM_TIMING_BATCH_SIZE says (see conf.py for why they differ).
SQLITE_BATCH_SIZE = 20_000
BATCH_SIZE = 5_000

CLOSE_RETRY_SECONDS = 10.0  # how long the ended run's last rows are retried before given up


class RetentionPolicy:
    """Decides which item rows to keep: all up to ``limit``, then failures, a 1-in-N sample and
    the slowest ``keep_slowest`` (held back and written at the end)."""

    def __init__(self, limit: int, keep_slowest: int, sample_every: int) -> None:
        self.limit = limit
        self.keep_slowest = keep_slowest
        self.sample_every = max(sample_every, 1)
        self.seen = 0
        self.slowest: list[tuple[float, int, tuple[Any, ...]]] = []

    def admit(self, record: Any) -> bool:
        """True to write the record now; False when it is dropped or held among the slowest."""
        self.seen += 1
        if self.seen <= self.limit or record.status == ItemStatus.ERROR:
            return True
        return (self.seen - self.limit) % self.sample_every == 0

    def consider_slowest(self, latency: float, row: Callable[[], tuple[Any, ...]]) -> None:
        if not self.keep_slowest:
            return
        if len(self.slowest) < self.keep_slowest:
            heapq.heappush(self.slowest, (latency, self.seen, row()))
        elif latency > self.slowest[0][0]:
            heapq.heapreplace(self.slowest, (latency, self.seen, row()))

    def leftovers(self) -> list[tuple[Any, ...]]:
        return [row for _, _, row in self.slowest]


class RunRecorder:
    def __init__(
        self,
        run: PipelineRun,
        *,
        seq_map: Sequence[int] | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        config = conf.get_config()
        self.run_id = run.pk
        self.attempt = run.attempt
        self.seq_map = seq_map
        self.on_progress = on_progress
        self.batch_size: int = config["ITEM_TIMING_BATCH_SIZE"] or (
            SQLITE_BATCH_SIZE if connection.vendor == "sqlite" else BATCH_SIZE
        )
        self.interval: float = config["PROGRESS_INTERVAL"]
        self.lease = timedelta(seconds=config["LEASE_SECONDS"])
        self.retention = RetentionPolicy(
            config["ITEM_TIMING_LIMIT"],
            config["ITEM_TIMING_KEEP_SLOWEST"],
            config["ITEM_TIMING_SAMPLE_EVERY"],
        )
        self.cancel_requested = threading.Event()
        self.fenced_out = threading.Event()
        # set when the writer thread ended on an error it cannot retry: the run must stop, as
        # nothing renews its lease any more (the sweeper would hand it to another worker)
        self.broken = threading.Event()
        self.failure: Exception | None = None
        self.rows_lost = 0  # item rows the database refused or could not take in time
        self._leftovers_queued = False
        self._pending: list[Any] = []  # item rows: tuples, COPY tuples and RowBlocks
        self._pending_rows = 0  # a hint for waking the writer (updated without a lock)
        self._copy = connection.vendor == "postgresql"  # rows as binary COPY, see itemrows
        self._progress: dict[str, Any] | None = None
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name=f"pipeline_app-recorder-{run.pk}", daemon=True
        )

    # Called on the event loop by the engine: must stay cheap and never block.
    def record_stamps(self, batch: StampBatch) -> None:
        """Every finished item, one output batch at a time (``on_item_stamps``): encoded in
        columns while the retention limit is not reached, else item by item."""
        retention = self.retention
        if retention.seen + len(batch) > retention.limit:
            self.record_items(batch.records())
            return
        retention.seen += len(batch)
        self._add(encode_batch(self.run_id, batch, self.seq_map, copy=self._copy), len(batch))

    def record_items(self, records: list[Any]) -> None:
        """Every finished item's record, one output batch at a time: keep compact rows (built in
        columns) or nothing, so memory is bounded by the retention limit, not the item count."""
        retention = self.retention
        if retention.seen + len(records) <= retention.limit:
            retention.seen += len(records)
            admitted = records
        else:
            admitted = []
            for record in records:
                if retention.admit(record):
                    admitted.append(record)
                else:
                    retention.consider_slowest(record.total_latency, partial(self._row, record))
        self._add(encode_rows(self.run_id, admitted, self.seq_map, copy=self._copy), len(admitted))

    def _add(self, rows: list[Any], count: int) -> None:
        """Queue ``rows`` (``count`` item rows: a :class:`RowBlock` holds several) for the
        writer; wake it once a batch is waiting."""
        if self.broken.is_set():  # the writer is gone: the run is being stopped
            self.rows_lost += count
            return
        self._pending.extend(rows)
        self._pending_rows += count
        if self._pending_rows >= self.batch_size:
            self._wake.set()

    def publish_progress(self, snapshot: dict[str, Any]) -> None:
        self._progress = snapshot
        if self.on_progress is not None:
            try:
                self.on_progress(snapshot)
            except Exception:
                logger.exception("Progress hook of run %s failed", self.run_id)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Write what is pending (and the retained slowest rows), then stop the thread."""
        if not self._thread.is_alive():
            return
        self._closing.set()
        self._wake.set()
        self._thread.join()

    def _loop(self) -> None:
        try:
            next_progress = 0.0
            failures = 0
            give_up_at = math.inf
            while True:
                closing = self._closing.is_set()
                try:
                    self._flush_items(final=closing)
                    now = time.monotonic()
                    if self._progress is not None and (now >= next_progress or closing):
                        self._write_progress(self._progress)
                        next_progress = now + self.interval
                except TRANSIENT_ERRORS as exc:
                    failures += 1
                    if closing:
                        give_up_at = min(give_up_at, time.monotonic() + CLOSE_RETRY_SECONDS)
                        if time.monotonic() >= give_up_at:
                            self._give_up(exc)
                            return
                    what = f"Recorder of run {self.run_id} ({self._pending_rows} item rows wait)"
                    retries.failed(what, exc, failures)
                    self._pause(failures, closing=closing)
                    continue
                retries.recovered(f"Recorder of run {self.run_id}", failures)
                failures = 0
                if closing:
                    return
                self._wake.wait(self.interval)
                self._wake.clear()
        except Exception as exc:
            lost = sum(map(_row_count, self._pending))
            self._pending = []
            self.rows_lost += lost
            self.failure = exc
            self.broken.set()
            logger.exception(
                "Recorder of run %s failed (%d item rows not written); the run stops",
                self.run_id,
                lost,
            )
        finally:
            connection.close()

    def _pause(self, failures: int, *, closing: bool) -> None:
        pause = retries.pause_after(failures)
        if closing:
            time.sleep(pause)
        else:  # cut short when the run ends: the final flush is tried at once
            self._closing.wait(pause)

    def _give_up(self, exc: Exception) -> None:
        lost = sum(_row_count(row) for row in self._pending)
        self._pending = []
        self.rows_lost += lost
        logger.error(
            "Recorder of run %s: the database still fails after %.0f s (%s: %s); %s",
            self.run_id,
            CLOSE_RETRY_SECONDS,
            type(exc).__name__,
            exc,
            f"{lost} item rows were not written" if lost else "the last progress was not saved",
        )

    def _flush_items(self, *, final: bool) -> None:
        rows, self._pending = self._pending, []
        self._pending_rows = 0
        if self.fenced_out.is_set():
            return
        if final and not self._leftovers_queued:
            rows.extend(self.retention.leftovers())
            self._leftovers_queued = True
        # One connection for the whole run (closed when the thread ends): with CONN_MAX_AGE = 0,
        # closing "old" connections before each batch reconnected every few thousand rows.
        batches = list(_batches(rows, self.batch_size))
        for index, batch in enumerate(batches):
            try:
                written = insert_item_rows(self.run_id, batch, attempt=self.attempt)
            except TRANSIENT_ERRORS:
                # this batch was rolled back: it and the rest go first in the queue again
                unwritten = list(chain.from_iterable(batches[index:]))
                self._pending[:0] = unwritten
                self._pending_rows += sum(map(_row_count, unwritten))
                raise
            except DatabaseError as exc:
                refused = sum(map(_row_count, batch))
                self.rows_lost += refused
                logger.error(
                    "Recorder of run %s: the database refused %d item rows (%s: %s)",
                    self.run_id,
                    refused,
                    type(exc).__name__,
                    exc,
                )
            else:
                if not written:  # a newer attempt owns the run (our lease expired meanwhile)
                    self._fenced()
                    return

    def _row(self, record: Any) -> Any:
        seq = original_seq(record.seq, self.seq_map)
        row = item_row(self.run_id, record, seq)
        return copy_row(row) if self._copy else row

    def _write_progress(self, snapshot: dict[str, Any]) -> None:
        """Save the snapshot and renew the lease; one query while the run goes on normally.

        The update also requires ``cancel_requested`` to be unset, so a cancel request (or a
        newer attempt) shows as no row updated, and only then is the row read to tell which.
        """
        now = timezone.now()
        fields = {
            "items_in": snapshot["items_in"],
            "items_out": snapshot["items_out"],
            "items_filtered": snapshot["filtered"],
            "items_errors": snapshot["errors"],
            "rate": snapshot.get("rate"),
            "eta_seconds": snapshot.get("eta_seconds"),
            "progress": snapshot,
            "heartbeat_at": now,
            "lease_expires_at": now + self.lease,
        }
        ours = PipelineRun.objects.filter(
            pk=self.run_id, attempt=self.attempt, status=RunStatus.RUNNING
        )
        if ours.filter(cancel_requested=False).update(**fields):
            return
        if ours.update(**fields):
            self.cancel_requested.set()
        else:
            self._fenced()

    def _fenced(self) -> None:
        logger.warning(
            "Run %s is no longer this attempt's (requeued, lost or taken over); it stops",
            self.run_id,
        )
        self.fenced_out.set()


def _row_count(row: Any) -> int:
    """How many item rows ``row`` holds (a :class:`RowBlock` holds several)."""
    return len(row) if type(row) is RowBlock else 1


def _batches(rows: list[Any], size: int) -> Iterator[list[Any]]:
    """``rows`` in runs of about ``size`` item rows (a :class:`RowBlock` is never split)."""
    batch: list[Any] = []
    count = 0
    for row in rows:
        batch.append(row)
        count += _row_count(row)
        if count >= size:
            yield batch
            batch, count = [], 0
    if batch:
        yield batch
