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

End to end (``--end-to-end``, or ``--only-end-to-end``): a real cloud (``CloudServer``, in
this process), a real core (``hedgerow core run``, its own process, pinned to CPU 0) and the
connector deployed from the cloud (``POST /api/v1/groups/G/connectors``, a subscription
``connector:meter`` → ``cloud``, a deployment):

- throughput: the 100 tags published every poll (interval 5 ms): values stored in the
  cloud's telemetry store per second (its ingest counter), and the core's CPU per value
  (``/proc/PID/stat``: polling, routing, spool, the link to the cloud, all of it);
- latency: change-only publishing, one register written by this process at a random time
  → the value stored in the cloud (the ingest's write that holds it completed): p50/max.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
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
    config = validate("opcua", "bench", _machine(port))
    return await measure(OpcUaConnector(config, count), count, seconds)  # type: ignore[arg-type]


# -- end to end: register changed -> stored in the cloud ------------------------------------


def _meter(port: int, *, interval_s: float, publish: str) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": port, "interval_s": interval_s,
            "tags": [{"name": f"r{i}", "table": "holding_register", "address": i,
                      "publish": publish} for i in range(TAGS)]}  # fmt: skip


def _machine(port: int) -> dict[str, Any]:
    return {"url": f"opc.tcp://127.0.0.1:{port}/bench/", "publishing_interval_ms": 20,
            "nodes": [{"name": f"v{i}", "node_id": f"ns=2;s=v{i}", "sampling_interval_ms": 0}
                      for i in range(OPC_NODES)]}  # fmt: skip


async def end_to_end(seconds: float, rounds: int) -> dict[str, Any]:
    import random
    import statistics
    import tempfile
    from pathlib import Path

    import httpx
    from pymodbus.client import AsyncModbusTcpClient

    from core import (  # bench/core.py: the core as a process
        api_caller,
        cpu_seconds,
        provision_core,
        start_core,
        stop_core,
    )
    from hedgerow.cloud.config import Listen
    from hedgerow.cloud.datadir import init_data_dir
    from hedgerow.cloud.server import CloudServer

    tmp = Path(tempfile.mkdtemp(prefix="hedgerow-bench-connectors-"))
    modbus_port, opc_port = free_port(), free_port()
    modbus_server = start_server("modbus", modbus_port)
    opc_server = start_server("opcua", opc_port)
    config, _ = await asyncio.to_thread(
        init_data_dir, tmp / "cloud", database="",
        api=Listen("127.0.0.1", 0), device=Listen("127.0.0.1", 0), mqtt=Listen("127.0.0.1", 0),
    )  # fmt: skip
    try:
        async with CloudServer(config) as server:
            assert server.broker is not None
            ingest = server.ingest
            #: (register value written, ingest's received count when it arrived, stored at)
            waiting: dict[int, list[float]] = {}

            #: messages that reached the cloud's MQTT endpoint, per connector
            arrived = {"meter": 0, "machine": 0}

            def arrival(identity: Any, publish: Any) -> None:
                name = (
                    publish.topic.split("/")[1] if publish.topic.startswith("connectors/") else ""
                )
                if name in arrived:
                    arrived[name] += 1
                if publish.topic == "connectors/meter/data/r0":
                    value = int(json.loads(publish.payload)["value"])
                    if value in waiting and len(waiting[value]) == 1:
                        waiting[value].append(ingest.stats.received)

            server.broker.add_interceptor(arrival)
            written = ingest.on_written

            def stored() -> None:
                if written is not None:
                    written()
                now = time.perf_counter()
                for entry in waiting.values():
                    if len(entry) == 2 and ingest.stats.stored >= entry[1]:
                        entry.append(now)

            ingest.on_written = stored
            headers = {"authorization": f"Bearer {server.admin_token}"}
            async with httpx.AsyncClient(
                base_url=server.api_url, headers=headers, timeout=30
            ) as api:
                call = api_caller(api)

                async def deploy() -> None:
                    made = await call("POST", "/api/v1/groups/bench/deployments", json={})
                    path = f"/api/v1/deployments/{made['deployment_id']}"
                    async with asyncio.timeout(60):
                        while (status := (await call("GET", path))["status"]) not in (
                            "Success", "Failure", "RolledBack"):  # fmt: skip
                            await asyncio.sleep(0.1)
                    if status != "Success":
                        raise RuntimeError(f"deployment {status}")

                config_path, _ = await provision_core(call, tmp / "core")
                await call("POST", "/api/v1/groups/bench/connectors", json={
                    "kind": "modbus-tcp", "name": "meter",
                    "config": _meter(modbus_port, interval_s=0.005, publish="every")})  # fmt: skip
                await call("POST", "/api/v1/groups/bench/subscriptions", json={
                    "source": "connector:meter", "topic": "connectors/meter/data/#",
                    "target": "cloud"})  # fmt: skip
                core = await start_core(config_path, tmp / "core.log")
                try:
                    await deploy()
                    async with asyncio.timeout(60):
                        while ingest.stats.stored < 10 * TAGS:
                            await asyncio.sleep(0.1)
                    values0, cpu0, wall0 = (
                        ingest.stats.stored,
                        cpu_seconds(core.pid),
                        time.perf_counter(),
                    )
                    await asyncio.sleep(seconds)
                    values = ingest.stats.stored - values0
                    cpu = cpu_seconds(core.pid) - cpu0
                    wall = time.perf_counter() - wall0

                    await call("PUT", "/api/v1/groups/bench/connectors/meter", json={
                        "config": _meter(modbus_port, interval_s=0.01, publish="change")})  # fmt: skip
                    await deploy()
                    writer = AsyncModbusTcpClient("127.0.0.1", port=modbus_port)
                    await writer.connect()
                    try:
                        for value in range(1000, 1000 + rounds):
                            await asyncio.sleep(random.uniform(0.05, 0.15))  # off the poll's beat
                            waiting[value] = [time.perf_counter()]
                            await writer.write_register(0, value, device_id=1)
                            async with asyncio.timeout(30):
                                while len(waiting[value]) < 3:
                                    await asyncio.sleep(0.001)
                    finally:
                        writer.close()

                    # OPC UA: the meter goes, a machine whose nodes change every 5 ms comes
                    await call("DELETE", "/api/v1/groups/bench/connectors/meter")
                    await call("POST", "/api/v1/groups/bench/connectors", json={
                        "kind": "opcua", "name": "machine", "config": _machine(opc_port)})  # fmt: skip
                    await call("POST", "/api/v1/groups/bench/subscriptions", json={
                        "source": "connector:machine", "topic": "connectors/machine/data/#",
                        "target": "cloud"})  # fmt: skip
                    await deploy()
                    # the meter's backlog (spool, ingest) drains first: only the machine counts
                    async with asyncio.timeout(120):
                        while True:
                            meter_seen = arrived["meter"]
                            await asyncio.sleep(1.0)
                            if arrived["meter"] == meter_seen and arrived["machine"] > 0:
                                break
                    changes0, opc_cpu0, opc_wall0 = (
                        arrived["machine"],
                        cpu_seconds(core.pid),
                        time.perf_counter(),
                    )
                    await asyncio.sleep(seconds)
                    changes = arrived["machine"] - changes0
                    opc_cpu = cpu_seconds(core.pid) - opc_cpu0
                    opc_wall = time.perf_counter() - opc_wall0
                finally:
                    await stop_core(core)
    finally:
        for process in (modbus_server, opc_server):
            process.kill()
            process.wait()
    latencies = [entry[2] - entry[0] for entry in waiting.values()]
    return {
        "values_per_s": values / wall,
        "core_cpu_us_per_value": cpu / values * 1e6 if values else float("nan"),
        "latency_p50_ms": statistics.median(latencies) * 1000,
        "latency_max_ms": max(latencies) * 1000,
        "rounds": len(latencies),
        "opcua_changes_per_s": changes / opc_wall,
        "opcua_core_cpu_us_per_change": opc_cpu / changes * 1e6 if changes else float("nan"),
    }


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


