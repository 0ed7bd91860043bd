"""MQTT topics ⇄ AMQP 0-9-1 routing keys, as RabbitMQ's MQTT plugin maps them (pure).

RabbitMQ publishes an MQTT message to ``amq.topic`` with the topic as routing key, ``/``
written as ``.`` and the filter wildcard ``+`` as ``*`` (``#`` is the same in both). The
broker's questions about a core (``broker_acl``) read keys back as topics; the telemetry
export's AMQP targets (``telemetry_export``) write topics as keys, so a consumer binds an
exported topic exactly as it binds one a device published through the plugin. A ``.``
inside an MQTT topic level becomes a level separator on the AMQP side (and comes back
as ``/``): topics meant for AMQP consumers avoid dots.
"""

from __future__ import annotations


def routing_key_from_topic(topic: str) -> str:
    """An MQTT topic (or filter) as RabbitMQ's routing key (or binding key)."""
    return topic.replace("/", ".").replace("+", "*")


def topic_from_routing_key(routing_key: str) -> str:
    """RabbitMQ's AMQP routing key (or binding key) back to the MQTT topic (or filter)."""
    return routing_key.replace(".", "/").replace("*", "+")
