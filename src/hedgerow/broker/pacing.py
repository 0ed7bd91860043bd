"""Whether a busy subscriber may hold back its publishers (pure: times are given).

A subscriber whose socket is congested or whose in-flight window is full *paces* the
publisher being routed to it (the broker stops reading that publisher) — but only while
it takes data: it acknowledged something, or its socket drained, within the last
``timeout`` seconds. A subscriber that took nothing for ``timeout`` is stalled and paces
no one.

When data starts to wait for it (its first message in flight, its socket congested), a
subscriber that has taken data before gets ``timeout`` of credit for the round trip. One
that has never taken anything on this connection gets none: its credit is counted in
bytes — its byte budget (``budget.py``) takes what the publishers send until it has
acknowledged or drained something, and then it paces like any other. A stalled client
that never reads thus fills its own budget and is dropped to (QoS 0) or disconnected
(QoS 1/2) without having paused any publisher. Becoming busy or congested is not taking
data: the kernel's socket buffers accept bytes a stalled client never reads.
"""

from __future__ import annotations

import math

#: ``Pacing.took_at`` of a subscriber that never took data
NEVER = -math.inf


class Pacing:
    """When one subscriber last took data, and what follows for pacing."""

    __slots__ = ("timeout", "took_at")

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        #: When it last took data (or its credit began); -inf: it never took any.
        self.took_at = NEVER

    def took(self, now: float) -> None:
        """It acknowledged a message or its socket drained."""
        self.took_at = now

    def busy(self, now: float) -> None:
        """Data starts to wait for it: a round trip's credit, if it ever took data."""
        if self.took_at != NEVER:
            self.took_at = now

    def paces(self, now: float) -> bool:
        """Whether it may pause a publisher now: it took data within ``timeout``."""
        return now < self.took_at + self.timeout

    def stalled_at(self) -> float:
        """When it counts as stalled unless it takes data before (a timer's deadline)."""
        return self.took_at + self.timeout
