"""The discovery answer cache on its own (pure): LRU bound, TTL backstop, the stale-put race."""

from __future__ import annotations

import datetime as dt

import pytest

from hedgerow.cloud.discovery_cache import CachedAnswer, DiscoveryCache
from hedgerow.cloud.domain import Certificate

NOW = dt.datetime(2026, 12, 4, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def answer(owner: str, group: str = "g") -> CachedAnswer:
    record = Certificate(
        fingerprint="f-" + owner,
        kind="thing",
        owner=owner,
        serial="1",
        issued_at=NOW,
        not_after=NOW + dt.timedelta(days=1),
        revoked_at=None,
        pem="",
    )
    return CachedAnswer(record, {"GGGroups": [{"GGGroupId": group}]})


def test_a_stored_answer_is_served_until_its_ttl() -> None:
    clock = Clock()
    cache = DiscoveryCache(10, ttl_s=5.0, clock=clock)
    assert cache.get("t", "f") is None
    assert cache.put("t", "f", answer("t"), cache.generation)
    clock.now += 4.9
    found = cache.get("t", "f")
    assert found is not None and found.body["GGGroups"][0]["GGGroupId"] == "g"
    assert cache.get("t", "other-fingerprint") is None  # per certificate, too
    clock.now += 0.2
    assert cache.get("t", "f") is None
    assert len(cache) == 0
    assert (cache.stats.hits, cache.stats.misses) == (1, 3)


def test_the_least_recently_used_answer_goes_first() -> None:
    cache = DiscoveryCache(2, clock=Clock())
    for name in ("a", "b"):
        cache.put(name, "f", answer(name), cache.generation)
    assert cache.get("a", "f") is not None  # a is now the most recent
    cache.put("c", "f", answer("c"), cache.generation)
    assert cache.get("b", "f") is None
    assert cache.get("a", "f") is not None and cache.get("c", "f") is not None
    assert cache.stats.evictions == 1 and len(cache) == 2


def test_an_answer_read_before_an_invalidation_is_not_stored() -> None:
    """The reader saw generation 0, a change invalidated meanwhile: its answer is stale."""
    cache = DiscoveryCache(10, clock=Clock())
    cache.put("t", "f", answer("t", "old"), cache.generation)
    seen = cache.generation
    cache.invalidate()
    assert cache.get("t", "f") is None
    assert not cache.put("t", "f", answer("t", "old"), seen)
    assert cache.get("t", "f") is None
    assert cache.put("t", "f", answer("t", "new"), cache.generation)
    assert cache.stats.stale_refused == 1 and cache.stats.invalidations == 1


def test_zero_entries_keeps_nothing() -> None:
    cache = DiscoveryCache(0)
    assert not cache.enabled
    assert not cache.put("t", "f", answer("t"), cache.generation)
    assert cache.get("t", "f") is None


@pytest.mark.parametrize(("entries", "ttl"), [(-1, 1.0), (10, 0.0), (10, -5.0)])
def test_bad_bounds_are_refused(entries: int, ttl: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        DiscoveryCache(entries, ttl)
