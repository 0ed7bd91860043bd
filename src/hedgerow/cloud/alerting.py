"""Alerts (pure): rules, the fleet's state they read, and ``evaluate``.

``evaluate(rules, fleet, now, active)`` is a function of its arguments only: which
(rule, subject) pairs hold now. The caller (``services/alerts.py``) compares that with
what was active, records what fired and what cleared, and hands new alerts to the
webhooks (``alert_webhooks.py``). Tests drive it with a ``ManualClock``'s time.

Kinds and how each reads ``threshold``:

=====================  ==============================================================
``core-offline``       a core without a live MQTT session for ``threshold`` seconds
``deployment-failed``  a core's latest deployment ended Failure or RolledBack (ignored)
``function-errors``    a function's failed invocations and crashes grew by at least
                       ``threshold`` per minute (measured between two heartbeats)
``spool-full``         a core's spool holds more than ``threshold`` (0-1) of its quota
``cert-expiry``        a core's certificate expires within ``threshold`` days
=====================  ==============================================================
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from hedgerow.cloud.errors import InvalidInput


class AlertKind(enum.StrEnum):
    CORE_OFFLINE = "core-offline"
    DEPLOYMENT_FAILED = "deployment-failed"
    FUNCTION_ERRORS = "function-errors"
    SPOOL_FULL = "spool-full"
    CERT_EXPIRY = "cert-expiry"


#: What ``threshold`` means per kind, and its allowed range.
THRESHOLDS: Final[Mapping[AlertKind, tuple[str, float, float]]] = {
    AlertKind.CORE_OFFLINE: ("seconds offline", 0.0, 30 * 86400.0),
    AlertKind.DEPLOYMENT_FAILED: ("ignored (use 0)", 0.0, 1e9),
    AlertKind.FUNCTION_ERRORS: ("errors a minute", 0.001, 1e9),
    AlertKind.SPOOL_FULL: ("fraction of the quota", 0.0, 1.0),
    AlertKind.CERT_EXPIRY: ("days before expiry", 0.0, 3650.0),
}
#: The header a webhook delivery is signed in: ``sha256=<hex HMAC of "TIMESTAMP.BODY">``.
SIGNATURE_HEADER: Final = "X-Hedgerow-Signature"
TIMESTAMP_HEADER: Final = "X-Hedgerow-Timestamp"


@dataclass(frozen=True)
class AlertRule:
    name: str
    kind: AlertKind
    threshold: float
    group: str | None = None  # None: every group

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind.value,
            "threshold": self.threshold,
            "group": self.group,
            "means": THRESHOLDS[self.kind][0],
        }


def check_rule(name: str, kind: str, threshold: float) -> AlertKind:
    """The rule's kind; ``InvalidInput`` naming the field that is wrong."""
    if not name or len(name) > 128 or any(c in name for c in "/ \t\n"):
        raise InvalidInput("name must be 1-128 characters without '/' or spaces", field="name")
    try:
        parsed = AlertKind(kind)
    except ValueError:
        kinds = ", ".join(k.value for k in AlertKind)
        raise InvalidInput(
            f"{kind!r} is not an alert kind: use one of {kinds}", field="kind"
        ) from None
    means, low, high = THRESHOLDS[parsed]
    if not low <= threshold <= high:
        raise InvalidInput(
            f"threshold ({means}) must be within {low:g}..{high:g} for {parsed.value}",
            field="threshold",
        )
    return parsed


@dataclass(frozen=True)
class AlertWebhook:
    name: str
    url: str
    secret: str = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "url": self.url}


@dataclass(frozen=True)
class AlertEvent:
    id: int
    rule: str
    kind: str
    subject: str
    group: str
    message: str
    fired_at: float
    resolved_at: float | None = None
    deliveries: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "rule": self.rule,
            "kind": self.kind,
            "subject": self.subject,
            "group": self.group,
            "message": self.message,
            "fired_at": self.fired_at,
            "resolved_at": self.resolved_at,
            "active": self.resolved_at is None,
            "deliveries": dict(self.deliveries),
        }


