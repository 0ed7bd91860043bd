"""The cloud at fleet scale: thousands of cores and a discovery storm, 1 and 2 replicas.

    .venv/bin/python bench/fleet_scale.py                    # 2,000 cores, 1 and 2 replicas
    .venv/bin/python bench/fleet_scale.py --cores 5000 --discoveries 50000
    .venv/bin/python bench/fleet_scale.py --quick            # 200 cores, 2,000 discoveries
    .venv/bin/python bench/fleet_scale.py --broker rabbitmq  # the machine's RabbitMQ instead

With ``--broker rabbitmq`` the external broker is the machine's RabbitMQ (3.10, set up by
``.ci/rabbitmq-mqtt``: MQTT 3.1.1 on 127.0.0.1:1885): the cores log in with the password in
their bundle, RabbitMQ's HTTP auth backend asks the replicas through a small TCP load
balancer in front of their API ports (``tests/cloud/balancer.py``), every group routes
``plant/#`` to the cloud (one more API call per group at registration), and telemetry goes
under each core's ``routed/`` prefix as a 3.1.1 core sends it.

Per replica count, from scratch: a fresh PostgreSQL schema (127.0.0.1:5432, db ``test``),
a private Mosquitto with mutual TLS on a free port (the external broker the cores and the
replicas share), and N ``hedgerow cloud serve --broker ... --replica-id rK`` processes.
The simulated cores run in this process (``fleet_rollout.SimCore``: a real MQTT session
over mutual TLS with its own core certificate, a heartbeat every ``--beat`` seconds,
fetching and acknowledging deployments over device HTTPS); the discovery devices run in
one more process (``cloud.discovery_client``), spread over the replicas' device ports.

Phases and figures:
1. *register*: groups and cores through the API (cores/s);
2. *connect*: every core's session up at once (seconds until all connected);
3. *steady*: ``--steady`` seconds of heartbeats: CPU of each replica and of Mosquitto per
   1,000 connected cores, and API latency (p50/p99 of reads spread over the replicas);
4. *ingest*: every core publishes ``--per-core`` QoS 1 readings (on RabbitMQ, 100 cores at a
   time); messages/s from the first publish until all are in the database, and how many
   acknowledged ones are missing;
5. *deploy*: a rollout of one function to every group (one wave, soak 0), seconds until
   every core runs it;
6. *revoke*: a thing's certificate revoked; seconds until its core got the new list;
7. *discover*: ``--discoveries`` GreenGrass discoveries by ``--devices`` devices, each a
   new mutual-TLS connection (answers/s, p50/p99), API latency measured meanwhile.

Everything shares the machine's CPUs (load generator, replicas, Mosquitto, PostgreSQL);
the per-unit costs are what the results and ``docs/scale.md`` extrapolate from.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import mosquitto_conf  # noqa: E402
from fleet import load_average, machine  # noqa: E402
from fleet_rollout import SimCore, _template, _wait_serving, rollout  # noqa: E402
from tests.cloud.balancer import Balancer  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.rabbitmq import BROKER_URL, MQTT_PORT, RabbitMQ, rabbitmq_turn  # noqa: E402

from cloud import PG_ADMIN, percentile  # noqa: E402
from hedgerow.client import Client, ClientError, ConnectionLost  # noqa: E402
from hedgerow.cloud import core_bundle  # noqa: E402
from hedgerow.cloud.config import Listen  # noqa: E402
from hedgerow.cloud.datadir import init_data_dir  # noqa: E402
from hedgerow.contract import CoreLeaf  # noqa: E402
from hedgerow.contract.topics import routed_topic  # noqa: E402
from hedgerow.mqtt.packets import Properties  # noqa: E402

#: requests in flight while registering and while sampling the API
CONCURRENCY = 16
#: sessions being set up at once in the connect phase (a power cut's storm, bounded)
CONNECTING = 200
#: ... on RabbitMQ, whose every login asks the cloud over HTTP (200 at once timed logins out)
CONNECTING_RABBITMQ = 50
#: cores sending their readings at once in the ingest phase on RabbitMQ: each core's first
#: publish makes RabbitMQ ask the cloud about the topic, and 5,000 such questions at once
#: overran the auth backend and left the node unresponsive to pings for 30 s (Mosquitto,
#: checking ACLs itself, takes every core at once)
INGESTING_RABBITMQ = 100
#: tries per core in the connect phase before the run gives up
CONNECT_ATTEMPTS = 10
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    replicas: int
    cores: int
    figures: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: sessions that ended after they were up and were connected again
    reconnects: int = 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class Fleet:
    """One replica count's world: database schema, broker, replicas, API clients."""

    def __init__(self, root: Path, replicas: int, broker: str = "mosquitto") -> None:
        self.root = root
        self.replicas = replicas
        #: "mosquitto" (a private one, mutual TLS) or "rabbitmq" (the machine's, MQTT 3.1.1,
        #: its HTTP auth backend asking the replicas through a balancer)
        self.broker_kind = broker
        self.rabbit: RabbitMQ | None = None
        self.balancer: Balancer | None = None
        self.stack = contextlib.ExitStack()
        self.broker_pid: int | None = None
        self.schema = f"hedgerow_scale_{uuid.uuid4().hex[:8]}"
        self.database = (
            f"postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{self.schema}"
        )
        self.data = root / "cloud"
        self.broker_port = free_port()
        self.api_ports = [free_port() for _ in range(replicas)]
        self.device_ports = [free_port() for _ in range(replicas)]
        self.processes: list[subprocess.Popen[bytes]] = []
        self.broker: subprocess.Popen[bytes] | None = None
        self.apis: list[httpx.AsyncClient] = []

    async def __aenter__(self) -> Fleet:
        admin = sa.create_engine(PG_ADMIN)
        with admin.begin() as connection:
            connection.execute(sa.text(f'CREATE SCHEMA "{self.schema}"'))
        admin.dispose()
        rabbit = self.broker_kind == "rabbitmq"
        if rabbit:
            self.broker_port = MQTT_PORT
        init_data_dir(
            self.data,
            database=self.database,
            api=Listen("127.0.0.1", self.api_ports[0]),
            device=Listen("127.0.0.1", self.device_ports[0]),
            mqtt=Listen("127.0.0.1", free_port() if rabbit else self.broker_port),
            broker=BROKER_URL if rabbit else f"mqtts://127.0.0.1:{self.broker_port}",
        )
        broker_flags: list[str] = []
        if rabbit:
            # RabbitMQ asks the replicas about every login through a load balancer
            self.balancer = Balancer([("127.0.0.1", port) for port in self.api_ports])
            await self.balancer.__aenter__()
            self.rabbit = self.stack.enter_context(rabbitmq_turn(self.data, self.balancer.url))
            broker_flags = ["--broker-protocol", "3.1.1", "--broker-login", "password"]
            self.broker_pid = int(subprocess.check_output(["pgrep", "-o", "beam.smp"]).split()[0])
        else:
            pki_dir = self.data / "pki"
            conf = mosquitto_conf.config(
                self.broker_port,
                log=self.root / "mosquitto.log",
                tls=(pki_dir / "root-ca.pem", pki_dir / "server.cert.pem", pki_dir / "server.key"),
            )
            if os.geteuid() == 0:
                conf += "user root\n"  # else it drops to `mosquitto`, who cannot read the key
            self.broker = subprocess.Popen(
                mosquitto_conf.command(self.root / "mosquitto.conf", conf),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.broker_pid = self.broker.pid
        log = (self.root / "replicas.log").open("ab")
        token = (self.data / "admin-token").read_text().strip()
        for index in range(self.replicas):
            self.processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "hedgerow",
                        "cloud",
                        "serve",
                        "--data",
                        str(self.data),
                        "--replica-id",
                        self.rabbit.replica(f"r{index}") if self.rabbit else f"r{index}",
                        "--api-port",
                        str(self.api_ports[index]),
                        "--device-port",
                        str(self.device_ports[index]),
                        *broker_flags,
                    ],  # fmt: skip
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            self.apis.append(
                httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{self.api_ports[index]}",
                    headers={"authorization": f"Bearer {token}"},
                    timeout=120,
                    # uvicorn closes a connection idle 5 s: a pooled one reused at that
                    # moment fails (httpx.ReadError). Never reuse one idle that long.
                    limits=httpx.Limits(keepalive_expiry=2.0),
                )
            )
        for api, process in zip(self.apis, self.processes, strict=True):
            await _wait_serving(api, process)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for api in self.apis:
            await api.aclose()
        for process in [*self.processes, self.broker]:
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(timeout=20)
        if self.balancer is not None:
            await self.balancer.__aexit__(None, None, None)
        self.stack.close()  # RabbitMQ: the replicas' session queues deleted, its turn given back
        admin = sa.create_engine(PG_ADMIN)
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{self.schema}" CASCADE'))
        admin.dispose()

    def api(self, index: int) -> httpx.AsyncClient:
        return self.apis[index % len(self.apis)]

    def stored(self) -> list[bytes]:
        engine = sa.create_engine(self.database.replace("postgresql://", "postgresql+psycopg://"))
        try:
            with engine.connect() as db:
                return [bytes(p) for p in db.execute(sa.text("SELECT payload FROM messages"))
                        .scalars()]  # fmt: skip
        finally:
            engine.dispose()

    def cpu(self) -> list[float]:
        """CPU seconds of each replica, then of the broker."""
        pids = [p.pid for p in self.processes] + ([self.broker_pid] if self.broker_pid else [])
        return [cpu_seconds(pid) for pid in pids]


