"""The pure rules of claims: templates' patterns, why a claim may not be used, durations."""

from __future__ import annotations

import datetime as dt

import pytest

from hedgerow.cloud.claim_rules import (
    Claim,
    ClaimTemplate,
    check_claim_limits,
    parse_duration,
    validate_pattern,
)
from hedgerow.cloud.errors import InvalidInput
from hedgerow.contract.provisioning import ClaimKind

NOW = dt.datetime(2026, 12, 4, 12, tzinfo=dt.UTC)


def template(group: str, name: str, kind: ClaimKind = ClaimKind.CORE) -> ClaimTemplate:
    return ClaimTemplate("gw", kind, group, name, {}, NOW)


def claim(**changes: object) -> Claim:
    values: dict[str, object] = {
        "id": "c-1", "template": "gw", "kind": ClaimKind.CORE, "fingerprint": "ab",
        "max_uses": 2, "used": 0, "expires_at": NOW + dt.timedelta(days=1), "revoked_at": None,
        "created_at": NOW,
    }  # fmt: skip
    values.update(changes)
    return Claim(**values)  # type: ignore[arg-type]


def test_patterns_make_names_and_groups() -> None:
    assert template("site-{serial}", "gw-{serial}").resolve(serial="A1", seq=7) == (
        "gw-A1",
        "site-A1",
    )
    assert template("plant", "{group}-{seq}").resolve(serial="x", seq=7) == ("plant-7", "plant")
    assert template("plant", "{cn}").resolve(serial="x", seq=0, cn="bme680-1")[0] == "bme680-1"
    with pytest.raises(InvalidInput):  # a serial with ':' makes no valid name
        template("plant", "gw-{serial}").resolve(serial="aa:bb", seq=1)
    with pytest.raises(InvalidInput, match="unknown placeholder"):
        validate_pattern("gw-{mac}", "name_pattern")


def test_why_a_claim_is_refused_revoked_then_expired_then_used_up() -> None:
    assert claim().refusal(NOW) is None
    used_up = claim(used=2).refusal(NOW)
    assert used_up is not None and used_up.reason == "limit" and "2 of 2 uses" in used_up.message
    expired = claim(used=2, expires_at=NOW).refusal(NOW)
    assert expired is not None and expired.reason == "expired"
    revoked = claim(used=2, expires_at=NOW, revoked_at=NOW).refusal(NOW)
    assert revoked is not None and revoked.reason == "revoked" and revoked.status == 403


def test_durations_and_limits() -> None:
    assert parse_duration("30d") == dt.timedelta(days=30)
    assert parse_duration("90m") == dt.timedelta(minutes=90)
    with pytest.raises(InvalidInput) as caught:
        parse_duration("soon")
    assert caught.value.field == "expires"
    check_claim_limits(1, dt.timedelta(hours=1))
    for uses, lifetime in ((0, dt.timedelta(hours=1)), (1, dt.timedelta(seconds=5))):
        with pytest.raises(InvalidInput):
            check_claim_limits(uses, lifetime)