async def main_end_to_end(seconds: float, rounds: int) -> None:
    print(f"end to end, load average {os.getloadavg()[0]:.2f}", flush=True)
    e2e = await end_to_end(seconds, rounds)
    print(
        "| Modbus TCP → core → cloud telemetry store | values/s | core CPU per value (µs) | change → stored p50 / max |"
    )
    print("|---|---|---|---|")
    print(f"| 100 tags every 5 ms (throughput); change-only, {e2e['rounds']} writes (latency) "
          f"| {e2e['values_per_s']:,.0f} | {e2e['core_cpu_us_per_value']:.1f} "
          f"| {e2e['latency_p50_ms']:.1f} ms / {e2e['latency_max_ms']:.1f} ms |")  # fmt: skip
    print(f"| OPC UA → core → cloud MQTT endpoint: {OPC_NODES} nodes changing every 5 ms "
          f"| {e2e['opcua_changes_per_s']:,.0f} changes/s "
          f"| {e2e['opcua_core_cpu_us_per_change']:.1f} | |")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--quick", action="store_true", help="1 s per measurement")
    parser.add_argument(
        "--end-to-end",
        action="store_true",
        help="also register changed -> stored in a real cloud through a real core",
    )
    parser.add_argument("--only-end-to-end", action="store_true", help="just that")
    parser.add_argument("--rounds", type=int, default=20, help="latency samples end to end")
    parser.add_argument("--serve", choices=["modbus", "opcua"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve_modbus(args.port) if args.serve == "modbus" else serve_opcua(args.port))
    else:
        seconds = 1.0 if args.quick else args.seconds
        if not args.only_end_to_end:
            asyncio.run(main(seconds))
        if args.end_to_end or args.only_end_to_end:
            asyncio.run(main_end_to_end(seconds, 5 if args.quick else args.rounds))
