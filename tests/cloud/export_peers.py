"""Real peers for the telemetry export tests: a webhook receiver (http.server in a thread
on a loopback port) that checks signatures and records what it took; an exchange and
queues of a test's own on the machine's RabbitMQ; a TCP forwarder that refuses and cuts."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import aiormq
from aiormq.abc import DeliveredMessage
from pamqp import commands as spec

from hedgerow.cloud.alerting import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from hedgerow.cloud.telemetry_export import decode_payload


class Receiver:
    """What the webhook server saw. ``fail_next`` answers 500 that many times first;
    ``delay_s`` holds each request (to catch two exporters at once)."""

    def __init__(self, secret: str = "", *, fail_next: int = 0, delay_s: float = 0.0) -> None:
        self.secret = secret
        self.fail_next = fail_next
        self.delay_s = delay_s
        self.lock = threading.Lock()
        #: ids in the order they were accepted (a 200 was answered)
        self.ids: list[int] = []
        self.payloads: dict[int, bytes] = {}
        self.batches = 0
        self.refused = 0
        self.bad_signatures = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.headers: list[dict[str, str]] = []

    def take(self, headers: dict[str, str], body: bytes) -> int:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay_s:
                time.sleep(self.delay_s)
            with self.lock:
                if self.secret and not verify(
                    self.secret,
                    headers.get(TIMESTAMP_HEADER.lower(), ""),
                    body,
                    headers.get(SIGNATURE_HEADER.lower(), ""),
                ):
                    self.bad_signatures += 1
                    return 401
                if self.fail_next > 0:
                    self.fail_next -= 1
                    self.refused += 1
                    return 500
                document: dict[str, Any] = json.loads(body)
                for item in document["messages"]:
                    self.ids.append(item["id"])
                    self.payloads[item["id"]] = decode_payload(item)
                self.batches += 1
                self.headers.append(headers)
                return 200
        finally:
            with self.lock:
                self.in_flight -= 1

    def distinct(self) -> set[int]:
        with self.lock:
            return set(self.ids)


@contextmanager
def webhook_server(
    receiver: Receiver, port: int, tls: ssl.SSLContext | None = None
) -> Iterator[str]:
    """Serve ``receiver`` on 127.0.0.1:``port`` (HTTPS with ``tls``); yields the URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            status = receiver.take(headers, body)
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True)
    thread.start()
    try:
        scheme = "https" if tls is not None else "http"
        yield f"{scheme}://localhost:{port}/telemetry"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# ---- AMQP: the machine's RabbitMQ, a private exchange and queue per test ---------------------

RABBITMQ_AMQP = "amqp://guest:guest@127.0.0.1:5672/"


class AmqpPeer:
    """A topic exchange and a queue of this test's own on the machine's RabbitMQ (named
    uniquely, deleted at the end): what an AMQP consumer of the export sees."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:10]
        self.exchange = f"hedgerow-test-{tag}"
        self.queue = f"hedgerow-test-{tag}"
        self.queues: list[str] = []
        self.connection: aiormq.Connection | None = None
        self.channel: aiormq.abc.AbstractChannel | None = None

    async def __aenter__(self) -> AmqpPeer:
        self.connection = await aiormq.connect(RABBITMQ_AMQP)
        self.channel = await self.connection.channel()
        await self.channel.exchange_declare(self.exchange, exchange_type="topic")
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.connection is not None
        channel = await self.connection.channel()
        for queue in self.queues:
            await channel.queue_delete(queue)
        await channel.exchange_delete(self.exchange)
        await self.connection.close()

    async def bind(
        self, binding_key: str = "#", *, suffix: str = "", arguments: dict[str, Any] | None = None
    ) -> str:
        """A queue (durable, this test's) bound to the exchange with ``binding_key``."""
        assert self.channel is not None
        name = self.queue + suffix
        await self.channel.queue_declare(name, durable=True, arguments=arguments or {})
        await self.channel.queue_bind(name, self.exchange, routing_key=binding_key)
        self.queues.append(name)
        return name

    async def unbind(self, queue: str, binding_key: str = "#") -> None:
        assert self.channel is not None
        await self.channel.queue_unbind(queue, self.exchange, routing_key=binding_key)

    async def take(self, queue: str | None = None) -> list[DeliveredMessage]:
        """Every message in ``queue`` now, in queue order (basic.get until empty)."""
        assert self.channel is not None
        got: list[DeliveredMessage] = []
        while True:
            message = await self.channel.basic_get(queue or self.queue, no_ack=True)
            if isinstance(message.delivery, spec.Basic.GetEmpty):
                return got
            got.append(message)


# ---- a TCP forwarder that can refuse and cut --------------------------------------------------


class Forwarder:
    """127.0.0.1:``port`` forwarded to ``upstream``; ``refuse()`` closes the listener (a
        connect is refused), ``cut()`` closes every forwarded connection; ``cut_after`` bytes
        client → upstream (per connection) closes it mid-stream. With ``tls`` it is the TLS end
    of a plain upstream (as a TLS-terminating load balancer in front of a broker)."""

    def __init__(
        self, port: int, upstream: tuple[str, int], tls: ssl.SSLContext | None = None
    ) -> None:
        self.port = port
        self.upstream = upstream
        self.tls = tls
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.cut_after: int | None = None
        self.connections = 0
        self.cuts = 0

    async def accept(self) -> None:
        self.server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True, ssl=self.tls
        )

    async def refuse(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        self.cut()

    def cut(self) -> None:
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self.writers |= {writer, up_writer}
        limit = self.cut_after
        async with asyncio.TaskGroup() as group:
            group.create_task(self._pipe(reader, up_writer, writer, limit))
            group.create_task(self._pipe(up_reader, writer, up_writer, None))

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        other: asyncio.StreamWriter,
        limit: int | None,
    ) -> None:
        sent = 0
        try:
            while data := await reader.read(65536):
                if limit is not None and sent + len(data) > limit:
                    writer.write(data[: limit - sent])
                    self.cuts += 1
                    break
                sent += len(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()
            other.transport.abort()
            self.writers.discard(writer)
            self.writers.discard(other)
