"""A client id is not an identity: another certificate claiming it is refused, not a takeover."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from hedgerow.broker import Broker, BrokerConfig
from hedgerow.broker.auth import CertificateAuthenticator
from hedgerow.client import Client, ConnectError
from hedgerow.mqtt.packets import ProtocolVersion
from hedgerow.pki import client_context, server_context

if TYPE_CHECKING:
    from tests.conftest import TestPKI


async def test_another_identity_cannot_take_over_a_client_id(test_pki: TestPKI) -> None:
    server = test_pki.server()
    alice, mallory = test_pki.client("alice"), test_pki.client("mallory")
    ctx = server_context(
        str(server.cert), str(server.key), str(test_pki.ca_file), require_client_cert=True
    )
    async with Broker(BrokerConfig(), authenticator=CertificateAuthenticator()) as broker:
        host, port = await broker.listen("127.0.0.1", 0, ssl=ctx)

        def tls(files: object) -> object:
            return client_context(str(test_pki.ca_file), str(files.cert), str(files.key))  # type: ignore[attr-defined]

        async with Client(
            host, port, client_id="sensor-1", ssl=tls(alice), version=ProtocolVersion.V5
        ) as owner:
            with pytest.raises(ConnectError) as refused:
                async with Client(
                    host, port, client_id="sensor-1", ssl=tls(mallory), version=ProtocolVersion.V5
                ):
                    pass
            assert refused.value.reason_code == 0x87
            await owner.publish("still/here", b"x", qos=1)  # the owner was not kicked off
            # the owner itself may reconnect and take its own session over
            async with Client(
                host, port, client_id="sensor-1", ssl=tls(alice), version=ProtocolVersion.V5
            ) as again:
                await again.publish("t", b"y", qos=1)
            await asyncio.wait_for(owner.closed, 5)
