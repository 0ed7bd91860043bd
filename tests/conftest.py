"""Fixtures every test area shares: free loopback ports and a throwaway PKI on disk."""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

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
