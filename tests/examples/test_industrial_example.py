"""The industrial example: its connector configs validate, and against its own simulators
the connectors read what the simulators serve."""

from __future__ import annotations

import asyncio
import sys
import tomllib
from pathlib import Path

import pytest

from hedgerow.connectors import validate
from hedgerow.connectors.modbus import ModbusConnector
from hedgerow.connectors.opcua import OpcUaConnector

from ..conftest import free_port
from ..connectors.modbus_servers import Recorder

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "industrial"


def load(name: str, **override: object) -> dict[str, object]:
    return {**tomllib.loads((EXAMPLE / name).read_text()), **override}


def test_the_example_configs_validate() -> None:
    validate("modbus-tcp", "meter", load("meter.toml"))
    validate("opcua", "machine", load("machine.toml"))


@pytest.mark.slow
async def test_connectors_read_the_simulators() -> None:
    modbus_port, opcua_port = free_port(), free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE / "simulators.py"),
        "--modbus-port",
        str(modbus_port),
        "--opcua-port",
        str(opcua_port),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(60):
            for _ in range(2):
                await process.stdout.readline()
        recorder = Recorder()
        meter = validate("modbus-tcp", "meter", load("meter.toml", port=modbus_port))
        machine = validate(
            "opcua",
            "machine",
            load("machine.toml", url=f"opc.tcp://127.0.0.1:{opcua_port}/machine/"),
        )
        connectors = [ModbusConnector(meter, recorder), OpcUaConnector(machine, recorder)]  # type: ignore[arg-type]
        for c in connectors:
            await c.start()
        try:
            (model,) = await recorder.wait("connectors/meter/data/model", timeout=30)
            assert model["value"] == "HR-PM-2200"
            power = await recorder.wait_value(
                "connectors/meter/data/power", lambda v: 1000 < v < 5000, 30
            )
            voltage = await recorder.wait_value(
                "connectors/meter/data/voltage", lambda v: 220 < v < 240, 30
            )
            assert abs(power["timestamp"] - voltage["timestamp"]) < 60
            speed = await recorder.wait_value(
                "connectors/machine/data/speed", lambda v: 1350 < v < 1550, 30
            )
            assert speed["status"] == "Good"
        finally:
            for c in connectors:
                await c.stop()
    finally:
        process.kill()
        await process.wait()
