"""Real pymodbus servers for the tests: TCP on a free port, RTU over a pseudo-terminal pair.

``serial_line()`` makes two pseudo-terminals and relays bytes between their master sides,
so the server opens one end's tty and the connector the other's, as across an RS-485 cable.
``Recorder`` is a publish callback that tests wait on (event-driven, bounded).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tty
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

FC_COIL, FC_DISCRETE, FC_HOLDING, FC_INPUT = 1, 2, 3, 4


def device(unit: int = 1, size: int = 256) -> SimDevice:
    return SimDevice(
        id=unit,
        simdata=(
            [SimData(0, count=size // 16 + 1, values=False, datatype=DataType.BITS)],
            [SimData(0, count=size // 16 + 1, values=False, datatype=DataType.BITS)],
            [SimData(0, count=size, values=0, datatype=DataType.REGISTERS)],
            [SimData(0, count=size, values=0, datatype=DataType.REGISTERS)],
        ),
    )


class Server:
    """A running server and a way to set or read its values."""

    def __init__(self, server: Any, unit: int) -> None:
        self.server = server
        self.unit = unit

    async def set(self, fc: int, address: int, values: list[int] | list[bool]) -> None:
        result = await self.server.context.async_setValues(self.unit, fc, address, values)
        assert result is None, result

    async def get(self, fc: int, address: int, count: int) -> list[Any]:
        return list(await self.server.context.async_getValues(self.unit, fc, address, count))

    async def stop(self) -> None:
        await self.server.shutdown()


@contextlib.asynccontextmanager
async def tcp_server(
    port: int, unit: int = 1, dev: SimDevice | None = None
) -> AsyncIterator[Server]:
    server = ModbusTcpServer(dev or device(unit), address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    try:
        yield Server(server, unit)
    finally:
        await server.shutdown()


@contextlib.contextmanager
def serial_line() -> Iterator[tuple[str, str]]:
    """Two tty paths joined like a cable (bytes written to one are read from the other)."""
    loop = asyncio.get_running_loop()
    master_a, slave_a = os.openpty()
    master_b, slave_b = os.openpty()
    for fd in (slave_a, slave_b):
        tty.setraw(fd)

    def relay(source: int, target: int) -> Callable[[], None]:
        def pump() -> None:
            try:
                data = os.read(source, 4096)
            except OSError:
                return
            os.write(target, data)

        return pump

    loop.add_reader(master_a, relay(master_a, master_b))
    loop.add_reader(master_b, relay(master_b, master_a))
    try:
        yield os.ttyname(slave_a), os.ttyname(slave_b)
    finally:
        loop.remove_reader(master_a)
        loop.remove_reader(master_b)
        for fd in (master_a, master_b, slave_a, slave_b):
            os.close(fd)


@contextlib.asynccontextmanager
async def rtu_server(path: str, unit: int = 1, baudrate: int = 115200) -> AsyncIterator[Server]:
    server = ModbusSerialServer(device(unit), port=path, baudrate=baudrate, timeout=1)
    await server.serve_forever(background=True)
    try:
        yield Server(server, unit)
    finally:
        await server.shutdown()


class Recorder:
    """A connector's publish callback that the test can wait on."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._changed = asyncio.Condition()

    async def __call__(self, topic: str, payload: bytes) -> None:
        async with self._changed:
            self.messages.append((topic, payload))
            self._changed.notify_all()

    def on(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(p) for t, p in self.messages if t == topic]

    async def wait(self, topic: str, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The first ``count`` messages on ``topic`` once they arrived."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.on(topic)) >= count)
        return self.on(topic)[:count]

    async def wait_value(
        self, topic: str, predicate: Callable[[Any], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        """The first message on ``topic`` whose value satisfies ``predicate``."""

        def found() -> dict[str, Any] | None:
            return next((m for m in self.on(topic) if predicate(m["value"])), None)

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: found() is not None)
        result = found()
        assert result is not None
        return result
