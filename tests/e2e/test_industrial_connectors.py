"""Industrial connectors end to end: connectors added in the cloud (a bad config refused with
its field named), deployed with the group, values from a Modbus meter and an OPC UA machine
(the example's simulators, real pymodbus and asyncua servers) stored by the cloud, and a V1
Lambda written for the V1 Modbus adapter answered unchanged."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import tomli_w

from tests.conftest import free_port
from tests.e2e.harness import EXAMPLES, GROUP, System, wait_until

pytestmark = pytest.mark.slow

INDUSTRIAL = EXAMPLES.parent / "industrial"


def config_file(root: Path, name: str, **override: object) -> str:
    data = tomllib.loads((INDUSTRIAL / name).read_text()) | override
    path = root / name
    path.write_text(tomli_w.dumps(data))
    return str(path)


def test_connectors_from_the_cloud_to_the_cloud(system: System) -> None:
    modbus_port, opcua_port = free_port(), free_port()
    simulators = system.start("simulators", [
        sys.executable, str(INDUSTRIAL / "simulators.py"),
        "--modbus-port", str(modbus_port), "--opcua-port", str(opcua_port)])  # fmt: skip
    assert simulators.popen.poll() is None

    bad = config_file(
        system.root,
        "meter.toml",
        port=modbus_port,
        tags=[{"name": "p", "table": "holding_register", "address": 0, "type": "float128"}],
    )
    refused = system.cloud(
        "connector", "add", "--group", GROUP, "modbus-tcp", "meter", "--config", bad, check=False
    )
    assert refused.returncode != 0
    assert "tags[0].type" in refused.stderr and "float128" in refused.stderr

    # polled every 0.1 s so that a 2 s window of the aggregating function holds ~20 readings
    meter = config_file(system.root, "meter.toml", port=modbus_port, interval_s=0.1)
    machine = config_file(
        system.root, "machine.toml", url=f"opc.tcp://127.0.0.1:{opcua_port}/machine/"
    )
    system.cloud("connector", "add", "--group", GROUP, "modbus-tcp", "meter", "--config", meter)
    system.cloud("connector", "add", "--group", GROUP, "opcua", "machine", "--config", machine)
    listed = system.cloud("connector", "list", "--group", GROUP).stdout
    assert "meter" in listed and "machine" in listed and "opcua" in listed

    system.function("v1-modbus", EXAMPLES / "v1_modbus_read", "v1_modbus_read.function_handler",
                    "--runtime", "greengrass-v1", "--pinned")  # fmt: skip
    system.route("connector:meter", "connectors/meter/data/#", "cloud")
    system.route("connector:machine", "connectors/machine/data/#", "cloud")
    system.route("connector:meter", "connectors/meter/data/power", "function:v1-modbus")
    system.route("function:v1-modbus", "modbus/adapter/request", "connector:meter")
    system.route("connector:meter", "modbus/adapter/response", "cloud")
    # the example's edge aggregation: the meter's readings in, one summary per tag out
    system.function("window-aggregate", EXAMPLES / "window_aggregate",
                    "window_aggregate.handler", "--pinned", "--env", "WINDOW_S=2")  # fmt: skip
    system.route("connector:meter", "connectors/meter/data/#", "function:window-aggregate")
    system.route("function:window-aggregate", "aggregates/#", "cloud")
    system.deploy()

    power = wait_until(
        lambda: system.payloads("connectors/meter/data/power"),
        timeout=60,
        what="the meter's power at the cloud",
    )
    assert 1000 < power[0]["value"] < 5000 and power[0]["tag"] == "power"
    speed = wait_until(
        lambda: system.payloads("connectors/machine/data/speed"),
        timeout=60,
        what="the machine's speed at the cloud",
    )
    assert 1300 < speed[0]["value"] < 1600 and speed[0]["status"] == "Good"
    assert speed[0]["source_ts"] and speed[0]["server_ts"]
    answers = wait_until(
        lambda: system.payloads("modbus/adapter/response"),
        timeout=60,
        what="the V1 function's Modbus request answered",
    )
    response = answers[0]["response"]
    assert (
        response["status"] == "success" and response["operation"] == "ReadHoldingRegistersRequest"
    )
    assert response["payload"]["function_code"] == 3 and len(response["payload"]["registers"]) == 2
    assert answers[0]["id"].startswith("read-")

    # the example reports the bytes the edge saved, from what the cloud stored
    wait_until(
        lambda: len(system.payloads("aggregates/power")) >= 2,
        timeout=60,
        what="two aggregated power windows at the cloud",
    )
    stored = system.cloud("messages", "aggregates/#", "--all", "--json").stdout
    report = subprocess.run(
        [sys.executable, str(INDUSTRIAL / "bytes_saved.py")],
        input=stored, capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    aggregates = json.loads(stored)  # the same messages the report read (more keep coming)
    sent = sum(len(m["payload"].encode()) for m in aggregates)
    read = sum(json.loads(m["payload"])["bytes_in"] for m in aggregates)
    assert f"bytes read at the edge {read:,}; bytes sent to the cloud {sent:,}" in report.stdout
    # a dozen readings or more per window (fewer for the tags with a deadband)
    assert read > 2 * sent, report.stdout

    system.cloud("connector", "remove", "--group", GROUP, "machine")
    assert "machine" not in system.cloud("connector", "list", "--group", GROUP).stdout
    simulators.stop()
    assert isinstance(simulators.popen, subprocess.Popen)
