"""Servers for the client tests: the machine's Mosquitto, private Mosquitto instances
(TLS, mutual TLS, passwords) started as subprocesses, and a scripted in-process server."""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import TestPKI, free_port

SHARED_HOST = "127.0.0.1"
SHARED_PORT = 1883
#: how long a private mosquitto may take to open its port
START_TIMEOUT = 10.0


@pytest.fixture
def topic() -> str:
    """A topic prefix no other test (or test run) uses on the shared broker."""
    return f"hedgerow-test/{uuid.uuid4().hex}"


@pytest.fixture
def shared_broker() -> tuple[str, int]:
    """The machine's Mosquitto; fails (never skips) when it is not there."""
    with socket.create_connection((SHARED_HOST, SHARED_PORT), timeout=2):
        pass
    return SHARED_HOST, SHARED_PORT


@dataclass
class Mosquitto:
    """A private mosquitto process listening on ``port``."""

    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mosquitto exited with {process.returncode}: {log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"mosquitto did not open port {port}: {log.read_text()}")


MosquittoFactory = Callable[..., Mosquitto]


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoFactory]:
    """Start private mosquitto instances: ``mosquitto(**options)`` with config lines as keys
    (``cafile=...``, ``require_certificate="true"``); stopped when the test ends."""
    started: list[Mosquitto] = []

    def start(**options: object) -> Mosquitto:
        port = free_port()
        name = f"mosquitto-{len(started)}"
        conf = tmp_path / f"{name}.conf"
        log = tmp_path / f"{name}.log"
        lines = [
            f"listener {port} 127.0.0.1",
            "user root",
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        options.setdefault("allow_anonymous", "true")
        lines += [f"{key} {value}" for key, value in options.items()]
        conf.write_text("\n".join(lines) + "\n")
        with log.open("wb") as log_file:
            process = subprocess.Popen(
                ["mosquitto", "-c", str(conf)], stdout=log_file, stderr=subprocess.STDOUT
            )
        server = Mosquitto(port, process, log)
        started.append(server)
        wait_for_port(port, process, log)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def tls_options(test_pki: TestPKI) -> dict[str, object]:
    """mosquitto config lines for a TLS listener with a server cert from the test PKI."""
    server = test_pki.server()
    return {"cafile": test_pki.ca_file, "certfile": server.cert, "keyfile": server.key}