@dataclass(frozen=True)
class CoreState:
    """What the rules read of one core (built from the registry and the live sessions)."""

    name: str
    group: str
    connected: bool
    #: since when the core has been without a session (None: connected or never seen)
    offline_since: float | None = None
    #: the latest deployment's status for this core (``Success``, ``Failure``, ...)
    deployment_status: str | None = None
    deployment_id: str | None = None
    #: per function: failed invocations + crashes, now and at the previous sample
    function_errors: Mapping[str, int] = field(default_factory=dict)
    previous_errors: Mapping[str, int] = field(default_factory=dict)
    #: seconds between the previous sample of ``function_errors`` and this one
    errors_window: float = 0.0
    spool_bytes: int = 0
    spool_max_bytes: int = 0
    #: the core's identity certificate's expiry (epoch seconds)
    cert_not_after: float | None = None


@dataclass(frozen=True)
class Firing:
    """A rule holding for a subject now."""

    rule: str
    kind: AlertKind
    subject: str
    group: str
    message: str

    @property
    def key(self) -> tuple[str, str]:
        return self.rule, self.subject


def evaluate(rules: Sequence[AlertRule], fleet: Iterable[CoreState], now: float) -> list[Firing]:
    """Every (rule, subject) that holds at ``now``."""
    out: list[Firing] = []
    cores = list(fleet)
    for rule in rules:
        for core in cores:
            if rule.group is not None and core.group != rule.group:
                continue
            out.extend(_check(rule, core, now))
    return out


def _check(rule: AlertRule, core: CoreState, now: float) -> list[Firing]:
    def firing(message: str, subject: str = core.name) -> Firing:
        return Firing(rule.name, rule.kind, subject, core.group, message)

    kind, threshold = rule.kind, rule.threshold
    if kind is AlertKind.CORE_OFFLINE:
        if core.connected or core.offline_since is None:
            return []
        offline = now - core.offline_since
        if offline >= threshold:
            return [firing(f"core {core.name} offline for {offline:.0f} s")]
        return []
    if kind is AlertKind.DEPLOYMENT_FAILED:
        if core.deployment_status in ("Failure", "RolledBack"):
            return [
                firing(
                    f"deployment {core.deployment_id} on core {core.name}: {core.deployment_status}"
                )
            ]
        return []
    if kind is AlertKind.FUNCTION_ERRORS:
        if core.errors_window <= 0:
            return []
        out = []
        for function, count in sorted(core.function_errors.items()):
            grown = count - core.previous_errors.get(function, count)
            per_minute = grown * 60.0 / core.errors_window
            if grown > 0 and per_minute >= threshold:
                out.append(
                    firing(
                        f"function {function} on core {core.name}: "
                        f"{per_minute:.1f} errors a minute",
                        f"{core.name}/{function}",
                    )
                )
        return out
    if kind is AlertKind.SPOOL_FULL:
        if core.spool_max_bytes and core.spool_bytes > threshold * core.spool_max_bytes:
            used = core.spool_bytes / core.spool_max_bytes
            return [firing(f"core {core.name}: spool {used:.0%} of its quota")]
        return []
    if kind is AlertKind.CERT_EXPIRY:
        if core.cert_not_after is not None:
            days = (core.cert_not_after - now) / 86400
            if days <= threshold:
                return [firing(f"core {core.name}: certificate expires in {days:.1f} days")]
        return []
    return []


@dataclass(frozen=True)
class Changes:
    fired: list[Firing]
    resolved: list[tuple[str, str]]  # keys that no longer hold


def changes(active: Iterable[tuple[str, str]], now_firing: Sequence[Firing]) -> Changes:
    """What fired and what cleared, given the keys active before."""
    before = set(active)
    current = {f.key for f in now_firing}
    return Changes(
        fired=[f for f in now_firing if f.key not in before],
        resolved=sorted(before - current),
    )


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header's value: ``sha256=`` + hex HMAC-SHA256 of ``TIMESTAMP.BODY``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """What a receiver does (constant-time comparison)."""
    return hmac.compare_digest(sign(secret, timestamp, body), signature)