async def bounded(count: int, work: Any, label: str, every: int = 500) -> float:
    """Run ``work(i)`` for i < count, CONCURRENCY at a time, with progress; the seconds."""
    started = time.perf_counter()
    queue = iter(range(count))
    done = 0

    async def worker() -> None:
        nonlocal done
        for index in queue:
            await work(index)
            done += 1
            if done % every == 0:
                print(f"    {label}: {done}/{count}", flush=True)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return time.perf_counter() - started


async def api_latencies(fleet: Fleet, names: list[str], requests: int) -> list[float]:
    """Reads a console does, spread over the replicas: one core, one group's page."""
    latencies: list[float] = []

    async def one(index: int) -> None:
        name = random.choice(names)
        started = time.perf_counter()
        path = f"/api/v1/cores/{name}" if index % 2 else "/api/v1/groups?limit=50"
        (await fleet.api(index).get(path)).raise_for_status()
        latencies.append(time.perf_counter() - started)

    await bounded(requests, one, "API reads", every=10**9)
    return latencies


async def run_one(args: argparse.Namespace, replicas: int) -> Run:
    result = Run(replicas, args.cores)
    figures = result.figures
    print(f"\n== {replicas} replica(s), {args.cores} cores", flush=True)
    prefix = "hedgerow-bench-scale-"
    kept = contextlib.nullcontext(tempfile.mkdtemp(prefix=prefix)) if args.keep else None
    with kept or tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        root = Path(tmp)
        if args.keep:
            print(f"  logs kept in {root} (replicas.log, mosquitto.log)", flush=True)
        async with Fleet(root, replicas, args.broker) as fleet:
            await _template(fleet.api(0))
            sims: list[SimCore] = []
            # RabbitMQ keeps retained messages and sessions across runs: names of this run's own
            prefix = f"gw-{fleet.rabbit.tag}-" if fleet.rabbit is not None else "gw-"
            names = [f"{prefix}{i:05d}" for i in range(args.cores)]

            async def register(index: int) -> None:
                api = fleet.api(index)
                group = f"site-{index:05d}"
                made = await api.post(
                    "/api/v1/groups", json={"name": group, "labels": {"fleet": "scale"}}
                )
                made.raise_for_status()
                if fleet.rabbit is not None:  # a route to the cloud, as a real group has
                    route = {"source": "shadow", "topic": "plant/#", "target": "cloud"}
                    added = await api.post(f"/api/v1/groups/{group}/subscriptions", json=route)
                    added.raise_for_status()
                core = await api.post("/api/v1/cores", json={"name": names[index], "group": group})
                core.raise_for_status()
                files = core_bundle.read_bundle(base64.b64decode(core.json()["bundle"]))
                login = None
                if fleet.rabbit is not None:
                    cloud = tomllib.loads(files[core_bundle.CONFIG].decode())["cloud"]
                    login = (cloud["mqtt_username"], cloud["mqtt_password"])
                ports = {"mqtt": fleet.broker_port, "device": fleet.device_ports[index % replicas]}
                sims.append(
                    SimCore(
                        names[index],
                        files,
                        root / "cores",
                        ports,
                        listen=(CoreLeaf.REVOCATIONS,),
                        beat_every=args.beat,
                        login=login,
                    )  # fmt: skip
                )

            took = await bounded(args.cores, register, "registered")
            figures["register cores/s"] = args.cores / took
            print(f"  registered {args.cores} groups and cores in {took:.1f} s", flush=True)

            gate = asyncio.Semaphore(CONNECTING if fleet.rabbit is None else CONNECTING_RABBITMQ)
            tasks: list[asyncio.Task[None]] = []
            started = time.perf_counter()

            retries = 0

            async def keep_up(sim: SimCore, running: asyncio.Task[None]) -> None:
                """Connected again whenever the session ends, as a real core reconnects
                (RabbitMQ under load can process a stale CONNECT of an abandoned attempt
                late, which takes the client id over from the live session)."""
                while True:
                    with contextlib.suppress(ClientError, OSError):
                        await running
                    sim.connected.clear()
                    result.reconnects += 1
                    await asyncio.sleep(random.uniform(0.5, 2.0))
                    running = asyncio.create_task(sim.run(), name=sim.name)

            async def connect(sim: SimCore) -> None:
                """Up, as a core comes up after a power cut: a refused or unanswered connect
                is tried again after a jittered pause (a broker that asks the cloud about
                every login answers slowly while thousands log in at once)."""
                nonlocal retries
                async with gate:
                    for attempt in range(CONNECT_ATTEMPTS):
                        task = asyncio.create_task(sim.run(), name=sim.name)
                        done, _ = await asyncio.wait(
                            {task, asyncio.ensure_future(sim.connected.wait())},
                            return_when=asyncio.FIRST_COMPLETED,
                        )
                        if task not in done:
                            tasks.append(asyncio.create_task(keep_up(sim, task)))
                            return
                        error = task.exception()
                        if attempt + 1 == CONNECT_ATTEMPTS or not isinstance(
                            error, ClientError | OSError
                        ):
                            raise RuntimeError(f"{sim.name} ended: {error!r}")
                        retries += 1
                        await asyncio.sleep(random.uniform(0.5, 2.0) * (attempt + 1))

            try:
                await asyncio.gather(*(connect(s) for s in sims))
                figures["connect all s"] = time.perf_counter() - started
                figures["connect retries"] = retries
                print(
                    f"  {args.cores} sessions up in {figures['connect all s']:.1f} s "
                    f"({retries} connects tried again)",
                    flush=True,
                )
                await steady(args, fleet, names, figures)
                await ingest(args, fleet, sims, figures, result.notes)
                took = await rollout(
                    fleet.api(0),
                    {
                        "labels": {"fleet": "scale"},
                        "from_group": "template",
                        "soak_s": 0,
                        "waves": ["100%"],
                    },  # fmt: skip
                    timeout=max(600.0, args.cores * 0.3),
                )
                figures["deploy to all s"] = took
                print(f"  rollout to every core in {took:.1f} s", flush=True)
                await revoke(fleet, sims, figures)
                await discover(args, fleet, root, names, figures)
                figures["sessions connected again"] = result.reconnects
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    return result


