"""Fixtures for the device SDK: a PKI with a group CA, a discovery stand-in, a core broker.

The discovery stand-in speaks the compat.md §1 format over mutual TLS (h11 on an asyncio
server): it checks the client certificate's name against the path like the cloud does and
answers whatever ``response`` currently says, so tests can rotate CAs or fail on purpose.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11
import pytest

from hedgerow import pki
from hedgerow.broker import Broker, CertificateAuthenticator, Identity
from hedgerow.thing import BackoffPolicy, Credentials, ThingConfig
from tests.conftest import CertFiles, TestPKI

FAST_BACKOFF = BackoffPolicy(base=0.05, cap=0.2, stable_after=5.0)


@dataclass
class GroupCA:
    issued: pki.Issued
    core: CertFiles

    @property
    def pem(self) -> str:
        return self.issued.cert_pem.decode()


@dataclass
class Env:
    pki: TestPKI
    thing: CertFiles
    thing_name: str
    directory: Path
    groups: list[GroupCA] = field(default_factory=list)

    def new_group_ca(self, label: str) -> GroupCA:
        ca = pki.make_ca(f"group CA {label}")
        core = self.pki.write(
            f"core-{label}",
            pki.issue(ca, "core-1", unit="server", server_hosts=("127.0.0.1", "localhost")),
        )
        group = GroupCA(ca, core)
        self.groups.append(group)
        return group

    @property
    def credentials(self) -> Credentials:
        return Credentials.load(self.pki.ca_file, self.thing.cert, self.thing.key)

    def config(self, endpoint: str, **options: Any) -> ThingConfig:
        options.setdefault("backoff", FAST_BACKOFF)
        options.setdefault("cache_dir", self.directory / "state")
        options.setdefault("connect_timeout", 3.0)
        options.setdefault("discovery_timeout", 3.0)
        return ThingConfig(self.thing_name, endpoint, self.credentials, **options)


@pytest.fixture
def env(test_pki: TestPKI, tmp_path: Path) -> Env:
    thing = test_pki.client("bme680-1")
    e = Env(test_pki, thing, "bme680-1", tmp_path)
    e.new_group_ca("a")
    return e


def discovery_body(
    group_ca_pems: list[str], port: int, host: str = "127.0.0.1", group: str = "grp-1"
) -> dict[str, Any]:
    return {
        "GGGroups": [
            {
                "GGGroupId": group,
                "Cores": [
                    {
                        "thingArn": "arn:aws:iot:local:000000000000:thing/core-1",
                        "Connectivity": [
                            {
                                "Id": f"{host}_{port}",
                                "HostAddress": host,
                                "PortNumber": port,
                                "Metadata": "",
                            }
                        ],
                    }
                ],
                "CAs": group_ca_pems,
            }
        ]
    }


class DiscoveryStandIn:
    """A minimal compat.md §1 discovery server; ``response`` is (status, JSON body)."""

    def __init__(self, env: Env) -> None:
        server = env.pki.server("discovery", hosts=("127.0.0.1", "localhost"))
        self.ctx = pki.server_context(
            str(server.cert), str(server.key), str(env.pki.ca_file), require_client_cert=True
        )
        self.response: tuple[int, Any] = (404, {"errorMessage": "no groups"})
        self.requests: list[str] = []
        #: when each request arrived (``time.monotonic``), and headers added to every answer
        self.request_times: list[float] = []
        self.headers: list[tuple[str, str]] = []
        self.hang = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", port, ssl=self.ctx)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            await self._server.wait_closed()
            self._server = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        self._writers.add(writer)
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    conn.receive_data(data)
                    if not data:
                        return
                    continue
                if isinstance(event, h11.Request):
                    break
                if isinstance(event, h11.ConnectionClosed):
                    return
            target = event.target.decode()
            self.requests.append(target)
            self.request_times.append(time.monotonic())
            if self.hang:
                await asyncio.Event().wait()
            peer = pki.peer_certificate(writer.get_extra_info("ssl_object"))
            name = target.rsplit("/", 1)[-1]
            status, body = self.response
            if peer is None or pki.name_of(peer) != name:
                status, body = 401, {"errorMessage": "certificate does not match the thing"}
            data = json.dumps(body).encode()
            writer.write(
                conn.send(
                    h11.Response(
                        status_code=status,
                        headers=[("content-length", str(len(data))), *self.headers],
                        reason=b"X",
                    )
                )
                or b""
            )
            writer.write(conn.send(h11.Data(data=data)) or b"")
            writer.write(conn.send(h11.EndOfMessage()) or b"")
            await writer.drain()
        except (ConnectionError, ssl.SSLError, h11.RemoteProtocolError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


@pytest.fixture
async def discovery(env: Env) -> AsyncIterator[DiscoveryStandIn]:
    server = DiscoveryStandIn(env)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class Recorder:
    """A broker interceptor keeping every PUBLISH the core accepted (no subscriber race)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str, bytes]] = []
        self._changed = asyncio.Event()

    def __call__(self, identity: Identity, publish: Any) -> None:
        self.messages.append((identity.name, publish.topic, bytes(publish.payload)))
        self._changed.set()

    def payloads(self) -> list[bytes]:
        return [payload for _, _, payload in self.messages]

    async def wait_for(self, count: int, limit: float = 15.0) -> list[bytes]:
        async with asyncio.timeout(limit):
            while len(self.messages) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.payloads()


@asynccontextmanager
async def core_broker(
    env: Env, group: GroupCA, port: int, recorder: Recorder | None = None
) -> AsyncIterator[Broker]:
    """A Hedgerow broker standing in for the core: server cert from ``group``, mTLS to the root."""
    ctx = pki.server_context(
        str(group.core.cert), str(group.core.key), str(env.pki.ca_file), require_client_cert=True
    )
    async with Broker(authenticator=CertificateAuthenticator()) as broker:
        if recorder is not None:
            broker.add_interceptor(recorder)
        await broker.listen("127.0.0.1", port, ssl=ctx)
        yield broker


def subscriber_credentials(env: Env, group: GroupCA) -> ssl.SSLContext:
    """A second device's TLS context, for a test subscriber on the core."""
    files = env.pki.client("observer")
    return pki.client_context(ca_data=group.pem, cert_file=str(files.cert), key_file=str(files.key))
