"""Cloud and core agree on every function limit: what the cloud accepts when a function is
created, the core runs; what the core would refuse, the cloud refuses at creation."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hedgerow.cloud import domain
from hedgerow.cloud.errors import InvalidInput
from hedgerow.contract.functions import LIMITS, MEMORY_MB, NAME_LENGTH
from hedgerow.functions import FunctionSpec, InvalidFunctionSpec

from .boundaries import BASE, Case, cases

#: Fields the cloud assigns itself, never taken from a request.
CLOUD_ASSIGNED = frozenset({"version"})


def cloud_verdict(entry: dict[str, Any]) -> str | None:
    """None when the cloud would create this function, else the field it refuses."""
    try:
        domain.validate_function_name(entry.get("name"))
        domain.function_settings_from_json(entry)
    except InvalidInput as exc:
        return exc.field or "?"
    return None


def core_verdict(entry: dict[str, Any]) -> str | None:
    """None when the core would run this deployment entry, else the field it refuses."""
    try:
        FunctionSpec.from_document(entry)
    except InvalidFunctionSpec as exc:
        return exc.field
    return None


CASES = list(cases())


def test_every_limit_has_its_boundaries() -> None:
    assert {c.limit.name for c in CASES} == set(LIMITS)
    assert all(any(not c.allowed for c in CASES if c.limit is limit) for limit in LIMITS.values())


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_cloud_and_core_agree_at_each_boundary(case: Case) -> None:
    core = core_verdict(case.entry)
    assert (core is None) is case.allowed, core
    if not case.allowed:
        assert core == case.limit.field
    if case.limit.field in CLOUD_ASSIGNED:
        return
    assert cloud_verdict(case.entry) == core


def test_the_drift_of_issue_13_is_gone() -> None:
    """The cloud used to accept these, and the core refused them at deploy time."""
    for entry in ({**BASE, "memory_mb": 16}, {**BASE, "name": "n" * 100}):
        assert cloud_verdict(entry) == core_verdict(entry) is not None
    assert MEMORY_MB.low == 32 and NAME_LENGTH.high == 64


VALUES: dict[str, st.SearchStrategy[Any]] = {
    "name": st.sampled_from(["f", "temp-correct", "", "-x", "a b", "é", "x" * 64, "x" * 65, 3]),
    "handler": st.sampled_from(["m.h", "a.b.c", "nodot", "m.1x", "", None, 5]),
    "runtime": st.sampled_from(["python", "greengrass-v1", "nodejs", None, 1]),
    "pinned": st.sampled_from([True, False, "yes", 1, None]),
    "memory_mb": st.one_of(st.integers(0, 20_000), st.sampled_from([64.5, True, "128", None])),
    "timeout_s": st.one_of(
        st.sampled_from([0.0, 0.009, 0.01, 900.0, 900.5, math.nan, math.inf]),
        st.integers(-1, 1000),
        st.sampled_from(["3", True, None]),
    ),
    "max_concurrency": st.one_of(st.integers(-1, 70), st.sampled_from([1.0, False, None])),
    "environment": st.one_of(
        st.dictionaries(
            st.sampled_from(["A", "B_1", "1BAD", "HEDGEROW_X", "a-b", ""]),
            st.sampled_from(["", "v", "x" * 5000, 5, "a\0b"]),
            max_size=3,
        ),
        st.sampled_from([None, ["A=1"], "A=1"]),
    ),
    "encoding": st.sampled_from(["json", "binary", "xml", None]),
    "run_as": st.sampled_from([None, "u", "u:g", "1000:1000", "a:b:c", "bad user", "", 1000]),
}


@given(st.fixed_dictionaries({}, optional=VALUES))
def test_cloud_and_core_agree_on_any_entry(change: dict[str, Any]) -> None:
    entry = {**BASE, **change}
    assert (cloud_verdict(entry) is None) is (core_verdict(entry) is None), entry
