"""The core with the real function runtime: a deployed function handles device messages and
its output reaches the cloud; a function that cannot start makes the deployment roll back."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

from hedgerow.client import Client
from hedgerow.core.config import load_config
from hedgerow.core.daemon import CoreDaemon

from ..conftest import free_port
from .fakecloud import FakeCloud
from .helpers import document, function_entry

EXAMPLE = (
    Path(__file__).resolve().parents[2]
    / "examples"
    / "functions"
    / "temp_correct"
    / "temp_correct.py"
)


def zipped(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return buf.getvalue()


async def test_real_functions_deploy_route_and_roll_back(tmp_path: Path, test_pki: Any) -> None:
    async with FakeCloud(tmp_path / "cloud", test_pki.root) as cloud:
        port = free_port()
        config = load_config(
            cloud.provision(tmp_path / "core", port, "[spool]\nfsync = 'normal'\n")
        )
        good = zipped({"temp_correct.py": EXAMPLE.read_text()})
        entry = function_entry("temp-correct", good, handler="temp_correct.handler", pinned=True,
                               environment={"FACTOR": "5"})  # fmt: skip
        subs = (("thing:bme680-1", "sensors/#", "function:temp-correct"),
                ("function:temp-correct", "corrected/#", "cloud"))  # fmt: skip
        async with CoreDaemon(config) as core:
            await cloud.deploy(document("d-1", things=("bme680-1",), functions=(entry,), subscriptions=subs),
                               artifacts=(good,))  # fmt: skip
            await cloud.wait_for(lambda: any(s["deployment_id"] == "d-1" and s["status"] in ("Success", "Failure", "RolledBack") for s in cloud.statuses()), 30)  # fmt: skip
            assert cloud.statuses()[-1]["status"] == "Success", cloud.statuses()
            assert core.functions.states() == {"temp-correct": "RUNNING"}
            ctx = cloud.thing_context(cloud.thing("bme680-1"))
            async with Client(
                "127.0.0.1", port, client_id="bme680-1", ssl=ctx, server_hostname="127.0.0.1"
            ) as c:
                reading = {"temperature": 30.0, "cpu_temperature": 55.0}
                await c.publish("sensors/bme680-1", json.dumps(reading).encode(), qos=1)
                await cloud.wait_for(lambda: bool(cloud.telemetry("corrected/")), 20)
            out = json.loads(cloud.telemetry("corrected/")[0].payload)
            assert out["temperature"] == 25.0 and out["raw_temperature"] == 30.0

            broken = zipped(
                {"temp_correct.py": "raise ImportError('this function cannot start')\n"}
            )
            bad = function_entry(
                "temp-correct", broken, handler="temp_correct.handler", pinned=True, version=2
            )
            await cloud.deploy(document("d-2", things=("bme680-1",), functions=(bad,), subscriptions=subs),
                               artifacts=(broken,))  # fmt: skip
            await cloud.wait_for(lambda: any(s["deployment_id"] == "d-2" and s["status"] in ("Success", "Failure", "RolledBack") for s in cloud.statuses()), 30)  # fmt: skip
            last = cloud.statuses()[-1]
            assert last["status"] == "RolledBack" and "temp-correct" in last["detail"]
            assert core.agent.current is not None and core.agent.current.deployment_id == "d-1"
            assert core.functions.states() == {"temp-correct": "RUNNING"}


async def test_heartbeat_follows_changes_with_the_last_error(tmp_path: Path, test_pki: Any) -> None:
    """With the periodic heartbeat 10 minutes away, the cloud still sees a deployment's
    functions RUNNING and a handler's exception text within seconds (debounced)."""
    topic = "$hedgerow/cores/pi-1/heartbeat"
    async with FakeCloud(tmp_path / "cloud", test_pki.root) as cloud:
        port = free_port()
        config = load_config(
            cloud.provision(
                tmp_path / "core",
                port,
                "[spool]\nfsync = 'normal'\n[status]\nheartbeat_interval = 600\n",
            )
        )
        code = zipped({
            "strict.py": "def handler(event, context):\n"
                         "    if 'value' not in event:\n"
                         "        raise ValueError('reading without a value')\n"
                         "    return event\n"
        })  # fmt: skip
        entry = function_entry("strict", code, handler="strict.handler", pinned=True)
        subs = (("thing:bme680-1", "sensors/#", "function:strict"),)

        def beats() -> list[dict[str, Any]]:
            return [json.loads(m.payload) for m in cloud.telemetry(topic)]

        async with CoreDaemon(config) as core:
            assert config.name == "pi-1"
            await cloud.wait_for(lambda: len(beats()) >= 1, 10)  # the connect heartbeat
            await cloud.deploy(document("d-1", things=("bme680-1",), functions=(entry,), subscriptions=subs),
                               artifacts=(code,))  # fmt: skip
            await cloud.wait_for(lambda: any(b["functions"] == {"strict": "RUNNING"} and b["deployment"] == "d-1" for b in beats()), 10)  # fmt: skip
            ctx = cloud.thing_context(cloud.thing("bme680-1"))
            async with Client(
                "127.0.0.1", port, client_id="bme680-1", ssl=ctx, server_hostname="127.0.0.1"
            ) as c:
                await c.publish("sensors/bme680-1", b'{"temperature": 3}', qos=1)
                await cloud.wait_for(lambda: "function_errors" in beats()[-1], 10)
            errors = beats()[-1]["function_errors"]["strict"]
            assert errors["failed"] == 1
            assert errors["last_error"] == "ValueError: reading without a value"
            assert core.functions.states() == {"strict": "RUNNING"}
        # a few change heartbeats, not one per message (the pacer's own test bounds the rate)
        assert len(beats()) < 10
