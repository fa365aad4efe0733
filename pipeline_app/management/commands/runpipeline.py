"""``manage.py runpipeline NAME``: run a pipeline in-process and record it like a web run."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from typing import Any, Literal

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from pipeline_app import conf, jobs, reporting, runner
from pipeline_app.models import PipelineDefinition, PipelineRun, RunStatus, Trigger
from pipeline_app.outcome import Outcome, finish
from pipeline_app.params import ParamError, decode_command_line, parse_assignments
from pipeline_app.registry import RegistryError, registry

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class Command(BaseCommand):
    help = "Run a registered pipeline in this process (trigger 'cli') and print its summary."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", nargs="?", help="Pipeline name (see --list).")
        parser.add_argument("--list", action="store_true", help="List pipelines and exit.")
        parser.add_argument(
            "--param",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="Source parameter; repeat for several. 'sink.KEY=VALUE' sets a sink parameter.",
        )
        parser.add_argument("--input", metavar="PATH", help="Read from this file (source 'path').")
        parser.add_argument("--output", metavar="PATH", help="Write outputs as JSON Lines here.")
        parser.add_argument("--no-timing", action="store_true", help="Skip per-item timing.")
        parser.add_argument("--json", action="store_true", help="Print one JSON object on stdout.")
        parser.add_argument("--quiet", action="store_true", help="No progress and no summary.")
        parser.add_argument(
            "--enqueue",
            action="store_true",
            help="Queue the run for the workers instead of running it here; prints its id.",
        )
        parser.add_argument("--wait", action="store_true", help="With --enqueue: follow it.")
        parser.add_argument(
            "--follow", type=int, metavar="RUN_ID", help="Attach to a run and show its progress."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["list"]:
            self._list()
            return
        if options["follow"] is not None:
            self._report(self._follow(options["follow"], options), options)
            return
        if not options["name"]:
            raise CommandError(
                "Give a pipeline name, or --list to see them.", returncode=EXIT_USAGE
            )
        if options["wait"] and not options["enqueue"]:
            raise CommandError("--wait goes with --enqueue.", returncode=EXIT_USAGE)
        if not options["enqueue"]:
            self._run_here(options)
            return
        run = self._create(options)
        self.stderr.write(f"Queued run #{run.pk}")
        if not options["wait"]:
            if options["json"]:
                self.stdout.write(json.dumps(reporting.run_json(run), default=str))
            else:
                self.stdout.write(str(run.pk))
            return
        self._report(self._follow(run.pk, options), options)

    def _run_here(self, options: dict[str, Any]) -> None:
        worker_id = jobs.worker_identity(":cli")
        # Created and claimed in one transaction: workers first see the run already running
        # (a queued run would be theirs to take in between).
        with transaction.atomic():
            run = self._create(options)
            if not jobs.claim_run(run, worker_id):
                raise CommandError(f"Run #{run.pk} was claimed by another worker.", returncode=1)
        show_progress = self._show_progress(options)
        cancel = threading.Event()
        previous = self._trap_sigint(cancel)
        try:
            run = runner.execute(
                run,
                cancel_event=cancel,
                progress_hook=self._progress_printer() if show_progress else None,
            )
        except KeyboardInterrupt:  # Ctrl-C twice: the runner was stopped before its final write
            run = self._record_forced_cancel(run, worker_id)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            if show_progress:
                sys.stderr.write("\n")
        self._report(run, options, interrupted=cancel.is_set())

    def _list(self) -> None:
        for definition in PipelineDefinition.objects.prefetch_related("stages"):
            stages = " -> ".join(s.stage for s in definition.stages.all())
            state = "" if definition.is_active else " (inactive)"
            self.stdout.write(
                f"{definition.name}{state}: {definition.source} -> {stages} -> {definition.sink}"
            )

    def _create(self, options: dict[str, Any]) -> PipelineRun:
        try:
            definition = PipelineDefinition.objects.get(name=options["name"])
        except PipelineDefinition.DoesNotExist:
            known = ", ".join(PipelineDefinition.objects.values_list("name", flat=True)) or "none"
            raise CommandError(
                f"Unknown pipeline {options['name']!r}. Known: {known}.", returncode=EXIT_USAGE
            ) from None
        try:
            raw = self._split_params(parse_assignments(options["param"]))
            overrides: dict[str, Any] = {}
            if options["output"]:
                overrides.update(sink="jsonl", sink_params={"path": options["output"]})
            if options["no_timing"]:
                overrides["enable_timing"] = False
            params = {
                "source": self._decode(raw["source"], "source", definition.source),
                "sink": self._decode(raw["sink"], "sink", overrides.get("sink", definition.sink)),
            }
            if options["input"]:
                params["source"]["path"] = options["input"]
            create = jobs.submit if options["enqueue"] else jobs.create_run
            return create(definition, params=params, trigger=Trigger.CLI, overrides=overrides)
        except ParamError as exc:
            raise CommandError(str(exc), returncode=EXIT_USAGE) from None

    @staticmethod
    def _split_params(raw: dict[str, str]) -> dict[str, dict[str, str]]:
        """``KEY`` names a source parameter, ``sink.KEY`` a sink parameter; nothing else."""
        params: dict[str, dict[str, str]] = {"source": {}, "sink": {}}
        for key, value in raw.items():
            prefix, dot, name = key.partition(".")
            if not dot:
                params["source"][key] = value
            elif prefix == "sink" and name:
                params["sink"][name] = value
            else:
                raise ParamError(
                    f"Parameter {key!r}: use KEY=VALUE for a source parameter or "
                    "sink.KEY=VALUE for a sink parameter."
                )
        return params

    @staticmethod
    def _decode(
        values: dict[str, str], kind: Literal["source", "sink"], name: str
    ) -> dict[str, Any]:
        try:
            specs = registry.get(kind, name).params
        except RegistryError:  # jobs.submit reports the unregistered name
            return dict(values)
        return decode_command_line(specs, values)

    @staticmethod
    def _record_forced_cancel(run: PipelineRun, worker_id: str) -> PipelineRun:
        """End the run the runner could not end (cancelled; progress and item rows so far are
        kept), or the queued run it never started."""
        current = PipelineRun.objects.get(pk=run.pk)
        if current.status == RunStatus.QUEUED:
            return jobs.cancel(current)
        if current.status == RunStatus.RUNNING and current.worker_id == worker_id:
            return finish(
                current,
                Outcome(status=RunStatus.CANCELLED, error_message="Cancelled on request (forced)."),
            )
        return current

    def _follow(self, run_id: int, options: dict[str, Any]) -> PipelineRun:
        """Poll the run row (it works from any machine) until the run ends."""
        try:
            run = PipelineRun.objects.get(pk=run_id)
        except PipelineRun.DoesNotExist:
            raise CommandError(f"No run #{run_id}.", returncode=EXIT_USAGE) from None
        show = self._progress_printer() if self._show_progress(options) else None
        interval = conf.get("PROGRESS_INTERVAL")
        try:
            while not run.is_finished:
                if show is not None and run.progress:
                    show({**run.progress, "expected": run.items_expected})
                time.sleep(interval)
                run.refresh_from_db()
        except KeyboardInterrupt:
            raise CommandError(
                f"Stopped following run #{run_id}; it goes on (cancel it from the dashboard).",
                returncode=EXIT_INTERRUPTED,
            ) from None
        finally:
            if show is not None:
                sys.stderr.write("\n")
        return run

    @staticmethod
    def _show_progress(options: dict[str, Any]) -> bool:
        return not options["quiet"] and not options["json"] and sys.stderr.isatty()

    @staticmethod
    def _trap_sigint(cancel: threading.Event) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return None

        def handle(signum: int, frame: Any) -> None:
            if cancel.is_set():
                # Further presses must not interrupt the command recording the run's end.
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                sys.stderr.write("\nForced: recording the run as cancelled\n")
                raise KeyboardInterrupt
            cancel.set()
            sys.stderr.write("\nInterrupted: cancelling the run (Ctrl-C again to force)\n")

        return signal.signal(signal.SIGINT, handle)

    @staticmethod
    def _progress_printer() -> runner.ProgressHook:
        def show(snapshot: dict[str, Any]) -> None:
            sys.stderr.write("\r\x1b[2K" + reporting.progress_line(snapshot))
            sys.stderr.flush()

        return show

    def _report(
        self, run: PipelineRun, options: dict[str, Any], *, interrupted: bool = False
    ) -> None:
        """Print the run's outcome; exit 130 only when a Ctrl-C here cancelled it (a run
        cancelled from elsewhere is a run that did not succeed: 1)."""
        if options["json"]:
            self.stdout.write(json.dumps(reporting.run_json(run), default=str))
        elif not options["quiet"]:
            self.stdout.write(reporting.summary_table(run))
        if run.status == RunStatus.CANCELLED:
            raise CommandError(
                f"Run #{run.pk} cancelled.",
                returncode=EXIT_INTERRUPTED if interrupted else EXIT_FAILED,
            )
        if run.status != RunStatus.SUCCEEDED:
            raise CommandError(
                f"Run #{run.pk} {run.status}: {run.error_message}", returncode=EXIT_FAILED
            )
