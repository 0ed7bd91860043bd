"""Several replicas: real ``hedgerow cloud serve`` processes sharing one PostgreSQL schema.

Background jobs run on one replica at a time (advisory locks, seen through ``/metrics``);
kill -9 of the holder hands the job to the other replica, which finishes what was left
(the API reached through a small TCP load balancer, as an operator would run them);
live tail on one replica wakes on telemetry another stored (LISTEN/NOTIFY)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import sqlalchemy as sa

from hedgerow import pki
from hedgerow.client import Client, ProtocolVersion
from hedgerow.cloud.services.rollouts import LEASE_SECONDS
from hedgerow.contract import DeploymentNotification
from hedgerow.contract.heartbeat import Heartbeat
from hedgerow.contract.topics import CoreLeaf, core_topic
from tests.conftest import free_port

from .balancer import Balancer
from .conftest import PG_ADMIN_URL, pg_url
from .test_cli import HEDGEROW, ok
from .test_scale_out import mosquitto_tls, wait_for_port  # noqa: F401  (a fixture)

pytestmark = pytest.mark.postgres
WAIT = 20.0
JOBS = ("alerts", "ca-rotation", "log-retention", "retention", "rollouts")
_METRIC = re.compile(r'^(hedgerow_cloud_\w+)\{(\w+)="([^"]*)"\} (\S+)$')


@dataclass
class Replica:
    process: asyncio.subprocess.Process
    api_url: str
    mqtt_port: int
    token: str
    log: Path

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.api_url, headers={"authorization": f"Bearer {self.token}"}, timeout=10
        )

    async def metrics(self) -> dict[tuple[str, str], float]:
        """``(metric, label value) → value`` of the labelled hedgerow_cloud series."""
        async with self.client() as api:
            response = await api.get("/metrics")
        assert response.status_code == 200, response.text
        out: dict[tuple[str, str], float] = {}
        for line in response.text.splitlines():
            if match := _METRIC.match(line):
                out[(match[1], match[3])] = float(match[4])
        return out

    async def holds(self, job: str) -> bool:
        return (await self.metrics()).get(("hedgerow_cloud_job_held", job)) == 1

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        self.process.kill()  # SIGKILL: no shutdown, no lock given back by us


class Replicas:
    def __init__(self, tmp_path: Path, database: str) -> None:
        self.tmp_path = tmp_path
        self.database = database
        self.template = tmp_path / "template"
        self.started: list[Replica] = []

    async def init(self) -> None:
        await ok(
            "cloud", "init", "--data", str(self.template), "--api-port", "0",
            "--device-host", "127.0.0.1", "--device-port", "0",
            "--mqtt-host", "127.0.0.1", "--mqtt-port", "0",
            cwd=self.tmp_path, process=False,
        )  # fmt: skip

    async def start(self, name: str, *, broker: str = "") -> Replica:
        """A replica with its own copy of the data directory (PKI, keyring, token), as on
        its own machine, on the shared database."""
        data = self.tmp_path / name
        shutil.copytree(self.template, data)
        mqtt_port = free_port()
        args = [
            "cloud", "serve", "--data", str(data), "--database", self.database,
            "--api-port", str(free_port()), "--device-port", str(free_port()),
            "--mqtt-host", "127.0.0.1", "--mqtt-port", str(mqtt_port),
        ]  # fmt: skip
        if broker:
            args += ["--broker", broker]
        log = self.tmp_path / f"{name}.log"
        with log.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                HEDGEROW, *args, cwd=self.tmp_path, stdout=asyncio.subprocess.PIPE, stderr=stderr
            )
        assert process.stdout is not None
        replica = Replica(process, "", mqtt_port, (data / "admin-token").read_text().strip(), log)
        self.started.append(replica)
        banner = ""
        async with asyncio.timeout(WAIT):
            while "Ctrl-C" not in banner:
                line = (await process.stdout.readline()).decode()
                assert line, f"{name} stopped: {banner}\n{replica.log_text()}"
                banner += line
        found = re.search(r"REST API \+ console\s+(\S+)", banner)
        assert found, banner
        replica.api_url = found[1]
        return replica

    async def stop(self) -> None:
        for replica in self.started:
            if replica.process.returncode is None:
                replica.process.terminate()
        for replica in self.started:
            async with asyncio.timeout(WAIT):
                await replica.process.wait()


@pytest.fixture
async def replicas(tmp_path: Path, pg_schema: str) -> AsyncIterator[Replicas]:
    started = Replicas(tmp_path, pg_url(pg_schema))
    await started.init()
    try:
        yield started
    finally:
        await started.stop()


@pytest.fixture
def pg(pg_schema: str) -> Iterator[sa.Engine]:
    """The test's own connections to the replicas' schema."""
    engine = sa.create_engine(pg_url(pg_schema).replace("postgresql://", "postgresql+psycopg://"))
    yield engine
    engine.dispose()


async def wait_until_holds(replica: Replica, job: str) -> float:
    """Seconds until ``replica`` reports it holds ``job``'s lock."""
    started = time.monotonic()
    async with asyncio.timeout(WAIT):
        while not await replica.holds(job):
            await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_each_job_runs_on_exactly_one_replica_at_a_time(replicas: Replicas) -> None:
    a = await replicas.start("a")
    for job in JOBS:
        await wait_until_holds(a, job)
    b = await replicas.start("b")
    samples = 0
    async with asyncio.timeout(WAIT):
        while samples < 15:  # about 3 s: six rollout ticks, three alert evaluations
            seen_a, seen_b = await a.metrics(), await b.metrics()
            for job in JOBS:
                held = seen_a[("hedgerow_cloud_job_held", job)]
                held += seen_b.get(("hedgerow_cloud_job_held", job), 0)
                assert held == 1, (job, seen_a, seen_b)
                assert seen_b.get(("hedgerow_cloud_job_ticks_total", job), 0) == 0, job
            samples += 1
            await asyncio.sleep(0.2)
    final = await a.metrics()
    assert final[("hedgerow_cloud_job_ticks_total", "rollouts")] >= 6
    assert final[("hedgerow_cloud_job_ticks_total", "alerts")] >= 3
    assert "job.taken" not in b.log_text()
    async with a.client() as api_a, b.client() as api_b:
        on_a = (await api_a.get("/api/v1/status")).json()["jobs"]
        on_b = (await api_b.get("/api/v1/status")).json()["jobs"]
    assert {job for job, state in on_a.items() if state["held"]} == set(JOBS)
    assert not any(state["held"] for state in on_b.values())


