"""The core's h11 HTTP client against real servers on loopback: a uvicorn + starlette app
over TLS (and mutual TLS), and raw asyncio servers that misbehave on purpose."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import random
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

import hedgerow
from hedgerow import pki
from hedgerow.core import https
from hedgerow.core.cloudapi import HttpCloudAPI
from hedgerow.core.errors import CloudAPIError
from hedgerow.core.https import HTTPSError, Origin, parse_base_url, request

from ..conftest import CertFiles, free_port

if TYPE_CHECKING:
    from ..conftest import TestPKI

BIG = random.Random(7).randbytes(5 * 1024 * 1024)
STREAM_PARTS = [f"part {i}\n".encode() for i in range(20)]


# ---- a real server: starlette in uvicorn, in this process ----------------------------


async def _json(request: Request) -> Response:
    return JSONResponse({"hello": "world", "n": 1})


async def _echo(request: Request) -> Response:
    return JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            "body": await request.json(),
            "headers": {k: request.headers[k] for k in request.headers},
        }
    )


async def _fail(request: Request) -> Response:
    return Response("boom: the database is down", status_code=500)


async def _parts(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
        await asyncio.sleep(0)


async def _stream(request: Request) -> Response:
    return StreamingResponse(_parts(STREAM_PARTS), media_type="text/plain")


async def _big(request: Request) -> Response:
    return Response(BIG, media_type="application/octet-stream")


async def _big_stream(request: Request) -> Response:
    chunks = [BIG[i : i + 256 * 1024] for i in range(0, len(BIG), 256 * 1024)]
    return StreamingResponse(_parts(chunks), media_type="application/octet-stream")


async def _latest(request: Request) -> Response:
    return JSONResponse({"error": "none"}, status_code=404)


async def _revocations(request: Request) -> Response:
    return JSONResponse({"fingerprints": ["ab", "cd"]})


APP = Starlette(
    routes=[
        Route("/json", _json),
        Route("/echo", _echo, methods=["POST", "PUT"]),
        Route("/fail", _fail),
        Route("/stream", _stream),
        Route("/big", _big),
        Route("/big-stream", _big_stream),
        Route("/core/v1/deployments/latest", _latest),
        Route("/core/v1/revocations", _revocations),
        Route("/core/v1/group-cas", _fail),
    ]
)


class _Uvicorn(uvicorn.Server):
    """uvicorn without its signal handlers (the test runner owns the process's signals)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serve(
    server: CertFiles | None, client_ca: str | None = None, host: str = "127.0.0.1"
) -> AsyncIterator[str]:
    """``APP`` on a free port; yields its base URL (https with ``server``, else http)."""
    port = free_port(host)
    config = uvicorn.Config(
        APP,
        host=host,
        port=port,
        http="h11",
        ws="none",
        lifespan="off",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=2,
        ssl_certfile=str(server.cert) if server else None,
        ssl_keyfile=str(server.key) if server else None,
        ssl_ca_certs=client_ca,
        ssl_cert_reqs=ssl.CERT_REQUIRED if client_ca else ssl.CERT_NONE,
    )
    uv = _Uvicorn(config)
    task = asyncio.create_task(uv.serve())
    async with asyncio.timeout(10):
        while not uv.started:
            assert not task.done(), "uvicorn did not start"
            await asyncio.sleep(0.01)
    try:
        name = f"[{host}]" if ":" in host else host
        yield f"{'https' if server else 'http'}://{name}:{port}"
    finally:
        uv.should_exit = True
        await task


@pytest.fixture
async def tls_url(test_pki: TestPKI) -> AsyncIterator[str]:
    async with serve(test_pki.server()) as url:
        yield url


@pytest.fixture
def trust(test_pki: TestPKI) -> ssl.SSLContext:
    return pki.client_context(str(test_pki.ca_file))


# ---- pure parts ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://cloud.example", Origin("https", "cloud.example", 443)),
        ("http://cloud.example", Origin("http", "cloud.example", 80)),
        ("https://10.0.0.1:8443/", Origin("https", "10.0.0.1", 8443)),
        ("HTTPS://[::1]:8443", Origin("https", "::1", 8443)),
        ("https://[fd00::5]", Origin("https", "fd00::5", 443)),
        ("https://h:1/base/", Origin("https", "h", 1, "/base")),
    ],
)
def test_parse_base_url(url: str, origin: Origin) -> None:
    assert parse_base_url(url) == origin


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("ftp://h", "must start with https:// or http://"),
        ("cloud.example:8443", "must start with"),
        ("https://h:99999", "bad port"),
        ("https://h:port", "bad port"),
        ("https://:8443", "no host"),
    ],
)
def test_parse_base_url_rejects(url: str, error: str) -> None:
    with pytest.raises(HTTPSError, match=error):
        parse_base_url(url)


