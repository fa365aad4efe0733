"""Exceptions and error records of the engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ErrorPolicy = Literal["drop", "return", "raise"]
"""What a stage does with an item whose function raised (anything: ``BaseException`` such as
``asyncio.CancelledError`` or ``SystemExit`` included: it never ends a worker thread) or, in a
process stage, whose result could not be sent back.

* ``"drop"`` (default): the item is dropped, logged once (one log line per failed item, the
  traceback only for the first failure of each stage), counted (``error_count``) and kept in
  :attr:`AsyncTaskPipeline.errors` / the report with stage name, sequence number and traceback.
* ``"return"``: the exception object comes out of the output stream in the item's place (the seed's
  ``return_exceptions=True``).
* ``"raise"``: fail fast. The stages are stopped and the consumer's ``async for`` raises
  :class:`StageError` (its ``__cause__`` is the original exception).
"""

ERROR_POLICIES: tuple[str, ...] = ("drop", "return", "raise")


class PipelineStopped(Exception):
    """Raised inside the engine's channels when the pipeline is stopped (internal)."""


class StageError(RuntimeError):
    """Fail-fast error raised at the consumer when ``error_policy="raise"``."""

    def __init__(self, stage: str, seq: int, message: str, traceback_text: str = "") -> None:
        super().__init__(f"stage {stage!r} failed on item {seq}: {message}")
        self.stage = stage
        self.seq = seq
        self.traceback_text = traceback_text


class RemoteStageError(Exception):
    """Stand-in for an exception raised in a process worker that could not be pickled."""


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    """One failed item: where it failed and why."""

    seq: int
    stage: str
    exc_type: str
    message: str
    traceback: str
    sub_index: tuple[int, ...] = ()
