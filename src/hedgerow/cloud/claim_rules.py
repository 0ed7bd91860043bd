"""Claims, claim templates and device CAs: entities and rules (pure: no I/O).

A template says how a device that provisions with a claim is registered: its kind (core
or thing), its group and its name, each a pattern over the placeholders in
``PLACEHOLDERS`` (``press-{serial}``, ``{group}-{seq}``, ``site-{serial}``). For a core the
group pattern makes one group per core (a group has one core) and the group is created
when missing; for a thing the group must exist. A device CA registered with a template
admits a certificate it signed just in time, named by the template with ``{serial}`` (and
``{cn}``) the certificate's common name.
"""

from __future__ import annotations

import datetime as dt
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hedgerow.cloud.domain import iso, validate_name
from hedgerow.cloud.errors import Forbidden, InvalidInput
from hedgerow.contract.provisioning import ClaimKind

PLACEHOLDERS = ("serial", "seq", "group", "cn", "template")
#: The most uses one claim may have (a claim is a fleet's image credential, not a CA).
MAX_USES = 100_000
DEFAULT_USES = 1
DEFAULT_LIFETIME = dt.timedelta(days=30)
MAX_LIFETIME = dt.timedelta(days=3650)
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class ClaimRefused(Forbidden):
    """A claim that may not be used now; ``reason`` is a short word for the audit
    (``limit``, ``expired``, ``revoked``, ``unknown``, ``hook``, ``invalid``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def validate_pattern(value: object, what: str) -> str:
    """A pattern: text and ``{placeholder}`` fields; ``InvalidInput`` naming ``what``."""
    if not isinstance(value, str) or not value or len(value) > 160:
        raise InvalidInput(f"{what} must be a pattern of 1-160 characters", field=what)
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(value) if f is not None]
    except ValueError as exc:
        raise InvalidInput(f"{what} {value!r}: {exc}", field=what) from exc
    unknown = [f for f in fields if f not in PLACEHOLDERS]
    if unknown:
        raise InvalidInput(
            f"{what} {value!r}: unknown placeholder {{{unknown[0]}}} "
            f"(use {', '.join('{' + p + '}' for p in PLACEHOLDERS)})",
            field=what,
        )
    return value


def validate_kind(value: object) -> ClaimKind:
    try:
        return ClaimKind(str(value))
    except ValueError as exc:
        raise InvalidInput(f"kind {value!r}: must be core or thing", field="kind") from exc


def parse_duration(value: str) -> dt.timedelta:
    """``30d``, ``12h``, ``90m``, ``2w``, ``3600s`` as a timedelta (``InvalidInput`` else)."""
    match = _DURATION.match(value.strip())
    if match is None:
        raise InvalidInput(
            f"expires {value!r}: write a duration such as 30d, 12h, 90m or 2w", field="expires"
        )
    return dt.timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def check_claim_limits(max_uses: int, lifetime: dt.timedelta) -> None:
    if not 1 <= max_uses <= MAX_USES:
        raise InvalidInput(f"count must be 1-{MAX_USES}", field="count")
    if not dt.timedelta(seconds=60) <= lifetime <= MAX_LIFETIME:
        raise InvalidInput("expires must be between 1 minute and 10 years", field="expires")


@dataclass(frozen=True)
class ClaimTemplate:
    name: str
    kind: ClaimKind
    group: str
    name_pattern: str
    attributes: Mapping[str, str]
    created_at: dt.datetime

    def resolve(self, *, serial: str, seq: int, cn: str = "") -> tuple[str, str]:
        """The ``(name, group)`` a device with ``serial`` gets (``InvalidInput`` when the
        result is not a valid name, e.g. a serial with a ':' in a name pattern)."""
        values = {"serial": serial, "seq": seq, "cn": cn or serial, "template": self.name}
        group = validate_name(self.group.format(**values, group=""), "group name")
        name = validate_name(self.name_pattern.format(**values, group=group), "name")
        return name, group

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind.value,
            "group": self.group,
            "name_pattern": self.name_pattern,
            "attributes": dict(self.attributes),
            "created_at": iso(self.created_at),
        }


@dataclass(frozen=True)
class ClaimUse:
    at: dt.datetime
    serial: str
    outcome: str
    reason: str
    name: str | None
    fingerprint: str | None
    peer: str

    def to_json(self) -> dict[str, Any]:
        return {
            "at": iso(self.at),
            "serial": self.serial,
            "outcome": self.outcome,
            "reason": self.reason,
            "name": self.name,
            "fingerprint": self.fingerprint,
            "peer": self.peer,
        }


@dataclass(frozen=True)
class Claim:
    id: str
    template: str
    kind: ClaimKind
    fingerprint: str
    max_uses: int
    used: int
    expires_at: dt.datetime
    revoked_at: dt.datetime | None
    created_at: dt.datetime
    uses: list[ClaimUse] = field(default_factory=list)

    def refusal(self, at: dt.datetime) -> ClaimRefused | None:
        """Why this claim may not be used at ``at`` (None: it may)."""
        if self.revoked_at is not None:
            return ClaimRefused("revoked", f"claim {self.id} was revoked at {iso(self.revoked_at)}")
        if self.expires_at <= at:
            return ClaimRefused("expired", f"claim {self.id} expired at {iso(self.expires_at)}")
        if self.used >= self.max_uses:
            return ClaimRefused(
                "limit", f"claim {self.id} is used up: {self.used} of {self.max_uses} uses"
            )
        return None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "template": self.template,
            "kind": self.kind.value,
            "fingerprint": self.fingerprint,
            "max_uses": self.max_uses,
            "used": self.used,
            "expires_at": iso(self.expires_at),
            "revoked_at": iso(self.revoked_at),
            "created_at": iso(self.created_at),
        }
        if self.uses:
            body["uses"] = [u.to_json() for u in self.uses]
        return body


@dataclass(frozen=True)
class DeviceCA:
    fingerprint: str
    subject: str
    template: str
    group: str
    cert_pem: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "subject": self.subject,
            "template": self.template,
            "group": self.group,
            "created_at": iso(self.created_at),
            "revoked_at": iso(self.revoked_at),
        }
