"""Discovery answers kept per thing (pure): LRU-bounded, a TTL backstop, dropped on change.

A discovery answer is the thing's certificate record (who the certificate speaks for,
whether it is revoked, when it expires) and the body for its groups. Both change only when
an operator or a device changes the registry — membership, a core's connectivity, a group
CA, a removal, a revocation — and every such change calls ``invalidate()`` here and on
every replica (``storage.changes.DISCOVERY``). The record is kept, not the decision: the
device server checks it again on every request (expiry, revocation, owner).

The race a cache must not lose: a request reads the database, a change commits and
invalidates, then the request stores what it read before the change. ``put`` takes the
``generation`` the reader saw before reading and stores nothing if an invalidation came in
between, so no answer older than the last invalidation is ever served.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from hedgerow.cloud.domain import Certificate

#: answers kept at most (least recently used first out); about 2 KiB each with one CA
DEFAULT_MAX_ENTRIES: Final = 20_000
#: seconds an answer is served at most (a lost change notification costs this much)
DEFAULT_TTL_S: Final = 60.0


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    #: the certificate's record as the database had it (checked again per request)
    certificate: Certificate
    #: the discovery body (``discovery.discovery_body``)
    body: dict[str, Any]


@dataclass(slots=True)
class CacheStats:
    hits: int = 0
    misses: int = 0
    stores: int = 0
    #: stores refused because an invalidation came in while the answer was read
    stale_refused: int = 0
    evictions: int = 0
    invalidations: int = 0

    def to_json(self) -> dict[str, int]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "stores": self.stores,
            "stale_refused": self.stale_refused,
            "evictions": self.evictions,
            "invalidations": self.invalidations,
        }


class DiscoveryCache:
    """``get`` / ``put`` / ``invalidate``; one event loop's state (no locks)."""

    def __init__(
        self,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        ttl_s: float = DEFAULT_TTL_S,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 0:
            raise ValueError(f"max_entries must be 0 (no cache) or more, not {max_entries}")
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, not {ttl_s}")
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], tuple[float, CachedAnswer]] = OrderedDict()
        #: bumped by every invalidation; readers pass the value they saw to ``put``
        self.generation = 0
        self.stats = CacheStats()

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, thing: str, fingerprint: str) -> CachedAnswer | None:
        key = (thing, fingerprint)
        found = self._entries.get(key)
        if found is None or found[0] <= self._clock():
            if found is not None:
                del self._entries[key]
            self.stats.misses += 1
            return None
        self._entries.move_to_end(key)
        self.stats.hits += 1
        return found[1]

    def put(self, thing: str, fingerprint: str, answer: CachedAnswer, generation: int) -> bool:
        """Keep ``answer`` read while ``generation`` was current; False if it is stale."""
        if not self.enabled:
            return False
        if generation != self.generation:
            self.stats.stale_refused += 1
            return False
        key = (thing, fingerprint)
        self._entries[key] = (self._clock() + self.ttl_s, answer)
        self._entries.move_to_end(key)
        self.stats.stores += 1
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            self.stats.evictions += 1
        return True

    def invalidate(self) -> None:
        """Forget every answer (something discovery reads changed)."""
        self._entries.clear()
        self.generation += 1
        self.stats.invalidations += 1
