"""Aggregate numeric readings per sensor per time window at the edge.

A pinned function: it keeps one window per (thing, field) and, when a reading arrives after
the window closed, publishes ``{"thing", "window_start", "window_s", "readings",
"bytes_in", "fields": {name: {"min", "max", "mean", "count"}}}`` to ``aggregates/<thing>``
and starts a new window. Only the aggregates travel to the cloud; ``bytes_in`` is what the
window's readings weighed as they arrived (compact JSON), i.e. what the cloud would have
received without this function (``examples/industrial/bytes_saved.py`` adds it up against
the aggregates' own size). ``WINDOW_S`` (seconds, default 60) is read from the environment.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

OUTPUT_PREFIX = os.environ.get("OUTPUT_PREFIX", "aggregates")
SKIP_FIELDS = frozenset({"timestamp", "thing"})


@dataclass
class Stat:
    minimum: float = float("inf")
    maximum: float = float("-inf")
    total: float = 0.0
    count: int = 0

    def add(self, value: float) -> None:
        self.minimum = min(self.minimum, value)
        self.maximum = max(self.maximum, value)
        self.total += value
        self.count += 1

    def summary(self) -> dict[str, float | int]:
        return {
            "min": self.minimum,
            "max": self.maximum,
            "mean": round(self.total / self.count, 6),
            "count": self.count,
        }


@dataclass
class Window:
    start: float
    stats: dict[str, Stat] = field(default_factory=dict)
    readings: int = 0
    bytes_in: int = 0

    def add(self, reading: dict[str, Any]) -> None:
        self.readings += 1
        self.bytes_in += len(json.dumps(reading, separators=(",", ":")).encode())
        for name, value in reading.items():
            if name in SKIP_FIELDS or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            self.stats.setdefault(name, Stat()).add(float(value))


class Aggregator:
    """Pure windowing: feed readings with their time, collect closed windows."""

    def __init__(self, window_s: float) -> None:
        if window_s <= 0:
            raise ValueError("WINDOW_S must be positive")
        self.window_s = window_s
        self.windows: dict[str, Window] = {}

    def add(self, thing: str, reading: dict[str, Any], now: float) -> dict[str, Any] | None:
        """Add a reading; return the closed window's summary when this reading closed one."""
        closed = None
        window = self.windows.get(thing)
        if window is not None and now - window.start >= self.window_s:
            closed = {
                "thing": thing,
                "window_start": window.start,
                "window_s": self.window_s,
                "readings": window.readings,
                "bytes_in": window.bytes_in,
                "fields": {name: stat.summary() for name, stat in window.stats.items()},
            }
            window = None
        if window is None:
            window = self.windows[thing] = Window(start=now)
        window.add(reading)
        return closed


AGGREGATOR = Aggregator(float(os.environ.get("WINDOW_S", "60")))


def handler(event: Any, context: Any) -> dict[str, Any] | None:
    if not isinstance(event, dict):
        return None
    thing = str(event.get("thing") or context.topic.rsplit("/", 1)[-1])
    now = float(event.get("timestamp") or time.time())
    closed = AGGREGATOR.add(thing, event, now)
    if closed is not None:
        context.publish(f"{OUTPUT_PREFIX}/{thing}", json.dumps(closed).encode())
    return closed
