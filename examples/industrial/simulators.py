"""A Modbus TCP power meter and an OPC UA machine, simulated with the libraries' own servers.

    python examples/industrial/simulators.py [--modbus-port 5020] [--opcua-port 4840]

The meter (unit 1) keeps, in holding registers: voltage (float32 at 0), current (float32 at
2), active power (float32 at 4, word order little, as many meters store it), energy in Wh
(uint32 at 6) and its model name (string, 8 registers at 100). The machine has
``ns=2;s=Speed`` (rpm, double), ``ns=2;s=Temperature`` (°C, double), ``ns=2;s=Count``
(parts made, int64) and a method ``ns=2;s=Reset`` on ``ns=2;s=Machine``. Values change
every 100 ms like a real load would. meter.toml and machine.toml configure connectors for them.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import struct

from asyncua import Server, ua
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice


def float32(value: float, *, swap_words: bool = False) -> list[int]:
    high, low = struct.unpack(">HH", struct.pack(">f", value))
    return [low, high] if swap_words else [high, low]


async def run_meter(port: int) -> None:
    device = SimDevice(id=1, simdata=(
        [SimData(0, count=1, values=False, datatype=DataType.BITS)],
        [SimData(0, count=1, values=False, datatype=DataType.BITS)],
        [SimData(0, count=120, values=0, datatype=DataType.REGISTERS)],
        [SimData(0, count=1, values=0, datatype=DataType.REGISTERS)],
    ))  # fmt: skip
    server = ModbusTcpServer(device, address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    context = server.context
    model = b"HR-PM-2200".ljust(16, b"\x00")
    await context.async_setValues(1, 3, 100, list(struct.unpack(">8H", model)))
    print(f"modbus power meter on 127.0.0.1:{port} (unit 1)", flush=True)
    energy = 0.0
    t = 0.0
    while True:
        voltage = 230.0 + random.gauss(0, 0.8)
        current = 12.0 + 4.0 * math.sin(t / 20) + random.gauss(0, 0.2)
        power = voltage * current
        energy += power * 0.1 / 3600
        registers = float32(voltage) + float32(current) + float32(power, swap_words=True)
        registers += list(struct.unpack(">HH", struct.pack(">I", int(energy))))
        await context.async_setValues(1, 3, 0, registers)
        t += 0.1
        await asyncio.sleep(0.1)


async def run_machine(port: int) -> None:
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/machine/")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace("urn:hedgerow:example:machine")
    machine = await server.nodes.objects.add_object(ua.NodeId("Machine", ns), f"{ns}:Machine")
    speed = await machine.add_variable(ua.NodeId("Speed", ns), f"{ns}:Speed", 0.0)
    temperature = await machine.add_variable(
        ua.NodeId("Temperature", ns), f"{ns}:Temperature", 20.0
    )
    count = await machine.add_variable(
        ua.NodeId("Count", ns), f"{ns}:Count", 0, ua.VariantType.Int64
    )
    await speed.set_writable()
    parts = 0

    async def reset(parent: object) -> list[ua.Variant]:
        nonlocal parts
        parts = 0
        return [ua.Variant(True, ua.VariantType.Boolean)]

    await machine.add_method(
        ua.NodeId("Reset", ns), f"{ns}:Reset", reset, [], [ua.VariantType.Boolean]
    )
    async with server:
        print(f"opc ua machine on opc.tcp://127.0.0.1:{port}/machine/", flush=True)
        t = 0.0
        while True:
            rpm = 1450 + 30 * math.sin(t / 5) + random.gauss(0, 2)
            await speed.write_value(rpm)
            await temperature.write_value(
                55 + 10 * (1 - math.exp(-t / 120)) + random.gauss(0, 0.05)
            )
            if random.random() < 0.05:
                parts += 1
                await count.write_value(ua.Variant(parts, ua.VariantType.Int64))
            t += 0.1
            await asyncio.sleep(0.1)


async def main(modbus_port: int, opcua_port: int) -> None:
    async with asyncio.TaskGroup() as group:
        group.create_task(run_meter(modbus_port))
        group.create_task(run_machine(opcua_port))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modbus-port", type=int, default=5020)
    parser.add_argument("--opcua-port", type=int, default=4840)
    args = parser.parse_args()
    asyncio.run(main(args.modbus_port, args.opcua_port))
