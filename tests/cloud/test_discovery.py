"""Greengrass V1 discovery with the real AWSIoTPythonSDK and awsiotsdk (awscrt) clients."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import logging
import socket
import ssl
import warnings
from pathlib import Path

import pytest
from awscrt import io as crt_io
from awsiot.greengrass_discovery import DiscoverResponse, DiscoveryClient, DiscoveryException
from AWSIoTPythonSDK.core.greengrass.discovery.providers import DiscoveryInfoProvider
from AWSIoTPythonSDK.exception.AWSIoTExceptions import (
    DiscoveryDataNotFoundException,
    DiscoveryUnauthorizedException,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from hedgerow import pki
from hedgerow.cloud.pki_service import record_of

from .conftest import Cloud


def v1_discover(cloud: Cloud, cert: Path, key: Path, thing: str, host: str = "127.0.0.1") -> object:
    """The V1 SDK's discovery; it never closes its socket, so collect it here, quietly."""
    error: Exception | None = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        provider = DiscoveryInfoProvider()
        provider.configureEndpoint(host, cloud.device_port)
        provider.configureCredentials(str(cloud.root_ca), str(cert), str(key))
        provider.configureTimeout(10)
        try:
            result = provider.discover(thing)
        except Exception as exc:
            exc.__traceback__ = None
            error = exc
        del provider
        gc.collect()
    if error is not None:
        raise error
    return result


def v2_discover(
    cloud: Cloud, cert: Path, key: Path, thing: str, host: str = "localhost"
) -> DiscoverResponse:
    options = crt_io.TlsContextOptions.create_client_with_mtls_from_path(str(cert), str(key))
    options.override_default_trust_store_from_path(None, str(cloud.root_ca))
    client = DiscoveryClient(
        crt_io.ClientBootstrap.get_or_create_static_default(),
        crt_io.SocketOptions(),
        crt_io.ClientTlsContext(options),
        "us-east-1",
        gg_server_name=host,
    )
    client.port = cloud.device_port
    result: DiscoverResponse = client.discover(thing).result(timeout=10)
    return result


async def group_with_core(
    cloud: Cloud, tmp_path: Path, *, group: str = "factory-1"
) -> tuple[Path, Path]:
    await cloud.ok("POST", "/api/v1/groups", json={"name": group})
    await cloud.ok("POST", "/api/v1/cores", json={"name": f"{group}-core", "group": group})
    await cloud.ok(
        "PUT",
        f"/api/v1/cores/{group}-core/connectivity",
        json={
            "endpoints": [{"host": "127.0.0.1", "port": 8883}, {"host": "localhost", "port": 18883}]
        },
    )
    return await cloud.thing("bme680-1", [group], tmp_path)


async def test_v1_sdk_discovers_groups_cores_and_cas(cloud: Cloud, tmp_path: Path) -> None:
    cert, key = await group_with_core(cloud, tmp_path)
    await cloud.ok("POST", "/api/v1/groups", json={"name": "second"})
    await cloud.ok("POST", "/api/v1/cores", json={"name": "second-core", "group": "second"})
    await cloud.ok("POST", "/api/v1/groups/second/things", json={"thing": "bme680-1"})
    info = await asyncio.to_thread(v1_discover, cloud, cert, key, "bme680-1")
    groups = info.getAllGroups()  # type: ignore[attr-defined]
    assert sorted(g.groupId for g in groups) == ["factory-1", "second"]
    cores = {c.coreThingArn: c for c in info.getAllCores()}  # type: ignore[attr-defined]
    core = cores["arn:aws:iot:hedgerow:000000000000:thing/factory-1-core"]
    assert [(c.host, c.port) for c in core.connectivityInfoList] == [
        ("127.0.0.1", 8883),
        ("localhost", 18883),
    ]
    ca_list = info.getAllCas()  # type: ignore[attr-defined]
    assert len(ca_list) == 2
    cas = await cloud.ok("GET", "/api/v1/groups/factory-1/cas")
    assert ("factory-1", cas["items"][0]["certificate"]) in ca_list
    group_ca = pki.cert_from_pem(cas["items"][0]["certificate"].encode())
    assert group_ca.issuer == group_ca.subject, (
        "group CAs are self-signed: devices trust them alone"
    )


