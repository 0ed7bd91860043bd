"""An authorizer with may_deliver decides which client hears which other client."""

from __future__ import annotations

import asyncio

from hedgerow.broker import Broker, BrokerConfig
from hedgerow.broker.auth import Action, Identity
from hedgerow.client import Client
from hedgerow.mqtt.packets import ProtocolVersion


class OnlyFriends:
    """Everything allowed, but 'eve' hears nobody and nobody hears 'mallory'."""

    def authorize(self, identity: Identity, action: Action, topic: str) -> bool:
        return True

    def may_deliver(self, publisher: Identity, subscriber: Identity, topic: str) -> bool:
        return subscriber.name != "eve" and publisher.name != "mallory"


async def test_deliveries_follow_may_deliver() -> None:
    async with Broker(BrokerConfig(), authorizer=OnlyFriends()) as broker:
        host, port = await broker.listen("127.0.0.1", 0)
        v5 = ProtocolVersion.V5
        async with (
            Client(host, port, client_id="alice", version=v5) as alice,
            Client(host, port, client_id="eve", version=v5) as eve,
            Client(host, port, client_id="mallory", version=v5) as mallory,
            Client(host, port, client_id="bob", version=v5) as bob,
        ):
            for c in (alice, eve):
                await c.subscribe("room/#", qos=1)
            await mallory.publish("room/1", b"from mallory", qos=1)
            await bob.publish("room/1", b"from bob", qos=1)
            await broker.publish("room/1", b"from the core", qos=1)  # in-process: not asked
            got = [(await asyncio.wait_for(alice.get_message(), 5)).payload for _ in range(2)]
            assert got == [b"from bob", b"from the core"]
            only = await asyncio.wait_for(eve.get_message(), 5)
            assert only.payload == b"from the core"
            # refused: mallory -> alice, mallory -> eve, bob -> eve
            assert broker.stats().undelivered == 3
