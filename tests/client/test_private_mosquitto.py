"""The client against private Mosquitto instances: TLS, mutual TLS, passwords, a broker that
goes away."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from hedgerow import pki
from hedgerow.client import (
    Client,
    ClientError,
    ConnectError,
    ConnectionLost,
    ProtocolVersion,
)
from hedgerow.mqtt.reasons import ReasonCode
from tests.conftest import TestPKI as PKIFiles

from .conftest import MosquittoFactory

pytestmark = pytest.mark.mosquitto

WAIT = 5.0
VERSIONS = [ProtocolVersion.V311, ProtocolVersion.V5]


async def round_trip(client: Client, topic: str) -> bytes:
    await client.subscribe(topic, qos=1)
    await client.publish(topic, b"over tls", qos=1)
    async with asyncio.timeout(WAIT):
        return (await client.get_message()).payload


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_tls_with_hostname_check(
    mosquitto: MosquittoFactory, tls_options: dict[str, object], test_pki: PKIFiles, host: str
) -> None:
    server = mosquitto(**tls_options)
    ctx = pki.client_context(str(test_pki.ca_file))
    assert ctx.check_hostname
    async with Client(host, server.port, ssl=ctx, client_id="tls-1") as client:
        assert await round_trip(client, "tls/t") == b"over tls"


async def test_tls_server_hostname_overrides_the_host(
    mosquitto: MosquittoFactory, tls_options: dict[str, object], test_pki: PKIFiles
) -> None:
    server = mosquitto(**tls_options)
    ctx = pki.client_context(str(test_pki.ca_file))
    async with Client("127.0.0.1", server.port, ssl=ctx, server_hostname="localhost") as client:
        assert client.is_connected
    with pytest.raises(ConnectError) as caught:
        await Client("127.0.0.1", server.port, ssl=ctx, server_hostname="other.example").connect()
    assert caught.value.reason_code is None
    assert "certificate" in str(caught.value).lower()


async def test_tls_refuses_a_server_from_another_ca(
    mosquitto: MosquittoFactory, tls_options: dict[str, object], tmp_path: Path
) -> None:
    server = mosquitto(**tls_options)
    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_bytes(pki.make_ca("Someone Else").cert_pem)
    ctx = pki.client_context(str(other_ca))
    with pytest.raises(ConnectError) as caught:
        await Client("127.0.0.1", server.port, ssl=ctx).connect()
    assert caught.value.reason_code is None


@pytest.mark.parametrize("version", VERSIONS)
async def test_mutual_tls_accepts_a_client_certificate(
    mosquitto: MosquittoFactory,
    tls_options: dict[str, object],
    test_pki: PKIFiles,
    version: ProtocolVersion,
) -> None:
    server = mosquitto(require_certificate="true", **tls_options)
    device = test_pki.client("bme680-1")
    ctx = pki.client_context(str(test_pki.ca_file), str(device.cert), str(device.key))
    async with Client(
        "localhost", server.port, ssl=ctx, version=version, client_id="bme680-1"
    ) as c:
        assert await round_trip(c, "mtls/t") == b"over tls"


async def test_mutual_tls_refuses_a_client_without_certificate(
    mosquitto: MosquittoFactory, tls_options: dict[str, object], test_pki: PKIFiles
) -> None:
    server = mosquitto(require_certificate="true", **tls_options)
    ctx = pki.client_context(str(test_pki.ca_file))
    client = Client("localhost", server.port, ssl=ctx, client_id="anonymous", connect_timeout=5)
    with pytest.raises(ConnectError) as caught:
        await client.connect()
    assert caught.value.reason_code is None
    assert not client.is_connected


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "passwords"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(path), "sensor", "s3cret"],
        check=True,
        capture_output=True,
    )
    return path


@pytest.mark.parametrize("version", VERSIONS)
async def test_bad_credentials_are_refused_with_the_code(
    mosquitto: MosquittoFactory, password_file: Path, version: ProtocolVersion
) -> None:
    server = mosquitto(allow_anonymous="false", password_file=password_file)
    good = Client("127.0.0.1", server.port, version=version, username="sensor", password="s3cret")
    async with good:
        assert good.connack is not None and good.connack.reason_code == 0
    bad = Client("127.0.0.1", server.port, version=version, username="sensor", password="wrong")
    with pytest.raises(ConnectError) as caught:
        await bad.connect()
    # reason codes are MQTT 5 values on both versions (3.1.1's return code 4 maps to 0x86)
    assert caught.value.reason_code in (
        ReasonCode.BAD_USER_NAME_OR_PASSWORD,
        ReasonCode.NOT_AUTHORIZED,
    )
    anonymous = Client("127.0.0.1", server.port, version=version)
    with pytest.raises(ConnectError) as caught:
        await anonymous.connect()
    assert caught.value.reason_code is not None and caught.value.reason_code >= 0x80
    assert not bad.is_connected and not anonymous.is_connected


async def test_connection_refused_is_a_connect_error() -> None:
    from tests.conftest import free_port

    with pytest.raises(ConnectError) as caught:
        await Client("127.0.0.1", free_port()).connect()
    assert caught.value.reason_code is None
    assert isinstance(caught.value.__cause__, OSError)


@pytest.mark.parametrize("version", VERSIONS)
async def test_broker_going_away_fails_everything_with_connection_lost(
    mosquitto: MosquittoFactory, version: ProtocolVersion
) -> None:
    server = mosquitto()
    seen: list[ClientError | None] = []
    client = Client("127.0.0.1", server.port, version=version, on_disconnect=seen.append)
    await client.connect()
    await client.subscribe("lost/#", qos=1)
    iterator_failed: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    async def consume() -> None:
        try:
            async for _ in client.messages():
                pass
        except ConnectionLost as exc:
            iterator_failed.set_result(exc)

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(consume(), name="consume")
        server.stop()
        error = await asyncio.wait_for(client.closed, WAIT)
    assert isinstance(error, ConnectionLost)
    assert isinstance(iterator_failed.result(), ConnectionLost)
    assert seen == [error]
    assert not client.is_connected
    with pytest.raises(ConnectionLost):
        await client.publish("lost/x", b"", qos=1)


async def test_reconnect_after_the_broker_comes_back(mosquitto: MosquittoFactory) -> None:
    first = mosquitto()
    client = Client("127.0.0.1", first.port, client_id="comeback")
    await client.connect()
    first.stop()
    assert isinstance(await asyncio.wait_for(client.closed, WAIT), ConnectionLost)
    second = mosquitto()
    client.port = second.port
    async with client:
        assert client.is_connected
        assert await round_trip(client, "back/t") == b"over tls"
