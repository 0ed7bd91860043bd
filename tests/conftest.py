"""Fixtures every test area shares: free loopback ports and a throwaway PKI on disk."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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
