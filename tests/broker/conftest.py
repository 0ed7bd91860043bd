"""Fixtures for broker tests: a running broker on a free port and a raw MQTT test client."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from hedgerow.broker import Broker, BrokerConfig
from hedgerow.mqtt.codec import Decoder, encode
from hedgerow.mqtt.packets import ConnAck, Connect, Disconnect, Packet, ProtocolVersion

TIMEOUT = 5.0


@dataclass
class Running:
    broker: Broker
    host: str
    port: int


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    async with Broker(BrokerConfig(sweep_interval=0.1)) as broker:
        host, port = await broker.listen("127.0.0.1", 0)
        yield Running(broker, host, port)


@pytest.fixture(autouse=True)
async def _close_raw_clients() -> AsyncIterator[None]:
    yield
    while RawClient.opened:
        await RawClient.opened.pop().close()


async def eventually(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Wait (bounded) until the broker's state satisfies ``predicate``."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


class RawClient:
    """An MQTT client made of a socket and the codec: sends exactly what a test says."""

    #: Every client a test opened; closed by the ``_close_raw_clients`` fixture.
    opened: list[RawClient] = []

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, version: ProtocolVersion
    ) -> None:
        RawClient.opened.append(self)
        self.reader = reader
        self.writer = writer
        self.version = version
        self.decoder = Decoder(version, server=False)

    @classmethod
    async def open(
        cls, port: int, version: ProtocolVersion = ProtocolVersion.V311, **ssl_args: object
    ) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, **ssl_args)  # type: ignore[arg-type]
        return cls(reader, writer, version)

    @classmethod
    async def connected(
        cls,
        port: int,
        client_id: str,
        version: ProtocolVersion = ProtocolVersion.V311,
        **connect: object,
    ) -> RawClient:
        client = await cls.open(port, version)
        await client.send(Connect(client_id, version, **connect))  # type: ignore[arg-type]
        ack = await client.recv()
        assert isinstance(ack, ConnAck) and ack.reason_code == 0, ack
        return client

    async def send(self, packet: Packet) -> None:
        self.writer.write(encode(packet, self.version))
        await self.writer.drain()

    async def send_bytes(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def recv(self, timeout: float = TIMEOUT) -> Packet:
        async with asyncio.timeout(timeout):
            while True:
                packet = self.decoder.next_packet()
                if packet is not None:
                    return packet
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("closed by the broker")
                self.decoder.receive_data(data)

    async def closed(self, timeout: float = TIMEOUT) -> list[Packet]:
        """Wait until the broker closes the connection; the packets it sent before."""
        packets: list[Packet] = []
        async with asyncio.timeout(timeout):
            while True:
                try:
                    data = await self.reader.read(65536)
                except ConnectionResetError:
                    return packets
                if not data:
                    return packets
                self.decoder.receive_data(data)
                while (packet := self.decoder.next_packet()) is not None:
                    packets.append(packet)

    async def close(self) -> None:
        if not self.writer.is_closing():
            try:
                self.writer.write(encode(Disconnect(), self.version))
            except (ConnectionError, RuntimeError):
                pass
            self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError, ssl.SSLError):
            pass
