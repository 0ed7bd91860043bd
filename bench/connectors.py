"""Industrial connectors benchmark: Modbus registers read per second (one server, 100 tags)
and OPC UA value changes per second, with the connector's CPU per value.

    .venv/bin/python bench/connectors.py [--seconds 5] [--quick]

Each server (pymodbus, asyncua) runs in its own process so that the CPU time measured is
the connector's alone (``time.process_time`` of this process over the run, divided by the
values it handed to its publish callback). What is measured ends at the publish callback,
where the core's router takes over (its cost per message is in bench/core.py).

- Modbus: 100 uint16 tags at adjacent addresses, polled back to back (interval 1 ms,
  ``publish = "every"``): grouped into one request per round (the planner's default), and
  ungrouped (``max_registers = 1``: one request per tag, what a naive poller does).
- OPC UA: 20 variables the server changes every 5 ms, one subscription (publishing interval
  20 ms, sampling 0): value changes delivered per second.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import subprocess
import sys
import time
from typing import Any

from hedgerow.connectors.config import validate
from hedgerow.connectors.modbus import ModbusConnector
from hedgerow.connectors.opcua import OpcUaConnector

TAGS = 100
OPC_NODES = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- servers, each run in a child process --------------------------------------------------


async def serve_modbus(port: int) -> None:
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    device = SimDevice(id=1, simdata=(
        [SimData(0, count=8, values=False, datatype=DataType.BITS)],
        [SimData(0, count=8, values=False, datatype=DataType.BITS)],
        [SimData(0, count=TAGS, values=list(range(TAGS)), datatype=DataType.REGISTERS)],
        [SimData(0, count=8, values=0, datatype=DataType.REGISTERS)],
    ))  # fmt: skip
    server = ModbusTcpServer(device, address=("127.0.0.1", port))
    print("ready", flush=True)
    await server.serve_forever()


async def serve_opcua(port: int) -> None:
    from asyncua import Server, ua

    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/bench/")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace("urn:hedgerow:bench")
    obj = await server.nodes.objects.add_object(ua.NodeId("Bench", ns), f"{ns}:Bench")
    nodes = [await obj.add_variable(ua.NodeId(f"v{i}", ns), f"{ns}:v{i}", 0.0)
             for i in range(OPC_NODES)]  # fmt: skip
    async with server:
        print("ready", flush=True)
        n = 0
        while True:
            n += 1
            for node in nodes:
                await server.write_attribute_value(node.nodeid, ua.DataValue(float(n)))
            await asyncio.sleep(0.005)


def start_server(kind: str, port: int) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, __file__, "--serve", kind, "--port", str(port)],
                               stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    if line.strip() != "ready":
        process.kill()
        raise RuntimeError(f"{kind} server did not start: {line!r}")
    return process


# -- measurements ---------------------------------------------------------------------------


class Count:
    def __init__(self) -> None:
        self.values = 0

    async def __call__(self, topic: str, payload: bytes) -> None:
        self.values += 1


async def measure(connector: Any, count: Count, seconds: float) -> tuple[float, float]:
    """(values per second, CPU microseconds per value) over ``seconds`` once running."""
    await connector.start()
    try:
        async with asyncio.timeout(20):
            while count.values == 0:
                await asyncio.sleep(0.01)
        start_values, start_wall, start_cpu = count.values, time.perf_counter(), time.process_time()
        await asyncio.sleep(seconds)
        values = count.values - start_values
        wall = time.perf_counter() - start_wall
        cpu = time.process_time() - start_cpu
    finally:
        await connector.stop()
    return values / wall, (cpu / values * 1e6) if values else float("nan")


async def modbus(port: int, seconds: float, *, grouped: bool) -> tuple[float, float, float]:
    count = Count()
    config = validate("modbus-tcp", "bench", {
        "host": "127.0.0.1", "port": port, "interval_s": 0.001,
        **({} if grouped else {"max_registers": 1, "max_gap": 0}),
        "tags": [{"name": f"r{i}", "table": "holding_register", "address": i, "publish": "every"}
                 for i in range(TAGS)]})  # fmt: skip
    connector = ModbusConnector(config, count)  # type: ignore[arg-type]
    rate, cpu = await measure(connector, count, seconds)
    return rate, cpu, connector.counters.latency_total_s / max(connector.counters.latency_count, 1)


async def opcua(port: int, seconds: float) -> tuple[float, float]:
    count = Count()
    config = validate("opcua", "bench", {
        "url": f"opc.tcp://127.0.0.1:{port}/bench/", "publishing_interval_ms": 20,
        "nodes": [{"name": f"v{i}", "node_id": f"ns=2;s=v{i}", "sampling_interval_ms": 0}
                  for i in range(OPC_NODES)]})  # fmt: skip
    return await measure(OpcUaConnector(config, count), count, seconds)  # type: ignore[arg-type]


async def main(seconds: float) -> None:
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    rows = []
    port = free_port()
    server = start_server("modbus", port)
    try:
        for grouped in (True, False):
            rate, cpu, latency = await modbus(port, seconds, grouped=grouped)
            label = "grouped (1 request/round)" if grouped else "ungrouped (100 requests/round)"
            rows.append((f"Modbus TCP, 100 tags, {label}", f"{rate:,.0f} registers/s",
                         f"{cpu:.1f}", f"{latency * 1000:.3f} ms/request"))  # fmt: skip
    finally:
        server.kill()
        server.wait()
    port = free_port()
    server = start_server("opcua", port)
    try:
        rate, cpu = await opcua(port, seconds)
        rows.append((f"OPC UA, {OPC_NODES} nodes changing every 5 ms", f"{rate:,.0f} changes/s",
                     f"{cpu:.1f}", ""))  # fmt: skip
    finally:
        server.kill()
        server.wait()
    print("| measurement | values/s | connector CPU per value (µs) | request latency |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--quick", action="store_true", help="1 s per measurement")
    parser.add_argument("--serve", choices=["modbus", "opcua"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve_modbus(args.port) if args.serve == "modbus" else serve_opcua(args.port))
    else:
        asyncio.run(main(1.0 if args.quick else args.seconds))
