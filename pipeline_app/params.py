"""Parameters of sources, stages and sinks, validated against their signatures before a run."""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_type_hints

_KINDS: dict[Any, str] = {int: "int", float: "float", str: "str", bool: "bool"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ParamError(ValueError):
    """A parameter is unknown, missing, of the wrong type, or points outside the allowed files.

    ``kind`` ("source", "sink" or "stage") and ``param`` name the parameter when one is to blame,
    so a form can show the message next to its field."""

    def __init__(self, message: str, *, kind: str | None = None, param: str | None = None):
        super().__init__(message)
        self.kind = kind
        self.param = param


@dataclass(frozen=True, slots=True)
class ParamSpec:
    name: str
    kind: str  # "int" | "float" | "str" | "bool" | "json"
    required: bool
    default: Any = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "required": self.required,
            "default": self.default,
        }


def signature_params(func: Callable[..., Any], *, skip_first: bool) -> tuple[ParamSpec, ...]:
    """The keyword parameters of ``func`` (the first positional one skipped for stages/sinks)."""
    try:
        hints = get_type_hints(func)
    except Exception:  # unresolvable annotations: fall back to "json"
        hints = {}
    params = list(inspect.signature(func).parameters.values())
    if skip_first and params:
        params = params[1:]
    specs = []
    for param in params:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        hint = hints.get(param.name, Any)
        kind = _KINDS.get(_strip_optional(hint), "json")
        required = param.default is inspect.Parameter.empty
        specs.append(ParamSpec(param.name, kind, required, None if required else param.default))
    return tuple(specs)


def _strip_optional(hint: Any) -> Any:
    args = getattr(hint, "__args__", None)
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return hint


def coerce(spec: ParamSpec, value: Any) -> Any:
    """Turn ``value`` (JSON or a command-line string) into the parameter's type, or raise."""
    if value is None and not spec.required:
        return None
    try:
        if spec.kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE | _FALSE:
                return text in _TRUE
            raise ValueError
        if spec.kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if spec.kind == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if spec.kind == "str":
            if not isinstance(value, str | int | float):
                raise ValueError
            return str(value)
        # JSON values arrive decoded (forms, the admin, the Python API); decoding a string again
        # would turn the JSON string "hello" into an error. See decode_command_line.
        return value
    except (TypeError, ValueError):
        raise ParamError(f"Parameter {spec.name!r} must be {spec.kind}, got {value!r}.") from None


def validate(
    owner: str,
    specs: Iterable[ParamSpec],
    values: Mapping[str, Any],
    *,
    file_params: Iterable[str] = (),
    file_roots: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Validated, typed parameters; ``file_roots=None`` means any path (command-line runs)."""
    by_name = {spec.name: spec for spec in specs}
    unknown = sorted(set(values) - set(by_name))
    if unknown:
        known = ", ".join(by_name) or "none"
        raise ParamError(f"{owner}: unknown parameter {unknown[0]!r} (accepted: {known}).")
    result: dict[str, Any] = {}
    for name, spec in by_name.items():
        if name in values:
            try:
                result[name] = coerce(spec, values[name])
            except ParamError as exc:
                exc.param = name
                raise
        elif spec.required:
            raise ParamError(f"{owner}: parameter {name!r} is required.", param=name)
    for name in file_params:
        value = result.get(name)
        if value is None:
            continue
        if not isinstance(value, str | os.PathLike):
            # str() of a list would be checked instead of the paths in it
            raise ParamError(
                f"{owner}: {name} must be one path, got {type(value).__name__}.", param=name
            )
        if file_roots is not None:
            try:
                check_file_root(owner, name, os.fspath(value), file_roots)
            except ParamError as exc:
                exc.param = name
                raise
    return result


def check_file_root(owner: str, name: str, path: str, roots: Iterable[str]) -> None:
    if "\0" in path:  # os.path.realpath raises ValueError on it
        raise ParamError(f"{owner}: {name}={path!r} contains a NUL byte.")
    resolved = Path(os.path.realpath(path))
    for root in roots:
        if resolved.is_relative_to(os.path.realpath(root)):
            return
    raise ParamError(
        f"{owner}: {name}={path!r} is outside the directories runs started from the web may use "
        "(PIPELINE_APP['FILE_ROOTS'])."
    )


def parse_assignments(pairs: Iterable[str]) -> dict[str, str]:
    """``["a=1", "b=x"]`` from the command line into a dict of raw strings."""
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ParamError(f"Parameter {pair!r} must look like key=value.")
        result[key.strip()] = value
    return result


def decode_command_line(specs: Iterable[ParamSpec], values: Mapping[str, str]) -> dict[str, Any]:
    """Command-line strings with those of JSON-kind parameters decoded (``tags=["a", "b"]``);
    the other kinds are coerced from their strings by :func:`validate`."""
    json_kind = {spec.name for spec in specs if spec.kind == "json"}
    result: dict[str, Any] = {}
    for name, value in values.items():
        if name in json_kind:
            try:
                result[name] = json.loads(value)
            except ValueError:
                raise ParamError(f"Parameter {name!r} must be json, got {value!r}.") from None
        else:
            result[name] = value
    return result
