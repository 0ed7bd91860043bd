"""MQTT over WebSocket (browsers, dashboards): a framing layer under the usual Connection.

:class:`WebSocketFraming` is sans-IO (``wsproto``): bytes from the socket in, MQTT bytes
and bytes to send back out. It accepts the opening handshake on ``/`` and ``/mqtt`` with
subprotocol ``mqtt`` (or ``mqttv3.1``), binary frames only (a text frame closes with 1003),
answers pings, and frames outbound MQTT bytes as binary messages.

:class:`WebSocketProtocol` is the asyncio shell: it owns the socket (and TLS, over memory
BIOs like ``tls.py``) and hands the MQTT bytes to an ordinary
:class:`~hedgerow.broker.client_io.Connection` through :class:`FramedTransport`, a
transport that frames what the connection writes. Authentication, ACLs, limits, keep-alive
and backpressure are therefore exactly those of a TCP client; the CONNECT timeout covers
a handshake that never completes.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import TYPE_CHECKING, Any, cast

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from hedgerow.broker.errors import BrokerError
from hedgerow.broker.hub import Hub
from hedgerow.broker.tls import ServerTLS

if TYPE_CHECKING:
    from hedgerow.broker.client_io import Connection

log = logging.getLogger(__name__)

#: Paths MQTT clients connect to (paho and MQTT.js use /mqtt; some dashboards use /).
PATHS = frozenset({"/", "/mqtt"})
#: Subprotocols we speak, in order of preference (mqttv3.1 is MQTT 3.1's name).
SUBPROTOCOLS = ("mqtt", "mqttv3.1")
#: WebSocket close codes used here.
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_PROTOCOL_ERROR = 1002


class WebSocketError(BrokerError):
    """The peer broke the WebSocket protocol or asked for something we do not serve.

    ``reply`` holds the bytes to send it before closing (a refusal or a close frame).
    """

    def __init__(self, message: str, reply: bytes = b"") -> None:
        super().__init__(message)
        self.reply = reply


class WebSocketFraming:
    """The server side of one WebSocket connection, without I/O."""

    __slots__ = ("_ws", "open", "closed")

    def __init__(self) -> None:
        self._ws = WSConnection(ConnectionType.SERVER)
        #: True once the handshake was accepted.
        self.open = False
        #: True once either side closed (nothing more is sent or delivered).
        self.closed = False

    def receive(self, data: bytes) -> tuple[bytes, bytes]:
        """Feed socket bytes: (MQTT bytes for the connection, bytes to send back).

        Raises :class:`WebSocketError` when the peer must be disconnected; the bytes to
        send it first (a refusal or a close frame) are in the exception's ``reply``.
        """
        ws = self._ws
        try:
            ws.receive_data(data)
        except RemoteProtocolError as exc:
            raise _refusal(f"bad WebSocket data: {exc}", exc.event_hint, ws) from exc
        mqtt: list[bytes] = []
        reply: list[bytes] = []
        try:
            for event in ws.events():
                if isinstance(event, Request):
                    reply.append(self._handshake(event))
                elif isinstance(event, BytesMessage):
                    mqtt.append(bytes(event.data))
                elif isinstance(event, Ping):
                    reply.append(ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    self.closed = True
                    reply.append(ws.send(event.response()))
                    break
                elif isinstance(event, TextMessage):
                    self.closed = True
                    reply.append(
                        ws.send(CloseConnection(CLOSE_UNSUPPORTED_DATA, "MQTT needs binary frames"))
                    )
                    raise WebSocketError(
                        "text frame: MQTT over WebSocket is binary only", b"".join(reply)
                    )
        except RemoteProtocolError as exc:
            raise _refusal(f"bad WebSocket data: {exc}", exc.event_hint, ws) from exc
        return b"".join(mqtt), b"".join(reply)

    def _handshake(self, request: Request) -> bytes:
        ws = self._ws
        path = request.target.partition("?")[0]
        if path not in PATHS:
            raise _refusal(f"no MQTT endpoint at {path!r} (use /mqtt)", RejectConnection(404), ws)
        offered = list(request.subprotocols)
        chosen = next((p for p in SUBPROTOCOLS if p in offered), None)
        if offered and chosen is None:
            raise _refusal(
                f"subprotocols {offered} offered, none is mqtt", RejectConnection(400), ws
            )
        self.open = True
        return ws.send(AcceptConnection(subprotocol=chosen))

    def frame(self, data: bytes) -> bytes:
        """MQTT bytes as one binary WebSocket message."""
        if self.closed or not self.open:
            return b""
        return self._ws.send(BytesMessage(data=data))

    def close(self) -> bytes:
        """A close frame (normal closure), once."""
        if self.closed or not self.open:
            return b""
        self.closed = True
        try:
            return self._ws.send(CloseConnection(1000))
        except LocalProtocolError:
            return b""


def _refusal(message: str, event: Any, ws: WSConnection) -> WebSocketError:
    reply = b""
    if event is not None:
        try:
            reply = ws.send(event)
        except LocalProtocolError:
            reply = b""
    return WebSocketError(message, reply)


class FramedTransport:
    """What the MQTT :class:`Connection` writes to: frames its bytes, then TLS, then socket.

    Flow control (pause/resume, buffer sizes) is the real socket's, so backpressure and
    slow-consumer rules see exactly what they see for TCP clients.
    """

    def __init__(self, owner: WebSocketProtocol, real: asyncio.Transport) -> None:
        self._owner = owner
        self._real = real

    def write(self, data: bytes) -> None:
        self._owner.send(self._owner.framing.frame(data))

    def writelines(self, lines: list[bytes]) -> None:
        self.write(b"".join(lines))

    def close(self) -> None:
        owner = self._owner
        if not self._real.is_closing():
            owner.send(owner.framing.close())
            self._real.close()

    def abort(self) -> None:
        self._real.abort()

    def is_closing(self) -> bool:
        return self._real.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":  # TLS is done by the owner, over memory BIOs
            tls = self._owner.tls
            return tls.ssl_object if tls is not None else None
        return self._real.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._real.pause_reading()

    def resume_reading(self) -> None:
        self._real.resume_reading()

    def is_reading(self) -> bool:
        return self._real.is_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._real.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._real.get_write_buffer_size()


class WebSocketProtocol(asyncio.Protocol):
    """One WebSocket client: socket (and TLS) in, an MQTT Connection inside."""

    def __init__(self, hub: Hub[Connection], tls: ssl.SSLContext | None = None) -> None:
        from hedgerow.broker.client_io import Connection

        self.hub = hub
        self.tls = ServerTLS(tls) if tls is not None else None
        self.framing = WebSocketFraming()
        self.connection = Connection(hub, None)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.connection.connection_made(cast(Any, FramedTransport(self, self.transport)))

    def send(self, data: bytes) -> None:
        transport = self.transport
        if not data or transport is None or transport.is_closing():
            return
        if self.tls is not None:
            data = self.tls.encrypt(data)
        transport.write(data)

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        if self.tls is not None:
            try:
                data, reply, closed = self.tls.receive(data)
            except ssl.SSLError as exc:
                log.info("websocket_tls_failed peer=%s error=%s", self._peer(), exc)
                self.hub.counters.refused += 1
                transport.write(self.tls.pending())
                transport.close()
                return
            if reply:
                transport.write(reply)
            if closed:
                transport.close()
            if not data:
                return
        try:
            mqtt, reply = self.framing.receive(data)
        except WebSocketError as exc:
            log.info("websocket_refused peer=%s reason=%s", self._peer(), exc)
            self.send(exc.reply)
            transport.close()
            return
        self.send(reply)
        if mqtt:
            self.connection.data_received(mqtt)
        if self.framing.closed:
            transport.close()

    def _peer(self) -> object:
        return self.transport.get_extra_info("peername") if self.transport else None

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.connection.connection_lost(exc)

    def pause_writing(self) -> None:
        self.connection.pause_writing()

    def resume_writing(self) -> None:
        self.connection.resume_writing()
