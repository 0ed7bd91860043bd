"""Industrial connectors run by a real core: deployed with the group, routed by its table.

A real pymodbus server, the core in-process against the fake cloud (real TLS, broker, spool),
a real device speaking the V1 Modbus adapter's topics through the core's broker.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hedgerow.core.status import heartbeat

from ..conftest import free_port
from ..connectors.modbus_servers import FC_HOLDING, tcp_server
from .fakecloud import FakeCloud
from .helpers import document
from .test_daemon import deployed, running_core, thing_client


@pytest.fixture
async def cloud(tmp_path: Path, test_pki: Any) -> AsyncIterator[FakeCloud]:
    async with FakeCloud(tmp_path / "cloud", test_pki.root) as c:
        yield c


def with_connectors(doc: str, connectors: list[dict[str, Any]]) -> str:
    data = json.loads(doc)
    data["connectors"] = connectors
    return json.dumps(data)


def meter(port: int, **config: Any) -> dict[str, Any]:
    return {
        "kind": "modbus-tcp",
        "name": "meter",
        "version": 1,
        "config": {
            "host": "127.0.0.1",
            "port": port,
            "interval_s": 0.05,
            "v1_adapter": True,
            "backoff_base_s": 0.05,
            "backoff_cap_s": 0.2,
            **config,
            "tags": [
                {"name": "power", "table": "holding_register", "address": 0, "type": "float32"}
            ],
        },
    }


async def test_a_deployed_connector_publishes_to_the_cloud_and_answers_a_device(
    cloud: FakeCloud,
    tmp_path: Path,
) -> None:
    port = free_port()
    device = cloud.thing("plc-client")
    async with tcp_server(port) as server, running_core(cloud, tmp_path / "core") as core:
        await server.set(FC_HOLDING, 0, [0x4248, 0])  # 50.0 as float32
        doc = document(
            "d-1",
            things=("plc-client",),
            subscriptions=(
                ("connector:meter", "connectors/meter/data/#", "cloud"),
                ("thing:plc-client", "modbus/adapter/request", "connector:meter"),
                ("connector:meter", "modbus/adapter/response", "thing:plc-client"),
            ),
        )
        await cloud.deploy(with_connectors(doc, [meter(port)]))
        await deployed(cloud, core, "d-1")
        assert cloud.statuses()[-1]["status"] == "Success"
        await cloud.wait_for(lambda: len(cloud.telemetry("connectors/meter/data/power")) >= 1)
        value = json.loads(cloud.telemetry("connectors/meter/data/power")[0].payload)
        assert value["value"] == 50.0

        async with thing_client(cloud, core, device) as client:
            await client.subscribe("modbus/adapter/response", qos=1)
            await client.publish(
                "modbus/adapter/request",
                json.dumps(
                    {
                        "request": {
                            "operation": "ReadHoldingRegistersRequest",
                            "device": 1,
                            "address": 0,
                            "count": 2,
                        },
                        "id": "TestRequest",
                    }
                ).encode(),
                qos=1,
            )
            message = await asyncio.wait_for(client.get_message(), 10)
        assert json.loads(message.payload) == {
            "response": {
                "status": "success",
                "device": 1,
                "operation": "ReadHoldingRegistersRequest",
                "payload": {"function_code": 3, "registers": [0x4248, 0]},
            },
            "id": "TestRequest",
        }

        snapshot = core.snapshot()
        report = snapshot.connectors["meter"]
        assert report["state"] == "RUNNING" and report["kind"] == "modbus-tcp"
        assert isinstance(report["polls"], int) and report["polls"] >= 1
        assert json.loads(heartbeat(snapshot))["connectors"]["meter"]["requests"] == 1
        assert snapshot.counters["to_connectors"] == 1

        # a config edited into a bad one is refused by the core too, naming the field;
        # the running deployment (and its connector) stays
        bad = meter(port, timeout_s=-1)
        await cloud.deploy(with_connectors(document("d-2"), [bad]))
        await deployed(cloud, core, "d-2")
        status = [s for s in cloud.statuses() if s["deployment_id"] == "d-2"][-1]
        assert status["status"] in ("Failure", "RolledBack")
        assert "connectors[meter].timeout_s" in status["detail"]
        assert core.agent.current is not None and core.agent.current.deployment_id == "d-1"
        assert core.connectors.states()["meter"].value == "RUNNING"

        # a deployment without the connector stops it
        await cloud.deploy(document("d-3"))
        await deployed(cloud, core, "d-3")
        assert core.connectors.states() == {}