async def test_retention_killed_mid_delete_is_finished_once_by_the_other_replica(
    replicas: Replicas, pg: sa.Engine
) -> None:
    """A's retention sweep is inside its DELETE (held up by a row the test locks) when A
    is killed: B takes the job over, and the old rows are deleted exactly once, by B."""
    from hedgerow.cloud.storage.database import migrate

    old, fresh = 20_000, 10
    await asyncio.to_thread(migrate, pg)
    with pg.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO messages (topic, payload, core, ts) "
                "SELECT 'old/' || i, '\\x00', 'pi-1', 1000 + i FROM generate_series(1, :n) i"
            ),
            {"n": old},
        )
        connection.execute(
            sa.text(
                "INSERT INTO messages (topic, payload, core, ts) "
                "SELECT 'new/' || i, '\\x00', 'pi-1', :now FROM generate_series(1, :n) i"
            ),
            {"n": fresh, "now": time.time()},
        )
    blocker = pg.connect()
    blocker.begin()
    blocker.execute(sa.text("SELECT id FROM messages WHERE ts = 1001 FOR UPDATE"))
    try:
        a = await replicas.start("a")
        await wait_until_holds(a, "retention")
        admin = sa.create_engine(PG_ADMIN_URL)
        try:
            async with asyncio.timeout(WAIT):  # A's sweep waits on the test's row lock
                while not await asyncio.to_thread(_deletes_waiting, admin) >= 1:
                    await asyncio.sleep(0.05)
        finally:
            admin.dispose()
        b = await replicas.start("b")
        assert not await b.holds("retention")
        a.kill()
        killed = time.monotonic()
        await wait_until_holds(b, "retention")
        takeover = time.monotonic() - killed
    finally:
        blocker.rollback()
        blocker.close()
    async with asyncio.timeout(WAIT):
        while "ingest.retention worker=ingest" not in b.log_text():
            await asyncio.sleep(0.05)
    deleted = re.findall(r"ingest\.retention worker=ingest deleted=(\d+)", b.log_text())
    assert deleted == [str(old)], b.log_text()
    assert "ingest.retention worker=ingest" not in a.log_text()
    with pg.connect() as connection:
        left = connection.execute(sa.text("SELECT topic FROM messages")).scalars().all()
    assert sorted(left) == sorted(f"new/{i}" for i in range(1, fresh + 1))
    assert takeover < 5.0, takeover
    print(f"retention takeover after kill -9: {takeover:.2f} s")


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None, url
    return parts.hostname, parts.port


