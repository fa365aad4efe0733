"""Pipelines as code: registered stage functions, input sources, sinks and pipelines.

Apps declare them in a ``pipelines.py`` module, discovered at start-up like ``admin.py``::

    from pipeline_app import registry

    @registry.stage()
    def parse(line: str) -> dict | None: ...

    @registry.source()
    async def numbers(count: int = 100) -> AsyncIterator[int]: ...

    registry.register_pipeline("demo", stages=["parse"], source="numbers")

The admin, the dashboard and the command choose among registered names only: nothing that comes
from user input is ever imported by dotted path.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from django.utils.module_loading import autodiscover_modules

from pipeline_app.params import ParamSpec, signature_params

Executor = Literal["thread", "process"]
ErrorPolicyName = Literal["skip", "fail"]
F = TypeVar("F", bound=Callable[..., Any])


class RegistryError(ValueError):
    """A name is unknown, registered twice, or a definition refers to something missing."""


@dataclass(frozen=True, slots=True)
class Registered:
    """A registered callable with the parameters its signature accepts."""

    name: str
    func: Callable[..., Any]
    description: str
    params: tuple[ParamSpec, ...]
    file_params: frozenset[str] = frozenset()
    size_hint: Callable[[dict[str, Any]], int | None] | None = None
    check: Callable[[dict[str, Any]], None] | None = None


@dataclass(frozen=True, slots=True)
class StageSpec:
    """One stage of a pipeline: a registered stage name and how it runs."""

    stage: str
    workers: int = 1
    executor: Executor = "thread"
    params: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "workers": self.workers,
            "executor": self.executor,
            "params": dict(self.params),
        }


@dataclass(frozen=True, slots=True)
class PipelineSpec:
    """A code-defined pipeline, synced into ``PipelineDefinition`` rows."""

    name: str
    stages: tuple[StageSpec, ...]
    source: str
    source_params: Mapping[str, Any] = field(default_factory=dict)
    sink: str = "discard"
    sink_params: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    max_queue_size: int = 100
    enable_timing: bool = True
    error_policy: ErrorPolicyName = "skip"
    timeout_seconds: float | None = None
    max_attempts: int = 1


class Registry:
    def __init__(self) -> None:
        self.stages: dict[str, Registered] = {}
        self.sources: dict[str, Registered] = {}
        self.sinks: dict[str, Registered] = {}
        self.pipelines: dict[str, PipelineSpec] = {}

    def _add(
        self,
        table: dict[str, Registered],
        kind: str,
        func: Callable[..., Any],
        name: str | None,
        description: str,
        skip_first: bool,
        file_params: Iterable[str] = (),
        size_hint: Callable[[dict[str, Any]], int | None] | None = None,
        check: Callable[[dict[str, Any]], None] | None = None,
    ) -> Registered:
        key = name or func.__name__.replace("_", "-")
        existing = table.get(key)
        if existing is not None and existing.func is not func:
            raise RegistryError(
                f"A {kind} named {key!r} is registered already ({existing.func!r})."
            )
        entry = Registered(
            name=key,
            func=func,
            description=description or inspect.getdoc(func) or "",
            params=signature_params(func, skip_first=skip_first),
            file_params=frozenset(file_params),
            size_hint=size_hint,
            check=check,
        )
        table[key] = entry
        return entry

    def stage(self, name: str | None = None, *, description: str = "") -> Callable[[F], F]:
        """Register a stage: ``fn(item, **params)`` returning a value, None or a generator."""

        def decorator(func: F) -> F:
            self._add(self.stages, "stage", func, name, description, skip_first=True)
            return func

        return decorator

    def source(
        self,
        name: str | None = None,
        *,
        description: str = "",
        file_params: Iterable[str] = (),
        size_hint: Callable[[dict[str, Any]], int | None] | None = None,
        check: Callable[[dict[str, Any]], None] | None = None,
    ) -> Callable[[F], F]:
        """Register an input source: an async iterator function taking keyword parameters.

        ``size_hint(params)`` may return the number of items to expect, for progress and ETA;
        ``check(params)`` may raise ``ValueError`` for values the signature's types let through
        (a negative count, say): the run is refused when it is submitted, as for a wrong type.
        """

        def decorator(func: F) -> F:
            if not inspect.isasyncgenfunction(func):
                raise RegistryError(f"Source {func!r} must be an async generator function.")
            self._add(
                self.sources,
                "source",
                func,
                name,
                description,
                False,
                file_params,
                size_hint,
                check,
            )
            return func

        return decorator

    def sink(
        self, name: str | None = None, *, description: str = "", file_params: Iterable[str] = ()
    ) -> Callable[[F], F]:
        """Register a sink factory: ``factory(context, **params)`` returning a :class:`Sink`."""

        def decorator(func: F) -> F:
            self._add(self.sinks, "sink", func, name, description, True, file_params)
            return func

        return decorator

    def register_pipeline(
        self,
        name: str,
        *,
        stages: Iterable[str | StageSpec | Mapping[str, Any]],
        source: str,
        **options: Any,
    ) -> PipelineSpec:
        specs = tuple(_stage_spec(s) for s in stages)
        spec = PipelineSpec(name=name, stages=specs, source=source, **options)
        self.pipelines[name] = spec
        return spec

    def get(self, kind: Literal["stage", "source", "sink"], name: str) -> Registered:
        table = {"stage": self.stages, "source": self.sources, "sink": self.sinks}[kind]
        try:
            return table[name]
        except KeyError:
            known = ", ".join(sorted(table)) or "none"
            raise RegistryError(f"Unknown {kind} {name!r}. Registered {kind}s: {known}.") from None

    def choices(self, kind: Literal["stage", "source", "sink"]) -> list[tuple[str, str]]:
        table = {"stage": self.stages, "source": self.sources, "sink": self.sinks}[kind]
        return [(key, key) for key in sorted(table)]

    def missing_names(self, snapshot: Mapping[str, Any]) -> list[str]:
        """Names a definition snapshot refers to that are not registered, as 'kind name'."""
        missing = [
            f"stage {s['stage']!r}" for s in snapshot["stages"] if s["stage"] not in self.stages
        ]
        if snapshot["source"] not in self.sources:
            missing.append(f"source {snapshot['source']!r}")
        if snapshot["sink"] not in self.sinks:
            missing.append(f"sink {snapshot['sink']!r}")
        return missing


def _stage_spec(value: str | StageSpec | Mapping[str, Any]) -> StageSpec:
    if isinstance(value, StageSpec):
        return value
    if isinstance(value, str):
        return StageSpec(stage=value)
    return StageSpec(**value)


registry = Registry()
stage = registry.stage
source = registry.source
sink = registry.sink
register_pipeline = registry.register_pipeline


def autodiscover() -> None:
    """Import the built-ins and every installed app's ``pipelines`` module."""
    import pipeline_app.builtins  # noqa: F401

    autodiscover_modules("pipelines")
