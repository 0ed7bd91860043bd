"""Who receives what: the subscription table (a topic trie), shared groups, a route cache.

``SubscriptionTable.routes(topic)`` answers, for one topic, which sessions get a copy and
with what options. The answer is cached per topic until the table changes, so a steady
stream on a few topics costs one dict lookup per message instead of a trie walk.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, NamedTuple, Protocol, TypeVar

from hedgerow.mqtt.topics import TopicTrie, parse_shared


class Subscriber(Protocol):
    """What the table asks of a subscribing session (``sessions.Session``): whether its
    client is connected. The table is generic over the session type, so this module
    needs nothing of the layers above it."""

    @property
    def connection(self) -> object | None: ...


S = TypeVar("S", bound=Subscriber)

#: Topics whose routes are remembered at most; the cache is cleared when it grows past it.
ROUTE_CACHE_SIZE = 10_000


class Subscription(Generic[S]):
    """One topic filter of one session, with its v5 options."""

    __slots__ = (
        "session",
        "filter",
        "topic_filter",
        "group",
        "qos",
        "no_local",
        "retain_as_published",
        "retain_handling",
        "identifier",
    )

    def __init__(
        self,
        session: S,
        filter: str,
        qos: int,
        *,
        no_local: bool = False,
        retain_as_published: bool = False,
        retain_handling: int = 0,
        identifier: int | None = None,
    ) -> None:
        group, topic_filter = parse_shared(filter)
        self.session = session
        self.filter = filter
        self.topic_filter = topic_filter
        self.group = group
        self.qos = qos
        self.no_local = no_local
        self.retain_as_published = retain_as_published
        self.retain_handling = retain_handling
        self.identifier = identifier


class Route(NamedTuple, Generic[S]):
    """One session's copy of a message: the best QoS and the options of its matching filters."""

    session: S
    qos: int
    retain_as_published: bool
    no_local: bool
    identifiers: tuple[int, ...]


class SharedGroup(Generic[S]):
    """``$share/{group}/{filter}``: each message goes to one member, round robin."""

    __slots__ = ("name", "topic_filter", "members", "_next")

    def __init__(self, name: str, topic_filter: str) -> None:
        self.name = name
        self.topic_filter = topic_filter
        self.members: list[Subscription[S]] = []
        self._next = 0

    def pick(self) -> Subscription[S] | None:
        """The next member in turn, skipping members whose client is away if any is not."""
        members = self.members
        n = len(members)
        if not n:
            return None
        start = self._next % n
        for k in range(n):
            sub = members[(start + k) % n]
            if sub.session.connection is not None:
                self._next = (start + k + 1) % n
                return sub
        self._next = (start + 1) % n
        return members[start]


class SubscriptionTable(Generic[S]):
    def __init__(self) -> None:
        self._trie: TopicTrie[Subscription[S] | SharedGroup[S]] = TopicTrie()
        self._groups: dict[tuple[str, str], SharedGroup[S]] = {}
        self._cache: dict[str, tuple[list[Route[S]], list[SharedGroup[S]]]] = {}
        self.count = 0

    def add(self, sub: Subscription[S]) -> None:
        self._cache.clear()
        self.count += 1
        if sub.group is None:
            self._trie.add(sub.topic_filter, sub)
            return
        key = (sub.group, sub.topic_filter)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = SharedGroup(sub.group, sub.topic_filter)
            self._trie.add(sub.topic_filter, group)
        group.members.append(sub)

    def remove(self, sub: Subscription[S]) -> None:
        self._cache.clear()
        self.count -= 1
        if sub.group is None:
            self._trie.remove(sub.topic_filter, sub)
            return
        key = (sub.group, sub.topic_filter)
        group = self._groups.get(key)
        if group is None:
            return
        if sub in group.members:
            group.members.remove(sub)
        if not group.members:
            del self._groups[key]
            self._trie.remove(sub.topic_filter, group)

    def routes(self, topic: str) -> tuple[list[Route[S]], list[SharedGroup[S]]]:
        """Plain routes (one per session) and the shared groups a topic reaches."""
        hit = self._cache.get(topic)
        if hit is not None:
            return hit
        best: dict[S, list[Subscription[S]]] = {}
        groups: list[SharedGroup[S]] = []
        for value in self._trie.match(topic):
            if isinstance(value, SharedGroup):
                groups.append(value)
            else:
                best.setdefault(value.session, []).append(value)
        routes = [_merge(session, subs) for session, subs in best.items()]
        if len(self._cache) >= ROUTE_CACHE_SIZE:
            self._cache.clear()
        result = (routes, groups)
        self._cache[topic] = result
        return result

    def __iter__(self) -> Iterator[SharedGroup[S]]:
        return iter(self._groups.values())


def _merge(session: S, subs: list[Subscription[S]]) -> Route[S]:
    if len(subs) == 1:
        s = subs[0]
        ids = (s.identifier,) if s.identifier else ()
        return Route(session, s.qos, s.retain_as_published, s.no_local, ids)
    return Route(
        session,
        max(s.qos for s in subs),
        any(s.retain_as_published for s in subs),
        all(s.no_local for s in subs),
        tuple(s.identifier for s in subs if s.identifier),
    )


def route_for(sub: Subscription[S]) -> Route[S]:
    """The route of a single subscription (retained messages sent on subscribe)."""
    return _merge(sub.session, [sub])
