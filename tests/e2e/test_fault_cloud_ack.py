"""What the cloud acknowledged survives a SIGKILL of the cloud.

The core removes a record from its spool once the cloud's PUBACK arrives, so a PUBACK is
the cloud's promise to keep the message. Here a client with the core's identity (from its
provisioning bundle) publishes a burst of QoS 1 messages to the cloud's MQTT endpoint, waits
for every PUBACK, and the cloud is killed with SIGKILL right after; after a restart every
acknowledged message must be in the telemetry store.
"""

from __future__ import annotations

import asyncio
import json
import tarfile
from pathlib import Path

import pytest

from hedgerow import pki
from hedgerow.client import Client
from tests.e2e.harness import CORE, running_system, wait_until

pytestmark = pytest.mark.slow

BURST = 3000


async def test_messages_the_cloud_acknowledged_survive_its_sigkill(tmp_path: Path) -> None:
    with running_system(tmp_path) as system:
        await asyncio.to_thread(system.create_thing, "dev-1")
        await asyncio.to_thread(system.route, "thing:dev-1", "sensors/#", "cloud")
        await asyncio.to_thread(system.deploy)
        identity = tmp_path / "core-identity"
        with tarfile.open(tmp_path / f"{CORE}.tar.gz") as bundle:
            bundle.extractall(identity, filter="data")
        context = pki.client_context(
            str(identity / "root-ca.pem"),
            str(identity / "core.cert.pem"),
            str(identity / "core.key"),
        )
        client = Client(
            "127.0.0.1",
            system.mqtt_port,
            client_id=f"{CORE}-burst",
            ssl=context,
            server_hostname="127.0.0.1",
        )
        async with client:
            acks = [
                client.publish_nowait("sensors/dev-1", json.dumps({"seq": seq}), 1)
                for seq in range(BURST)
            ]
            await asyncio.wait_for(asyncio.gather(*acks), 60)  # every one PUBACKed
            system.procs["cloud"].kill9()

        await asyncio.to_thread(system.start_cloud)
        stored: set[int] = set()

        def all_stored() -> bool:
            stored.update(p["seq"] for p in system.payloads("sensors/dev-1"))
            return len(stored) == BURST

        try:
            await asyncio.to_thread(
                wait_until, all_stored, timeout=15, what="every acknowledged message"
            )
        finally:
            print(f"acknowledged by the cloud: {BURST}; stored after its SIGKILL: {len(stored)}")
        assert stored == set(range(BURST))
