"""The broker's outbound memory budget (pure: no I/O, no clock).

Every byte the broker holds for a client counts: QoS 1/2 messages in its in-flight
window and in its session queue, and packets kept back while its socket is congested.
Each client may hold ``client_limit`` bytes; all clients together ``total_limit``. What
happens when a message does not fit is decided by the caller from the verdict:

- QoS 0: dropped and counted (``dropped_qos0``);
- QoS 1/2 for a connected client: the client is disconnected as a slow consumer (v5:
  DISCONNECT 0x97 Quota exceeded for its own budget, 0x89 Server busy for the total), and
  its session takes the message by the offline rule;
- QoS 1/2 for an offline session: its oldest queued messages are dropped (counted in
  ``dropped_budget``) until the new one fits; one that cannot fit at all is dropped.
"""

from __future__ import annotations

import enum

#: Bytes a message costs beyond its payload and topic (object headers, queue entries).
MESSAGE_OVERHEAD = 160


class Verdict(enum.Enum):
    FITS = "fits"
    #: the client's own budget is full
    CLIENT_FULL = "client full"
    #: the broker's total is full
    TOTAL_FULL = "total full"


_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


def parse_size(text: str) -> int:
    """``65536``, ``64K``, ``8M``, ``1G`` (binary units; ``KiB``/``MB`` spellings too)."""
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = value[-1:] if value[-1:] in _UNITS else ""
    try:
        return int(float(value[: len(value) - len(unit)]) * _UNITS[unit])
    except ValueError:
        raise ValueError(
            f"must be bytes or a number with K, M or G (e.g. 64M), not {text!r}"
        ) from None


def message_cost(payload: bytes, topic: str) -> int:
    """What one held message counts against a budget."""
    return len(payload) + len(topic) + MESSAGE_OVERHEAD


class OutboundBudget:
    """The total of bytes held for all clients, judged against the two limits.

    Holders (sessions, connections) keep their own count and report every change with
    :meth:`add` / :meth:`remove`; this object keeps the sum and its peak.
    """

    __slots__ = ("client_limit", "total_limit", "total", "peak")

    def __init__(self, client_limit: int, total_limit: int) -> None:
        if client_limit <= 0 or total_limit <= 0:
            raise ValueError("outbound byte limits must be positive")
        self.client_limit = client_limit
        self.total_limit = total_limit
        self.total = 0
        self.peak = 0

    def check(self, held: int, size: int) -> Verdict:
        """Whether ``size`` more bytes fit for a client already holding ``held``."""
        if held + size > self.client_limit:
            return Verdict.CLIENT_FULL
        if self.total + size > self.total_limit:
            return Verdict.TOTAL_FULL
        return Verdict.FITS

    def add(self, size: int) -> None:
        total = self.total = self.total + size
        if total > self.peak:
            self.peak = total

    def remove(self, size: int) -> None:
        self.total -= size
