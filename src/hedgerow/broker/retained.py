"""Retained messages: the last retained message per topic, found by filter on subscribe."""

from __future__ import annotations

import time
from collections.abc import Iterator

from hedgerow.broker.messages import Message
from hedgerow.mqtt.topics import matches

_WILDCARDS = frozenset("+#")


class RetainedStore:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._by_topic: dict[str, Message] = {}

    def __len__(self) -> int:
        return len(self._by_topic)

    def get(self, topic: str) -> Message | None:
        """The retained message of one topic (expired or not), if any."""
        return self._by_topic.get(topic)

    def items(self) -> Iterator[tuple[str, Message]]:
        """(topic, message) of every retained message (expired ones included)."""
        return iter(list(self._by_topic.items()))

    def store(self, message: Message) -> bool:
        """Keep (or, with an empty payload, clear) the topic's retained message.

        Returns False when the store is full and the topic is new (the message is then
        delivered but not retained).
        """
        topic = message.topic
        if not message.payload:
            self._by_topic.pop(topic, None)
            return True
        if topic not in self._by_topic and len(self._by_topic) >= self.limit:
            return False
        self._by_topic[topic] = message
        return True

    def matching(self, topic_filter: str, now: float | None = None) -> Iterator[Message]:
        """Unexpired retained messages whose topic matches ``topic_filter``."""
        now = time.monotonic() if now is None else now
        if _WILDCARDS.isdisjoint(topic_filter):
            message = self._by_topic.get(topic_filter)
            candidates = [message] if message is not None else []
        else:
            candidates = [m for t, m in self._by_topic.items() if matches(topic_filter, t)]
        for message in candidates:
            if message.expired(now):
                self._by_topic.pop(message.topic, None)
                continue
            yield message
