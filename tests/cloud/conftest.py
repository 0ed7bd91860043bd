"""Fixtures for the cloud: a running CloudServer on free ports, on SQLite or PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from hedgerow import pki
from hedgerow.cloud import config as config_module
from hedgerow.cloud import core_bundle as bundle
from hedgerow.cloud.config import CloudConfig, Listen
from hedgerow.cloud.datadir import init_data_dir
from hedgerow.cloud.pki_service import PKIService
from hedgerow.cloud.server import CloudServer
from hedgerow.cloud.services import CloudServices, NullNotifier, PublicEndpoints
from hedgerow.cloud.storage.database import create_engine, migrate
from hedgerow.cloud.storage.repository import Repository

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def pg_url(schema: str) -> str:
    return f"postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A private schema in the shared database ``test``, dropped afterwards."""
    schema = f"hedgerow_cloud_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(PG_ADMIN_URL)
    with engine.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield schema
    finally:
        with engine.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        return ""
    schema: str = request.getfixturevalue("pg_schema")
    return pg_url(schema)


def loopback_config(data_dir: Path, database: str = "", **changes: Any) -> CloudConfig:
    config, _ = init_data_dir(
        data_dir,
        database=database,
        api=Listen("127.0.0.1", 0),
        device=Listen("127.0.0.1", 0),
        mqtt=Listen("127.0.0.1", 0),
    )
    return config.replace(**changes) if changes else config


@pytest.fixture(scope="session")
def cloud_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One initialised data directory (SQLite) that each test copies: init once per worker."""
    directory = tmp_path_factory.mktemp("template") / "cloud"
    loopback_config(directory)
    return directory


def clone_config(template: Path, target: Path, database: str = "") -> CloudConfig:
    """A fresh data directory from the template; on PostgreSQL, migrated and with the token."""
    shutil.copytree(template, target)
    config = config_module.load(target)
    if database:
        config = config.replace(database=database)
        config_module.save(config)
        engine = create_engine(config.database_url)
        try:
            migrate(engine)
            Repository(engine).add_token("admin", (target / "admin-token").read_text().strip())
        finally:
            engine.dispose()
    return config


@dataclass
class Cloud:
    """A running cloud and an authenticated API client."""

    server: CloudServer
    api: httpx.AsyncClient
    data: Path

    @property
    def token(self) -> str:
        return (self.data / "admin-token").read_text().strip()

    @property
    def device_port(self) -> int:
        assert self.server.endpoints is not None
        return self.server.endpoints.device[1]

    @property
    def mqtt_port(self) -> int:
        assert self.server.endpoints is not None and self.server.endpoints.mqtt is not None
        return self.server.endpoints.mqtt[1]

    @property
    def root_ca(self) -> Path:
        return self.data / "pki" / "root-ca.pem"

    async def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.api.request(method, path, **kwargs)
        assert response.status_code < 300, response.text
        return response.json()

    async def thing(self, name: str, groups: list[str], directory: Path) -> tuple[Path, Path]:
        """Create a thing; its certificate and key as files."""
        body = await self.ok("POST", "/api/v1/things", json={"name": name, "groups": groups})
        cert = directory / f"{name}.cert.pem"
        key = directory / f"{name}.key"
        cert.write_text(body["certificate"])
        key.write_text(body["private_key"])
        return cert, key

    async def core(self, name: str, group: str, directory: Path) -> tuple[Path, Path]:
        """Create a core from the bundle; its identity certificate and key as files."""
        body = await self.ok("POST", "/api/v1/cores", json={"name": name, "group": group})
        import base64

        files = bundle.read_bundle(base64.b64decode(body["bundle"]))
        cert = directory / f"{name}.core.cert.pem"
        key = directory / f"{name}.core.key"
        cert.write_bytes(files[bundle.CORE_CERT])
        key.write_bytes(files[bundle.CORE_KEY])
        return cert, key

    def device_client(self, cert: Path, key: Path) -> httpx.AsyncClient:
        ctx = pki.client_context(str(self.root_ca), str(cert), str(key))
        return httpx.AsyncClient(
            base_url=f"https://127.0.0.1:{self.device_port}", verify=ctx, timeout=10
        )


@pytest.fixture
async def cloud(tmp_path: Path, database_url: str, cloud_template: Path) -> AsyncIterator[Cloud]:
    config = await asyncio.to_thread(clone_config, cloud_template, tmp_path / "cloud", database_url)
    async with CloudServer(config) as server:
        async with httpx.AsyncClient(
            base_url=server.api_url,
            headers={"authorization": f"Bearer {server.admin_token}"},
            timeout=10,
        ) as api:
            yield Cloud(server, api, config.data_dir)


@dataclasses.dataclass
class Built:
    """The services over a real SQLite repository, with a recording notifier."""

    services: CloudServices
    notifier: NullNotifier
    routes_changes: list[int]


@pytest.fixture
async def built(tmp_path: Path, cloud_template: Path, database_url: str) -> AsyncIterator[Built]:
    config = await asyncio.to_thread(clone_config, cloud_template, tmp_path / "cloud", database_url)
    engine = create_engine(config.database_url)
    await asyncio.to_thread(migrate, engine)
    repository = Repository(engine)
    notifier = NullNotifier()
    changes: list[int] = []

    async def routes_changed() -> None:
        changes.append(1)

    services = CloudServices.build(
        repository,
        PKIService(config.paths, repository),
        notifier=notifier,
        endpoints=lambda: PublicEndpoints("https://cloud.test:8443", "mqtts://cloud.test:8884"),
        routes_changed=routes_changed,
    )
    try:
        yield Built(services, notifier, changes)
    finally:
        engine.dispose()


async def stored_payloads(database: str, total: int) -> list[int]:
    """The payloads in the messages table once all ``total`` arrived (or after 60 s)."""
    engine = sa.create_engine(database.replace("postgresql://", "postgresql+psycopg://"))
    seen: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(set(seen)) < total and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            with engine.connect() as db:
                rows = db.execute(sa.text("SELECT payload FROM messages")).scalars()
                seen = [int(bytes(p)) for p in rows]
    finally:
        engine.dispose()
    return seen
