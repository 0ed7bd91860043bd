"""Benchmarks of the cloud: discovery latency, telemetry ingest, registry list/query.

    .venv/bin/python bench/cloud.py [--devices 100] [--rounds 5] [--messages 200000]
                                    [--things 10000] [--skip-postgres]

Everything runs on loopback against a CloudServer in this process (SQLite in a
temporary directory; PostgreSQL in a throwaway schema of the database ``test``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import ssl
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from hedgerow import pki
from hedgerow.client import Client, ProtocolVersion
from hedgerow.cloud.config import CloudConfig, Listen
from hedgerow.cloud.datadir import init_data_dir
from hedgerow.cloud.domain import CertificateKind
from hedgerow.cloud.ingest import IngestWorker
from hedgerow.cloud.pki_service import record_of
from hedgerow.cloud.server import CloudServer
from hedgerow.cloud.storage.database import create_engine, migrate
from hedgerow.cloud.storage.repository import Repository
from hedgerow.mqtt.packets import Properties

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def make_config(directory: Path, database: str = "") -> CloudConfig:
    config, _ = init_data_dir(
        directory,
        database=database,
        api=Listen("127.0.0.1", 0),
        device=Listen("127.0.0.1", 0),
        mqtt=Listen("127.0.0.1", 0),
    )
    return config


async def api_client(server: CloudServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=server.api_url,
        headers={"authorization": f"Bearer {server.admin_token}"},
        timeout=120,
    )


# ---- discovery ------------------------------------------------------------------------------


async def bench_discovery(directory: Path, devices: int, rounds: int) -> dict[str, float]:
    config = make_config(directory / "discovery")
    async with CloudServer(config) as server, await api_client(server) as api:
        await api.post("/api/v1/groups", json={"name": "g"})
        await api.post("/api/v1/cores", json={"name": "core", "group": "g"})
        await api.put(
            "/api/v1/cores/core/connectivity",
            json={"endpoints": [{"host": "127.0.0.1", "port": 8883}]},
        )
        for index in range(devices):
            made = (
                await api.post("/api/v1/things", json={"name": f"dev-{index}", "groups": ["g"]})
            ).json()
            cert = directory / f"dev-{index}.pem"
            key = directory / f"dev-{index}.key"
            cert.write_text(made["certificate"])
            key.write_text(made["private_key"])
        assert server.endpoints is not None
        port = server.endpoints.device[1]
        # the devices run in another process, so their TLS work does not slow the server
        before = resource.getrusage(resource.RUSAGE_SELF)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--discovery-client",
            json.dumps(
                {
                    "port": port,
                    "ca": str(config.paths.root_ca_cert),
                    "dir": str(directory),
                    "devices": devices,
                    "rounds": rounds,
                }
            ),
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await process.communicate()
        after = resource.getrusage(resource.RUSAGE_SELF)
        result = json.loads(out)
    latencies = result["latencies"]
    server_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "requests": len(latencies),
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "req_per_s": len(latencies) / result["elapsed"],
        "server_cpu_ms_per_request": server_cpu / len(latencies) * 1000,
    }


async def discovery_client(spec: dict[str, Any]) -> None:
    """The device side of the discovery benchmark (runs in its own process)."""
    port, directory, first = spec["port"], Path(spec["dir"]), spec.get("first", 0)
    contexts = [
        pki.client_context(
            spec["ca"], str(directory / f"dev-{i}.pem"), str(directory / f"dev-{i}.key")
        )
        for i in range(first, first + spec["devices"])
    ]
    latencies: list[float] = []
    retries = 0

    async def discover_once(index: int, ctx: ssl.SSLContext) -> None:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1"
        )
        try:
            writer.write(
                f"GET /greengrass/discover/thing/dev-{index} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
            )
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
            body = await reader.readexactly(length)
            assert head.startswith(b"HTTP/1.1 200") and json.loads(body)["GGGroups"]
        finally:
            writer.close()

    async def device(index: int, ctx: ssl.SSLContext) -> None:
        """A device discovers ``rounds`` times; a connection the server closed (shed under
        load) is tried again after a jittered, doubling delay, as the SDKs do — the latency
        counts from its first try."""
        nonlocal retries
        for _ in range(spec["rounds"]):
            started = time.perf_counter()
            delay = 0.5
            for attempt in range(20):
                try:
                    await discover_once(index, ctx)
                    break
                except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
                    if attempt == 19:
                        raise
                    retries += 1
                    await asyncio.sleep(random.uniform(delay / 2, delay))
                    delay = min(delay * 2, 8.0)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(device(first + i, ctx) for i, ctx in enumerate(contexts)))
    elapsed = time.perf_counter() - started
    print(json.dumps({"latencies": latencies, "elapsed": elapsed, "retries": retries}))


# ---- ingest -----------------------------------------------------------------------------------


async def bench_ingest(url: str, messages: int) -> float:
    engine = create_engine(url)
    migrate(engine)
    repository = Repository(engine)
    payload = json.dumps(
        {"temperature": 21.5, "humidity": 40.1, "pressure": 1013.2, "device": "bme680-1"}
    ).encode()
    try:
        async with IngestWorker(repository, max_pending=messages + 1) as ingest:
            started = time.perf_counter()
            for index in range(messages):
                ingest.submit(f"corrected/bme680-{index % 100}", payload, "pi-1")
                if index % 5000 == 4999:
                    await asyncio.sleep(0)  # let the writer run, as a live broker would
            await ingest.flushed()
            elapsed = time.perf_counter() - started
        assert repository.count_messages() == messages
    finally:
        engine.dispose()
    return messages / elapsed


async def bench_mqtt_ingest(directory: Path, messages: int) -> float:
    """End to end: a core publishes QoS 1 over mutual TLS; measured until stored."""
    config = make_config(directory / "mqtt-ingest")
    async with CloudServer(config) as server, await api_client(server) as api:
        await api.post("/api/v1/groups", json={"name": "g"})
        made = (await api.post("/api/v1/cores", json={"name": "pi-1", "group": "g"})).json()
        import base64

        from hedgerow.cloud import core_bundle as bundle

        files = bundle.read_bundle(base64.b64decode(made["bundle"]))
        (directory / "core.pem").write_bytes(files["core.cert.pem"])
        (directory / "core.key").write_bytes(files["core.key"])
        await api.post("/api/v1/groups/g/things", json={"thing": "x"})  # harmless 404
        await api.post("/api/v1/things", json={"name": "f-src", "groups": ["g"]})
        await api.post(
            "/api/v1/groups/g/subscriptions",
            json={"source": "thing:f-src", "topic": "corrected/#", "target": "cloud"},
        )
        ctx = pki.client_context(
            str(config.paths.root_ca_cert), str(directory / "core.pem"), str(directory / "core.key")
        )
        assert server.endpoints is not None and server.endpoints.mqtt is not None
        user = Properties(user_properties=(("core", "pi-1"),))
        payload = b'{"temperature": 21.5, "humidity": 40.1}'
        async with Client(
            "127.0.0.1",
            server.endpoints.mqtt[1],
            ssl=ctx,
            client_id="pi-1",
            version=ProtocolVersion.V5,
        ) as core:
            started = time.perf_counter()
            pending = [
                core.publish_nowait(f"corrected/{i % 10}", payload, 1, False, user)
                for i in range(messages)
            ]
            await asyncio.gather(*pending)
            while server.ingest.stats.received < messages:
                await asyncio.sleep(0.01)
            await server.ingest.flushed()
            elapsed = time.perf_counter() - started
        assert server.ingest.stats.stored >= messages
    return messages / elapsed


# ---- registry with many things ---------------------------------------------------------------------


async def bench_registry(directory: Path, things: int) -> dict[str, float]:
    config = make_config(directory / "registry")
    async with CloudServer(config, enable_mqtt=False) as server, await api_client(server) as api:
        await api.post("/api/v1/groups", json={"name": "g"})
        await api.post("/api/v1/cores", json={"name": "core", "group": "g"})
        repo = server.services.repository
        root = server.services.pki.root
        key = pki.new_key()
        started = time.perf_counter()

        def create(index: int) -> None:
            name = f"thing-{index:05d}"
            cert = pki.sign_public_key(root, key.public_key(), name, unit="thing")
            record = record_of(cert, CertificateKind.THING.value, name)
            repo.create_thing(name, ["g"], {}, lambda: record)

        await asyncio.to_thread(lambda: [create(i) for i in range(things)])
        created = time.perf_counter() - started

        async def timed(path: str, **params: str) -> tuple[float, httpx.Response]:
            t0 = time.perf_counter()
            response = await api.get(path, params=params)
            assert response.status_code == 200, response.text
            return time.perf_counter() - t0, response

        list_all, response = await timed("/api/v1/things", limit=str(things))
        assert response.json()["count"] == things
        page, _ = await timed("/api/v1/things", limit="100", offset=str(things // 2))
        group_list, _ = await timed("/api/v1/things", group="g", limit=str(things))
        prefix, response = await timed("/api/v1/things", prefix="thing-099")
        shows = [
            (await timed(f"/api/v1/things/thing-{i:05d}"))[0]
            for i in range(0, things, max(1, things // 200))
        ]
        certs, _ = await timed("/api/v1/certificates", limit="1000")
    return {
        "things": things,
        "create_per_s": things / created,
        "list_all_ms": list_all * 1000,
        "page_100_ms": page * 1000,
        "list_group_ms": group_list * 1000,
        "prefix_ms": prefix * 1000,
        "show_p50_ms": statistics.median(shows) * 1000,
        "show_p99_ms": percentile(shows, 99) * 1000,
        "certificates_1000_ms": certs * 1000,
    }


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--mqtt-messages", type=int, default=50_000)
    parser.add_argument("--things", type=int, default=10_000)
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--discovery-client", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.discovery_client:
        await discovery_client(json.loads(args.discovery_client))
        return 0
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as temp:
        directory = Path(temp)
        results["discovery"] = await bench_discovery(directory, args.devices, args.rounds)
        print("discovery", results["discovery"], flush=True)
        sqlite_rate = await bench_ingest(f"sqlite:///{directory / 'ingest.db'}", args.messages)
        results["ingest_sqlite_msg_per_s"] = sqlite_rate
        print(f"ingest sqlite {sqlite_rate:,.0f} msg/s", flush=True)
        if not args.skip_postgres:
            schema = f"hedgerow_bench_{uuid.uuid4().hex[:8]}"
            admin = sa.create_engine(PG_ADMIN)
            with admin.begin() as connection:
                connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
            try:
                url = f"postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
                pg_rate = await bench_ingest(url, args.messages)
                results["ingest_postgres_msg_per_s"] = pg_rate
                print(f"ingest postgres {pg_rate:,.0f} msg/s", flush=True)
            finally:
                with admin.begin() as connection:
                    connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
                admin.dispose()
        mqtt_rate = await bench_mqtt_ingest(directory, args.mqtt_messages)
        results["ingest_mqtt_sqlite_msg_per_s"] = mqtt_rate
        print(f"ingest via MQTT (QoS 1, mutual TLS) into sqlite {mqtt_rate:,.0f} msg/s", flush=True)
        results["registry"] = await bench_registry(directory, args.things)
        print("registry", results["registry"], flush=True)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
