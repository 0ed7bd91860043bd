"""The group's subscription table: matching, the least-privilege ACL, per-subscription counters.

Pure: no asyncio, sockets or files. A subscription is ``(source, topic filter, target)``;
sources and targets are ``thing:NAME``, ``function:NAME``, ``connector:NAME``, ``cloud`` or
``shadow``. A message
from source S on topic T goes to every target whose subscription has source S and a filter
matching T. Matching uses one topic trie per source and a bounded cache of results.

ACL derived from the table (least privilege):

* a thing may PUBLISH on T when some subscription has source ``thing:NAME`` and a filter
  matching T;
* a thing may SUBSCRIBE to F when some subscription with target ``thing:NAME`` has a filter
  covering F (every topic F matches, that filter matches too).

A group setting (``open_broker``) turns this off: plain broker semantics for its devices.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

CLOUD = "cloud"
SHADOW = "shadow"
_PREFIXES = ("thing:", "function:", "connector:")
#: Cached (source, topic) results kept at most; the cache is cleared when it fills.
DEFAULT_CACHE_SIZE = 8192


class RoutingError(ValueError):
    """A subscription entry that cannot be used (``field`` names the part)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def validate_endpoint(value: str, field: str) -> str:
    if value in (CLOUD, SHADOW):
        return value
    for prefix in _PREFIXES:
        if value.startswith(prefix) and len(value) > len(prefix):
            return value
    raise RoutingError(
        field, f"{value!r} is not thing:NAME, function:NAME, connector:NAME, cloud or shadow"
    )


def validate_filter(topic_filter: str) -> str:
    if not topic_filter or len(topic_filter.encode()) > 65535:
        raise RoutingError("topic", "a topic filter must be 1..65535 bytes")
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise RoutingError("topic", f"{topic_filter!r}: '#' must be a whole last level")
        if "+" in level and level != "+":
            raise RoutingError("topic", f"{topic_filter!r}: '+' must be a whole level")
    return topic_filter


@dataclass(frozen=True, slots=True)
class Subscription:
    source: str
    topic: str
    target: str

    @classmethod
    def from_dict(cls, data: object) -> Subscription:
        if not isinstance(data, dict):
            raise RoutingError("subscription", "must be an object")
        values = []
        for key in ("source", "topic", "target"):
            value = data.get(key)
            if not isinstance(value, str):
                raise RoutingError(key, "missing or not a string")
            values.append(value)
        source, topic, target = values
        return cls(
            validate_endpoint(source, "source"),
            validate_filter(topic),
            validate_endpoint(target, "target"),
        )

    def to_dict(self) -> dict[str, str]:
        return {"source": self.source, "topic": self.topic, "target": self.target}


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT matching; wildcards at the first level never match ``$`` topics."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    flevels = topic_filter.split("/")
    tlevels = topic.split("/")
    for i, f in enumerate(flevels):
        if f == "#":
            return True
        if i >= len(tlevels):
            return False
        if f != "+" and f != tlevels[i]:
            return False
    return len(flevels) == len(tlevels)


def filter_covers(general: str, specific: str) -> bool:
    """True when every topic ``specific`` matches is also matched by ``general``."""
    glevels = general.split("/")
    slevels = specific.split("/")
    if specific[:1] in ("+", "#") and general[:1] not in ("+", "#"):
        return False
    if specific.startswith("$") and general[:1] in ("+", "#"):
        return False
    for i, g in enumerate(glevels):
        if g == "#":
            return True
        if i >= len(slevels):
            return False
        s = slevels[i]
        if s == "#":
            return False
        if g != "+" and g != s:
            return False
    return len(glevels) == len(slevels)


class _Node(Generic[T]):
    __slots__ = ("children", "values", "hash_values")

    def __init__(self) -> None:
        self.children: dict[str, _Node[T]] = {}
        self.values: list[T] = []
        self.hash_values: list[T] = []