def test_authority_and_target() -> None:
    assert Origin("https", "h", 443).authority == "h"
    assert Origin("https", "h", 8443).authority == "h:8443"
    assert Origin("http", "::1", 80).authority == "[::1]"
    assert Origin("http", "::1", 8080).authority == "[::1]:8080"
    origin = Origin("https", "h", 443, "/base")
    assert origin.target("/core/v1/x") == "/base/core/v1/x"
    assert origin.target("a b/é?q=1") == "/base/a%20b/%C3%A9?q=1"
    assert Origin("https", "h", 443).target("/x%2Fy") == "/x%2Fy"


def test_request_and_response_headers() -> None:
    origin = Origin("https", "h", 8443)
    assert dict(https.request_headers(origin, None)) == {
        "Host": "h:8443",
        "User-Agent": f"hedgerow-core/{hedgerow.__version__}",
        "Accept": "application/json",
        "Connection": "close",
    }
    with_body = dict(https.request_headers(origin, b"{}"))
    assert with_body["Content-Type"] == "application/json"
    assert with_body["Content-Length"] == "2"
    merged = https.response_headers([(b"Vary", b"a"), (b"vary", b"b"), (b"date", b"d")])
    assert merged == {"vary": "a, b", "date": "d"}
    assert https.content_length([(b"content-length", b"12")]) == 12
    assert https.content_length([]) is None


def test_response() -> None:
    response = https.Response(200, {}, '{"a": "é"}'.encode())
    assert response.json() == {"a": "é"}
    assert response.text == '{"a": "é"}'
    with pytest.raises(ValueError):
        https.Response(200, {}, b"<html>").json()


# ---- against uvicorn over TLS --------------------------------------------------------


async def test_get_json(tls_url: str, trust: ssl.SSLContext) -> None:
    response = await request(tls_url, "GET", "/json", ssl_context=trust, timeout=5)
    assert response.status == 200
    assert response.json() == {"hello": "world", "n": 1}
    assert response.headers["content-type"] == "application/json"
    assert all(name == name.lower() for name in response.headers)
    date = email.utils.parsedate_to_datetime(response.headers["date"])
    assert abs((date - pki.now()).total_seconds()) < 60


async def test_a_resuming_context_resumes_the_next_request(tls_url: str, test_pki: TestPKI) -> None:
    """The core's context to the cloud resumes: the second request skips the full handshake;
    a plain context never does."""
    resuming = pki.client_context(str(test_pki.ca_file), resume=True)
    first = await request(tls_url, "GET", "/json", ssl_context=resuming, timeout=5)
    second = await request(tls_url, "GET", "/json", ssl_context=resuming, timeout=5)
    assert (first.status, first.tls_resumed) == (200, False)
    assert (second.status, second.tls_resumed) == (200, True)
    plain = pki.client_context(str(test_pki.ca_file))
    for _ in range(2):
        assert not (
            await request(tls_url, "GET", "/json", ssl_context=plain, timeout=5)
        ).tls_resumed


async def test_post_json_sends_the_headers(tls_url: str, trust: ssl.SSLContext) -> None:
    body = {"csr": "-----BEGIN-----\n", "hosts": ["127.0.0.1", "pi-1.local"], "ü": 1}
    response = await request(tls_url, "POST", "/echo", ssl_context=trust, json=body, timeout=5)
    assert response.status == 200
    echo = response.json()
    assert echo["method"] == "POST" and echo["path"] == "/echo"
    assert echo["body"] == body
    headers = echo["headers"]
    assert headers["host"] == tls_url.removeprefix("https://")
    assert headers["user-agent"] == f"hedgerow-core/{hedgerow.__version__}"
    assert headers["accept"] == "application/json"
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(https.encode_json(body))


