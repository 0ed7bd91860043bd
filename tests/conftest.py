"""Fixtures every test area shares: free loopback ports and a throwaway PKI on disk."""

from __future__ import annotations

import json
import os
import queue
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from hedgerow import pki

#: Ports handed out to servers under test: below the kernel's ephemeral range (32768+), so
#: no client connection of any test can take one between the pick and the server's bind,
#: and split between xdist workers so two workers never hand out the same one.
_PORT_RANGE = (20000, 32000)
_SERVICE_PORTS = frozenset({25672})  # RabbitMQ's distribution port sits inside the range


def _port_candidates() -> Iterator[int]:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    low, high = _PORT_RANGE
    span = (high - low) // workers
    start = low + (index % workers) * span
    offset = random.randrange(span)  # other pytest runs on the machine start elsewhere
    for i in range(span):
        port = start + (offset + i) % span
        if port not in _SERVICE_PORTS:
            yield port


_candidates: Iterator[int] | None = None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now, never one a client connection could take
    before the server binds it, nor one another xdist worker hands out."""
    global _candidates
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(2):
        if _candidates is None:
            _candidates = _port_candidates()
        for port in _candidates:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
                return port
        _candidates = None  # the worker's share went round once: start over
    raise RuntimeError("no free port in the test range")


def free_port_run(count: int, host: str = "127.0.0.1") -> int:
    """The first of ``count`` consecutive free ports (for a ``--port-base``), taken from this
    worker's share like ``free_port``, so no later pick hands one of them out again."""
    run: list[int] = []
    for _ in range(1000):
        port = free_port(host)
        run = run + [port] if run and port == run[-1] + 1 else [port]
        if len(run) == count:
            return run[0]
    raise RuntimeError(f"no {count} consecutive free ports in the test range")


@pytest.fixture
def port() -> int:
    return free_port()


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path


@dataclass
class TestPKI:
    """A root CA plus helpers to issue server and client certificates as files."""

    directory: Path
    root: pki.Issued

    @property
    def ca_file(self) -> Path:
        return self.directory / "root-ca.pem"

    def write(self, name: str, issued: pki.Issued) -> CertFiles:
        cert = self.directory / f"{name}.cert.pem"
        key = self.directory / f"{name}.key"
        cert.write_bytes(issued.cert_pem)
        key.write_bytes(issued.key_pem)
        return CertFiles(cert, key)

    def server(
        self, name: str = "server", hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
    ) -> CertFiles:
        return self.write(name, pki.issue(self.root, name, unit="server", server_hosts=hosts))

    def client(self, name: str, *, ca: pki.Issued | None = None) -> CertFiles:
        return self.write(name, pki.issue(ca or self.root, name, unit="thing"))


@pytest.fixture(scope="session")
def _root_ca() -> pki.Issued:
    return pki.make_ca("Hedgerow Test Root CA")


@pytest.fixture
def test_pki(tmp_path: Path, _root_ca: pki.Issued) -> TestPKI:
    directory = tmp_path / "pki"
    directory.mkdir()
    t = TestPKI(directory, _root_ca)
    t.ca_file.write_bytes(_root_ca.cert_pem)
    return t


FreePort = Callable[[], int]


@pytest.fixture
def free_port_factory() -> FreePort:
    return free_port


#: how long a device waits for one answer (CONNACK, PUBACK, a shadow reply)
DEVICE_WAIT = 15.0


class ShadowDevice:
    """A device on paho-mqtt speaking the AWS shadow protocol to a core (its own network
    thread, reconnecting by itself); what it hears on its shadow topics and on
    ``extra`` filters is queued in ``replies`` (JSON payloads)."""

    def __init__(
        self,
        thing: str,
        cert: Path,
        key: Path,
        host: str,
        port: int,
        ca: Path,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.thing = thing
        self.shadow = f"$aws/things/{thing}/shadow"
        self.extra = extra
        self.replies: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.connected = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=thing)
        self.client.tls_set(
            ca_certs=str(ca), certfile=str(cert), keyfile=str(key), cert_reqs=ssl.CERT_REQUIRED
        )
        self.client.reconnect_delay_set(0.2, 1)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *args: self.connected.clear()
        self.client.on_message = lambda c, u, m: self.replies.put((m.topic, json.loads(m.payload)))
        self.host, self.port = host, port

    def _on_connect(self, client: mqtt.Client, *args: object) -> None:
        client.subscribe([(f"{self.shadow}/#", 1), *((f, 1) for f in self.extra)])
        self.connected.set()

    def start(self) -> None:
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        assert self.connected.wait(DEVICE_WAIT), "the device did not connect to the core"

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def request(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        """Publish a shadow request; its accepted reply (rejected fails the test)."""
        token = f"t-{time.monotonic_ns()}"
        info = self.client.publish(
            f"{self.shadow}/{operation}", json.dumps({**body, "clientToken": token}), 1
        )
        info.wait_for_publish(DEVICE_WAIT)
        while True:
            topic, reply = self.replies.get(timeout=DEVICE_WAIT)
            if reply.get("clientToken") == token and topic.startswith(
                f"{self.shadow}/{operation}/"
            ):
                assert topic.endswith("/accepted"), (topic, reply)
                return reply

    def delta(self, timeout: float, want: dict[str, Any]) -> dict[str, Any]:
        """Wait for an ``update/delta`` whose state includes ``want``."""
        return self.heard(
            f"{self.shadow}/update/delta", timeout, lambda r: want.items() <= r["state"].items()
        )

    def heard(
        self, topic: str, timeout: float, accept: Callable[[dict[str, Any]], bool] | None = None
    ) -> dict[str, Any]:
        """Wait for a message on ``topic`` (whose JSON ``accept`` takes, when given)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"nothing accepted on {topic} within {timeout} s"
            try:
                got, reply = self.replies.get(timeout=left)
            except queue.Empty:
                continue
            if got == topic and (accept is None or accept(reply)):
                return reply
