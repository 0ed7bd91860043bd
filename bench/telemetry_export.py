"""Benchmark telemetry export: messages/s from the database to a webhook, to Mosquitto and
to RabbitMQ over AMQP 0-9-1.

    .venv/bin/python bench/telemetry_export.py            # 50,000 messages per run, < 1 min
    .venv/bin/python bench/telemetry_export.py --quick    # 10,000
    .venv/bin/python bench/telemetry_export.py --database postgresql://postgres@127.0.0.1/test
    .venv/bin/python bench/telemetry_export.py --amqp ""  # no RabbitMQ here: skip AMQP

N messages (100-byte JSON payloads) are stored first; then one ``TargetExporter`` (the
cloud's job, without the 0.5 s pause between ticks) exports them, and the clock stops
when the cursor reached the last id: every batch acknowledged (a 2xx from the webhook,
a PUBACK for every message from Mosquitto, a publisher confirm for every persistent
message from RabbitMQ). The webhook receiver is ``http.server`` in a
child process on a loopback port (it parses and counts the JSON); Mosquitto is a private
instance on a free port; RabbitMQ is the machine's (``--amqp``), publishing to a topic
exchange of the run's own with one durable classic queue bound to it (its message count
checked and the queue purged after each run, deleted at the end). Every run is bounded by ``DEADLINE_S``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402
from tests.client.conftest import wait_for_port  # noqa: E402
from tests.conftest import free_port  # noqa: E402

from hedgerow.cloud.config import normalise_database_url  # noqa: E402
from hedgerow.cloud.exporters import TargetExporter, sender_for  # noqa: E402
from hedgerow.cloud.storage.database import create_engine, migrate  # noqa: E402
from hedgerow.cloud.storage.repository import Repository  # noqa: E402
from hedgerow.cloud.telemetry_export import export_target  # noqa: E402

DEADLINE_S = 120.0
RABBITMQ = "amqp://guest:guest@127.0.0.1:5672/"


def _receive(port: int, count: Any, ready: Any) -> None:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            taken = len(json.loads(body)["messages"])
            with count.get_lock():
                count.value += taken
            self.send_response(204)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    ready.set()
    server.serve_forever()


async def export_all(repository: Repository, target_fields: dict[str, Any]) -> float:
    """Seconds until every stored message was acknowledged by the target."""
    target = export_target(**target_fields)
    last = repository.max_message_id()
    exporter = TargetExporter(target, repository, sender_for(target), max_batches=10**6)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(DEADLINE_S):
            while True:
                await exporter.tick()
                state = repository.open_export(target.name, newest=False)
                if state.cursor == last:
                    break
                if state.failing:
                    raise RuntimeError(f"{target.name} failing: {state.last_error}")
    finally:
        await exporter.sender.close()
    return time.perf_counter() - started


async def amqp_runs(repository: Repository, url: str, total: int) -> list[tuple[str, int, float]]:
    """The AMQP target at batches of 100, 500, 2,000, into one durable queue of the run's own."""
    import aiormq

    name = f"bench-export-{uuid.uuid4().hex[:8]}"
    connection = await aiormq.connect(url)
    channel = await connection.channel()
    await channel.exchange_declare(name, exchange_type="topic")
    await channel.queue_declare(name, durable=True)
    await channel.queue_bind(name, name, routing_key="sensors.#")
    results: list[tuple[str, int, float]] = []
    try:
        for batch in (100, 500, 2000):
            fields = {"kind": "amqp", "url": url, "exchange": name, "batch_size": batch}
            seconds = await export_all(repository, {"name": f"{name}-{batch}", **fields})
            results.append((f"RabbitMQ AMQP, persistent + confirms, batch {batch}", total, seconds))
            queued = await channel.queue_declare(name, passive=True)
            assert queued.message_count == total, f"the queue holds {queued.message_count}"
            await channel.queue_purge(name)  # each run starts on an empty queue
    finally:
        await channel.queue_delete(name)
        await channel.exchange_delete(name)
        await connection.close()
    return results


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"machine: {model}, {os.cpu_count()} cores; Python {platform.python_version()}; "
        f"load average at start {os.getloadavg()[0]:.1f}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--messages", type=int, default=0)
    parser.add_argument("--database", default="", help="PostgreSQL URL (default: SQLite file)")
    parser.add_argument("--amqp", default=RABBITMQ, help='RabbitMQ\'s AMQP URL ("": skip)')
    args = parser.parse_args()
    total = args.messages or (10_000 if args.quick else 50_000)
    print(machine())
    work = Path(tempfile.mkdtemp(prefix="bench-export-"))
    schema = ""
    admin: sa.Engine | None = None
    if args.database:
        schema = f"bench_export_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(normalise_database_url(args.database))
        with admin.begin() as connection:
            connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        url = f"{args.database}?options=-csearch_path%3D{schema}"
    else:
        url = f"sqlite:///{work / 'cloud.db'}"
    engine = create_engine(normalise_database_url(url))
    migrate(engine)
    repository = Repository(engine)
    payload = json.dumps({"t": 21.5, "rh": 40.1, "pad": "x" * 70}).encode()[:100]
    now = time.time()
    for start in range(0, total, 10_000):
        rows = [
            (f"sensors/{i % 50}", payload, "pi-1", now)
            for i in range(start, min(total, start + 10_000))
        ]
        repository.insert_messages(rows)
    print(f"database: {engine.dialect.name}; {total} messages of {len(payload)} bytes stored")

    context = multiprocessing.get_context("spawn")
    count, ready = context.Value("q", 0), context.Event()
    port = free_port()
    receiver = context.Process(target=_receive, args=(port, count, ready), daemon=True)
    receiver.start()
    ready.wait(10)
    mosquitto_port = free_port()
    conf = work / "mosquitto.conf"
    conf.write_text(f"listener {mosquitto_port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "max_inflight_messages 0\nmax_queued_messages 0\nset_tcp_nodelay true\n")  # fmt: skip
    log = work / "mosquitto.log"
    with log.open("wb") as stream:
        broker = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=stream, stderr=stream)
    results: list[tuple[str, int, float]] = []
    try:
        wait_for_port(mosquitto_port, broker, log)
        runs: list[tuple[str, dict[str, Any]]] = []
        for batch in (100, 500, 2000):
            runs.append((f"webhook, batch {batch}", {"kind": "webhook", "batch_size": batch,
                         "url": f"http://127.0.0.1:{port}/in", "secret": "k"}))  # fmt: skip
        for batch in (100, 500, 2000):
            runs.append((f"mosquitto QoS 1, batch {batch}", {"kind": "mqtt", "batch_size": batch,
                         "url": f"mqtt://127.0.0.1:{mosquitto_port}"}))  # fmt: skip
        for index, (label, fields) in enumerate(runs):
            seconds = await export_all(repository, {"name": f"run{index}", **fields})
            results.append((label, total, seconds))
        assert count.value == 3 * total, f"the receiver counted {count.value}"
        if args.amqp:
            results += await amqp_runs(repository, args.amqp, total)
    finally:
        broker.terminate()
        broker.wait(5)
        receiver.terminate()
        engine.dispose()
        if admin is not None:
            with admin.begin() as connection:
                connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
        shutil.rmtree(work, ignore_errors=True)
    print()
    print("| target | messages | seconds | msg/s |")
    print("|---|---|---|---|")
    for label, n, seconds in results:
        print(f"| {label} | {n} | {seconds:.2f} | {n / seconds:,.0f} |")


if __name__ == "__main__":
    asyncio.run(main())
