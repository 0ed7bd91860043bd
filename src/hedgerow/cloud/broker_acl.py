"""What a core may do at the cloud's MQTT side: one set of rules for the embedded endpoint
(``mqtt_endpoint.CoreAuthorizer``) and for an external broker that asks the cloud over
HTTP (``api/broker_auth.py``: RabbitMQ's ``rabbitmq_auth_backend_http``, EMQX, VerneMQ,
HiveMQ). Pure: no I/O; topic matching is ``hedgerow.mqtt.topics``'.

A core publishes its own heartbeat, deployment status, shadow updates and logs, and the
topics its group routes to ``cloud`` — either as they are (MQTT 5, the ``core`` user
property names it) or under its own ``$hedgerow/cores/{core}/routed/`` (MQTT 3.1.1, no user
properties: the topic names it; an external broker allows a core its whole own prefix,
see ``topic_allowed``). It subscribes under its own namespace and to what its
group's routes from ``cloud`` cover. Never another core's topics, never a shared
subscription. The cloud's replicas may do anything.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from hedgerow.cloud.broker_credentials import CLOUD_USER
from hedgerow.contract.topics import (
    FROM_CORE,
    core_namespace_filter,
    core_topic,
    parse_routed_topic,
)
from hedgerow.mqtt.topics import filter_covers, matches


def may_publish(core: str, to_cloud: Sequence[str], topic: str) -> bool:
    """A core publishes its own heartbeat, deployment status, shadow updates and logs, and
    topics its group routes to ``cloud``, plain or under its own ``routed/`` prefix (no
    other ``$`` topic: wildcards never match them)."""
    if topic.startswith("$"):
        routed = parse_routed_topic(topic)
        if routed is not None:
            return routed.core == core and any(matches(f, routed.topic) for f in to_cloud)
        return any(topic == core_topic(core, leaf) for leaf in FROM_CORE)
    return any(matches(f, topic) for f in to_cloud)


def may_subscribe(core: str, from_cloud: Sequence[str], topic_filter: str) -> bool:
    """A core subscribes under its own ``$hedgerow/cores/{core}/`` and to what its
    group's routes from ``cloud`` cover; never to a shared subscription."""
    if topic_filter.startswith("$share/"):
        return False
    if filter_covers(core_namespace_filter(core), topic_filter):
        return True
    return any(filter_covers(f, topic_filter) for f in from_cloud)


# ---- an external broker's questions ----------------------------------------------------


class Access(enum.StrEnum):
    """What the broker asks for on a topic: publish (``write``) or subscribe (``read``)."""

    READ = "read"
    WRITE = "write"


@dataclass(frozen=True)
class CoreStanding:
    """What the registry says of a core now: its group and its live identity certificate's
    fingerprint (a core without one is revoked, expired or deleted: no standing at all)."""

    name: str
    group: str
    fingerprint: str


@dataclass(frozen=True)
class Routes:
    """One group's routes with the cloud: filters routed to it, filters routed from it."""

    to_cloud: Sequence[str]
    from_cloud: Sequence[str]


def queue_allowed(user: str, queue: str) -> bool:
    """A core's own MQTT session queues (RabbitMQ names them by the client id, which must
    be the core's name): ``mqtt-subscription-{core}qos0`` / ``qos1``."""
    return queue in (f"mqtt-subscription-{user}qos0", f"mqtt-subscription-{user}qos1")


def resource_allowed(user: str, resource: str, name: str) -> bool:
    """RabbitMQ's resource question (``configure``/``write``/``read`` on a queue or an
    exchange): the cloud anything; a core its own session queues and ``amq.topic``
    (what it may publish or subscribe there is the topic question's)."""
    if user == CLOUD_USER:
        return True
    if resource == "exchange":
        return name == "amq.topic"
    if resource == "queue":
        return queue_allowed(user, name)
    return False


def topic_allowed(
    standing: CoreStanding | None,
    routes: Routes,
    client_id: str,
    access: Access,
    topic: str,
) -> bool:
    """May the core ``standing`` describes (None: no live core of that name) publish to
    (``WRITE``) or subscribe to (``READ``) ``topic``, connected with ``client_id``?"""
    if standing is None or client_id != standing.name:
        return False
    if access is Access.WRITE:
        routed = parse_routed_topic(topic)
        if routed is not None:
            # its own prefix, whatever the routes say now: RabbitMQ 3.10 can refuse a
            # publish only by closing the connection, and a record spooled under a route
            # since removed would then stall the core's spool for ever
            return routed.core == standing.name
        return may_publish(standing.name, routes.to_cloud, topic)
    return may_subscribe(standing.name, routes.from_cloud, topic)


def core_login_allowed(standing: CoreStanding | None, client_id: str, password_ok: bool) -> bool:
    """A core logs in with its name as user and client id, and its current password."""
    return standing is not None and password_ok and client_id in ("", standing.name)