def _deletes_waiting(admin: sa.Engine) -> int:
    with admin.connect() as connection:
        return int(
            connection.scalar(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'DELETE FROM messages%' "
                    "AND wait_event_type = 'Lock'"
                )
            )
            or 0
        )


async def _play_core(port: int, root_ca: Path, cert: Path, key: Path, name: str) -> None:
    """A core on the external broker: every deployment it is told of succeeds and its
    heartbeat names it, healthy."""
    ctx = pki.client_context(str(root_ca), str(cert), str(key))
    async with Client(
        "127.0.0.1", port, ssl=ctx, client_id=name, version=ProtocolVersion.V5
    ) as core:
        await core.subscribe(core_topic(name, CoreLeaf.DEPLOYMENTS), qos=1)
        while True:
            notice = DeploymentNotification.from_json((await core.get_message()).payload)
            status = {"deployment_id": notice.deployment_id, "status": "Success", "detail": ""}
            await core.publish(
                core_topic(name, CoreLeaf.DEPLOYMENT_STATUS), json.dumps(status), qos=1
            )
            beat = Heartbeat(deployment=notice.deployment_id, health="healthy")
            await core.publish(core_topic(name, CoreLeaf.HEARTBEAT), beat.to_json(), qos=1)


@pytest.mark.mosquitto
async def test_a_rollout_driven_by_a_killed_replica_is_finished_by_the_other(
    replicas: Replicas,
    pg: sa.Engine,
    mosquitto_tls: object,  # noqa: F811  (the fixture imported above)
) -> None:
    import base64

    from hedgerow.cloud import core_bundle as bundle

    port = mosquitto_tls(replicas.template)  # type: ignore[operator]
    await wait_for_port(port)
    broker = f"mqtts://127.0.0.1:{port}"
    a = await replicas.start("a", broker=broker)
    await wait_until_holds(a, "rollouts")
    b = await replicas.start("b", broker=broker)
    cores: list[asyncio.Task[None]] = []
    # every API call goes through a TCP load balancer in front of both replicas, a new
    # connection per request: they alternate between A and B until A is killed
    balancer = Balancer([_address(a.api_url), _address(b.api_url)])
    async with (
        balancer,
        httpx.AsyncClient(
            base_url=balancer.url,
            headers={"authorization": f"Bearer {a.token}"},
            timeout=10,
            limits=httpx.Limits(max_keepalive_connections=0),
        ) as api,
        asyncio.TaskGroup() as tg,
    ):
        for index in (1, 2):
            created = await api.post("/api/v1/groups", json={"name": f"g{index}"})
            assert created.status_code < 300, created.text
            body = await api.post("/api/v1/cores", json={"name": f"c{index}", "group": f"g{index}"})
            assert body.status_code < 300, body.text
            files = bundle.read_bundle(base64.b64decode(body.json()["bundle"]))
            cert, key = replicas.tmp_path / f"c{index}.pem", replicas.tmp_path / f"c{index}.key"
            cert.write_bytes(files[bundle.CORE_CERT])
            key.write_bytes(files[bundle.CORE_KEY])
            root_ca = replicas.template / "pki" / "root-ca.pem"
            cores.append(tg.create_task(_play_core(port, root_ca, cert, key, f"c{index}")))
        request = {"groups": ["g1", "g2"], "waves": ["50%", "100%"], "soak_s": 2, "deadline_s": 30}
        started = await api.post("/api/v1/rollouts", json=request)
        assert started.status_code < 300, started.text
        rollout_id = started.json()["id"]
        async with asyncio.timeout(WAIT):  # the first wave is healthy: soaking, on A
            while _target(await _rollout(api, rollout_id), "g1")["state"] != "soaking":
                await asyncio.sleep(0.05)
        assert _target(await _rollout(api, rollout_id), "g2")["state"] == "waiting"
        a_served, b_served = (balancer.served[_address(r.api_url)] for r in (a, b))
        assert a_served > 0 and b_served > 0, balancer.served  # both answered so far
        a.kill()
        killed = time.monotonic()
        takeover = await wait_until_holds(b, "rollouts")
        async with asyncio.timeout(WAIT):
            while (rollout := await _rollout(api, rollout_id))["state"] == "running":
                await asyncio.sleep(0.05)
        finished = time.monotonic() - killed
        for task in cores:
            task.cancel()
    # after the kill every request was answered, by B alone
    assert balancer.served[_address(a.api_url)] == a_served, balancer.served
    assert balancer.served[_address(b.api_url)] > b_served, balancer.served
    assert rollout["state"] == "completed", rollout
    assert [t["state"] for t in rollout["targets"]] == ["done", "done"]
    per_group = _deployments_per_group(pg)
    assert per_group == {"g1": 1, "g2": 1}  # nothing deployed twice
    assert f"rollout.state id={rollout_id} state=completed" in b.log_text()
    # taken over at once, not once A's lease on the rollout ran out
    assert takeover < 5.0 and finished < LEASE_SECONDS, (takeover, finished)
    print(f"rollout takeover after kill -9: {takeover:.2f} s, finished after {finished:.2f} s")


