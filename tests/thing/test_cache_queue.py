from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hedgerow.thing import CachedInfo, ConnInfoCache, DropPolicy, MemoryQueue, SqliteQueue
from hedgerow.thing.discovery import Endpoint, parse_discovery
from hedgerow.thing.queue import OfflineQueue

from .conftest import Env, discovery_body

MakeQueue = Callable[[int, DropPolicy], OfflineQueue]


def test_cache_round_trip_and_atomic_write(env: Env, tmp_path: Path) -> None:
    cache = ConnInfoCache(tmp_path / "state")
    assert cache.load("bme680-1") is None
    info = parse_discovery(discovery_body([env.groups[0].pem], 8883))
    path = cache.save(CachedInfo("bme680-1", 1234.5, info))
    assert path.name == "bme680-1.json"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in path.parent.iterdir()] == ["bme680-1.json"]  # no temporary left
    entry = cache.load("bme680-1")
    assert entry == CachedInfo("bme680-1", 1234.5, info)
    cache.remember_endpoint("bme680-1", Endpoint("127.0.0.1", 8883, "x"))
    loaded = cache.load("bme680-1")
    assert loaded is not None and loaded.last_good == Endpoint("127.0.0.1", 8883)
    cache.clear("bme680-1")
    assert cache.load("bme680-1") is None


def test_corrupt_or_foreign_cache_files_are_ignored(env: Env, tmp_path: Path) -> None:
    cache = ConnInfoCache(tmp_path)
    cache.path("a").write_text("{half a file")
    assert cache.load("a") is None
    cache.path("b").write_text('{"format": 99}')
    assert cache.load("b") is None
    info = parse_discovery(discovery_body([env.groups[0].pem], 8883))
    cache.save(CachedInfo("c", 1.0, info))
    cache.path("c").rename(cache.path("d"))
    assert cache.load("d") is None  # the file names another thing
    assert cache.path("../evil/x y").parent == tmp_path


@pytest.fixture(params=["memory", "sqlite"])
def make_queue(request: pytest.FixtureRequest, tmp_path: Path) -> MakeQueue:
    def make(maxlen: int, policy: DropPolicy) -> OfflineQueue:
        if request.param == "memory":
            return MemoryQueue(maxlen, policy)
        return SqliteQueue(tmp_path / "queue.db", maxlen, policy)

    return make


def test_fifo_and_ack_only_removes_acknowledged(make_queue: MakeQueue) -> None:
    q = make_queue(10, DropPolicy.OLDEST)
    for i in range(3):
        assert q.put("t", f"m{i}".encode(), 1)
    first = q.peek(2)
    assert [m.payload for m in first] == [b"m0", b"m1"]
    assert len(q) == 3  # peek does not remove
    q.ack(first[1].id)
    assert [m.payload for m in q.peek(10)] == [b"m0", b"m2"]
    q.ack(first[1].id)  # twice: no-op
    assert q.counters().delivered == 1
    q.close()


def test_drop_oldest(make_queue: MakeQueue) -> None:
    q = make_queue(3, DropPolicy.OLDEST)
    for i in range(5):
        assert q.put("t", str(i).encode(), 0)
    assert [m.payload for m in q.peek(10)] == [b"2", b"3", b"4"]
    c = q.counters()
    assert (c.enqueued, c.dropped, c.depth) == (5, 2, 3)
    q.close()


def test_drop_newest(make_queue: MakeQueue) -> None:
    q = make_queue(3, DropPolicy.NEWEST)
    results = [q.put("t", str(i).encode(), 0) for i in range(5)]
    assert results == [True, True, True, False, False]
    assert [m.payload for m in q.peek(10)] == [b"0", b"1", b"2"]
    assert q.counters().dropped == 2
    q.close()


def test_sqlite_queue_survives_a_restart(tmp_path: Path) -> None:
    q = SqliteQueue(tmp_path / "q.db", 100)
    for i in range(4):
        q.put("sensors/x", bytes([i]), 1)
    in_flight = q.peek(2)
    q.ack(in_flight[0].id)  # the second was in flight when the power went
    q.close()
    again = SqliteQueue(tmp_path / "q.db", 100)
    assert [(m.topic, m.payload, m.qos) for m in again.peek(10)] == [
        ("sensors/x", b"\x01", 1),
        ("sensors/x", b"\x02", 1),
        ("sensors/x", b"\x03", 1),
    ]
    assert len(again) == 3
    again.put("sensors/x", b"new", 1)
    assert again.peek(10)[-1].id > in_flight[1].id
    again.close()


def test_queue_bounds_are_checked() -> None:
    with pytest.raises(ValueError):
        MemoryQueue(0)


operations = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.binary(max_size=4)),
        st.tuples(st.just("ack"), st.integers(0, 5)),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(ops=operations, maxlen=st.integers(1, 6), newest=st.booleans())
def test_memory_queue_behaves_like_a_bounded_fifo(
    ops: list[tuple[str, object]], maxlen: int, newest: bool
) -> None:
    policy = DropPolicy.NEWEST if newest else DropPolicy.OLDEST
    q = MemoryQueue(maxlen, policy)
    model: list[bytes] = []
    dropped = 0
    for op, arg in ops:
        if op == "put":
            assert isinstance(arg, bytes)
            if len(model) >= maxlen:
                dropped += 1
                if newest:
                    assert not q.put("t", arg)
                    continue
                model.pop(0)
            assert q.put("t", arg)
            model.append(arg)
        else:
            assert isinstance(arg, int)
            pending = q.peek(10)
            if arg < len(pending):
                q.ack(pending[arg].id)
                model.pop(arg)
        assert [m.payload for m in q.peek(100)] == model
    assert q.counters().dropped == dropped
    assert len(q) == len(model) <= maxlen
