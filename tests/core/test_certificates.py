from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from pathlib import Path

import pytest

from hedgerow import certinfo, pki
from hedgerow.core.certificates import (
    ServerIdentity,
    advertised_hosts,
    detect_addresses,
    renewal_reason,
)
from hedgerow.core.errors import CertificateError


@pytest.fixture
def pair() -> tuple[pki.Issued, pki.Issued]:
    root = pki.make_ca("root")
    return root, pki.make_ca("group")


def info(issued: pki.Issued) -> certinfo.CertInfo:
    return certinfo.from_pem(issued.cert_pem)


def test_renewal_reasons(pair: tuple[pki.Issued, pki.Issued]) -> None:
    root, group_issued = pair
    group = info(group_issued)
    now = certinfo.now()
    cert = info(
        pki.issue(
            group_issued, "pi-1", unit="server", server_hosts=["127.0.0.1", "gw.local"], days=10
        )
    )
    hosts = ["gw.local", "127.0.0.1"]
    assert renewal_reason(None, [group], hosts, now) == "no server certificate"
    assert renewal_reason(cert, [group], hosts, now) is None
    assert renewal_reason(cert, [], hosts, now) is None  # CAs not known: not a reason
    assert "expires" in str(renewal_reason(cert, [group], hosts, now + dt.timedelta(days=8)))
    rotated = info(pki.make_ca("group-2"))
    assert renewal_reason(cert, [rotated, group], hosts, now) == "the group CA was rotated"
    # a rotated CA may keep its name: the key identifier tells them apart
    same_name = info(pki.make_ca("group"))
    assert renewal_reason(cert, [same_name, group], hosts, now) == "the group CA was rotated"
    assert renewal_reason(cert, [group], ["10.0.0.5"], now) == "advertised addresses changed"
    assert renewal_reason(cert, [group], ["0:0::1"], now) == "advertised addresses changed"
    assert (
        renewal_reason(cert, [group], hosts, now + dt.timedelta(days=2))
        == "older than the maximum age"
    )


def test_advertised_hosts_and_detection() -> None:
    assert advertised_hosts(["gw.local", "gw.local"], ["10.1.1.1"]) == ["gw.local"]
    assert advertised_hosts([], ["10.1.1.1"]) == ["10.1.1.1"]
    assert advertised_hosts([], []) == ["127.0.0.1"]
    detected = detect_addresses(["lo", "docker*", "veth*"])
    assert "127.0.0.1" not in detected and "::1" not in detected


async def _peer_cn(port: int, ca: Path) -> tuple[str, asyncio.StreamWriter]:
    ctx = pki.client_context(str(ca))
    _, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1"
    )
    ssl_object = writer.get_extra_info("ssl_object")
    cert = pki.peer_certificate(ssl_object)
    assert cert is not None
    return pki.name_of(cert), writer


async def test_hot_swap_serves_new_certificate_and_keeps_old_connections(
    tmp_path: Path, pair: tuple[pki.Issued, pki.Issued]
) -> None:
    root, group = pair
    (tmp_path / "root.pem").write_bytes(root.cert_pem)
    (tmp_path / "group.pem").write_bytes(group.cert_pem)
    identity = ServerIdentity(tmp_path / "server", tmp_path / "root.pem")
    with pytest.raises(CertificateError):
        identity.context()
    first = pki.sign_csr(group, await identity.csr("pi-1", ["127.0.0.1"]), common_name="first",
                         unit="server", server_hosts=["127.0.0.1"])  # fmt: skip
    identity.store(pki.cert_to_pem(first), [group.cert_pem])
    ctx = identity.context()
    ctx.verify_mode = ssl.CERT_NONE  # this test checks the server side only

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(100):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    name, old = await _peer_cn(port, tmp_path / "group.pem")
    assert name == "first"
    second = pki.sign_csr(group, await identity.csr("pi-1", ["127.0.0.1"]), common_name="second",
                          unit="server", server_hosts=["127.0.0.1"])  # fmt: skip
    identity.store(pki.cert_to_pem(second), [group.cert_pem])
    assert identity.context() is ctx
    name, new = await _peer_cn(port, tmp_path / "group.pem")
    assert name == "second"
    old.write(b"still here")
    reader = old.transport.get_protocol()._stream_reader  # type: ignore[attr-defined]
    assert await asyncio.wait_for(reader.readexactly(10), 5) == b"still here"
    for w in (old, new):
        w.close()
        await w.wait_closed()
    server.close()
    await server.wait_closed()
    cert, cas = identity.load()
    assert cert is not None and cert.name == "second" and cert.hosts == ("127.0.0.1",)
    assert [c.fingerprint for c in cas] == [pki.fingerprint(group.cert)]


async def test_store_refuses_a_certificate_for_another_key(
    tmp_path: Path, pair: tuple[pki.Issued, pki.Issued]
) -> None:
    _, group = pair
    identity = ServerIdentity(tmp_path / "server", tmp_path / "root.pem")
    with pytest.raises(CertificateError, match="no server key"):  # no CSR was ever made
        identity.store(pki.issue(group, "pi-1", unit="server").cert_pem, [group.cert_pem])
    mine = pki.sign_csr(group, await identity.csr("pi-1", ["127.0.0.1"]), common_name="pi-1",
                        unit="server", server_hosts=["127.0.0.1"])  # fmt: skip
    identity.store(pki.cert_to_pem(mine), [group.cert_pem])
    other = pki.issue(group, "pi-1", unit="server", server_hosts=["127.0.0.1"])
    with pytest.raises(CertificateError, match="not for this core's server key"):
        identity.store(other.cert_pem, [group.cert_pem])
    with pytest.raises(CertificateError, match="unusable"):
        identity.store(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", [])
    # nothing of the refused ones was kept: the installed certificate is still ours
    cert, cas = identity.load()
    assert cert is not None and cert.fingerprint == pki.fingerprint(mine)
    assert len(cas) == 1
    assert sorted(p.name for p in identity.directory.iterdir()) == [
        "group-cas.pem",
        "server.cert.pem",
        "server.key",
    ]
    assert identity.key_file.stat().st_mode & 0o777 == 0o600
