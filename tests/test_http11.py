"""hedgerow.http11 against real sockets: well-behaved clients (httpx, the module's own
``fetch``, raw keep-alive and pipelining) and garbage, slow, idle and oversized peers."""

from __future__ import annotations

import asyncio
import email.utils
import ssl
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import httpx
import pytest

from hedgerow import http11, pki

if TYPE_CHECKING:
    from .conftest import TestPKI

WAIT = 10.0


async def echo(request: http11.Request) -> http11.Response:
    if request.path == "/fail":
        raise RuntimeError("the handler broke")
    cert = pki.peer_certificate(request.tls)
    text = (
        f"{request.method} {request.target} {len(request.body)} "
        f"{request.header('x-who', '-')} {cert.subject.rfc4514_string() if cert else '-'}"
    )
    return http11.Response(200, text.encode(), "text/plain", headers=(("x-served", "yes"),))


LIMITS = http11.Limits(
    max_header_bytes=4096, max_body_bytes=1000, idle_timeout=1.0, request_timeout=0.5
)


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, int]]:
    async with http11.Server(echo, limits=LIMITS, name="test") as srv:
        yield await srv.start("127.0.0.1", 0)


async def exchange(address: tuple[str, int], data: bytes) -> bytes:
    """Send ``data``, then read until the server closes (bounded)."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(WAIT):
            return await reader.read(-1)
    finally:
        writer.close()


def head_of(reply: bytes) -> tuple[str, dict[str, str]]:
    head = reply.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name] = value.strip()
    return head[0], headers


def test_http_date_is_imf_fixdate() -> None:
    for now in (0.0, 951782400.0, time.time()):
        assert http11.http_date(now) == email.utils.formatdate(now, usegmt=True)


async def test_keep_alive_with_httpx_and_the_headers(server: tuple[str, int]) -> None:
    ports: set[int] = set()
    async with httpx.AsyncClient(base_url=f"http://{server[0]}:{server[1]}") as client:
        for i in range(3):
            r = await client.post("/a?b=1", content=b"x" * i, headers={"x-who": "me"})
            assert r.status_code == 200 and r.text == f"POST /a?b=1 {i} me -"
            assert r.headers["x-served"] == "yes"
            date = email.utils.parsedate_to_datetime(r.headers["date"])
            assert abs((date - pki.now()).total_seconds()) < 60
            assert "connection" not in r.headers
            stream = r.extensions["network_stream"]
            ports.add(stream.get_extra_info("client_addr")[1])
    assert len(ports) == 1  # one connection, kept alive


async def test_header_names_are_lower_case_on_the_wire(server: tuple[str, int]) -> None:
    reply = await exchange(server, b"GET /x HTTP/1.1\r\nhost: h\r\nconnection: close\r\n\r\n")
    status, headers = head_of(reply)
    assert status == "HTTP/1.1 200 OK"
    assert {"content-type", "content-length", "date"} <= set(headers)
    assert {name.lower() for name in headers} >= {"connection"}
    assert headers["content-length"] == str(len(reply.split(b"\r\n\r\n", 1)[1]))


async def test_pipelined_requests_get_answers_in_order(server: tuple[str, int]) -> None:
    one = b"GET /1 HTTP/1.1\r\nhost: h\r\n\r\n"
    two = b"POST /2 HTTP/1.1\r\nhost: h\r\ncontent-length: 3\r\nconnection: close\r\n\r\nabc"
    reply = await exchange(server, one + two)
    assert reply.count(b"HTTP/1.1 200 OK") == 2
    assert reply.index(b"GET /1 0") < reply.index(b"POST /2 3")


async def test_http10_gets_its_answer_and_the_connection_closes(server: tuple[str, int]) -> None:
    reply = await exchange(server, b"GET /old HTTP/1.0\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(b"GET /old 0 - -")


async def test_garbage_gets_400_and_the_connection_closes(server: tuple[str, int]) -> None:
    reply = await exchange(server, b"\x16\x03\x01 this is not http\r\n\r\n")
    status, headers = head_of(reply)
    assert status.startswith("HTTP/1.1 400 ")
    assert headers["connection"] == "close"
    assert b"malformed request" in reply


async def test_a_head_over_the_cap_gets_431(server: tuple[str, int]) -> None:
    huge = b"GET / HTTP/1.1\r\nhost: h\r\nx-big: " + b"a" * 8000 + b"\r\n\r\n"
    reply = await exchange(server, huge)
    assert head_of(reply)[0].startswith("HTTP/1.1 431 ")


async def test_a_declared_body_over_the_cap_is_refused_before_it_is_sent(
    server: tuple[str, int],
) -> None:
    reader, writer = await asyncio.open_connection(*server)
    try:
        writer.write(b"PUT /x HTTP/1.1\r\nhost: h\r\ncontent-length: 1001\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(WAIT):
            reply = await reader.read(-1)  # no body byte was sent: the answer comes anyway
    finally:
        writer.close()
    status, headers = head_of(reply)
    assert status.startswith("HTTP/1.1 413 ") and headers["connection"] == "close"
    assert b"request body over 1000 bytes" in reply


async def test_a_sent_body_over_the_cap_still_reads_the_413(server: tuple[str, int]) -> None:
    async with httpx.AsyncClient(base_url=f"http://{server[0]}:{server[1]}") as client:
        r = await client.put("/x", content=b"y" * 50_000)
        assert r.status_code == 413
        assert (await client.put("/x", content=b"y" * 1000)).text == "PUT /x 1000 - -"


async def test_a_chunked_body_over_the_cap_gets_413(server: tuple[str, int]) -> None:
    chunk = b"200\r\n" + b"z" * 512 + b"\r\n"
    data = b"POST /c HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n" + chunk * 3
    reply = await exchange(server, data + b"0\r\n\r\n")
    assert head_of(reply)[0].startswith("HTTP/1.1 413 ")


async def test_a_slow_request_gets_408_within_the_request_timeout(
    server: tuple[str, int],
) -> None:
    reader, writer = await asyncio.open_connection(*server)
    try:
        started = time.monotonic()
        writer.write(b"GET /slow HTTP/1.1\r\nhost: h\r\n")  # the head never ends
        await writer.drain()
        async with asyncio.timeout(WAIT):
            reply = await reader.readuntil(b"\r\n\r\n")
        elapsed = time.monotonic() - started
        length = int(head_of(reply)[1]["content-length"])
        async with asyncio.timeout(WAIT):
            assert b"not complete within 0.5 s" in await reader.readexactly(length)
            assert await reader.read(-1) == b""  # then closed
    finally:
        writer.close()
    assert head_of(reply)[0].startswith("HTTP/1.1 408 ")
    assert LIMITS.request_timeout <= elapsed + 0.05 < LIMITS.idle_timeout


async def test_a_slowloris_drip_cannot_stretch_the_request(server: tuple[str, int]) -> None:
    reader, writer = await asyncio.open_connection(*server)
    started = time.monotonic()
    try:
        writer.write(b"GET /drip HTTP/1.1\r\n")
        for i in range(50):  # one header line every 0.1 s: each read is quick, the whole not
            writer.write(b"x-%d: 1\r\n" % i)
            await writer.drain()
            try:
                async with asyncio.timeout(0.1):
                    reply = await reader.read(65536)  # (a cancelled read(-1) loses data)
                break
            except TimeoutError:
                continue
        else:
            pytest.fail("the server kept reading a request dripped for 5 s")
        async with asyncio.timeout(WAIT):
            reply += await reader.read(-1)
    finally:
        writer.close()
    assert head_of(reply)[0].startswith("HTTP/1.1 408 ")
    assert time.monotonic() - started < 3.0  # the request timeout, then a short linger


async def test_an_idle_connection_is_closed_without_a_word(server: tuple[str, int]) -> None:
    reader, writer = await asyncio.open_connection(*server)
    try:
        started = time.monotonic()
        async with asyncio.timeout(WAIT):
            assert await reader.read(-1) == b""
        assert time.monotonic() - started >= LIMITS.idle_timeout - 0.05
    finally:
        writer.close()


async def test_a_failing_handler_gets_500_and_the_connection_goes_on(
    server: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    reply = await exchange(
        server,
        b"GET /fail HTTP/1.1\r\nhost: h\r\n\r\nGET /ok HTTP/1.1\r\nhost: h\r\nconnection: close\r\n\r\n",
    )
    assert reply.startswith(b"HTTP/1.1 500 ") and b"internal error" in reply
    assert b"HTTP/1.1 200 OK" in reply and reply.endswith(b"GET /ok 0 - -")
    assert any("http11.handler_failed" in r.getMessage() for r in caplog.records)


async def test_keep_alive_off_says_close() -> None:
    limits = http11.Limits(keep_alive=False)
    async with http11.Server(echo, limits=limits) as srv:
        address = await srv.start("127.0.0.1", 0)
        reply = await exchange(address, b"GET /1 HTTP/1.1\r\nhost: h\r\n\r\n")
    assert head_of(reply)[1]["connection"] == "close"
    assert reply.count(b"HTTP/1.1") == 1


async def test_custom_error_bodies() -> None:
    def json_error(status: int, message: str) -> http11.Response:
        return http11.Response(status, b'{"message": "%s"}' % message.encode(), "application/json")

    async with http11.Server(echo, limits=LIMITS, error_response=json_error) as srv:
        address = await srv.start("127.0.0.1", 0)
        reply = await exchange(address, b"nonsense\r\n\r\n")
    status, headers = head_of(reply)
    assert status.startswith("HTTP/1.1 400 ") and headers["content-type"] == "application/json"


async def test_close_ends_open_connections() -> None:
    srv = http11.Server(echo, limits=http11.Limits(idle_timeout=60))
    address = await srv.start("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*address)
    writer.write(b"GET /1 HTTP/1.1\r\nhost: h\r\n\r\n")
    async with asyncio.timeout(WAIT):
        await reader.readuntil(b"GET /1 0 - -")
        await srv.close()  # the kept-alive connection is closed with the server
        assert await reader.read(-1) == b""
    writer.close()


# ---- TLS and the client ---------------------------------------------------------------


async def test_tls_with_a_client_certificate_and_fetch(test_pki: TestPKI) -> None:
    server_files = test_pki.server()
    client_files = test_pki.client("dev-1")
    ctx = pki.server_context(
        str(server_files.cert),
        str(server_files.key),
        str(test_pki.ca_file),
        require_client_cert=True,
    )
    client = pki.client_context(
        str(test_pki.ca_file), cert_file=str(client_files.cert), key_file=str(client_files.key)
    )
    async with http11.Server(echo, limits=LIMITS, ssl_context=ctx) as srv:
        host, port = await srv.start("127.0.0.1", 0)
        reply = await http11.fetch(
            host,
            port,
            "POST",
            "/t",
            headers=[("host", "h"), ("content-length", "2"), ("x-who", "tls")],
            body=b"hi",
            ssl_context=client,
            timeout=WAIT,
            max_body=1000,
        )
    assert reply.status == 200
    assert reply.content.startswith(b"POST /t 2 tls CN=dev-1")
    assert http11.merge_headers(reply.headers)["x-served"] == "yes"


async def fetch(address: tuple[str, int], target: str, max_body: int = 1000) -> http11.Reply:
    return await http11.fetch(
        *address,
        "GET",
        target,
        headers=[("host", "h")],
        timeout=2.0,
        max_body=max_body,
    )


async def test_fetch_refuses_a_reply_over_its_cap(server: tuple[str, int]) -> None:
    assert (await fetch(server, "/" + "a" * 50)).status == 200
    with pytest.raises(http11.HTTPError, match=r"exceeds the 10 byte limit \(Content-Length"):
        await fetch(server, "/" + "a" * 50, max_body=10)


async def test_fetch_errors_say_what_went_wrong() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(-1)  # reads the request, never answers
        writer.close()

    async def slammer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()
        writer.close()

    for handler, message in (
        (silent, "no complete reply within 2 s"),
        (slammer, "closed the connection without a reply"),
        (garbage, "invalid reply"),
    ):
        tcp = await asyncio.start_server(handler, "127.0.0.1", 0)
        address = tcp.sockets[0].getsockname()[:2]
        try:
            with pytest.raises(http11.HTTPError, match=message) as caught:
                await fetch(address, "/")
            assert caught.value.status is None
        finally:
            tcp.close()
            await tcp.wait_closed()


async def test_fetch_tls_failure_says_tls(test_pki: TestPKI) -> None:
    server_files = test_pki.server()
    ctx = pki.server_context(str(server_files.cert), str(server_files.key))
    wrong_trust = ssl.create_default_context()  # the system's CAs do not know our test root
    async with http11.Server(echo, ssl_context=ctx) as srv:
        host, port = await srv.start("127.0.0.1", 0)
        with pytest.raises(http11.HTTPError, match="TLS: .*CERTIFICATE_VERIFY_FAILED"):
            await http11.fetch(
                host,
                port,
                "GET",
                "/",
                headers=[("host", "h")],
                ssl_context=wrong_trust,
                timeout=WAIT,
                max_body=100,
            )


async def test_a_silent_peer_gives_its_pending_slot_back_after_a_handshake_time(
    test_pki: TestPKI,
) -> None:
    """max_pending 1: a peer that completes its handshake and sends nothing holds the one
    slot for ``handshake_timeout``, not ``idle_timeout``; then the next client is served,
    over a session it resumes."""
    files = test_pki.server()
    ctx = pki.server_context(str(files.cert), str(files.key))
    limits = http11.Limits(
        idle_timeout=60.0, handshake_timeout=0.5, max_pending=1, pending_wait=5.0
    )
    client = pki.client_context(str(test_pki.ca_file), resume=True)
    assert isinstance(client, pki.ResumingContext)
    async with http11.Server(echo, limits=limits, ssl_context=ctx) as srv:
        host, port = await srv.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(
            host, port, ssl=client, server_hostname="127.0.0.1"
        )
        try:
            started = time.monotonic()
            async with asyncio.timeout(WAIT):
                assert await reader.read() == b""  # closed by the server, unasked
            assert time.monotonic() - started < 3.0
            assert srv.stats.pending == 0 and srv.stats.handshakes == 1
            client.keep("127.0.0.1", writer.get_extra_info("ssl_object").session)
        finally:
            writer.close()
        reply = await http11.fetch(
            host, port, "GET", "/x", headers=[("host", "h")], ssl_context=client,
            server_hostname="127.0.0.1", timeout=WAIT, max_body=1000,
        )  # fmt: skip
    assert reply.status == 200 and reply.tls_resumed
    assert (srv.stats.handshakes, srv.stats.resumed, srv.stats.shed) == (2, 1, 0)
