"""The broker's in-memory message and its encoded forms, shared by every subscriber.

A message is encoded at most once per (protocol family, QoS, retain flag) however many
subscribers receive it: QoS 0 subscribers share the same bytes; QoS 1/2 subscribers share
a head and a tail around the two packet-identifier bytes, so fan-out copies no payload.
"""

from __future__ import annotations

import dataclasses
import time

from hedgerow.broker.budget import message_cost
from hedgerow.mqtt.codec import encode_publish
from hedgerow.mqtt.packets import NO_PROPERTIES, Properties, ProtocolVersion, Publish

_V311 = ProtocolVersion.V311
_V5 = ProtocolVersion.V5


def _forwardable(properties: Properties | None) -> Properties | None:
    """The properties a message carries to subscribers: no alias, no subscription ids."""
    if properties is None or properties is NO_PROPERTIES or properties == NO_PROPERTIES:
        return None
    if properties.topic_alias is not None or properties.subscription_identifiers:
        properties = dataclasses.replace(properties, topic_alias=None, subscription_identifiers=())
    return None if properties == NO_PROPERTIES else properties


class Message:
    """One application message on its way through the broker."""

    __slots__ = (
        "topic",
        "payload",
        "qos",
        "retain",
        "properties",
        "expires_at",
        "origin",
        "cost",
        "_cache",
    )

    def __init__(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        properties: Properties | None = None,
        origin: object = None,
        now: float | None = None,
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        props = _forwardable(properties)
        self.properties = props
        self.expires_at: float | None = None
        if props is not None and props.message_expiry_interval is not None:
            self.expires_at = (
                time.monotonic() if now is None else now
            ) + props.message_expiry_interval
        #: The session that published it (for v5 No Local), or None for the broker itself.
        self.origin = origin
        #: What holding it costs against an outbound budget (computed once per message).
        self.cost = message_cost(payload, topic)
        self._cache: dict[int, bytes | tuple[bytes, bytes]] | None = None

    @classmethod
    def from_publish(cls, publish: Publish, origin: object = None) -> Message:
        return cls(
            publish.topic,
            publish.payload,
            publish.qos,
            publish.retain,
            publish.properties,
            origin,
        )

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def _properties_for(self, subscription_ids: tuple[int, ...]) -> Properties | None:
        props = self.properties
        if self.expires_at is not None:
            remaining = max(0, int(self.expires_at - time.monotonic() + 0.999))
            props = dataclasses.replace(props or NO_PROPERTIES, message_expiry_interval=remaining)
        if subscription_ids:
            props = dataclasses.replace(
                props or NO_PROPERTIES, subscription_identifiers=subscription_ids
            )
        return props

    def encode0(self, v5: bool, retain: bool, subscription_ids: tuple[int, ...] = ()) -> bytes:
        """The whole QoS 0 PUBLISH for a subscriber (cached when it is the same for all)."""
        if v5 and (subscription_ids or self.expires_at is not None):
            return encode_publish(
                self.topic,
                self.payload,
                0,
                retain,
                False,
                None,
                _V5,
                self._properties_for(subscription_ids),
            )
        key = v5 | (retain << 1)
        cache = self._cache
        if cache is None:
            cache = self._cache = {}
        else:
            hit = cache.get(key)
            if hit is not None:
                return hit  # type: ignore[return-value]
        data = encode_publish(
            self.topic,
            self.payload,
            0,
            retain,
            False,
            None,
            _V5 if v5 else _V311,
            self.properties if v5 else None,
        )
        cache[key] = data
        return data

    def encode_parts(
        self, v5: bool, qos: int, retain: bool, dup: bool, subscription_ids: tuple[int, ...] = ()
    ) -> tuple[bytes, bytes]:
        """Head and tail of a QoS 1/2 PUBLISH; the packet id goes between them."""
        if v5 and (subscription_ids or self.expires_at is not None):
            data = encode_publish(
                self.topic,
                self.payload,
                qos,
                retain,
                dup,
                1,
                _V5,
                self._properties_for(subscription_ids),
            )
            return _split(data, self.topic)
        key = v5 | (retain << 1) | (dup << 2) | (qos << 3)
        cache = self._cache
        if cache is None:
            cache = self._cache = {}
        else:
            hit = cache.get(key)
            if hit is not None:
                return hit  # type: ignore[return-value]
        data = encode_publish(
            self.topic,
            self.payload,
            qos,
            retain,
            dup,
            1,
            _V5 if v5 else _V311,
            self.properties if v5 else None,
        )
        parts = _split(data, self.topic)
        cache[key] = parts
        return parts

    def encode_aliased(
        self,
        qos: int,
        retain: bool,
        dup: bool,
        pid: int | None,
        subscription_ids: tuple[int, ...],
        alias: int | None,
        known: bool,
    ) -> bytes:
        """A whole v5 PUBLISH with a topic alias (the topic left out when ``known``).
        Not cached: only clients that allow aliases pay for this encoding."""
        props = self._properties_for(subscription_ids)
        if alias is not None:
            props = dataclasses.replace(props or NO_PROPERTIES, topic_alias=alias)
        return encode_publish(
            "" if known else self.topic,
            self.payload,
            qos,
            retain,
            dup,
            pid if qos else None,
            _V5,
            props,
        )


def _split(data: bytes, topic: str) -> tuple[bytes, bytes]:
    """Cut an encoded QoS>0 PUBLISH around its packet identifier."""
    i = 1
    while data[i] & 0x80:
        i += 1
    offset = i + 3 + (data[i + 1] << 8 | data[i + 2])  # fixed header, topic length, topic
    return data[:offset], data[offset + 2 :]
