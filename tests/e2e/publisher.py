"""A device in the test process: a numbered QoS 1 stream with the thing's own certificate.

It discovers its core through the cloud (group CA and endpoint), connects with mutual TLS
(``hedgerow.client.Client``), and reconnects whenever the connection breaks. A message
counts as accepted only once the core PUBACKed it.
"""

from __future__ import annotations

import asyncio
import json
import time

from hedgerow.client import Client
from hedgerow.client.errors import ClientError
from hedgerow.thing import Credentials, discover
from tests.e2e.harness import System

THING = "dev-1"
TOPIC = f"sensors/{THING}"


class Publisher:
    """A device publishing ``{"seq": n}`` at QoS 1; it records which numbers the core acked."""

    def __init__(self, system: System, *, pause: float = 0.01) -> None:
        self.system = system
        self.pause = pause
        self.sent: list[int] = []
        self.acked: list[int] = []
        self.reconnects = 0
        self.stop = asyncio.Event()

    async def run(self) -> None:
        certs = self.system.certs
        credentials = Credentials.load(
            certs / "root-ca.pem", certs / f"{THING}.cert.pem", certs / f"{THING}.key"
        )
        info = await discover(("127.0.0.1", self.system.device_port), THING, credentials)
        candidate = next(info.candidates())
        context = credentials.core_context(candidate.cas)
        seq = 0
        while not self.stop.is_set():
            try:
                client = Client(
                    candidate.endpoint.host,
                    candidate.endpoint.port,
                    client_id=THING,
                    ssl=context,
                    server_hostname=candidate.endpoint.host,
                    connect_timeout=5,
                )
                async with client:
                    while not self.stop.is_set():
                        self.sent.append(seq)
                        payload = json.dumps({"thing": THING, "seq": seq})
                        await asyncio.wait_for(client.publish(TOPIC, payload, qos=1), 10)
                        self.acked.append(seq)  # the core PUBACKed it: accepted
                        seq += 1
                        await asyncio.sleep(self.pause)
            except (ClientError, OSError, TimeoutError):
                seq += 1  # not acknowledged: it may or may not have been taken
                self.reconnects += 1
                await asyncio.sleep(0.2)

    async def wait_acked(self, count: int, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < count:
            assert time.monotonic() < deadline, f"timed out waiting for {what} ({len(self.acked)})"
            await asyncio.sleep(0.05)


async def wait_all_stored(system: System, acked: set[int], timeout: float) -> list[int]:
    """Every sequence number in the cloud's store once all of ``acked`` arrived (duplicates
    included); fails naming the missing ones after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        stored = [p["seq"] for p in await asyncio.to_thread(system.payloads, "sensors/#")]
        missing = acked - set(stored)
        if not missing:
            return stored
        assert time.monotonic() < deadline, (
            f"{len(missing)} of {len(acked)} acknowledged messages never reached the cloud: "
            f"{sorted(missing)[:20]} ..."
        )
        await asyncio.sleep(0.5)
