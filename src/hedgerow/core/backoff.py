"""The cloud connector's reconnect schedule: capped exponential backoff, full jitter (pure)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

Uniform = Callable[[float, float], float]


@dataclass(frozen=True, slots=True)
class BackoffSchedule:
    base: float = 0.5
    cap: float = 30.0

    def ceiling(self, attempt: int) -> float:
        return min(self.cap, self.base * 2.0 ** min(max(attempt, 0), 64))

    def delay(self, attempt: int, uniform: Uniform = random.uniform) -> float:
        """Full jitter: uniform in ``[0, min(cap, base * 2**attempt)]``."""
        return uniform(0.0, self.ceiling(attempt))
