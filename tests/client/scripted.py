"""A scripted MQTT server for client tests: the test reads and writes packets one by one.

It covers what a well-behaved broker will not do on demand: topic aliases, duplicate QoS 2
deliveries, withheld acknowledgements, silence on PINGREQ, bad packets.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from hedgerow.mqtt.codec import Decoder, encode
from hedgerow.mqtt.packets import ConnAck, Connect, Packet, Properties, ProtocolVersion

STEP_TIMEOUT = 5.0


class ScriptedSession:
    """One accepted connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = Decoder(server=True)
        self.version = ProtocolVersion.V5
        self._ready: list[Packet] = []

    async def receive(self) -> Packet:
        """The next packet from the client (fails the test after STEP_TIMEOUT)."""
        async with asyncio.timeout(STEP_TIMEOUT):
            while not self._ready:
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("client closed the connection")
                self.decoder.receive_data(data)
                self._ready.extend(self.decoder.packets())
        packet = self._ready.pop(0)
        if isinstance(packet, Connect):
            self.version = packet.version
        return packet

    async def expect(self, kind: type[Packet]) -> Packet:
        packet = await self.receive()
        assert isinstance(packet, kind), f"expected {kind.__name__}, got {packet!r}"
        return packet

    async def handshake(
        self, session_present: bool = False, properties: Properties | None = None
    ) -> Connect:
        connect = await self.expect(Connect)
        assert isinstance(connect, Connect)
        self.send(ConnAck(session_present, 0, properties or Properties()))
        return connect

    def send(self, packet: Packet) -> None:
        self.writer.write(encode(packet, self.version))

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def closed_by_client(self) -> bool:
        """True once the client closed the connection (EOF)."""
        async with asyncio.timeout(STEP_TIMEOUT):
            while True:
                data = await self.reader.read(65536)
                if not data:
                    return True
                self.decoder.receive_data(data)
                self._ready.extend(self.decoder.packets())

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


class ScriptedServer:
    def __init__(self) -> None:
        self.port = 0
        self._accepted: asyncio.Queue[ScriptedSession] = asyncio.Queue()
        self._sessions: list[ScriptedSession] = []

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = ScriptedSession(reader, writer)
        self._sessions.append(session)
        await self._accepted.put(session)

    async def accept(self) -> ScriptedSession:
        async with asyncio.timeout(STEP_TIMEOUT):
            return await self._accepted.get()

    async def close_all(self) -> None:
        for session in self._sessions:
            await session.close()


@asynccontextmanager
async def scripted_server() -> AsyncIterator[ScriptedServer]:
    server = ScriptedServer()
    listener = await asyncio.start_server(server._on_client, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        await server.close_all()
        listener.close()
        await listener.wait_closed()