async def test_v2_sdk_discovers_with_server_name_and_port(cloud: Cloud, tmp_path: Path) -> None:
    cert, key = await group_with_core(cloud, tmp_path)
    result = await asyncio.to_thread(v2_discover, cloud, cert, key, "bme680-1")
    assert [g.gg_group_id for g in result.gg_groups] == ["factory-1"]
    core = result.gg_groups[0].cores[0]
    assert core.thing_arn.endswith("/factory-1-core")
    assert [(c.host_address, c.port) for c in core.connectivity] == [
        ("127.0.0.1", 8883),
        ("localhost", 18883),
    ]
    assert result.gg_groups[0].certificate_authorities[0].startswith("-----BEGIN CERTIFICATE-----")


async def test_the_server_certificate_matches_every_local_name(
    cloud: Cloud, tmp_path: Path
) -> None:
    cert, key = await group_with_core(cloud, tmp_path)
    for host in ("localhost", socket.gethostname()):
        try:
            socket.getaddrinfo(host, cloud.device_port)
        except OSError:
            continue
        info = await asyncio.to_thread(v1_discover, cloud, cert, key, "bme680-1", host)
        assert info.getAllGroups()  # type: ignore[attr-defined]


async def test_another_things_name_is_refused(
    cloud: Cloud, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hedgerow.cloud.device_server")
    cert, key = await group_with_core(cloud, tmp_path)
    await cloud.thing("other", ["factory-1"], tmp_path)
    with pytest.raises(DiscoveryUnauthorizedException):
        await asyncio.to_thread(v1_discover, cloud, cert, key, "other")
    with pytest.raises(DiscoveryException) as caught:
        await asyncio.to_thread(v2_discover, cloud, cert, key, "other")
    assert caught.value.http_response_code == 401
    assert any(
        "device_server.refused" in r.getMessage() and "not to 'other'" in r.getMessage()
        for r in caplog.records
    )


async def test_a_thing_in_no_group_with_a_core_gets_404(cloud: Cloud, tmp_path: Path) -> None:
    await cloud.ok("POST", "/api/v1/groups", json={"name": "coreless"})
    cert, key = await cloud.thing("lonely", ["coreless"], tmp_path)
    with pytest.raises(DiscoveryDataNotFoundException):
        await asyncio.to_thread(v1_discover, cloud, cert, key, "lonely")


async def test_revoked_and_expired_certificates_are_refused(cloud: Cloud, tmp_path: Path) -> None:
    cert, key = await group_with_core(cloud, tmp_path)
    await cloud.ok("POST", "/api/v1/things/bme680-1/revoke")
    async with cloud.device_client(cert, key) as client:
        response = await client.get("/greengrass/discover/thing/bme680-1")
    assert response.status_code == 401
    assert response.headers["content-length"] == str(len(response.content))
    assert "revoked" in response.json()["errorMessage"]
    with pytest.raises(DiscoveryUnauthorizedException):
        await asyncio.to_thread(v1_discover, cloud, cert, key, "bme680-1")

    # an expired certificate of a registered thing: a JSON answer, not a TLS failure
    await cloud.thing("old-sensor", ["factory-1"], tmp_path)
    root = pki.Issued(
        pki.cert_from_pem(cloud.root_ca.read_bytes()),
        pki.key_from_pem((cloud.data / "pki" / "root-ca.key").read_bytes()),
    )
    old_key = pki.new_key()
    past = pki.now() - dt.timedelta(days=30)
    expired = (
        x509.CertificateBuilder()
        .subject_name(x509.Name.from_rfc4514_string("CN=old-sensor,OU=thing,O=Hedgerow"))
        .issuer_name(root.cert.subject)
        .public_key(old_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(past)
        .not_valid_after(past + dt.timedelta(days=1))
        .sign(root.key, hashes.SHA256())
    )
    await asyncio.to_thread(
        cloud.server.services.repository.add_thing_certificate,
        "old-sensor",
        record_of(expired, "thing", "old-sensor"),
    )
    (tmp_path / "old.pem").write_bytes(pki.cert_to_pem(expired))
    (tmp_path / "old.key").write_bytes(pki.key_to_pem(old_key))
    async with cloud.device_client(tmp_path / "old.pem", tmp_path / "old.key") as client:
        response = await client.get("/greengrass/discover/thing/old-sensor")
    assert response.status_code == 401
    assert "expired" in response.json()["errorMessage"]


async def test_unknown_certificates_and_no_certificate(cloud: Cloud, tmp_path: Path) -> None:
    await group_with_core(cloud, tmp_path)
    root = pki.Issued(
        pki.cert_from_pem(cloud.root_ca.read_bytes()),
        pki.key_from_pem((cloud.data / "pki" / "root-ca.key").read_bytes()),
    )
    forged = pki.issue(root, "bme680-1", unit="thing")  # signed by the root, never registered
    (tmp_path / "f.pem").write_bytes(forged.cert_pem)
    (tmp_path / "f.key").write_bytes(forged.key_pem)
    async with cloud.device_client(tmp_path / "f.pem", tmp_path / "f.key") as client:
        response = await client.get("/greengrass/discover/thing/bme680-1")
    assert response.status_code == 401 and "not registered" in response.json()["errorMessage"]

    ctx = pki.client_context(str(cloud.root_ca))
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", cloud.device_port, ssl=ctx, server_hostname="localhost"
        )
        writer.write(b"GET /greengrass/discover/thing/bme680-1 HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        if not data:
            raise ConnectionError("closed without an answer")


async def test_raw_response_bytes_follow_the_v1_parser(cloud: Cloud, tmp_path: Path) -> None:
    cert, key = await group_with_core(cloud, tmp_path)
    ctx = pki.client_context(str(cloud.root_ca), str(cert), str(key))
    for thing, status in (("bme680-1", b"200"), ("someone-else", b"401")):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", cloud.device_port, ssl=ctx, server_hostname="127.0.0.1"
        )
        writer.write(
            f"GET /greengrass/discover/thing/{thing} HTTP/1.1\r\nHost: 127.0.0.1:{cloud.device_port}\r\n\r\n".encode()
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 " + status)
        lines = head.split(b"\r\n")
        lengths = [line for line in lines if line.lower().startswith(b"content-length")]
        assert len(lengths) == 1 and lengths[0].startswith(b"content-length: ")
        assert not any(line.lower().startswith(b"transfer-encoding") for line in lines)
        body = await asyncio.wait_for(reader.readexactly(int(lengths[0].split(b": ")[1])), 5)
        assert body.startswith(b"{")
        writer.close()


async def test_group_ca_rotation_overlap(cloud: Cloud) -> None:
    await cloud.ok("POST", "/api/v1/groups", json={"name": "g"})
    service = cloud.server.services.pki
    start = pki.now()
    first = await asyncio.to_thread(service.group_cas, "g", None, at=start)
    assert [c.generation for c in first] == [1]
    # still within the period: the same CA
    assert [
        c.generation
        for c in await asyncio.to_thread(
            service.group_cas, "g", None, at=start + dt.timedelta(days=6)
        )
    ] == [1]
    rotated = await asyncio.to_thread(
        service.group_cas, "g", None, at=start + dt.timedelta(days=7, minutes=1)
    )
    assert [c.generation for c in rotated] == [2, 1], (
        "during the overlap discovery lists old and new"
    )
    later = await asyncio.to_thread(
        service.group_cas, "g", None, at=start + dt.timedelta(days=8, hours=1)
    )
    assert [c.generation for c in later] == [2]
    manual = await cloud.ok("POST", "/api/v1/groups/g/cas/rotate")
    assert [c["generation"] for c in manual["items"]][:2] == [3, 2]
