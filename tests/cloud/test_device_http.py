"""Device HTTPS on hedgerow.http11, seen by a device over real mutual TLS: the Date header,
keep-alive, and oversized or malformed requests answered in the discovery error shape."""

from __future__ import annotations

import asyncio
import email.utils
import json
import ssl
from pathlib import Path

from hedgerow import pki

from .conftest import Cloud

WAIT = 10.0


async def raw_exchange(cloud: Cloud, ctx: ssl.SSLContext, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", cloud.device_port, ssl=ctx, server_hostname="127.0.0.1"
    )
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(WAIT):
            return await reader.read(-1)
    finally:
        writer.close()


async def test_date_keep_alive_and_refusals(cloud: Cloud, tmp_path: Path) -> None:
    await cloud.ok("POST", "/api/v1/groups", json={"name": "factory-1"})
    cert, key = await cloud.core("pi-1", "factory-1", tmp_path)
    async with cloud.device_client(cert, key) as device:
        first = await device.get("/core/v1/revocations")
        second = await device.get("/core/v1/group-cas")
        ports = {
            r.extensions["network_stream"].get_extra_info("client_addr")[1] for r in (first, second)
        }
    assert first.status_code == 200 and second.status_code == 200
    assert len(ports) == 1  # both requests on one kept-alive connection
    date = email.utils.parsedate_to_datetime(first.headers["date"])
    assert abs((date - pki.now()).total_seconds()) < 60

    ctx = pki.client_context(str(cloud.root_ca), str(cert), str(key))
    too_big = await raw_exchange(
        cloud,
        ctx,
        b"PUT /core/v1/connectivity HTTP/1.1\r\nhost: h\r\ncontent-length: 2000000\r\n\r\n",
    )
    head, _, body = too_big.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 Payload Too Large")
    assert b"\r\ncontent-length: " in head  # lower case, as V1 discovery clients need
    assert json.loads(body)["status"] == 413 and "over 1048576 bytes" in json.loads(body)["message"]

    garbage = await raw_exchange(cloud, ctx, b"GET /greengrass/discover/thing/x HTTP/9\r\n\r\n")
    head, _, body = garbage.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert set(json.loads(body)) == {"errorMessage", "message", "status"}


def test_a_peer_is_written_host_colon_port_in_the_claims_audit() -> None:
    from hedgerow.cloud.device_server import peer_address

    assert peer_address(("127.0.0.1", 5123)) == "127.0.0.1:5123"
    assert peer_address(("::1", 5123, 0, 0)) == "[::1]:5123"
    assert peer_address(None) == ""
