"""``StreamServer``: the stream manager's asyncio TCP server (loopback), the thin I/O shell.

Each connection runs ``protocol.ServerConnection``; requests go to the ``StreamManager``
and are answered in whatever order they finish: appends and most operations at once, a
``ReadMessages`` that has to wait (``readTimeoutMillis``) in its own task, cancelled when
the client goes away. A client must present an accepted ``AWS_CONTAINER_AUTHORIZATION_TOKEN``
in its connect request (``authorize``); the core accepts the tokens it gave its functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from .codes import RESPONSE_OF, Operation, Status
from .errors import ProtocolError, StreamsError
from .manager import StreamManager
from .model import parse_read_options
from .protocol import (
    CONNECT_VERSION,
    DEFAULT_MAX_FRAME,
    NEED_DATA,
    ConnectRequested,
    RequestReceived,
    ServerConnection,
    choose_protocol_version,
    encode_frame,
    error_body,
)

log = logging.getLogger(__name__)

DEFAULT_PORT = 8088
READ_SIZE = 256 * 1024

Authorizer = Callable[[str | None], bool]


def allow_token(token: str) -> Authorizer:
    """An authorizer that accepts exactly ``token`` (compared in constant time)."""
    import hmac

    expected = token.encode()
    return lambda given: given is not None and hmac.compare_digest(given.encode(), expected)


class StreamServer:
    def __init__(
        self,
        manager: StreamManager,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        authorize: Authorizer,
        max_frame: int = DEFAULT_MAX_FRAME,
    ) -> None:
        self.manager = manager
        self.host = host
        self.port = port
        self.authorize = authorize
        self.max_frame = max_frame
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
        self.address: tuple[str, int] | None = None

    async def __aenter__(self) -> StreamServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        sockname = self._server.sockets[0].getsockname()
        self.address = (sockname[0], sockname[1])
        log.info("streams.listening host=%s port=%s", *self.address)
        return self.address

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        # closing the transports ends each connection's read loop (EOF) without a cancel
        for writer in self._connections.values():
            writer.transport.abort()
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=5)
        await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        peer = writer.get_extra_info("peername")
        waiting: set[asyncio.Task[None]] = set()
        try:
            await self._connection(reader, writer, waiting)
        except ProtocolError as exc:
            log.warning("streams.protocol_error peer=%s error=%s", peer, exc)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            for waiter in waiting:
                waiter.cancel()
            self._connections.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _connection(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        waiting: set[asyncio.Task[None]],
    ) -> None:
        conn = ServerConnection(self.max_frame)
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                return
            conn.receive_data(data)
            answers: list[bytes] = []  # written once per read burst
            while True:
                event = conn.next_event()
                if event is NEED_DATA:
                    break
                if isinstance(event, ConnectRequested):
                    accepted = self._connect(conn, event, writer)
                    await writer.drain()
                    if not accepted:
                        return
                    continue
                assert isinstance(event, RequestReceived)
                if self._must_wait(event):
                    waiter = asyncio.create_task(self._answer_later(event, writer))
                    waiting.add(waiter)
                    waiter.add_done_callback(waiting.discard)
                else:
                    answers.append(await self._respond(event))
            if answers:
                writer.write(b"".join(answers) if len(answers) > 1 else answers[0])
                await writer.drain()

    def _connect(
        self, conn: ServerConnection, event: ConnectRequested, writer: asyncio.StreamWriter
    ) -> bool:
        version = choose_protocol_version(event)
        status, message = Status.Success, None
        if event.connect_version != CONNECT_VERSION:
            status = Status.UnsupportedConnectVersion
            message = f"connect version {event.connect_version} is not supported: use 1"
        elif version is None:
            status = Status.UnsupportedProtocolVersion
            message = (
                f"protocol version {event.protocol_version} is not supported: use a stream "
                "manager SDK speaking 1.1.0 or 1.0.0"
            )
        elif not self.authorize(event.auth_token):
            status = Status.Unauthorized
            message = (
                "the auth token is not one this core gave out: run the client in a Hedgerow "
                "function (its environment has AWS_CONTAINER_AUTHORIZATION_TOKEN)"
            )
        writer.write(
            conn.send_connect_response(
                event.request_id or "connect", status, version or "1.1.0", message
            )
        )
        if status is not Status.Success:
            log.warning("streams.connect_refused status=%s sdk=%s", status.name, event.sdk_version)
            return False
        log.debug("streams.connected sdk=%s protocol=%s", event.sdk_version, version)
        return True

    @staticmethod
    def _must_wait(event: RequestReceived) -> bool:
        if event.operation != Operation.ReadMessages:
            return False
        options = event.body.get("readMessagesOptions")
        return isinstance(options, dict) and bool(options.get("readTimeoutMillis"))

    async def _answer_later(self, event: RequestReceived, writer: asyncio.StreamWriter) -> None:
        frame = await self._respond(event)
        if not writer.is_closing():
            writer.write(frame)
            with contextlib.suppress(ConnectionError):
                await writer.drain()

    async def _respond(self, event: RequestReceived) -> bytes:
        try:
            response_op = RESPONSE_OF.get(Operation(event.operation))
        except ValueError:
            response_op = None
        if response_op is None:
            return encode_frame(
                Operation.UnknownOperationError,
                error_body(
                    event.request_id,
                    Status.UnknownOperation,
                    f"operation {event.operation} is not known to the Hedgerow stream manager",
                ),
            )
        try:
            result = await self._operate(event.operation, event.body)
            body = {"requestId": event.request_id, "status": int(Status.Success), **result}
        except StreamsError as exc:
            body = error_body(event.request_id, exc.status, exc.message)
        except Exception:
            log.exception("streams.request_failed operation=%s", event.operation)
            body = error_body(
                event.request_id, Status.UnknownFailure, "internal error: see the core's log"
            )
        return encode_frame(response_op, body)

    async def _operate(self, operation: int, body: dict[str, Any]) -> dict[str, Any]:
        m = self.manager
        if operation == Operation.AppendMessage:
            return {"sequenceNumber": await m.append(body.get("name"), body.get("payload"))}
        if operation == Operation.ReadMessages:
            name = body.get("streamName")
            records = await m.read(name, parse_read_options(body.get("readMessagesOptions")))
            return {
                "messages": [
                    {"streamName": name, "sequenceNumber": s, "ingestTime": t, "payload": p}
                    for s, t, p in records
                ]
            }
        if operation == Operation.CreateMessageStream:
            m.create(body.get("definition"))
        elif operation == Operation.UpdateMessageStream:
            m.update(body.get("definition"))
        elif operation == Operation.DeleteMessageStream:
            m.delete(body.get("name"))
        elif operation == Operation.ListStreams:
            return {"streams": m.list_streams()}
        elif operation == Operation.DescribeMessageStream:
            return {"messageStreamInfo": m.describe(body.get("name"))}
        return {}