async def steady(
    args: argparse.Namespace, fleet: Fleet, names: list[str], figures: dict[str, float]
) -> None:
    # CPU while the fleet only keeps its sessions and heartbeats (nobody reads the API)
    before, started = fleet.cpu(), time.perf_counter()
    await asyncio.sleep(args.steady)
    after, elapsed = fleet.cpu(), time.perf_counter() - started
    latencies = await api_latencies(fleet, names, 200)
    per_k = 1000 / args.cores
    beats = args.cores * elapsed / args.beat  # every replica handles every heartbeat
    for index in range(fleet.replicas):
        used = after[index] - before[index]
        figures[f"replica {index} CPU % per 1k cores"] = used / elapsed * 100 * per_k
        figures[f"replica {index} CPU ms per heartbeat"] = used / beats * 1000
    figures["broker CPU % per 1k cores"] = (after[-1] - before[-1]) / elapsed * 100 * per_k
    figures["API p50 ms (steady)"] = percentile(latencies, 50) * 1000
    figures["API p99 ms (steady)"] = percentile(latencies, 99) * 1000
    print(
        f"  steady {elapsed:.0f} s, heartbeat every {args.beat:g} s: replica CPU % per 1k "
        f"cores {[round(figures[f'replica {i} CPU % per 1k cores'], 2) for i in range(fleet.replicas)]}, "
        f"API p50 {figures['API p50 ms (steady)']:.1f} ms p99 {figures['API p99 ms (steady)']:.1f} ms",
        flush=True,
    )


