"""Exports: to a real HTTP endpoint (with failures and retries, raw and JSON-batched) and to
the Hedgerow cloud through the core's real spool (SpoolWriter + SqliteSpool), by priority,
with progress kept across a restart. Clients are the V2 SDK from PyPI."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import stream_manager as sm

from hedgerow.core.router import SpoolWriter
from hedgerow.core.spool import IntakeLog, SqliteSpool
from hedgerow.streams.exporters import SpoolSink
from hedgerow.streams.manager import StreamManager, StreamsSettings
from hedgerow.streams.model import parse_definition

from .helpers import ServerThread, running, token_env


class Endpoint:
    """A real HTTP server on loopback that answers 503 to the first ``failures`` requests."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.received: list[tuple[str, str, bytes]] = []
        self.attempts = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.attempts += 1
                if outer.attempts <= outer.failures:
                    self.send_response(503)
                else:
                    outer.received.append((self.path, self.headers["Content-Type"], body))
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/ingest"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Endpoint:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def client_for() -> Iterator[Any]:
    clients: list[sm.StreamManagerClient] = []

    def make(server: ServerThread) -> sm.StreamManagerClient:
        with token_env():
            c = sm.StreamManagerClient(port=server.port)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()


def stream(name: str, *http: sm.HTTPConfig) -> sm.MessageStreamDefinition:
    return sm.MessageStreamDefinition(
        name=name,
        strategy_on_full=sm.StrategyOnFull.RejectNewData,
        persistence=sm.Persistence.File,
        export_definition=sm.ExportDefinition(http=list(http)),
    )


def test_http_export_retries_until_the_endpoint_takes_every_message(
    tmp_path: Path, client_for: Any
) -> None:
    with Endpoint(failures=2) as endpoint, running(StreamsSettings(tmp_path)) as server:
        c = client_for(server)
        c.create_message_stream(stream("raw", sm.HTTPConfig(identifier="site", uri=endpoint.url)))
        for i in range(20):
            c.append_message("raw", b"r%02d" % i)
        server.wait_until(lambda: len(endpoint.received) >= 20)
        assert [body for _p, _t, body in endpoint.received] == [b"r%02d" % i for i in range(20)]
        assert {(p, t) for p, t, _b in endpoint.received} == {
            ("/ingest", "application/octet-stream")
        }
        assert endpoint.attempts == 22  # two refused, then each message once
        status = c.describe_message_stream("raw").export_statuses[0]
        assert status.export_config_identifier == "site"
        assert status.last_exported_sequence_number == 19
        assert status.exported_messages_count == 20
        assert status.error_message == ""


def test_http_export_json_batched_sends_batch_size_messages_per_request(
    tmp_path: Path, client_for: Any
) -> None:
    with Endpoint() as endpoint, running(StreamsSettings(tmp_path)) as server:
        c = client_for(server)
        c.create_message_stream(
            stream(
                "batched",
                sm.HTTPConfig(
                    identifier="b",
                    uri=endpoint.url,
                    batch_size=10,
                    batch_interval_millis=60_000,
                    export_format=sm.ExportFormat.JSON_BATCHED,
                ),
            )
        )
        for i in range(25):
            c.append_message("batched", bytes([i, 0, 255]))
        server.wait_until(lambda: len(endpoint.received) >= 2)
        batches = [json.loads(body) for _p, _t, body in endpoint.received]
        assert [len(b) for b in batches] == [10, 10]  # the last 5 wait for the interval
        first = batches[0][0]
        assert first["streamName"] == "batched" and first["sequenceNumber"] == 0
        assert base64.b64decode(first["payload"]) == bytes([0, 0, 255])
        assert [m["sequenceNumber"] for m in batches[1]] == list(range(10, 20))


def spool_sink(directory: Path) -> tuple[SqliteSpool, Any]:
    spool = SqliteSpool(directory / "spool.db", 64 * 1024 * 1024, "drop-oldest", "always")

    def factory() -> SpoolSink:
        intake = IntakeLog(directory / "intake.log")
        return SpoolSink(SpoolWriter(spool, intake, lambda: None), spool)

    return spool, factory


