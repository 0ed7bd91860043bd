"""The pure stream log: numbering, segments, both strategies, TTL and read spans."""

from __future__ import annotations

import pytest

from hedgerow.streams.errors import InvalidRequest, NotEnoughMessages, StreamFull
from hedgerow.streams.log import RECORD_OVERHEAD, StreamLog
from hedgerow.streams.model import Strategy


def fill(log: StreamLog, n: int, size: int = 76, t: int = 0) -> list[int]:
    out = []
    for _ in range(n):
        plan = log.plan_append(size)
        log.commit(plan, t)
        out.append(plan.sequence)
    return out


def test_sequence_numbers_and_segments() -> None:
    log = StreamLog("s", 10_000, 1000, Strategy.RejectNewData)
    assert (log.oldest, log.newest) == (0, -1)
    assert fill(log, 25) == list(range(25))  # 100 bytes a record: 10 per segment
    assert [(s.first, s.count) for s in log.segments] == [(0, 10), (10, 10), (20, 5)]
    assert log.total_bytes == 25 * (76 + RECORD_OVERHEAD)


def test_reject_new_data_refuses_and_keeps_everything() -> None:
    log = StreamLog("s", 1000, 1000, Strategy.RejectNewData)
    fill(log, 10)
    with pytest.raises(StreamFull):
        log.plan_append(76)
    assert (log.oldest, log.newest, log.total_bytes) == (0, 9, 1000)


def test_overwrite_oldest_drops_whole_segments_only() -> None:
    log = StreamLog("s", 2000, 1000, Strategy.OverwriteOldestData)
    fill(log, 20)
    plan = log.plan_append(76)
    assert plan.drop == 1 and plan.new_segment
    dropped = log.commit(plan, 0)
    assert [(s.first, s.count) for s in dropped] == [(0, 10)]
    assert (log.oldest, log.newest, log.dropped_messages) == (10, 20, 10)
    assert log.total_bytes <= 2000


def test_a_message_larger_than_the_stream_is_invalid() -> None:
    log = StreamLog("s", 1024, 1024, Strategy.OverwriteOldestData)
    with pytest.raises(InvalidRequest, match="raise maxSize"):
        log.plan_append(1024)


def test_span_starts_at_the_oldest_and_honours_min_and_max() -> None:
    log = StreamLog("s", 2000, 1000, Strategy.OverwriteOldestData)
    fill(log, 30)  # 0..9 dropped
    assert log.span(0, 1, 5) == (10, 5)
    assert log.span(25, 1, 100) == (25, 5)
    with pytest.raises(NotEnoughMessages, match="at least 6"):
        log.span(25, 6, 6)
    assert not log.satisfies(30, 1) and log.satisfies(29, 1)


def test_ttl_expires_old_segments_but_never_the_newest() -> None:
    log = StreamLog("s", 10_000, 1000, Strategy.RejectNewData)
    fill(log, 10, t=1_000)
    fill(log, 10, t=5_000)
    fill(log, 1, t=9_000)
    assert log.expired(62_000, 60_000) == 1
    assert log.expired(200_000, 60_000) == 2  # the newest segment stays
    assert log.expired(200_000, None) == 0