class FilterTrie(Generic[T]):
    """Topic filters in a trie; ``match(topic)`` walks only the branches that can match."""

    def __init__(self) -> None:
        self._root: _Node[T] = _Node()
        self._size = 0

    def add(self, topic_filter: str, value: T) -> None:
        node = self._root
        levels = topic_filter.split("/")
        for level in levels:
            if level == "#":
                node.hash_values.append(value)
                self._size += 1
                return
            node = node.children.setdefault(level, _Node())
        node.values.append(value)
        self._size += 1

    def __len__(self) -> int:
        return self._size

    def match(self, topic: str) -> list[T]:
        levels = topic.split("/")
        out: list[T] = []
        dollar = topic.startswith("$")
        self._walk(self._root, levels, 0, out, dollar)
        return out

    def _walk(self, node: _Node[T], levels: list[str], i: int, out: list[T], dollar: bool) -> None:
        first = i == 0 and dollar
        if node.hash_values and not first:
            out.extend(node.hash_values)
        if i == len(levels):
            out.extend(node.values)
            return
        child = node.children.get(levels[i])
        if child is not None:
            self._walk(child, levels, i + 1, out, dollar)
        if not first:
            plus = node.children.get("+")
            if plus is not None:
                self._walk(plus, levels, i + 1, out, dollar)


class RoutingTable:
    """Subscriptions indexed by source; per-subscription message counters."""

    def __init__(
        self,
        subscriptions: Iterable[Subscription] = (),
        *,
        open_broker: bool = False,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        self.subscriptions: tuple[Subscription, ...] = tuple(dict.fromkeys(subscriptions))
        self.open_broker = open_broker
        self.counters: list[int] = [0] * len(self.subscriptions)
        self._cache_size = cache_size
        self._cache: dict[tuple[str, str], tuple[int, ...]] = {}
        self._by_source: dict[str, FilterTrie[int]] = {}
        self._by_target: dict[str, list[str]] = {}
        for index, sub in enumerate(self.subscriptions):
            self._by_source.setdefault(sub.source, FilterTrie()).add(sub.topic, index)
            self._by_target.setdefault(sub.target, []).append(sub.topic)

    @classmethod
    def from_dicts(cls, entries: Sequence[object], *, open_broker: bool = False) -> RoutingTable:
        return cls((Subscription.from_dict(e) for e in entries), open_broker=open_broker)

    def __len__(self) -> int:
        return len(self.subscriptions)

    def __iter__(self) -> Iterator[Subscription]:
        return iter(self.subscriptions)

    def match(self, source: str, topic: str) -> tuple[int, ...]:
        """Indices of the subscriptions a message from ``source`` on ``topic`` takes (cached)."""
        key = (source, topic)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        trie = self._by_source.get(source)
        result = tuple(sorted(set(trie.match(topic)))) if trie is not None else ()
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[key] = result
        return result

    def route(self, source: str, topic: str) -> list[str]:
        """Targets for a message, counting it on every subscription it takes."""
        indices = self.match(source, topic)
        counters = self.counters
        targets: list[str] = []
        for index in indices:
            counters[index] += 1
            target = self.subscriptions[index].target
            if target not in targets:
                targets.append(target)
        return targets

    def routes_to(self, source: str, topic: str, target: str) -> bool:
        """Whether a message from ``source`` on ``topic`` reaches ``target`` (not counted)."""
        if self.open_broker:
            return True
        subscriptions = self.subscriptions
        return any(subscriptions[i].target == target for i in self.match(source, topic))

    def may_publish(self, thing: str, topic: str) -> bool:
        return self.open_broker or bool(self.match("thing:" + thing, topic))

    def may_subscribe(self, thing: str, topic_filter: str) -> bool:
        if self.open_broker:
            return True
        return any(
            filter_covers(f, topic_filter) for f in self._by_target.get("thing:" + thing, ())
        )

    def filters_from(self, source: str) -> list[str]:
        """The distinct filters of subscriptions with this source (e.g. ``cloud``)."""
        return list(dict.fromkeys(s.topic for s in self.subscriptions if s.source == source))

    def counter_items(self) -> list[tuple[Subscription, int]]:
        return list(zip(self.subscriptions, self.counters, strict=True))
