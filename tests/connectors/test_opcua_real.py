"""The OPC UA connector against a real asyncua server: security None and Basic256Sha256
SignAndEncrypt with a trusted client certificate and a user, subscriptions with deadbands,
writes and method calls through the request topic, browse, and a server restart."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

from asyncua import ua

from hedgerow.connectors.config import OpcUaConfig, validate
from hedgerow.connectors.opcua import OpcUaConnector, browse
from hedgerow.lifecycle import State

from .modbus_servers import Recorder
from .opcua_servers import PASSWORD, USER, Certs, machine_server, make_certs

FAST = {"backoff_base_s": 0.05, "backoff_cap_s": 0.3, "timeout_s": 2.0}
NODES = [
    {"name": "speed", "node_id": "ns=2;s=Speed", "sampling_interval_ms": 20, "deadband": 1.0},
    {"name": "count", "node_id": "ns=2;s=Count", "sampling_interval_ms": 20},
]


def config(url: str, certs: Certs | None = None, **extra: Any) -> OpcUaConfig:
    raw: dict[str, Any] = {"url": url, "publishing_interval_ms": 20, **FAST, "nodes": NODES}
    if certs:
        raw |= {
            "security_policy": "Basic256Sha256",
            "security_mode": "SignAndEncrypt",
            "certificate": str(certs.client_cert),
            "private_key": str(certs.client_key),
            "server_certificate": str(certs.server_cert),
            "username": USER,
            "password": PASSWORD,
        }
    raw |= extra
    result = validate("opcua", "press", raw)
    assert isinstance(result, OpcUaConfig)
    return result


def data(node: str) -> str:
    return f"connectors/press/data/{node}"


async def exercise(c: OpcUaConnector, recorder: Recorder, machine: Any) -> None:
    """Values arrive with timestamps and status, the deadband holds, writes and calls work."""
    await c.start()
    (first,) = await recorder.wait(data("speed"))
    assert first["value"] == 0.0 and first["status"] == "Good"
    assert first["node_id"] == "ns=2;s=Speed"
    server_ts = dt.datetime.fromisoformat(first["server_ts"])
    assert abs((dt.datetime.now(dt.UTC) - server_ts).total_seconds()) < 60
    assert first["source_ts"] is not None
    await recorder.wait(data("count"))

    await machine.speed.write_value(0.5)  # within the 1.0 deadband
    await machine.count.write_value(ua.Variant(1, ua.VariantType.Int64))  # every change
    await recorder.wait_value(data("count"), lambda v: v == 1)
    await machine.speed.write_value(2.0)
    await recorder.wait_value(data("speed"), lambda v: v == 2.0)
    await machine.count.write_value(ua.Variant(2, ua.VariantType.Int64))
    await recorder.wait_value(data("count"), lambda v: v == 2)
    assert [m["value"] for m in recorder.on(data("speed"))] == [0.0, 2.0]

    await c.handle("connectors/press/request", b'{"id": 1, "write": {"node": "speed", "value": 7}}')
    await c.handle(
        "connectors/press/request",
        json.dumps(
            {
                "id": 2,
                "call": {"object_id": "ns=2;s=Machine", "method_id": "ns=2;s=Add", "args": [40, 2]},
            }
        ).encode(),
    )
    await c.handle(
        "connectors/press/request", b'{"id": 3, "write": {"node": "torque", "value": 1}}'
    )
    await c.handle(
        "connectors/press/request", b'{"id": 4, "write": {"node_id": "ns=2;s=Count", "value": "x"}}'
    )
    answers = {a["id"]: a for a in recorder.on("connectors/press/response")}
    assert answers[1] == {"id": 1, "status": "success"}
    assert answers[2] == {"id": 2, "status": "success", "result": 42}
    assert answers[3]["status"] == "fail" and "unknown node 'torque'" in answers[3]["error"]
    assert answers[4]["status"] == "fail"
    assert await machine.speed.read_value() == 7.0
    await recorder.wait_value(data("speed"), lambda v: v == 7.0)
    assert c.state is State.RUNNING


async def test_security_none(port: int) -> None:
    async with machine_server(port) as machine:
        recorder = Recorder()
        c = OpcUaConnector(config(machine.url), recorder)
        try:
            await exercise(c, recorder, machine)
        finally:
            await c.stop()


async def test_basic256sha256_sign_and_encrypt_with_a_user(port: int, tmp_path: Path) -> None:
    certs = await make_certs(tmp_path)
    async with machine_server(port, certs) as machine:
        recorder = Recorder()
        c = OpcUaConnector(config(machine.url, certs), recorder)
        try:
            await exercise(c, recorder, machine)
        finally:
            await c.stop()


async def test_basic256sha256_sign_only(port: int, tmp_path: Path) -> None:
    certs = await make_certs(tmp_path)
    async with machine_server(port, certs, sign_only=True) as machine:
        recorder = Recorder()
        c = OpcUaConnector(config(machine.url, certs, security_mode="Sign"), recorder)
        try:
            await c.start()
            (first,) = await recorder.wait(data("count"))
            assert first["value"] == 0 and c.state is State.RUNNING
        finally:
            await c.stop()


async def test_a_wrong_password_or_no_security_is_refused(port: int, tmp_path: Path) -> None:
    certs = await make_certs(tmp_path)
    async with machine_server(port, certs) as machine:
        wrong_password = config(machine.url, certs, password="wrong")
        untrusted = await make_certs(tmp_path / "other")  # a certificate the server never saw
        untrusted_client = config(
            machine.url,
            certs,
            certificate=str(untrusted.client_cert),
            private_key=str(untrusted.client_key),
        )
        for bad in (wrong_password, untrusted_client, config(machine.url)):
            recorder = Recorder()
            c = OpcUaConnector(bad, recorder)
            await c.start()
            try:
                async with asyncio.timeout(10):
                    await c.wait_for_state(State.BACKOFF)
                assert c.counters.errors >= 1 and c.counters.last_error
                assert recorder.messages == []
            finally:
                await c.stop()


async def test_server_restart_recovers_the_subscription(port: int) -> None:
    recorder = Recorder()
    async with machine_server(port) as machine:
        c = OpcUaConnector(config(machine.url), recorder)
        await c.start()
        await recorder.wait(data("count"))
    try:
        async with asyncio.timeout(15):
            await c.wait_for_state(State.BACKOFF)
        async with machine_server(port) as machine:
            await machine.count.write_value(ua.Variant(99, ua.VariantType.Int64))
            await recorder.wait_value(data("count"), lambda v: v == 99, timeout=15)
            assert c.state is State.RUNNING
            assert c.counters.reconnects == 1
    finally:
        await c.stop()


async def test_browse(port: int) -> None:
    async with machine_server(port) as machine:
        entries = await browse(config(machine.url), depth=2)
    names = {(e.depth, e.browse_name, e.node_class) for e in entries}
    assert (0, "2:Machine", "Object") in names
    assert (1, "2:Speed", "Variable") in names
    assert (1, "2:Add", "Method") in names
    (speed,) = [e for e in entries if e.browse_name == "2:Speed"]
    assert speed.node_id == "ns=2;s=Speed"


async def test_browse_from_the_command_line(port: int) -> None:
    import sys

    async with machine_server(port) as machine:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hedgerow",
            "core",
            "opcua",
            "browse",
            machine.url,
            "--node",
            "ns=2;s=Machine",
            "--depth",
            "1",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(60):
            out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert "2:Speed  Variable  ns=2;s=Speed" in lines
    assert "2:Add  Method  ns=2;s=Add" in lines
    assert lines[-1] == "3 nodes"


async def test_browse_cli_names_a_bad_option() -> None:
    import sys

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hedgerow",
        "core",
        "opcua",
        "browse",
        "http://nope",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        _, err = await process.communicate()
    assert process.returncode != 0
    assert "--url: must start with opc.tcp://" in err.decode()
