"""Fixtures every test area shares: free loopback ports and a throwaway PKI on disk."""

from __future__ import annotations

import json
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from hedgerow import pki


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on loopback right now (the OS picks; never a service's port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


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
