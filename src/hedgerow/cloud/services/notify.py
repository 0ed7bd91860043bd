"""How the cloud reaches cores over MQTT: the ``Notifier`` protocol and its topics (named
by the contract, ``hedgerow.contract.topics``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from hedgerow.contract.topics import CoreLeaf, core_topic


def deployments_topic(core: str) -> str:
    return core_topic(core, CoreLeaf.DEPLOYMENTS)


def revocations_topic(core: str) -> str:
    return core_topic(core, CoreLeaf.REVOCATIONS)


def group_cas_topic(core: str) -> str:
    return core_topic(core, CoreLeaf.GROUP_CAS)


class Notifier(Protocol):
    """How the cloud reaches cores over MQTT (the embedded broker or an external one)."""

    async def publish(self, topic: str, payload: bytes, *, retain: bool) -> None: ...

    async def disconnect(self, identity: str, reason: str) -> None: ...


#: Called after subscriptions change (the MQTT endpoint reloads the routes it enforces).
RoutesChanged = Callable[[], Awaitable[None]]


async def routes_unchanged() -> None:
    """The ``RoutesChanged`` of a cloud that enforces no routes itself (external broker)."""


#: Called after a core got a live identity (created, registered by a claim): an external
#: broker whose logins the cloud keeps (Mosquitto's dynamic security) learns it at once.
CoreAdmitted = Callable[[str], Awaitable[None]]


async def core_admitted_nowhere(core: str) -> None:
    """The ``CoreAdmitted`` of a cloud whose broker needs no word of a new core."""


#: called after a committed change of what discovery answers (membership, a core's
#: connectivity or removal, group CAs, revocations): empties the discovery answers here
#: and announces the change to the other replicas; returns at once
DiscoveryChanged = Callable[[], None]


def discovery_unchanged() -> None:
    """The ``DiscoveryChanged`` of services built without a discovery cache."""


class NullNotifier:
    """Records what would have been sent (no MQTT endpoint: tests, `serve --no-mqtt`)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bool]] = []

    async def publish(self, topic: str, payload: bytes, *, retain: bool) -> None:
        self.sent.append((topic, payload, retain))

    async def disconnect(self, identity: str, reason: str) -> None:
        self.sent.append((f"disconnect:{identity}", reason.encode(), False))
