"""Telemetry through RabbitMQ 3.10 into the cloud: MQTT 3.1.1, the HTTP auth backend asking
the cloud about every publish, acknowledgement after the database commit.

    .venv/bin/python bench/rabbitmq_ingest.py [--messages 20000] [--window 1000] [--quick]

A cloud in this process (PostgreSQL, a throwaway schema of the database ``test``) on the
machine's RabbitMQ (set up by ``.ci/rabbitmq-mqtt``, MQTT on 127.0.0.1:1885); one core
publishes QoS 1 messages with up to ``--window`` unacknowledged. Reported: the rate at which
RabbitMQ acknowledged them to the core, and the time until all were in the database.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
import tempfile
import time
import tomllib
import uuid
from pathlib import Path

import httpx
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import free_port  # noqa: E402
from tests.rabbitmq import BROKER_URL, MQTT_PORT, rabbitmq_turn  # noqa: E402

from hedgerow.client import Client, ProtocolVersion  # noqa: E402
from hedgerow.cloud import core_bundle  # noqa: E402
from hedgerow.cloud.config import Listen  # noqa: E402
from hedgerow.cloud.datadir import init_data_dir  # noqa: E402
from hedgerow.cloud.server import CloudServer  # noqa: E402

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


async def run(messages: int, window: int, data: Path, schema: str) -> None:
    database = f"postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
    api_port = free_port()
    config, _ = init_data_dir(
        data, database=database, api=Listen("127.0.0.1", api_port), device=Listen("127.0.0.1", 0)
    )
    with rabbitmq_turn(data, f"http://127.0.0.1:{api_port}") as rabbit:
        config = config.replace(
            broker=BROKER_URL,
            broker_protocol="3.1.1",
            broker_login="password",
            replica_id=rabbit.replica("bench"),
        )
        async with CloudServer(config) as server:
            assert server.link is not None
            await asyncio.wait_for(server.link.connected.wait(), 30)
            headers = {"authorization": f"Bearer {server.admin_token}"}
            async with httpx.AsyncClient(base_url=server.api_url, headers=headers) as api:
                (await api.post("/api/v1/groups", json={"name": "plant"})).raise_for_status()
                made = await api.post("/api/v1/cores", json={"name": "gw", "group": "plant"})
                made.raise_for_status()
            files = core_bundle.read_bundle(base64.b64decode(made.json()["bundle"]))
            password = tomllib.loads(files[core_bundle.CONFIG].decode())["cloud"]["mqtt_password"]
            payload = b"x" * 100
            async with Client(
                "127.0.0.1", MQTT_PORT, client_id="gw", username="gw", password=password,
                version=ProtocolVersion.V311, max_inflight=window,
            ) as core:  # fmt: skip
                started = time.perf_counter()
                futures = [
                    core.publish_nowait(f"$hedgerow/cores/gw/routed/plant/{i % 10}", payload, 1)
                    for i in range(messages)
                ]
                await asyncio.gather(*futures)
                acked = time.perf_counter() - started
            while server.ingest.stats.stored < messages:
                await asyncio.sleep(0.05)
            stored = time.perf_counter() - started
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    print("| messages | window | acknowledged to the core | all stored |")
    print("|---|---|---|---|")
    print(
        f"| {messages} | {window} | {acked:.1f} s ({messages / acked:,.0f} msg/s) | "
        f"{stored:.1f} s ({messages / stored:,.0f} msg/s) |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="3000 messages")
    args = parser.parse_args()
    messages = 3000 if args.quick else args.messages
    schema = f"bench_rabbitmq_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(PG_ADMIN)
    with engine.begin() as db:
        db.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(run(messages, args.window, Path(tmp) / "cloud", schema))
    finally:
        with engine.begin() as db:
            db.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


if __name__ == "__main__":
    main()
