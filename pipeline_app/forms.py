"""Forms of the dashboard and the admin: run parameters built from the registered signatures,
run list filters, and definition / stage forms that only offer registered names."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.forms.formsets import DELETION_FIELD_NAME
from django.forms.models import BaseInlineFormSet

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
    """Refuse the parameters a run of ``name`` would be refused for: unknown or mistyped ones,
    and for a source those its ``check=`` rejects (a negative ``count`` of ``range``, say)."""
    if not isinstance(values, dict):
        raise ValidationError('Parameters must be a JSON object, e.g. {"count": 10}.')
    owner = f"{kind} {name!r}"
    try:
        registered = registry.get(kind, name)  # type: ignore[arg-type]
        checked = params.validate(owner, registered.params, values)
        if registered.check is not None:
            try:
                registered.check(checked)
            except ParamError as exc:
                raise ParamError(f"{owner}: {exc}", kind=kind, param=exc.param) from None
            except (ValueError, TypeError) as exc:  # as assembly.validated_params does
                raise ParamError(f"{owner}: {exc}", kind=kind) from None
    except (ParamError, RegistryError) as exc:
        raise ValidationError(str(exc)) from None


def _is_registered(kind: str, name: str) -> bool:
    return name in dict(registry.choices(kind))  # type: ignore[arg-type]


def _unregistered_message(kind: str, name: str) -> str:
    return (
        f"The {kind} {name!r} is no longer registered: choose another one, "
        "or make the pipeline inactive to save it as it is."
    )


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
        if self.instance.is_code_defined:
            # the sync finds code pipelines by name: a rename here would make the next
            # `migrate` / `syncpipelines` create a second row next to the renamed one
            for field_name in ("name", "slug"):
                if field_name in self.fields:
                    field = self.fields[field_name]
                    field.disabled = True
                    field.help_text = "Defined in a pipelines.py module: rename it there."

    def clean_timeout_seconds(self) -> float | None:
        timeout: float | None = self.cleaned_data.get("timeout_seconds")
        if timeout is not None and timeout <= 0:
            raise ValidationError("A timeout must be more than 0 seconds; leave it empty for none.")
        return timeout

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        for kind in ("source", "sink"):
            params_field = f"{kind}_params"
            if params_field in data and data[params_field] is None:
                data[params_field] = {}  # an emptied box (or "null"): no parameters
            name, values = data.get(kind), data.get(params_field)
            if not name or values is None:
                continue
            if not _is_registered(kind, name):
                # only the stored name is offered: a definition whose source or sink left the
                # code may still be saved inactive, never (re)activated
                if data.get("is_active"):
                    self.add_error(kind, _unregistered_message(kind, name))
                continue
            try:
                _check_params(kind, name, values)
            except ValidationError as exc:
                self.add_error(params_field, exc)
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
        if "params" in data and data["params"] is None:
            data["params"] = {}  # an emptied box (or "null"): no parameters
        stage, values = data.get("stage"), data.get("params")
        if not stage or values is None:
            return data
        if not _is_registered("stage", stage):
            # only the stored name is offered: StageConfigFormSet refuses it unless the
            # definition is (being made) inactive, and the stored parameters are kept as they are
            return data
        try:
            _check_params("stage", stage, values)
        except ValidationError as exc:
            self.add_error("params", exc)
        return data


class StageConfigFormSet(BaseInlineFormSet):  # type: ignore[type-arg]
    """The stages of a definition: one whose stage left the code may still be saved to make the
    definition inactive, never while it is (or is being made) active."""

    def clean(self) -> None:
        super().clean()
        # the admin validates the definition form first: its instance holds the posted is_active
        if not self.instance.is_active:
            return
        for form in self.forms:
            cleaned: dict[str, Any] = getattr(form, "cleaned_data", {})
            stage = cleaned.get("stage")
            if cleaned.get(DELETION_FIELD_NAME):  # deleting it is one way out
                continue
            if stage and not _is_registered("stage", stage):
                form.add_error("stage", _unregistered_message("stage", stage))
