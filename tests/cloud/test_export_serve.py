"""Telemetry export inside real ``hedgerow cloud serve`` processes: a target that is down
then up (SQLite), and two replicas on PostgreSQL where the exporting one is killed -9."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from hedgerow.cloud.storage.database import create_engine
from hedgerow.cloud.storage.repository import Repository
from tests.conftest import free_port

from .conftest import pg_url
from .export_peers import AmqpPeer, Forwarder, Receiver, webhook_server
from .test_cli import ok
from .test_replicas import Replicas, wait_until_holds

WAIT = 30.0
JOB = "telemetry-export/lake"


def add_target(data: Path, url: str, *, secret: str = "s3cret", batch_size: int = 200) -> None:
    """What an operator appends to ``config.toml``."""
    with (data / "config.toml").open("a") as config:
        config.write(
            f'\n[[telemetry.export]]\nname = "lake"\nkind = "webhook"\nurl = "{url}"\n'
            f'secret = "{secret}"\nbatch_size = {batch_size}\n'
        )


async def export_status(data: Path, tmp_path: Path) -> dict[str, object]:
    out = await ok("cloud", "export", "status", "--data", str(data), "--json", cwd=tmp_path)
    [entry] = json.loads(out)
    assert isinstance(entry, dict)
    return entry


async def store_then_fail(data: Path, cwd: Path, count: int) -> dict[str, object]:
    """``count`` readings stored in the replica's database, then its export status once the
    target (nothing listening yet) has failed: failures are counted and shown."""
    engine = create_engine(f"sqlite:///{data / 'cloud.db'}")
    try:
        now = time.time()
        rows = [("sensors/t", str(i).encode(), "pi-1", now) for i in range(count)]
        await asyncio.to_thread(Repository(engine).insert_messages, rows)
    finally:
        engine.dispose()
    async with asyncio.timeout(WAIT):
        while (status := await export_status(data, cwd))["failures"] == 0:
            await asyncio.sleep(0.2)
    return status


async def test_serve_exports_to_a_webhook_that_is_down_then_up(tmp_path: Path) -> None:
    replicas = Replicas(tmp_path, "")
    await replicas.init()
    port = free_port()
    add_target(replicas.template, f"http://127.0.0.1:{port}/in")
    try:
        serve = await replicas.start("a")
        data = tmp_path / "a"
        status = await store_then_fail(data, tmp_path, 300)
        assert status["exported"] == 0 and status["lag"] == 300
        assert "ConnectError" in str(status["last_error"])
        table = await ok("cloud", "export", "status", "--data", str(data), cwd=tmp_path)
        assert "lake" in table and "failing" in table
        assert "telemetry_export.failed target=lake" in serve.log_text()

        receiver = Receiver("s3cret")
        with webhook_server(receiver, port):
            async with asyncio.timeout(WAIT):
                while len(receiver.distinct()) < 300:
                    await asyncio.sleep(0.1)
            status = await export_status(data, tmp_path)
        assert sorted(int(p) for p in receiver.payloads.values()) == list(range(300))
        assert receiver.ids == sorted(receiver.ids) and receiver.bad_signatures == 0
        assert status["lag"] == 0 and status["exported"] == 300 and status["failing"] == 0
        assert "telemetry_export.recovered target=lake" in serve.log_text()
        async with serve.client() as api:
            text = (await api.get("/metrics")).text
        assert 'hedgerow_cloud_export_lag_messages{target="lake"} 0' in text
        assert 'hedgerow_cloud_export_messages_total{target="lake",result="exported"} 300' in text
        assert 'hedgerow_cloud_export_failing{target="lake"} 0' in text
        assert 'hedgerow_cloud_job_held{job="telemetry-export/lake"} 1' in text
    finally:
        await replicas.stop()


@pytest.mark.rabbitmq
async def test_serve_exports_to_rabbitmq_over_amqp_down_then_up(tmp_path: Path) -> None:
    replicas = Replicas(tmp_path, "")
    await replicas.init()
    port = free_port()
    forwarder = Forwarder(port, ("127.0.0.1", 5672))  # RabbitMQ, once it listens
    async with AmqpPeer() as peer:
        queue = await peer.bind("export.pi-1.sensors.#")
        with (replicas.template / "config.toml").open("a") as config:
            config.write(
                f'\n[[telemetry.export]]\nname = "lake"\nkind = "amqp"\n'
                f'url = "amqp://guest:guest@127.0.0.1:{port}/"\nexchange = "{peer.exchange}"\n'
                'topic = "export/{core}/{topic}"\nbatch_size = 100\n'
            )
        try:
            serve = await replicas.start("a")
            data = tmp_path / "a"
            status = await store_then_fail(data, tmp_path, 300)
            assert status["exported"] == 0 and status["lag"] == 300
            assert "cannot connect" in str(status["last_error"])

            await forwarder.accept()
            async with asyncio.timeout(WAIT):
                while (status := await export_status(data, tmp_path))["lag"] != 0:
                    await asyncio.sleep(0.2)
            assert status["exported"] == 300 and status["failing"] == 0
            assert "telemetry_export.recovered target=lake" in serve.log_text()
        finally:
            await replicas.stop()
            await forwarder.refuse()
        got = await peer.take(queue)
    assert [int(m.body) for m in got] == list(range(300))
    assert {m.routing_key for m in got} == {"export.pi-1.sensors.t"}


@pytest.mark.postgres
async def test_one_replica_exports_and_kill_9_of_it_leaves_no_gap(
    tmp_path: Path, pg_schema: str
) -> None:
    total = 20_000
    database = pg_url(pg_schema)
    replicas = Replicas(tmp_path, database)
    await replicas.init()
    port = free_port()
    # slow enough that the export is still running when its holder is killed
    receiver = Receiver("s3cret", delay_s=0.03)
    add_target(replicas.template, f"http://127.0.0.1:{port}/in", batch_size=200)
    pg = sa.create_engine(database.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with webhook_server(receiver, port):
            a = await replicas.start("a")
            await wait_until_holds(a, JOB)
            b = await replicas.start("b")
            with pg.begin() as connection:
                connection.execute(
                    sa.text(
                        "INSERT INTO messages (topic, payload, core, ts) SELECT 'sensors/' || i, "
                        "convert_to(i::text, 'UTF8'), 'pi-1', :now FROM generate_series(1, :n) i"
                    ),
                    {"n": total, "now": time.time()},
                )
                stored = set(connection.execute(sa.text("SELECT id FROM messages")).scalars())
            async with asyncio.timeout(WAIT):
                while receiver.batches < 20:
                    await asyncio.sleep(0.02)
            assert not await b.holds(JOB)
            before_kill = len(receiver.distinct())
            a.kill()
            killed = time.monotonic()
            takeover = await wait_until_holds(b, JOB)
            async with asyncio.timeout(WAIT * 2):
                while not receiver.distinct() >= stored:
                    await asyncio.sleep(0.1)
            finished = time.monotonic() - killed
        assert receiver.distinct() >= stored  # no gap
        assert receiver.max_in_flight == 1  # one exporter at a time
        assert receiver.bad_signatures == 0
        assert 0 < before_kill < total
        assert f"job.taken job={JOB}" in b.log_text()
        duplicates = len(receiver.ids) - len(receiver.distinct())
        assert duplicates <= 200  # at most the batch in flight when A died
        print(
            f"export takeover after kill -9: {takeover:.2f} s, all {total} exported "
            f"{finished:.2f} s after the kill, {duplicates} sent twice"
        )
    finally:
        pg.dispose()
        await replicas.stop()