async def test_put_with_a_base_path_prefix(tls_url: str, trust: ssl.SSLContext) -> None:
    # a prefix that does not exist on the server: the request goes below it
    response = await request(tls_url + "/", "PUT", "echo", ssl_context=trust, json=[], timeout=5)
    assert response.status == 200 and response.json()["method"] == "PUT"


async def test_404_and_500_are_responses(tls_url: str, trust: ssl.SSLContext) -> None:
    missing = await request(tls_url, "GET", "/nowhere", ssl_context=trust, timeout=5)
    assert missing.status == 404
    failed = await request(tls_url, "GET", "/fail", ssl_context=trust, timeout=5)
    assert failed.status == 500
    assert failed.text == "boom: the database is down"


async def test_chunked_streaming_response(tls_url: str, trust: ssl.SSLContext) -> None:
    response = await request(tls_url, "GET", "/stream", ssl_context=trust, timeout=5)
    assert response.status == 200
    assert response.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in response.headers
    assert response.content == b"".join(STREAM_PARTS)


async def test_large_binary_body_byte_exact(tls_url: str, trust: ssl.SSLContext) -> None:
    response = await request(tls_url, "GET", "/big", ssl_context=trust, timeout=20)
    assert response.headers["content-length"] == str(len(BIG))
    assert response.content == BIG
    streamed = await request(tls_url, "GET", "/big-stream", ssl_context=trust, timeout=20)
    assert streamed.content == BIG


async def test_body_above_the_cap(tls_url: str, trust: ssl.SSLContext) -> None:
    cap = 1024 * 1024
    with pytest.raises(HTTPSError, match=r"exceeds the 1048576 byte limit \(Content-Length"):
        await request(tls_url, "GET", "/big", ssl_context=trust, timeout=10, max_body=cap)
    with pytest.raises(HTTPSError, match=r"exceeds the 1048576 byte limit \(\d+ bytes read"):
        await request(tls_url, "GET", "/big-stream", ssl_context=trust, timeout=10, max_body=cap)
    assert https.MAX_BODY == 64 * 1024 * 1024
    ok = await request(tls_url, "GET", "/big", ssl_context=trust, timeout=10, max_body=len(BIG))
    assert len(ok.content) == len(BIG)


async def test_untrusted_server_certificate(tls_url: str) -> None:
    other = pki.make_ca("Some Other Root")
    ctx = pki.client_context(ca_data=other.cert_pem.decode())
    with pytest.raises(HTTPSError, match="TLS: .*CERTIFICATE_VERIFY_FAILED"):
        await request(tls_url, "GET", "/json", ssl_context=ctx, timeout=5)


async def test_https_to_a_plain_http_server(trust: ssl.SSLContext) -> None:
    async with serve(None) as url:
        plain = await request(url, "GET", "/json", timeout=5)
        assert plain.json() == {"hello": "world", "n": 1}
        tls = url.replace("http://", "https://")
        with pytest.raises(HTTPSError, match="TLS: "):
            await request(tls, "GET", "/json", ssl_context=trust, timeout=5)


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
async def test_ipv6_literal(test_pki: TestPKI, trust: ssl.SSLContext) -> None:
    async with serve(test_pki.server(), host="::1") as url:
        assert url.startswith("https://[::1]:")
        response = await request(url, "GET", "/json", ssl_context=trust, timeout=5)
        assert response.status == 200


# ---- mutual TLS ----------------------------------------------------------------------


REJECTED = (
    r"TLS: .*(CERTIFICATE_REQUIRED|UNKNOWN_CA|HANDSHAKE_FAILURE)"
    r"|closed the connection without a reply \(did it reject the TLS client certificate\?\)"
)


async def test_mutual_tls(test_pki: TestPKI) -> None:
    client = test_pki.client("pi-1")
    async with serve(test_pki.server(), client_ca=str(test_pki.ca_file)) as url:
        with_cert = pki.client_context(str(test_pki.ca_file), str(client.cert), str(client.key))
        response = await request(url, "GET", "/json", ssl_context=with_cert, timeout=5)
        assert response.status == 200
        without = pki.client_context(str(test_pki.ca_file))
        stranger = test_pki.client("stranger", ca=pki.make_ca("Stranger CA"))
        wrong = pki.client_context(str(test_pki.ca_file), str(stranger.cert), str(stranger.key))
        for ctx in (without, wrong):
            # TLS 1.3: the client's handshake is done before the server checks the client
            # certificate; a server may answer with an alert (then the message is "TLS: …")
            # or, as asyncio's servers do, just close the connection
            with pytest.raises(HTTPSError, match=REJECTED):
                await request(url, "GET", "/json", ssl_context=ctx, timeout=5)