async def ingest(
    args: argparse.Namespace,
    fleet: Fleet,
    sims: list[SimCore],
    figures: dict[str, float],
    notes: list[str],
) -> None:
    total = len(sims) * args.per_core
    started = time.perf_counter()

    gate = asyncio.Semaphore(len(sims) if fleet.rabbit is None else INGESTING_RABBITMQ)

    async def send(sim: SimCore) -> None:
        async with gate:
            await send_all(sim)

    async def send_all(sim: SimCore) -> None:
        """Every reading acknowledged by the broker: one whose session ended first is sent
        again once the core is connected again (a real core's spool does the same)."""
        pending = list(range(args.per_core))
        for _ in range(20):  # sessions at most, bounded
            if not pending:
                return
            await sim.connected.wait()
            mqtt: Client | None = sim.mqtt
            assert mqtt is not None
            user = Properties(user_properties=(("core", sim.name),))
            topic = f"plant/{sim.name}/t"
            if fleet.rabbit is not None:  # MQTT 3.1.1: the core's name is in the topic
                topic, user = routed_topic(sim.name, topic), Properties()
            futures: dict[int, asyncio.Future[None]] = {}
            with contextlib.suppress(ConnectionLost):
                for n in pending:
                    payload = b"%s %d" % (sim.name.encode(), n)
                    futures[n] = mqtt.publish_nowait(topic, payload, qos=1, properties=user)
            done = await asyncio.gather(*futures.values(), return_exceptions=True)
            acknowledged = {n for n, r in zip(futures, done, strict=True) if r is None}
            pending = [n for n in pending if n not in acknowledged]
            if pending:
                await asyncio.sleep(0.1)  # the session is ending: wait for the next one
        raise RuntimeError(f"{sim.name}: {len(pending)} readings never acknowledged")

    await asyncio.gather(*(send(s) for s in sims))
    acknowledged = time.perf_counter() - started
    seen: set[bytes] = set()
    deadline = time.perf_counter() + 300
    while time.perf_counter() < deadline:
        seen = set(await asyncio.to_thread(fleet.stored))
        if len(seen) >= total:
            break
        await asyncio.sleep(0.5)
    took = time.perf_counter() - started
    figures["ingest msg/s end to end"] = len(seen) / took
    figures["ingest lost"] = total - len(seen)
    print(
        f"  ingest: {total} QoS 1 readings acknowledged by the broker in {acknowledged:.1f} s, "
        f"{len(seen)} stored after {took:.1f} s ({len(seen) / took:,.0f} msg/s), "
        f"{total - len(seen)} missing",
        flush=True,
    )
    if len(seen) < total:
        notes.append(f"ingest: {total - len(seen)} of {total} missing after 300 s")


