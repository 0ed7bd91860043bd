"""Fleet operations: how long a rollout takes from ``rollout start`` to every core on it.

    .venv/bin/python bench/fleet.py [--cores 100] [--runs 3] [--quick]

A real ``hedgerow cloud serve`` process (SQLite, loopback) and, in this process, N
simulated cores: each is one MQTT session at the cloud's endpoint with its own core
certificate (mutual TLS) that does what a core does on a deployment notification — fetch
the signed document over device HTTPS (mutual TLS), report ``InProgress`` then
``Success`` (QoS 1) and send a heartbeat naming the deployment with ``health: healthy``.
No functions run: what is measured is the control plane (the rollout job, deployments,
notifications, status and heartbeat handling), not a core applying a deployment.

Each run starts a rollout of a template group's function to every core's group with soak
0 and reports the time from the ``POST /api/v1/rollouts`` until the rollout says
``completed`` (every group healthy on its new deployment), for all groups in one wave and
staged (canary 1, waves 10 % 50 % 100 %). Target (issue 15): ≤ 10 s for 100 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx

from hedgerow.client import Client
from hedgerow.cloud import core_bundle
from hedgerow.cloud.config import Listen
from hedgerow.cloud.datadir import init_data_dir
from hedgerow.contract import CoreLeaf, DeploymentNotification, core_topic
from hedgerow.contract.deployment import DeploymentStatus, StatusReport
from hedgerow.contract.heartbeat import Heartbeat
from hedgerow.tlscontext import client_context

TARGET_S = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} CPU {cpu}, Python {platform.python_version()}, load average {load}"


class SimCore:
    """One simulated core: MQTT session + device HTTPS client, answering deployments."""

    def __init__(self, name: str, files: dict[str, bytes], root: Path, ports: dict[str, int]):
        self.name = name
        directory = root / name
        directory.mkdir(parents=True)
        for key in (core_bundle.CORE_CERT, core_bundle.CORE_KEY, core_bundle.ROOT_CA):
            (directory / key).write_bytes(files[key])
        self.ssl = client_context(
            str(directory / core_bundle.ROOT_CA),
            str(directory / core_bundle.CORE_CERT),
            str(directory / core_bundle.CORE_KEY),
        )
        self.ports = ports
        self.running: str | None = None
        self.applied = 0
        self.connected = asyncio.Event()

    async def run(self) -> None:
        http = httpx.AsyncClient(
            base_url=f"https://127.0.0.1:{self.ports['device']}", verify=self.ssl, timeout=30
        )
        async with (
            http,
            Client(
                "127.0.0.1",
                self.ports["mqtt"],
                client_id=self.name,
                ssl=self.ssl,
                server_hostname="127.0.0.1",
            ) as mqtt,
        ):
            await mqtt.subscribe(core_topic(self.name, CoreLeaf.DEPLOYMENTS), qos=1)
            await self._beat(mqtt)
            self.connected.set()
            async for message in mqtt.messages():
                deployment_id = DeploymentNotification.from_json(message.payload).deployment_id
                if deployment_id == self.running:
                    continue
                response = await http.get(f"/core/v1/deployments/{deployment_id}")
                response.raise_for_status()
                json.loads(response.json()["document"])  # a core parses what it fetched
                status = core_topic(self.name, CoreLeaf.DEPLOYMENT_STATUS)
                for step in (DeploymentStatus.IN_PROGRESS, DeploymentStatus.SUCCESS):
                    await mqtt.publish(status, StatusReport(deployment_id, step).to_json(), qos=1)
                self.running = deployment_id
                self.applied += 1
                await self._beat(mqtt)

    async def _beat(self, mqtt: Client) -> None:
        beat = Heartbeat(
            version="sim", deployment=self.running, health="healthy", functions={"tiny": "RUNNING"}
        )
        await mqtt.publish(core_topic(self.name, CoreLeaf.HEARTBEAT), beat.to_json(), qos=0)


def tiny_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("tiny.py", "def handler(event, context):\n    return event\n")
    return buffer.getvalue()


async def rollout(api: httpx.AsyncClient, body: dict[str, Any], timeout: float) -> float:
    started = time.perf_counter()
    response = await api.post("/api/v1/rollouts", json=body)
    response.raise_for_status()
    rollout_id = response.json()["id"]
    while True:
        state = (await api.get(f"/api/v1/rollouts/{rollout_id}")).json()
        if state["state"] == "completed":
            return time.perf_counter() - started
        if state["state"] != "running" or time.perf_counter() - started > timeout:
            raise RuntimeError(f"rollout {rollout_id}: {state['state']} {state['reason']}")
        await asyncio.sleep(0.05)


async def main_async(args: argparse.Namespace) -> int:
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="hedgerow-bench-fleet-") as tmp:
        root = Path(tmp)
        ports = {"api": free_port(), "device": free_port(), "mqtt": free_port()}
        init_data_dir(
            root / "cloud",
            api=Listen("127.0.0.1", ports["api"]),
            device=Listen("127.0.0.1", ports["device"]),
            mqtt=Listen("127.0.0.1", ports["mqtt"]),
        )
        log = (root / "cloud.log").open("wb")
        cloud = subprocess.Popen(
            [sys.executable, "-m", "hedgerow", "cloud", "serve", "--data", str(root / "cloud")],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        tasks: list[asyncio.Task[None]] = []
        try:
            token = (root / "cloud" / "admin-token").read_text().strip()
            api = httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{ports['api']}",
                headers={"authorization": f"Bearer {token}"},
                timeout=120,
            )
            async with api:
                for _ in range(600):
                    try:
                        if (await api.get("/api/v1/status")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    await asyncio.sleep(0.1)
                setup = time.perf_counter()
                await api.post("/api/v1/groups", json={"name": "template"})
                uploaded = await api.post(
                    "/api/v1/artifacts",
                    content=tiny_zip(),
                    headers={"content-type": "application/zip"},
                )
                uploaded.raise_for_status()
                created = await api.post(
                    "/api/v1/groups/template/functions",
                    json={
                        "name": "tiny",
                        "handler": "tiny.handler",
                        "artifact": uploaded.json()["sha256"],
                        "pinned": True,
                    },
                )
                created.raise_for_status()
                sims: list[SimCore] = []
                for index in range(args.cores):
                    group = f"site-{index:03d}"
                    made = await api.post(
                        "/api/v1/groups", json={"name": group, "labels": {"fleet": "bench"}}
                    )
                    made.raise_for_status()
                    core = await api.post(
                        "/api/v1/cores", json={"name": f"gw-{index:03d}", "group": group}
                    )
                    core.raise_for_status()
                    files = core_bundle.read_bundle(base64.b64decode(core.json()["bundle"]))
                    sims.append(SimCore(f"gw-{index:03d}", files, root / "cores", ports))
                tasks = [asyncio.create_task(s.run(), name=s.name) for s in sims]
                await asyncio.wait_for(
                    asyncio.gather(*(s.connected.wait() for s in sims)), timeout=120
                )
                print(
                    f"setup: {args.cores} groups, cores and MQTT sessions in "
                    f"{time.perf_counter() - setup:.1f} s"
                )
                shapes = {
                    "one wave": {"waves": ["100%"]},
                    "canary 1, 10% 50% 100%": {"canary": 1, "waves": ["10%", "50%", "100%"]},
                }
                results: dict[str, list[float]] = {name: [] for name in shapes}
                for run in range(args.runs):
                    for name, shape in shapes.items():
                        for t in tasks:
                            if t.done():
                                raise RuntimeError(
                                    f"simulated core {t.get_name()} ended: {t.exception()}"
                                )
                        body = {
                            "labels": {"fleet": "bench"},
                            "from_group": "template",
                            "soak_s": 0,
                            **shape,
                        }
                        seconds = await rollout(api, body, timeout=120)
                        results[name].append(seconds)
                        print(f"  run {run + 1}, {name}: {seconds:.2f} s", flush=True)
                applied = sum(s.applied for s in sims)
                print(f"deployments applied by the simulated cores: {applied}")
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            cloud.terminate()
            cloud.wait(timeout=20)
            log.close()
    print()
    print(f"| rollout to {args.cores} simulated cores, soak 0 | median (s) | min | max | target |")
    print("|---|---|---|---|---|")
    for name, values in results.items():
        verdict = "met" if statistics.median(values) <= TARGET_S else "MISSED"
        print(
            f"| {name} | {statistics.median(values):.2f} | {min(values):.2f} | "
            f"{max(values):.2f} | ≤ {TARGET_S:g} s ({verdict}) |"
        )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cores", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="20 cores, 1 run")
    args = parser.parse_args()
    if args.quick:
        args.cores, args.runs = 20, 1
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
