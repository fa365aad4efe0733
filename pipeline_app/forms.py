"""Forms of the dashboard and the admin: run parameters built from the registered signatures,
run list filters, and definition / stage forms that only offer registered names."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from pipeline_app import jobs, params
from pipeline_app.models import (
    PipelineDefinition,
    PipelineRun,
    PipelineStageConfig,
    RunStatus,
    Trigger,
)
from pipeline_app.params import ParamError, ParamSpec
from pipeline_app.registry import RegistryError, registry


def _param_initial(spec: ParamSpec, value: Any) -> Any:
    """The value a run would get, so that a stored ``"false"`` leaves the checkbox unchecked. A
    value that does not coerce is shown as stored; submitting it reports why."""
    try:
        return params.coerce(spec, value)
    except ParamError:
        return value


def _param_field(spec: ParamSpec, initial: Any) -> forms.Field:
    required = spec.required and initial is None
    help_text = "required" if required else f"default: {json.dumps(initial)}"
    options: dict[str, Any] = {"required": required, "initial": initial, "help_text": help_text}
    if spec.kind == "int":
        return forms.IntegerField(**options)
    if spec.kind == "float":
        return forms.FloatField(**options)
    if spec.kind == "bool":
        options["required"] = False
        return forms.BooleanField(**options)
    if spec.kind == "json":
        return forms.JSONField(**options)
    return forms.CharField(**options)


class RunParamsForm(forms.Form):
    """One field per source (and sink) parameter, initialised from the definition's values."""

    def __init__(self, definition: PipelineDefinition, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("prefix", f"run-{definition.slug}")
        super().__init__(*args, **kwargs)
        self.definition = definition
        self.param_fields: list[tuple[str, str, str]] = []  # (field name, kind, param name)
        for kind in ("source", "sink"):
            name = getattr(definition, kind)
            defaults = getattr(definition, f"{kind}_params") or {}
            try:
                specs = registry.get(kind, name).params
            except RegistryError:
                continue
            for spec in specs:
                field_name = f"{kind}__{spec.name}"
                value = defaults.get(spec.name, spec.default)
                field = _param_field(spec, _param_initial(spec, value))
                field.label = spec.name.replace("_", " ")
                self.fields[field_name] = field
                self.param_fields.append((field_name, kind, spec.name))

    def run_params(self) -> dict[str, dict[str, Any]]:
        """The values to pass to ``jobs.submit``: empty optional fields fall back to defaults."""
        result: dict[str, dict[str, Any]] = {}
        for field_name, kind, name in self.param_fields:
            value = self.cleaned_data.get(field_name)
            if value is None or value == "":
                continue
            result.setdefault(kind, {})[name] = value
        return result

    def submit(self, user: Any, trigger: str) -> PipelineRun | None:
        """Queue a run of the definition with these parameters; ``None`` (with the reason as a
        form error) when they are invalid."""
        if not self.is_valid():
            return None
        try:
            return jobs.submit(
                self.definition, params=self.run_params(), user=user, trigger=trigger
            )
        except ParamError as exc:
            field = f"{exc.kind}__{exc.param}"
            self.add_error(field if field in self.fields else None, str(exc))
            return None


class RunFilterForm(forms.Form):
    status = forms.ChoiceField(choices=[("", "Any status"), *RunStatus.choices], required=False)
    pipeline = forms.ChoiceField(required=False)
    trigger = forms.ChoiceField(choices=[("", "Any trigger"), *Trigger.choices], required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        slugs = PipelineDefinition.objects.values_list("slug", "name")
        pipeline = self.fields["pipeline"]
        assert isinstance(pipeline, forms.ChoiceField)
        pipeline.choices = [("", "Any pipeline"), *slugs]

    def filters(self) -> dict[str, str]:
        """The filters whose values are valid; :attr:`errors` names the others."""
        if not self.is_bound:
            return {}
        self.full_clean()
        return {key: value for key, value in self.cleaned_data.items() if value}


def _check_params(kind: str, name: str, values: Any) -> None:
    if not isinstance(values, dict):
        raise ValidationError('Parameters must be a JSON object, e.g. {"count": 10}.')
    try:
        registered = registry.get(kind, name)  # type: ignore[arg-type]
        params.validate(f"{kind} {name!r}", registered.params, values)
    except (ParamError, RegistryError) as exc:
        raise ValidationError(str(exc)) from None


def _names(kind: str, current: str | None) -> list[tuple[str, str]]:
    choices = registry.choices(kind)  # type: ignore[arg-type]
    if current and current not in dict(choices):
        choices.append((current, f"{current} (not registered)"))
    return choices


class PipelineDefinitionForm(forms.ModelForm):  # type: ignore[type-arg]
    source = forms.ChoiceField(help_text="A registered input source.")
    sink = forms.ChoiceField(help_text="A registered sink.")

    class Meta:
        model = PipelineDefinition
        fields = [
            "name",
            "slug",
            "description",
            "source",
            "source_params",
            "sink",
            "sink_params",
            "max_queue_size",
            "enable_timing",
            "error_policy",
            "timeout_seconds",
            "max_attempts",
            "is_active",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        source, sink = self.fields["source"], self.fields["sink"]
        assert isinstance(source, forms.ChoiceField) and isinstance(sink, forms.ChoiceField)
        source.choices = _names("source", self.instance.source)
        sink.choices = _names("sink", self.instance.sink)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        for kind in ("source", "sink"):
            name, values = data.get(kind), data.get(f"{kind}_params")
            if name and values is not None:
                try:
                    _check_params(kind, name, values)
                except ValidationError as exc:
                    self.add_error(f"{kind}_params", exc)
        return data


class StageConfigForm(forms.ModelForm):  # type: ignore[type-arg]
    stage = forms.ChoiceField(help_text="A registered stage function.")

    class Meta:
        model = PipelineStageConfig
        fields = ["position", "stage", "workers", "executor", "params"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        stage = self.fields["stage"]
        assert isinstance(stage, forms.ChoiceField)
        stage.choices = _names("stage", self.instance.stage)

    def clean_workers(self) -> int:
        workers: int = self.cleaned_data["workers"]
        if workers < 1:
            raise ValidationError("A stage needs at least one worker.")
        return workers

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("stage") and data.get("params") is not None:
            try:
                _check_params("stage", data["stage"], data["params"])
            except ValidationError as exc:
                self.add_error("params", exc)
        return data