@pytest.mark.mosquitto
async def test_a_rollout_started_on_a_replica_not_driving_rollouts_deploys_each_group_once(
    replicas: Replicas,
    pg: sa.Engine,
    mosquitto_tls: object,  # noqa: F811  (the fixture imported above)
) -> None:
    """B takes the first step of a rollout it was asked for while A holds the rollout job:
    A must not deploy the same wave meanwhile (each group's first deployment superseded by
    the second, the rollout paused with most groups failed: bench/fleet_scale.py)."""
    import base64

    from hedgerow.cloud import core_bundle as bundle

    port = mosquitto_tls(replicas.template)  # type: ignore[operator]
    await wait_for_port(port)
    broker = f"mqtts://127.0.0.1:{port}"
    a = await replicas.start("a", broker=broker)
    await wait_until_holds(a, "rollouts")
    b = await replicas.start("b", broker=broker)
    groups = [f"w{index}" for index in range(20)]  # a first step longer than A's pass
    cores: list[asyncio.Task[None]] = []
    async with a.client() as api_a, b.client() as api_b, asyncio.TaskGroup() as tg:
        for group in groups:
            created = await api_a.post("/api/v1/groups", json={"name": group})
            assert created.status_code < 300, created.text
            body = await api_a.post("/api/v1/cores", json={"name": f"{group}-c", "group": group})
            assert body.status_code < 300, body.text
            files = bundle.read_bundle(base64.b64decode(body.json()["bundle"]))
            cert = replicas.tmp_path / f"{group}.pem"
            key = replicas.tmp_path / f"{group}.key"
            cert.write_bytes(files[bundle.CORE_CERT])
            key.write_bytes(files[bundle.CORE_KEY])
            root_ca = replicas.template / "pki" / "root-ca.pem"
            cores.append(tg.create_task(_play_core(port, root_ca, cert, key, f"{group}-c")))
        request = {"groups": groups, "waves": ["100%"], "soak_s": 0, "deadline_s": 60}
        started = await api_b.post("/api/v1/rollouts", json=request)
        assert started.status_code < 300, started.text
        rollout_id = started.json()["id"]
        async with asyncio.timeout(WAIT * 3):
            while (rollout := await _rollout(api_a, rollout_id))["state"] == "running":
                await asyncio.sleep(0.05)
        for task in cores:
            task.cancel()
    assert rollout["state"] == "completed", rollout["reason"]
    per_group = _deployments_per_group(pg)
    assert per_group == dict.fromkeys(groups, 1)  # nothing deployed twice


