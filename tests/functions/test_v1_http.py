"""The V1 IPC server on hedgerow.http11 over a real loopback socket: what an SDK call
looks like on the wire, and what a broken or oversized caller gets (an errorMessage body,
the connection closed) instead of a dropped connection."""

from __future__ import annotations

import asyncio
import base64
import json

from hedgerow.functions.v1.server import MAX_BODY, V1Server

WAIT = 10.0
PATH = b"/2016-11-01/functions/arn:aws:lambda:::function:GGRouter"


class Backend:
    """The host's side, in memory: one known token, publishes recorded."""

    def __init__(self) -> None:
        self.published: list[tuple[str, str, bytes]] = []

    def caller_of(self, token: str) -> str | None:
        return "fn-1" if token == "tok" else None

    async def v1_publish(self, caller: str, topic: str, payload: bytes) -> None:
        self.published.append((caller, topic, payload))

    async def v1_invoke(self, *args: object) -> bytes:
        raise AssertionError("not invoked here")

    async def v1_shadow(self, thing: str, operation: str, payload: bytes) -> tuple[bool, bytes]:
        raise AssertionError("not used here")


async def exchange(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(WAIT):
            return await reader.read(-1)
    finally:
        writer.close()


async def test_publish_then_oversized_and_garbage_callers() -> None:
    backend = Backend()
    context = base64.b64encode(json.dumps({"custom": {"subject": "v1/out"}}).encode())
    async with V1Server(backend) as server:
        reply = await exchange(
            server.port,
            b"POST " + PATH + b" HTTP/1.1\r\nhost: h\r\nauthorization: tok\r\n"
            b"x-amz-client-context: " + context + b"\r\ncontent-length: 2\r\n"
            b"connection: close\r\n\r\nhi",
        )
        assert reply.startswith(b"HTTP/1.1 202 ") and b"x-amz-invocationid: " in reply
        assert b"\r\ndate: " in reply
        assert backend.published == [("fn-1", "v1/out", b"hi")]

        too_big = await exchange(
            server.port,
            b"POST " + PATH + b" HTTP/1.1\r\nhost: h\r\nauthorization: tok\r\n"
            b"content-length: %d\r\n\r\n" % (MAX_BODY + 1),
        )
        head, _, body = too_big.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413 ")
        assert "request body over" in json.loads(body)["errorMessage"]

        garbage = await exchange(server.port, b"\x00\x01\x02 not http\r\n\r\n")
        assert garbage.startswith(b"HTTP/1.1 400 ") and b"errorMessage" in garbage
    assert len(backend.published) == 1
