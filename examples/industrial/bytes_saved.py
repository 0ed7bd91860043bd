"""What aggregating at the edge saved: bytes the connectors' readings weighed against bytes
the cloud received, from the cloud's stored ``aggregates/#`` messages.

    hedgerow cloud messages 'aggregates/#' --all --json | python examples/industrial/bytes_saved.py

Each aggregate (``window_aggregate``) carries ``readings`` and ``bytes_in``: how many
connector readings went into its window and what they weighed as they arrived (what the
cloud would have received without the edge function). The bytes sent are the aggregates'
own payloads as the cloud stored them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Saved:
    windows: int
    readings: int
    bytes_read: int  # the readings, as the connectors published them
    bytes_sent: int  # the aggregates, as the cloud stored them

    @property
    def ratio(self) -> float:
        return self.bytes_read / self.bytes_sent if self.bytes_sent else 0.0

    def text(self) -> str:
        return (
            f"{self.windows} windows of {self.readings:,} readings: bytes read at the edge "
            f"{self.bytes_read:,}; bytes sent to the cloud {self.bytes_sent:,}; "
            f"{self.ratio:,.1f}x less"
        )


def bytes_saved(messages: Iterable[Mapping[str, Any]]) -> Saved:
    """Add up the stored aggregates (``hedgerow cloud messages --json`` items)."""
    windows = readings = read = sent = 0
    for message in messages:
        payload = message.get("payload")
        if not isinstance(payload, str):
            continue  # a binary payload is not an aggregate
        try:
            body = json.loads(payload)
        except ValueError:
            continue
        if not isinstance(body, dict) or "bytes_in" not in body:
            continue
        windows += 1
        readings += int(body.get("readings", 0))
        read += int(body["bytes_in"])
        sent += len(payload.encode())
    return Saved(windows, readings, read, sent)


def main() -> int:
    saved = bytes_saved(json.load(sys.stdin))
    if not saved.windows:
        print("no aggregates yet: is window_aggregate deployed and routed to the cloud?")
        return 1
    print(saved.text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
