"""Topic names and filters: validation, shared subscriptions, matching, coverage, a trie.

The one implementation of MQTT topic matching in Hedgerow: the broker, the core's routing
table and the cloud's MQTT endpoint all use ``matches``, ``filter_covers`` and
``TopicTrie`` from here. Topics starting with ``$`` are never matched by a filter whose
first level is a wildcard (MQTT 5.0 §4.7.2).

``TopicTrie`` keeps filters without wildcards in a dict (one lookup per message) and the
others in a trie walked level by level. Shared subscriptions (``$share/group/filter``)
are not understood by the trie: split them with ``parse_shared`` and add the inner filter.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from .errors import ProtocolError
from .reasons import ReasonCode

T = TypeVar("T")

MAX_TOPIC_BYTES = 0xFFFF
SHARE_PREFIX = "$share/"


def _name_error(message: str) -> ProtocolError:
    return ProtocolError(message, ReasonCode.TOPIC_NAME_INVALID)


def _filter_error(message: str) -> ProtocolError:
    return ProtocolError(message, ReasonCode.TOPIC_FILTER_INVALID)


def validate_topic_name(topic: str) -> None:
    """Raise ``ProtocolError`` (TOPIC_NAME_INVALID) unless ``topic`` may be published to."""
    if not topic:
        raise _name_error("topic name is empty")
    if "+" in topic or "#" in topic:
        raise _name_error(f"topic name {topic!r} contains a wildcard")
    if "\x00" in topic:
        raise _name_error(f"topic name {topic!r} contains U+0000")
    if len(topic) > MAX_TOPIC_BYTES // 3 and len(topic.encode()) > MAX_TOPIC_BYTES:
        raise _name_error("topic name is longer than 65535 bytes")


def _validate_plain_filter(topic_filter: str, whole: str) -> None:
    if not topic_filter:
        raise _filter_error(f"topic filter {whole!r} is empty")
    if "\x00" in topic_filter:
        raise _filter_error(f"topic filter {whole!r} contains U+0000")
    if "+" not in topic_filter and "#" not in topic_filter:
        return
    levels = topic_filter.split("/")
    last = len(levels) - 1
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != last):
            raise _filter_error(
                f"topic filter {whole!r}: '#' must be a whole level and the last one"
            )
        if "+" in level and level != "+":
            raise _filter_error(f"topic filter {whole!r}: '+' must be a whole level")


def validate_topic_filter(topic_filter: str) -> None:
    """Raise ``ProtocolError`` (TOPIC_FILTER_INVALID) unless ``topic_filter`` is a valid
    filter; ``$share/group/filter`` is accepted and checked as a whole."""
    _, inner = parse_shared(topic_filter)
    _validate_plain_filter(inner, topic_filter)
    if len(topic_filter) > MAX_TOPIC_BYTES // 3 and len(topic_filter.encode()) > MAX_TOPIC_BYTES:
        raise _filter_error("topic filter is longer than 65535 bytes")


def parse_shared(topic_filter: str) -> tuple[str | None, str]:
    """Split ``$share/<group>/<filter>`` into (group, filter); other filters give
    (None, filter). A malformed shared filter raises ``ProtocolError``."""
    if not topic_filter.startswith(SHARE_PREFIX):
        return None, topic_filter
    group, sep, inner = topic_filter[len(SHARE_PREFIX) :].partition("/")
    if not group or not sep:
        raise _filter_error(f"shared subscription {topic_filter!r} needs $share/<group>/<filter>")
    if "+" in group or "#" in group:
        raise _filter_error(f"share name {group!r} contains a wildcard")
    if not inner:
        raise _filter_error(f"shared subscription {topic_filter!r} has an empty filter")
    return group, inner


def matches(topic_filter: str, topic: str) -> bool:
    """Whether a (non-shared) topic filter matches a topic name."""
    if "+" not in topic_filter and "#" not in topic_filter:
        return topic_filter == topic
    if topic.startswith("$") and topic_filter[0] in "+#":
        return False
    pattern = topic_filter.split("/")
    levels = topic.split("/")
    for index, part in enumerate(pattern):
        if part == "#":
            return True
        if index >= len(levels):
            return False
        if part != "+" and part != levels[index]:
            return False
    return len(pattern) == len(levels)


def _wild_first(topic_filter: str) -> bool:
    return topic_filter[:1] in ("+", "#")


def filter_covers(general: str, specific: str) -> bool:
    """Whether every topic ``specific`` can match is also matched by ``general``.

    Both are plain (non-shared) filters. Used for "may subscribe to ``specific``" when a
    rule allows ``general``: a filter starting with a wildcard never covers one starting
    with ``$`` (``#`` does not match ``$SYS/...``), and the answer errs on "no" where
    ``+`` and ``#`` happen to cover the same topics (``+/#`` vs ``#``).
    """
    if not general or not specific:
        return False
    if specific[0] == "$" and _wild_first(general):
        return False
    glevels = general.split("/")
    slevels = specific.split("/")
    for index, level in enumerate(glevels):
        if level == "#":
            return True
        if index >= len(slevels):
            return False
        other = slevels[index]
        if other == "#" or (level != "+" and level != other):
            return False
    return len(glevels) == len(slevels)


class _Node(Generic[T]):
    __slots__ = ("children", "hash_values", "values")

    def __init__(self) -> None:
        self.children: dict[str, _Node[T]] = {}
        self.values: list[T] = []  # filters ending at this level
        self.hash_values: list[T] = []  # filters ending with '#' below this level

    def empty(self) -> bool:
        return not (self.children or self.values or self.hash_values)


class TopicTrie(Generic[T]):
    """Maps topic filters to values; ``match(topic)`` returns the values of every filter
    matching a topic (a value added under several matching filters appears once per filter)."""

    __slots__ = ("_count", "_exact", "_root")

    def __init__(self) -> None:
        self._exact: dict[str, list[T]] = {}
        self._root: _Node[T] = _Node()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, topic_filter: str, value: T) -> None:
        if "+" not in topic_filter and "#" not in topic_filter:
            self._exact.setdefault(topic_filter, []).append(value)
        else:
            node = self._root
            levels = topic_filter.split("/")
            if levels[-1] == "#":
                for level in levels[:-1]:
                    node = node.children.setdefault(level, _Node())
                node.hash_values.append(value)
            else:
                for level in levels:
                    node = node.children.setdefault(level, _Node())
                node.values.append(value)
        self._count += 1

    def remove(self, topic_filter: str, value: T) -> bool:
        """Remove one (filter, value) pair; False when it was not there."""
        if "+" not in topic_filter and "#" not in topic_filter:
            found = _remove_from(self._exact.get(topic_filter), value)
            if found and not self._exact[topic_filter]:
                del self._exact[topic_filter]
        else:
            found = self._remove_wild(topic_filter.split("/"), value)
        if found:
            self._count -= 1
        return found

    def _remove_wild(self, levels: list[str], value: T) -> bool:
        hashed = levels[-1] == "#"
        if hashed:
            levels = levels[:-1]
        path = [self._root]
        for level in levels:
            child = path[-1].children.get(level)
            if child is None:
                return False
            path.append(child)
        if not _remove_from(path[-1].hash_values if hashed else path[-1].values, value):
            return False
        for depth in range(len(levels), 0, -1):
            if not path[depth].empty():
                break
            del path[depth - 1].children[levels[depth - 1]]
        return True

    def match(self, topic: str) -> list[T]:
        found = self._exact.get(topic)
        result = list(found) if found else []
        root = self._root
        if root.children or root.hash_values:
            self._match_wild(topic, result)
        return result

    def _match_wild(self, topic: str, result: list[T]) -> None:
        levels = topic.split("/")
        dollar = topic.startswith("$")
        nodes = [self._root]
        for depth, level in enumerate(levels):
            following: list[_Node[T]] = []
            for node in nodes:
                if node.hash_values and not (dollar and depth == 0):
                    result.extend(node.hash_values)
                child = node.children.get(level)
                if child is not None:
                    following.append(child)
                if not (dollar and depth == 0):
                    plus = node.children.get("+")
                    if plus is not None:
                        following.append(plus)
            if not following:
                return
            nodes = following
        for node in nodes:
            if node.values:
                result.extend(node.values)
            if node.hash_values:  # 'sport/#' matches 'sport'
                result.extend(node.hash_values)

    def __iter__(self) -> Iterator[tuple[str, T]]:
        """Every (filter, value) pair."""
        for topic_filter, values in self._exact.items():
            for value in values:
                yield topic_filter, value
        yield from _walk(self._root, [])


def _walk(node: _Node[T], prefix: list[str]) -> Iterator[tuple[str, T]]:
    for value in node.values:
        yield "/".join(prefix), value
    for value in node.hash_values:
        yield "/".join([*prefix, "#"]), value
    for level, child in node.children.items():
        yield from _walk(child, [*prefix, level])


def _remove_from(values: list[T] | None, value: T) -> bool:
    if not values:
        return False
    try:
        values.remove(value)
    except ValueError:
        return False
    return True