# ---- HttpCloudAPI on top -------------------------------------------------------------


async def test_http_cloud_api_maps_replies_and_failures(
    tls_url: str, trust: ssl.SSLContext
) -> None:
    api = HttpCloudAPI(tls_url, trust, timeout=5)
    try:
        assert await api.latest_deployment() is None  # 404
        assert await api.revocations() == ["ab", "cd"]
        date = await api.server_date()
        assert date is not None and email.utils.parsedate_to_datetime(date)
        with pytest.raises(CloudAPIError) as failed:
            await api.group_cas()
        assert failed.value.status == 500
        assert str(failed.value) == "GET /core/v1/group-cas: HTTP 500 boom: the database is down"
        with pytest.raises(CloudAPIError) as missing:
            await api.deployment("d-1")
        assert missing.value.status == 404
        assert str(missing.value) == "GET /core/v1/deployments/d-1: not found"
    finally:
        await api.aclose()
    down = HttpCloudAPI(f"https://127.0.0.1:{free_port()}", trust, timeout=5)
    with pytest.raises(CloudAPIError) as refused:
        await down.revocations()
    assert refused.value.status is None and refused.value.path == "/core/v1/revocations"
    assert str(refused.value).startswith("GET /core/v1/revocations: ")
    assert isinstance(refused.value.__cause__, HTTPSError)


# ---- raw servers that misbehave ------------------------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[str]:
    """``handler`` on a free loopback port (plain TCP); yields the base URL. Every
    connection is closed and every handler task ended on the way out."""
    tasks: set[asyncio.Task[Any]] = set()

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await reader.readuntil(b"\r\n\r\n")  # the request head
            await handler(reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    port = free_port()
    server = await asyncio.start_server(connected, "127.0.0.1", port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def _garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"\x16\x03\x01 this is not HTTP at all\r\n\r\n")
    await writer.drain()


async def _half_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
    await writer.drain()


async def _half_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
    await writer.drain()


async def _hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    return


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.Event().wait()


async def _until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
    await writer.drain()


async def _huge_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(64):
        writer.write(b"4000\r\n" + b"z" * 0x4000 + b"\r\n")
        await writer.drain()
    writer.write(b"0\r\n\r\n")
    await writer.drain()


@pytest.mark.parametrize(
    ("handler", "error"),
    [
        (_garbage, "invalid reply: "),
        (_half_body, "invalid reply: .*incomplete|invalid reply: .*complete message body"),
        (_half_chunked, "invalid reply: "),
        (_hang_up, "closed the connection without a reply"),
        (_huge_chunked, r"exceeds the 65536 byte limit \(\d+ bytes read\)"),
    ],
)
async def test_misbehaving_servers(handler: Handler, error: str) -> None:
    async with raw_server(handler) as url:
        with pytest.raises(HTTPSError, match=error):
            await request(url, "GET", "/x", timeout=5, max_body=65536)


async def test_body_until_the_connection_closes() -> None:
    async with raw_server(_until_close) as url:
        response = await request(url, "GET", "/x", timeout=5)
    assert response.status == 200 and response.content == b"all of it"


async def test_a_server_that_never_answers_is_bounded() -> None:
    async with raw_server(_silent) as url:
        started = time.monotonic()
        with pytest.raises(HTTPSError, match=r"no complete reply within 0.3 s"):
            await request(url, "GET", "/x", timeout=0.3)
        assert time.monotonic() - started < 2


async def test_a_tls_handshake_that_never_completes_is_bounded(trust: ssl.SSLContext) -> None:
    async with raw_server(_silent) as url:
        tls = url.replace("http://", "https://")
        with pytest.raises(HTTPSError, match="no complete reply within 0.3 s"):
            await request(tls, "GET", "/x", ssl_context=trust, timeout=0.3)


async def test_connection_refused() -> None:
    with pytest.raises(HTTPSError, match="Connect call failed|refused"):
        await request(f"http://127.0.0.1:{free_port()}", "GET", "/", timeout=5)


async def test_unresolvable_host() -> None:
    with pytest.raises(HTTPSError):
        await request("http://no-such-host.invalid", "GET", "/", timeout=5)