async def revoke(fleet: Fleet, sims: list[SimCore], figures: dict[str, float]) -> None:
    sim = next(s for s in sims if s.name.endswith("-00000"))  # site-00000's core
    group = "site-00000"
    api = fleet.api(1)
    (
        await api.post("/api/v1/things", json={"name": "doomed", "groups": [group]})
    ).raise_for_status()
    await asyncio.sleep(0.5)  # the membership notice for the new thing is not the revocation
    started = time.perf_counter()
    (await api.post("/api/v1/things/doomed/revoke")).raise_for_status()
    while sim.heard.get(CoreLeaf.REVOCATIONS.value, 0.0) < started:
        if time.perf_counter() - started > 30:
            raise RuntimeError("the revocation list never reached the core")
        await asyncio.sleep(0.005)
    figures["revocation at the core s"] = sim.heard[CoreLeaf.REVOCATIONS.value] - started
    print(f"  revocation list at the core after {figures['revocation at the core s']:.3f} s")


async def discover(
    args: argparse.Namespace,
    fleet: Fleet,
    root: Path,
    names: list[str],
    figures: dict[str, float],
) -> None:
    devices = min(args.devices, len(names))
    directory = root / "devices"
    directory.mkdir()

    async def make(index: int) -> None:
        api = fleet.api(index)
        core = names[index]
        (
            await api.put(
                f"/api/v1/cores/{core}/connectivity",
                json={"endpoints": [{"host": "127.0.0.1", "port": 8883}]},
            )
        ).raise_for_status()
        made = await api.post(
            "/api/v1/things", json={"name": f"dev-{index}", "groups": [f"site-{index:05d}"]}
        )
        made.raise_for_status()
        (directory / f"dev-{index}.pem").write_text(made.json()["certificate"])
        (directory / f"dev-{index}.key").write_text(made.json()["private_key"])

    await bounded(devices, make, "devices")
    rounds = max(1, args.discoveries // devices)
    share = devices // fleet.replicas
    clients = []
    started = time.perf_counter()
    for index in range(fleet.replicas):
        spec = {
            "port": fleet.device_ports[index],
            "ca": str(fleet.data / "pki" / "root-ca.pem"),
            "dir": str(directory),
            "devices": share,
            "first": index * share,
            "rounds": rounds,
        }
        clients.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                str(ROOT / "bench" / "cloud.py"),
                "--discovery-client",
                json.dumps(spec),
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
        )
    latencies_api = await api_latencies(fleet, names, 200)
    latencies: list[float] = []
    retries = 0
    for client in clients:
        out, _ = await client.communicate()
        if client.returncode != 0:
            raise RuntimeError("a discovery client failed")
        latencies += json.loads(out)["latencies"]
        retries += json.loads(out).get("retries", 0)
    figures["discovery tries again (shed)"] = retries
    took = time.perf_counter() - started
    figures["discoveries"] = len(latencies)
    figures["discovery answers/s"] = len(latencies) / took
    figures["discovery p50 ms"] = percentile(latencies, 50) * 1000
    figures["discovery p99 ms"] = percentile(latencies, 99) * 1000
    figures["API p50 ms (storm)"] = percentile(latencies_api, 50) * 1000
    figures["API p99 ms (storm)"] = percentile(latencies_api, 99) * 1000
    print(
        f"  {len(latencies)} discoveries in {took:.1f} s ({len(latencies) / took:,.0f}/s), "
        f"p50 {figures['discovery p50 ms']:.0f} ms p99 {figures['discovery p99 ms']:.0f} ms, "
        f"{retries} tried again after a shed connection; "
        f"API meanwhile p50 {figures['API p50 ms (storm)']:.0f} ms "
        f"p99 {figures['API p99 ms (storm)']:.0f} ms",
        flush=True,
    )