def test_cloud_export_goes_through_the_spool_and_resumes_after_a_restart(
    tmp_path: Path, client_for: Any
) -> None:
    spool, factory = spool_sink(tmp_path)
    cloud = sm.HTTPConfig(identifier="cloud", uri="hedgerow://cloud", batch_size=100)
    settings = StreamsSettings(tmp_path / "streams", core="pi-1")
    try:
        with running(settings, cloud=factory) as server:
            c = client_for(server)
            c.create_message_stream(stream("metrics", cloud))
            for i in range(1000):
                c.append_message("metrics", b"v%04d" % i)
            server.wait_until(lambda: spool.stats().depth >= 1000)
            status = c.describe_message_stream("metrics").export_statuses[0]
            assert status.last_exported_sequence_number == 999
        records = spool.peek(0, 2000)
        assert {r.topic for r in records} == {"streams/pi-1/metrics"}
        assert [r.payload for r in records] == [b"v%04d" % i for i in range(1000)]
        assert {r.qos for r in records} == {1}

        with running(settings, cloud=factory) as server:
            c = client_for(server)
            for i in range(1000, 1010):
                assert c.append_message("metrics", b"v%04d" % i) == i
            server.wait_until(lambda: spool.stats().depth >= 1010)
            server.wait_until(
                lambda: (
                    server.manager is not None
                    and server.manager.progress()["metrics"]["backlog"] == 0
                )
            )
        records = spool.peek(0, 3000)
        assert [r.payload for r in records] == [b"v%04d" % i for i in range(1010)]  # no repeats
    finally:
        spool.close()


class RecordingSink:
    """An in-memory CloudSink with room for ``room_bytes`` at a time."""

    def __init__(self, room_bytes: int, accepted: bool = True) -> None:
        self.room_bytes = room_bytes
        self.accepted = accepted
        self.added: list[tuple[str, bytes]] = []

    def room(self) -> int:
        return self.room_bytes

    def accepts(self, topic: str) -> bool:
        return self.accepted

    def add(self, topic: str, payload: bytes, qos: int) -> None:
        self.added.append((topic, payload))


async def test_cloud_exports_serve_the_highest_priority_stream_first(tmp_path: Path) -> None:
    sink = RecordingSink(room_bytes=0)  # a full spool: nothing moves yet
    manager = StreamManager(StreamsSettings(None, core="c"), cloud=sink)
    async with manager:
        for name, priority in (("low", 9), ("high", 1), ("mid", 5)):
            manager.create(
                {
                    "name": name,
                    "strategyOnFull": 0,
                    "persistence": 1,
                    "exportDefinition": {
                        "http": [
                            {
                                "identifier": "c",
                                "uri": "hedgerow://cloud",
                                "batchSize": 5,
                                "priority": priority,
                            }
                        ]
                    },
                }
            )
            for i in range(10):
                await manager.append(name, b"%s-%d" % (name.encode(), i))
        sink.room_bytes = 1 << 20
        manager._cloud_wake.set()
        async with asyncio.timeout(10):
            while len(sink.added) < 30:
                await asyncio.sleep(0.01)
    order = [topic.rsplit("/", 1)[1] for topic, _ in sink.added]
    assert order == ["high"] * 10 + ["mid"] * 10 + ["low"] * 10


def test_export_uris_are_checked() -> None:
    from hedgerow.streams.errors import InvalidRequest

    for uri in ("ftp://x/y", "hedgerow://elsewhere", "hedgerow://cloud/a/+"):
        with pytest.raises(InvalidRequest, match="uri|topic|destination"):
            parse_definition(
                {
                    "name": "s",
                    "strategyOnFull": 0,
                    "exportDefinition": {"http": [{"identifier": "e", "uri": uri}]},
                }
            )


async def test_cloud_export_waits_while_the_cloud_would_refuse_the_topic(tmp_path: Path) -> None:
    sink = RecordingSink(room_bytes=1 << 20, accepted=False)  # no subscription to the cloud
    async with StreamManager(StreamsSettings(None, core="c"), cloud=sink) as manager:
        manager.create(
            {"name": "s", "strategyOnFull": 0, "persistence": 1,
             "exportDefinition": {"http": [{"identifier": "c", "uri": "hedgerow://cloud"}]}}
        )  # fmt: skip
        for i in range(5):
            await manager.append("s", b"%d" % i)
        async with asyncio.timeout(10):
            while not manager.describe("s")["exportStatuses"][0]["errorMessage"]:
                await asyncio.sleep(0.01)
        status = manager.describe("s")["exportStatuses"][0]
        assert (
            "add a subscription" in status["errorMessage"]
            and "streams/c/s" in status["errorMessage"]
        )
        assert sink.added == [] and manager.progress()["s"]["backlog"] == 5
        sink.accepted = True  # a deployment added the subscription
        manager._cloud_wake.set()
        async with asyncio.timeout(10):
            while len(sink.added) < 5:
                await asyncio.sleep(0.01)
        assert manager.describe("s")["exportStatuses"][0]["errorMessage"] == ""