def _deployments_per_group(pg: sa.Engine) -> dict[str, int]:
    with pg.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT g.name, count(*) FROM deployments d JOIN groups g "
                "ON g.id = d.group_id GROUP BY g.name"
            )
        ).all()
    return {name: count for name, count in rows}


async def _rollout(api: httpx.AsyncClient, rollout_id: str) -> dict[str, object]:
    response = await api.get(f"/api/v1/rollouts/{rollout_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def _target(rollout: dict[str, object], group: str) -> dict[str, str]:
    targets = rollout["targets"]
    assert isinstance(targets, list)
    return next(t for t in targets if t["group"] == group)


async def test_live_tail_on_one_replica_shows_what_another_stored_within_a_second(
    replicas: Replicas, tmp_path: Path
) -> None:
    import base64

    from hedgerow.cloud import core_bundle as bundle

    a = await replicas.start("a")
    b = await replicas.start("b")
    async with a.client() as api_a, b.client() as api_b:
        for method, path, body in (
            ("POST", "/api/v1/groups", {"name": "factory-1"}),
            ("POST", "/api/v1/things", {"name": "sensor-1", "groups": ["factory-1"]}),
            (
                "POST",
                "/api/v1/groups/factory-1/subscriptions",
                {"source": "thing:sensor-1", "topic": "sensors/#", "target": "cloud"},
            ),
        ):
            response = await api_a.request(method, path, json=body)
            assert response.status_code < 300, response.text
        created = await api_a.post("/api/v1/cores", json={"name": "pi-1", "group": "factory-1"})
        assert created.status_code < 300, created.text
        files = bundle.read_bundle(base64.b64decode(created.json()["bundle"]))
        cert, key = tmp_path / "pi-1.pem", tmp_path / "pi-1.key"
        cert.write_bytes(files[bundle.CORE_CERT])
        key.write_bytes(files[bundle.CORE_KEY])
        ctx = pki.client_context(
            str(replicas.template / "pki" / "root-ca.pem"), str(cert), str(key)
        )
        latencies: list[float] = []
        async with (
            Client(
                "127.0.0.1", a.mqtt_port, ssl=ctx, client_id="pi-1", version=ProtocolVersion.V5
            ) as core,
            api_b.stream(
                "GET", "/api/v1/messages/stream", params={"filter": "sensors/#"}
            ) as stream,
        ):
            lines = stream.aiter_lines()
            assert (await anext(lines)).startswith(":")
            for index in range(10):
                await core.publish(f"sensors/{index}", b"%d" % index, qos=1)  # stored on A
                stored = time.monotonic()
                async with asyncio.timeout(1.0):
                    async for line in lines:
                        if line.startswith("data: "):
                            event = json.loads(line[6:])
                            break
                latencies.append(time.monotonic() - stored)
                assert event["topic"] == f"sensors/{index}" and event["core"] == "pi-1"
        heard = await b.metrics()
    assert heard[("hedgerow_cloud_changes_heard_total", "messages")] >= 10
    assert (await a.metrics())[("hedgerow_cloud_ingest_total", "stored")] == 10
    assert (await b.metrics())[("hedgerow_cloud_ingest_total", "stored")] == 0
    print(
        f"live tail across replicas: median {statistics.median(latencies) * 1000:.0f} ms, "
        f"max {max(latencies) * 1000:.0f} ms"
    )