def table(runs: list[Run]) -> list[str]:
    keys = list(dict.fromkeys(k for r in runs for k in r.figures))
    head = "| figure | " + " | ".join(f"{r.replicas} replica(s)" for r in runs) + " |"
    lines = [head, "|---|" + "---|" * len(runs)]
    for key in keys:
        cells = []
        for r in runs:
            value = r.figures.get(key)
            cells.append(
                "–" if value is None else f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
            )
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return lines


async def main_async(args: argparse.Namespace) -> int:
    print(f"machine: {machine()}; {mosquitto_conf.version()}; broker: {args.broker}")
    print(
        f"{args.cores} cores (heartbeat every {args.beat:g} s), {args.per_core} readings each, "
        f"{args.discoveries} discoveries by {args.devices} devices; replicas {args.replicas}"
    )
    runs = [await run_one(args, int(n)) for n in args.replicas.split(",")]
    print()
    for line in table(runs):
        print(line)
    for r in runs:
        for note in r.notes:
            print(f"note ({r.replicas} replica(s)): {note}")
    print(f"load average after: {load_average()}")
    return 1 if any(r.notes for r in runs) else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cores", type=int, default=2000)
    parser.add_argument("--beat", type=float, default=10.0, help="heartbeat period (s)")
    parser.add_argument("--steady", type=float, default=20.0, help="steady phase (s)")
    parser.add_argument("--per-core", type=int, default=10, help="readings per core")
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--discoveries", type=int, default=10000)
    parser.add_argument("--replicas", default="1,2", help="replica counts to run, e.g. 1,2")
    parser.add_argument("--quick", action="store_true", help="200 cores, 2,000 discoveries")
    parser.add_argument("--keep", action="store_true", help="keep the replicas' and broker's logs")
    parser.add_argument(
        "--broker",
        choices=("mosquitto", "rabbitmq"),
        default="mosquitto",
        help="the external broker: a private Mosquitto (mutual TLS) or the machine's RabbitMQ "
        "(MQTT 3.1.1, HTTP auth backend; set up by .ci/rabbitmq-mqtt)",
    )
    args = parser.parse_args()
    if args.quick:
        args.cores, args.devices, args.discoveries, args.steady = 200, 100, 2000, 5.0
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
