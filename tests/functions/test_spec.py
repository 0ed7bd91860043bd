"""FunctionSpec validation: the rules the cloud and the core share."""

from __future__ import annotations

from typing import Any

import pytest

from hedgerow.functions import FunctionSpec, InvalidFunctionSpec, validate_spec

DOCUMENT_ENTRY: dict[str, Any] = {
    "name": "temp-correct",
    "version": 1,
    "handler": "temp_correct.handler",
    "runtime": "python",
    "pinned": True,
    "memory_mb": 128,
    "timeout_s": 3.0,
    "max_concurrency": 1,
    "environment": {"FACTOR": "5"},
    "encoding": "json",
    "run_as": None,
    "artifact": {"sha256": "ab" * 32, "size": 1234},
}


def test_from_document_mirrors_the_entry() -> None:
    spec = FunctionSpec.from_document(DOCUMENT_ENTRY)
    assert spec.name == "temp-correct" and spec.pinned and spec.environment == {"FACTOR": "5"}
    assert spec.module == "temp_correct" and spec.function == "handler"
    expected = {k: v for k, v in DOCUMENT_ENTRY.items() if k != "artifact"}
    assert spec.to_document() == expected
    assert FunctionSpec.from_document(spec.to_document()) == spec
    assert hash(spec) == hash(FunctionSpec.from_document(expected))


def test_defaults_and_integer_timeout() -> None:
    spec = validate_spec({"name": "f", "handler": "m.h", "timeout_s": 2})
    assert spec.timeout_s == 2.0 and isinstance(spec.timeout_s, float)
    assert (spec.runtime, spec.encoding, spec.pinned, spec.max_concurrency) == (
        "python",
        "json",
        False,
        1,
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "has space"}, "name"),
        ({"name": "x" * 65}, "name"),
        ({"handler": "nodot"}, "handler"),
        ({"handler": "mod.1bad"}, "handler"),
        ({"runtime": "nodejs"}, "runtime"),
        ({"memory_mb": 8}, "memory_mb"),
        ({"memory_mb": 10**6}, "memory_mb"),
        ({"memory_mb": 64.5}, "memory_mb"),
        ({"memory_mb": True}, "memory_mb"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"timeout_s": -1.0}, "timeout_s"),
        ({"timeout_s": 10_000.0}, "timeout_s"),
        ({"timeout_s": float("nan")}, "timeout_s"),
        ({"timeout_s": "3"}, "timeout_s"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"max_concurrency": 65}, "max_concurrency"),
        ({"encoding": "xml"}, "encoding"),
        ({"environment": {"1BAD": "x"}}, "environment"),
        ({"environment": {"OK": 5}}, "environment"),
        ({"environment": {"HEDGEROW_WORKER": "x"}}, "environment"),
        ({"environment": ["A=1"]}, "environment"),
        ({"environment": {"BIG": "x" * 70_000}}, "environment"),
        ({"run_as": "a:b:c"}, "run_as"),
        ({"run_as": "bad user"}, "run_as"),
        ({"run_as": 1000}, "run_as"),
        ({"pinned": "yes"}, "pinned"),
        ({"version": -1}, "version"),
    ],
)
def test_invalid_limits_are_rejected_with_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidFunctionSpec) as info:
        validate_spec({**DOCUMENT_ENTRY, **change})
    assert info.value.field == field
    assert isinstance(info.value, ValueError)


def test_required_keys_and_constructor_validation() -> None:
    with pytest.raises(InvalidFunctionSpec, match="handler"):
        validate_spec({"name": "f"})
    with pytest.raises(InvalidFunctionSpec) as info:
        FunctionSpec(name="f", handler="m.h", memory_mb=1)
    assert info.value.field == "memory_mb"
    with pytest.raises(InvalidFunctionSpec):
        validate_spec("not a mapping")  # type: ignore[arg-type]
    good = FunctionSpec(name="f", handler="m.h", run_as="1000:1000")
    assert validate_spec(good) is good
