"""The garbage collector's settings for a process that routes messages.

A subscriber's queue keeps every message routed to it until the subscriber takes it, so
each queued entry is an allocation that survives. CPython starts a young collection after
700 surviving allocations and walks the older generations every tenth time: a stalled
subscriber filling its byte budget made the collector walk the growing queues again and
again, about a third of what queueing a message cost (``bench/hostile.py``). A higher
young threshold keeps that work proportionate; reference cycles are still collected, only
in larger batches (a few MB of young objects at most).
"""

from __future__ import annotations

import gc

#: surviving allocations between young collections (CPython's default is 700)
YOUNG_THRESHOLD = 50_000


def tune_for_routing() -> None:
    """Raise the young-generation threshold (never lowers one set higher already)."""
    young, middle, old = gc.get_threshold()
    if 0 < young < YOUNG_THRESHOLD:
        gc.set_threshold(YOUNG_THRESHOLD, middle, old)


def settle() -> None:
    """Everything loaded so far lives as long as the process: keep it out of the
    collector's full passes (shorter pauses, better latency tails)."""
    gc.freeze()
