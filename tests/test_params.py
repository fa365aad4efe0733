from __future__ import annotations

import pytest

from pipeline_app.params import (
    ParamError,
    ParamSpec,
    decode_command_line,
    parse_assignments,
    validate,
)

SPECS = (
    ParamSpec("count", "int", required=True),
    ParamSpec("delay", "float", required=False, default=0.0),
    ParamSpec("strict", "bool", required=False, default=False),
    ParamSpec("path", "str", required=False),
)


def test_strings_from_the_command_line_are_coerced_to_the_signature_types() -> None:
    assert validate("source 'x'", SPECS, {"count": "5", "delay": "0.5", "strict": "yes"}) == {
        "count": 5,
        "delay": 0.5,
        "strict": True,
    }


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "parameter 'count' is required"),
        ({"count": "five"}, "'count' must be int"),
        ({"count": 1.5}, "'count' must be int"),
        ({"count": 1, "strict": "maybe"}, "'strict' must be bool"),
        ({"count": 1, "colour": "red"}, "unknown parameter 'colour' \\(accepted: count, delay"),
    ],
)
def test_bad_parameters_are_reported_with_the_owner_and_the_reason(
    values: dict[str, object], message: str
) -> None:
    with pytest.raises(ParamError, match=message):
        validate("source 'x'", SPECS, values)


def test_file_parameters_are_confined_to_the_roots(tmp_path: object) -> None:
    root = str(tmp_path)
    ok = validate(
        "s", SPECS, {"count": 1, "path": f"{root}/a.txt"}, file_params=["path"], file_roots=[root]
    )
    assert ok["path"].endswith("a.txt")
    with pytest.raises(ParamError, match="outside the directories"):
        validate(
            "s",
            SPECS,
            {"count": 1, "path": f"{root}/../../etc/passwd"},
            file_params=["path"],
            file_roots=[root],
        )
    assert (
        validate(
            "s", SPECS, {"count": 1, "path": "/etc/hosts"}, file_params=["path"], file_roots=None
        )["path"]
        == "/etc/hosts"
    )


def test_a_nul_byte_in_a_file_parameter_is_a_param_error(tmp_path: object) -> None:
    with pytest.raises(ParamError, match="NUL byte"):
        validate(
            "s",
            SPECS,
            {"count": 1, "path": f"{tmp_path}/ok\0.txt"},
            file_params=["path"],
            file_roots=[str(tmp_path)],
        )


JSON_SPECS = (
    ParamSpec("label", "json", required=False, default="x"),
    ParamSpec("tags", "json", required=False),
    ParamSpec("count", "int", required=False, default=1),
)


@pytest.mark.parametrize("value", ["hello", '"hello"', ["a", "b"], {"k": 1}, 3])
def test_json_parameters_take_decoded_values_as_they_are(value: object) -> None:
    """Forms, the admin and the Python API hand over decoded JSON: a string stays a string."""
    assert validate("source 'x'", JSON_SPECS, {"label": value}) == {"label": value}


def test_command_line_values_of_json_parameters_are_decoded() -> None:
    raw = {"label": '"hello"', "tags": '["a", "b"]', "count": "5"}
    assert decode_command_line(JSON_SPECS, raw) == {
        "label": "hello",
        "tags": ["a", "b"],
        "count": "5",
    }
    with pytest.raises(ParamError, match="'label' must be json, got 'hello'"):
        decode_command_line(JSON_SPECS, {"label": "hello"})


def test_assignments_need_an_equals_sign() -> None:
    assert parse_assignments(["a=1", "b=x=y"]) == {"a": "1", "b": "x=y"}
    with pytest.raises(ParamError, match="key=value"):
        parse_assignments(["oops"])
