"""Rollout leg of ``bench/fleet.py``: from ``rollout start`` to every core on the new deployment.

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
staged (canary 1, waves 10 % 50 % 100 %).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from tests.conftest import free_port

from hedgerow.client import Client, ProtocolVersion
from hedgerow.cloud import core_bundle
from hedgerow.cloud.config import Listen
from hedgerow.cloud.datadir import init_data_dir
from hedgerow.contract import CoreLeaf, DeploymentNotification, core_topic
from hedgerow.contract.deployment import DeploymentStatus, StatusReport
from hedgerow.contract.heartbeat import Heartbeat
from hedgerow.tlscontext import client_context


class SimCore:
    """One simulated core: MQTT session + device HTTPS client, answering deployments.

    ``listen`` names more leaves of its topics to subscribe to (when each last arrived is
    kept in ``heard``); ``beat_every`` sends a heartbeat that often as well as on changes.
    """

    def __init__(
        self,
        name: str,
        files: dict[str, bytes],
        root: Path,
        ports: dict[str, int],
        *,
        listen: tuple[CoreLeaf, ...] = (),
        beat_every: float | None = None,
        login: tuple[str, str] | None = None,
    ):
        self.name = name
        #: user and password at a broker that asks the cloud (RabbitMQ: MQTT 3.1.1, plain
        #: TCP on loopback); None: mutual TLS with the core's certificate, MQTT 5
        self.login = login
        self.listen = listen
        self.beat_every = beat_every
        self.heard: dict[str, float] = {}
        self.mqtt: Client | None = None
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
            (
                Client(
                    "127.0.0.1",
                    self.ports["mqtt"],
                    client_id=self.name,
                    ssl=self.ssl,
                    server_hostname="127.0.0.1",
                )
                if self.login is None
                else Client(
                    "127.0.0.1",
                    self.ports["mqtt"],
                    client_id=self.name,
                    username=self.login[0],
                    password=self.login[1],
                    version=ProtocolVersion.V311,
                )
            ) as mqtt,
        ):
            leaves = (CoreLeaf.DEPLOYMENTS, *self.listen)
            await mqtt.subscribe(*(core_topic(self.name, leaf) for leaf in leaves), qos=1)
            await self._beat(mqtt)
            self.mqtt = mqtt
            self.connected.set()
            beating = asyncio.ensure_future(self._beat_every(mqtt))
            try:
                await self._answer(mqtt, http)
            finally:
                beating.cancel()

    async def _beat_every(self, mqtt: Client) -> None:
        while self.beat_every is not None:
            await asyncio.sleep(self.beat_every)
            await self._beat(mqtt)

    async def _answer(self, mqtt: Client, http: httpx.AsyncClient) -> None:
        deployments = core_topic(self.name, CoreLeaf.DEPLOYMENTS)
        async for message in mqtt.messages():
            if message.topic != deployments:
                self.heard[message.topic.rsplit("/", 1)[-1]] = time.perf_counter()
                continue
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
        state = (await api.get(f"/api/v1/rollouts/{rollout_id}?targets=false")).json()
        if state["state"] == "completed":
            return time.perf_counter() - started
        if state["state"] != "running" or time.perf_counter() - started > timeout:
            raise RuntimeError(f"rollout {rollout_id}: {state['state']} {state['reason']}")
        # The view lists every group: polled at 20 Hz through a 5,000-group rollout it took
        # most of the replica's CPU. Poll within ~2 % of the time taken so far instead.
        await asyncio.sleep(min(0.5, 0.05 + (time.perf_counter() - started) / 50))


SHAPES: dict[str, dict[str, Any]] = {
    "one wave": {"waves": ["100%"]},
    "canary 1, 10% 50% 100%": {"canary": 1, "waves": ["10%", "50%", "100%"]},
}


@dataclass(frozen=True)
class RolloutResult:
    cores: int
    #: seconds from ``POST /api/v1/rollouts`` to ``completed``, per shape, one per run
    seconds: dict[str, list[float]]
    applied: int

    def table(self) -> list[str]:
        lines = [
            f"| rollout to {self.cores} simulated cores, soak 0 | median (s) | min | max |",
            "|---|---|---|---|",
        ]
        for name, values in self.seconds.items():
            lines.append(
                f"| {name} | {statistics.median(values):.2f} | {min(values):.2f} | "
                f"{max(values):.2f} |"
            )
        return lines


async def _wait_serving(api: httpx.AsyncClient, cloud: subprocess.Popen[bytes]) -> None:
    for _ in range(600):
        if cloud.poll() is not None:
            raise RuntimeError(f"hedgerow cloud serve ended with status {cloud.returncode}")
        try:
            if (await api.get("/api/v1/status")).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("hedgerow cloud serve did not answer within 60 s")


async def _template(api: httpx.AsyncClient) -> None:
    """The group ``template`` with one pinned function: what every rollout spreads."""
    (await api.post("/api/v1/groups", json={"name": "template"})).raise_for_status()
    uploaded = await api.post(
        "/api/v1/artifacts", content=tiny_zip(), headers={"content-type": "application/zip"}
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


async def _sim_cores(
    api: httpx.AsyncClient, count: int, root: Path, ports: dict[str, int]
) -> list[SimCore]:
    sims: list[SimCore] = []
    for index in range(count):
        group = f"site-{index:03d}"
        made = await api.post("/api/v1/groups", json={"name": group, "labels": {"fleet": "bench"}})
        made.raise_for_status()
        core = await api.post("/api/v1/cores", json={"name": f"gw-{index:03d}", "group": group})
        core.raise_for_status()
        files = core_bundle.read_bundle(base64.b64decode(core.json()["bundle"]))
        sims.append(SimCore(f"gw-{index:03d}", files, root / "cores", ports))
    return sims


async def run(cores: int, runs: int) -> RolloutResult:
    """``runs`` rollouts of each shape over ``cores`` simulated cores of one cloud."""
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
                await _wait_serving(api, cloud)
                setup = time.perf_counter()
                await _template(api)
                sims = await _sim_cores(api, cores, root, ports)
                tasks = [asyncio.create_task(s.run(), name=s.name) for s in sims]
                await asyncio.wait_for(
                    asyncio.gather(*(s.connected.wait() for s in sims)), timeout=120
                )
                print(
                    f"  setup: {cores} groups, cores and MQTT sessions in "
                    f"{time.perf_counter() - setup:.1f} s",
                    flush=True,
                )
                seconds: dict[str, list[float]] = {name: [] for name in SHAPES}
                for index in range(runs):
                    for name, shape in SHAPES.items():
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
                        took = await rollout(api, body, timeout=120)
                        seconds[name].append(took)
                        print(f"  run {index + 1}, {name}: {took:.2f} s", flush=True)
                applied = sum(s.applied for s in sims)
                print(f"  deployments applied by the simulated cores: {applied}", flush=True)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            cloud.terminate()
            cloud.wait(timeout=20)
            log.close()
    return RolloutResult(cores, seconds, applied)
