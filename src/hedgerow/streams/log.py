"""One stream's log as accounting: sequence numbers, segments, size limit, strategy (pure).

A stream is a run of messages numbered from 0 without gaps, held in *segments* of at most
``segment_size`` bytes. Data is only ever removed a whole segment at a time, oldest first
(like Greengrass): when the stream is full, ``OverwriteOldestData`` drops the oldest
segments until the new message fits, ``RejectNewData`` refuses the message. A time to live
drops segments whose newest message is older than it.

``StreamLog`` holds no payloads: a store (``hedgerow.streams.store``) keeps the bytes and
follows the log's plans: ``plan_append`` says which sequence number the message gets, how
many segments to drop first and whether it opens a new segment; the store writes, then
``commit`` records it. A failed write leaves the log as it was.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from .errors import InvalidRequest, NotEnoughMessages, StreamFull
from .model import Strategy

#: Bytes counted per message on top of its payload (the file record's header).
RECORD_OVERHEAD: Final = 24


def record_size(payload_len: int) -> int:
    return payload_len + RECORD_OVERHEAD


@dataclass(slots=True)
class Segment:
    first: int
    count: int = 0
    bytes: int = 0
    last_ingest_ms: int = 0

    @property
    def end(self) -> int:
        """The sequence number after this segment's last message."""
        return self.first + self.count


@dataclass(frozen=True, slots=True)
class AppendPlan:
    sequence: int
    size: int
    #: how many of the oldest segments go before this message is written
    drop: int
    #: whether the message starts a new segment
    new_segment: bool


class StreamLog:
    def __init__(
        self,
        name: str,
        max_size: int,
        segment_size: int,
        strategy: Strategy,
        segments: Iterable[Segment] = (),
        next_sequence: int = 0,
    ) -> None:
        self.name = name
        self.max_size = max_size
        self.segment_size = segment_size
        self.strategy = strategy
        self.segments: deque[Segment] = deque(segments)
        self.next_sequence = max(next_sequence, self.segments[-1].end if self.segments else 0)
        self.total_bytes = sum(s.bytes for s in self.segments)
        self.dropped_messages = 0

    @property
    def oldest(self) -> int:
        """The first sequence number still held (``next_sequence`` when empty)."""
        for segment in self.segments:
            if segment.count:
                return segment.first
        return self.next_sequence

    @property
    def newest(self) -> int:
        """The last sequence number given (-1 before the first append)."""
        return self.next_sequence - 1

    @property
    def count(self) -> int:
        return self.next_sequence - self.oldest

    def set_limits(self, max_size: int, segment_size: int, strategy: Strategy) -> None:
        self.max_size = max_size
        self.segment_size = segment_size
        self.strategy = strategy

    def plan_append(self, payload_len: int) -> AppendPlan:
        size = record_size(payload_len)
        if size > self.max_size:
            raise InvalidRequest(
                f"a message of {payload_len} bytes does not fit in stream {self.name!r} "
                f"(maxSize {self.max_size}): raise maxSize or split the message"
            )
        drop = 0
        total = self.total_bytes
        if total + size > self.max_size:
            if self.strategy is Strategy.RejectNewData:
                raise StreamFull(self.name, self.max_size)
            while total + size > self.max_size:
                total -= self.segments[drop].bytes
                drop += 1
        remaining = len(self.segments) - drop
        new_segment = remaining == 0 or (
            self.segments[-1].count > 0 and self.segments[-1].bytes + size > self.segment_size
        )
        return AppendPlan(self.next_sequence, size, drop, new_segment)

    def commit(self, plan: AppendPlan, ingest_ms: int) -> list[Segment]:
        """Record a written append; returns the segments it dropped."""
        dropped = self.drop_oldest(plan.drop)
        if plan.new_segment:
            self.segments.append(Segment(plan.sequence))
        segment = self.segments[-1]
        segment.count += 1
        segment.bytes += plan.size
        segment.last_ingest_ms = ingest_ms
        self.total_bytes += plan.size
        self.next_sequence = plan.sequence + 1
        return dropped

    def drop_oldest(self, n: int) -> list[Segment]:
        dropped = [self.segments.popleft() for _ in range(n)]
        for segment in dropped:
            self.total_bytes -= segment.bytes
            self.dropped_messages += segment.count
        return dropped

    def expired(self, now_ms: int, ttl_ms: int | None) -> int:
        """How many of the oldest segments hold only messages older than ``ttl_ms``
        (never the newest segment)."""
        if ttl_ms is None:
            return 0
        n = 0
        # the newest segment stays: it carries the next sequence number across a restart
        for segment in list(self.segments)[:-1]:
            if segment.count == 0 or now_ms - segment.last_ingest_ms <= ttl_ms:
                break
            n += 1
        return n

    def span(self, start: int, min_count: int, max_count: int) -> tuple[int, int]:
        """``(first, count)`` to read for a request, or ``NotEnoughMessages``.

        A start before the oldest message held reads from the oldest (the SDKs' contract).
        """
        first = max(start, self.oldest)
        available = self.next_sequence - first
        if available < min_count:
            raise NotEnoughMessages(
                f"stream {self.name!r} has {max(available, 0)} message(s) from sequence number "
                f"{first}, at least {min_count} asked: read again later, with a "
                "readTimeoutMillis to wait, or ask for fewer"
            )
        return first, min(available, max_count)

    def satisfies(self, start: int, min_count: int) -> bool:
        return self.next_sequence - max(start, self.oldest) >= min_count
