"""The group's subscription table: matching, the least-privilege ACL, per-subscription counters.

Pure: no asyncio, sockets or files. A subscription is ``(source, topic filter, target)``;
sources and targets are ``thing:NAME``, ``function:NAME``, ``connector:NAME``, ``cloud`` or
``shadow``. A message
from source S on topic T goes to every target whose subscription has source S and a filter
matching T. Matching uses one ``hedgerow.mqtt.topics.TopicTrie`` per source (the MQTT
engine's, the one topic matching in Hedgerow) and a bounded cache of results.

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

from hedgerow.mqtt.errors import MQTTError
from hedgerow.mqtt.topics import TopicTrie, filter_covers, validate_topic_filter

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
    """A subscription's topic filter, by the MQTT rules (``hedgerow.mqtt.topics``)."""
    try:
        validate_topic_filter(topic_filter)
    except MQTTError as exc:
        raise RoutingError("topic", str(exc)) from exc
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
        self._by_source: dict[str, TopicTrie[int]] = {}
        self._by_target: dict[str, list[str]] = {}
        for index, sub in enumerate(self.subscriptions):
            self._by_source.setdefault(sub.source, TopicTrie()).add(sub.topic, index)
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
