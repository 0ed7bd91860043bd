"""One network connection to a server: an ``asyncio.Protocol`` over the pure codec.

It knows bytes, packets and time, not MQTT sessions: it decodes every complete packet a read
brings and hands each to ``on_packet``; it gathers outgoing packets and writes them once per
event-loop tick; it sends PINGREQ when the link has been quiet for the keepalive interval and
drops the link when no PINGRESP follows in time. Everything runs in protocol callbacks and
``call_later`` timers: no tasks to leak.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import cast

from hedgerow.mqtt.codec import Decoder, encode
from hedgerow.mqtt.errors import MQTTError
from hedgerow.mqtt.packets import PingReq, ProtocolVersion

from .errors import ClientError, ConnectionLost, ProtocolViolation

log = logging.getLogger(__name__)

PacketHandler = Callable[[object], None]
LostHandler = Callable[["Connection", ClientError | None], None]


class Connection(asyncio.Protocol):
    """The transport side of one MQTT connection (created by ``loop.create_connection``)."""

    def __init__(
        self,
        version: ProtocolVersion,
        max_packet_size: int,
        on_packet: PacketHandler,
        on_lost: LostHandler,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.version = version
        self.decoder = Decoder(version=version, max_packet_size=max_packet_size, server=False)
        self.transport: asyncio.Transport | None = None
        self._on_packet = on_packet
        self._on_lost = on_lost
        self._out: list[bytes] = []
        self._flush_handle: asyncio.Handle | None = None
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._reading_paused = False
        self._closing_error: ClientError | None = None
        self._closed_locally = False
        self.closed = False
        #: resolved (with None) once ``connection_lost`` ran
        self.lost: asyncio.Future[None] = self.loop.create_future()
        # keepalive
        self.last_sent = self.last_received = self.loop.time()
        self._keepalive = 0.0
        self._ping_timeout = 0.0
        self._ping_handle: asyncio.TimerHandle | None = None
        self._pong_deadline: asyncio.TimerHandle | None = None
        self.pings_sent = 0
        self.pongs_received = 0

    # ---- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.last_received = self.loop.time()
        try:
            self.decoder.receive_data(data)
            next_packet = self.decoder.next_packet
            on_packet = self._on_packet
            packet = next_packet()
            while packet is not None:
                on_packet(packet)
                if self.closed:
                    return
                packet = next_packet()
        except MQTTError as exc:
            log.warning("mqtt.client.malformed_from_server error=%s", exc)
            error = ProtocolViolation(f"server sent a bad packet: {exc}", exc.reason_code)
            error.__cause__ = exc
            self.abort(error)
        except ProtocolViolation as exc:
            log.warning("mqtt.client.protocol_violation error=%s", exc)
            self.abort(exc)

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timers()
        self._out.clear()
        self._wake_drainers()
        error = self._closing_error
        if error is None and self._closed_locally:
            pass  # our own clean close: nothing went wrong
        elif error is None and exc is not None:
            error = ConnectionLost(f"connection lost: {exc}")
            error.__cause__ = exc
        elif error is None:
            error = ConnectionLost("connection closed by the server")
        if not self.lost.done():
            self.lost.set_result(None)
        self._on_lost(self, error)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drainers()

    # ---- writing ----------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Queue bytes; everything queued in one tick goes out in a single write."""
        if self.closed:
            return
        self._out.append(data)
        if self._flush_handle is None:
            self._flush_handle = self.loop.call_soon(self.flush)

    def send_packet(self, packet: object) -> None:
        self.send(encode(packet, self.version))  # type: ignore[arg-type]

    def flush(self) -> None:
        self._flush_handle = None
        if not self._out or self.transport is None or self.closed:
            return
        data = self._out[0] if len(self._out) == 1 else b"".join(self._out)
        self._out.clear()
        self.transport.write(data)
        self.last_sent = self.loop.time()

    @property
    def writing_paused(self) -> bool:
        return self._write_paused

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        if not self._write_paused or self.closed:
            return
        waiter: asyncio.Future[None] = self.loop.create_future()
        self._drain_waiters.append(waiter)
        await waiter

    def _wake_drainers(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # ---- reading backpressure -----------------------------------------------------------

    def pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None and not self.closed:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None and not self.closed:
            self._reading_paused = False
            self.last_received = self.loop.time()
            self.transport.resume_reading()

    @property
    def reading_paused(self) -> bool:
        return self._reading_paused

    # ---- closing ----------------------------------------------------------------------

    def close(self, error: ClientError | None = None) -> None:
        """Write what is queued, then close; ``error`` is what pending operations will see."""
        if self.closed:
            return
        if self._closing_error is None:
            self._closing_error = error
        self._closed_locally = True
        self.flush()
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self, error: ClientError | None = None) -> None:
        """Drop the connection at once, discarding unwritten data (no DISCONNECT is sent)."""
        if self._closing_error is None:
            self._closing_error = error if error is not None else ConnectionLost("aborted")
        self._out.clear()
        self.closed = True
        if self.transport is not None and not self.lost.done():
            self.transport.abort()  # also after close(): stop waiting for the peer

    # ---- keepalive --------------------------------------------------------------------

    def start_keepalive(self, keepalive: float, ping_timeout: float) -> None:
        self._keepalive = keepalive
        self._ping_timeout = ping_timeout
        if keepalive > 0 and not self.closed:
            self._ping_handle = self.loop.call_later(keepalive, self._keepalive_check)

    def on_pingresp(self) -> None:
        self.pongs_received += 1
        if self._pong_deadline is not None:
            self._pong_deadline.cancel()
            self._pong_deadline = None

    def _keepalive_check(self) -> None:
        self._ping_handle = None
        if self.closed:
            return
        now = self.loop.time()
        quiet_since = min(self.last_sent, self.last_received)
        due = quiet_since + self._keepalive
        if now >= due or self._reading_paused:
            if self._pong_deadline is None:
                self.send(encode(PingReq(), self.version))
                self.pings_sent += 1
                self._pong_deadline = self.loop.call_later(self._ping_timeout, self._pong_overdue)
            due = now + self._keepalive
        self._ping_handle = self.loop.call_at(due, self._keepalive_check)

    def _pong_overdue(self) -> None:
        self._pong_deadline = None
        if self.closed:
            return
        if self._reading_paused:
            # we stopped reading ourselves (the application is slow); the PINGRESP may be
            # sitting unread in the socket, so this says nothing about the server
            self._pong_deadline = self.loop.call_later(self._ping_timeout, self._pong_overdue)
            return
        log.warning("mqtt.client.ping_timeout timeout=%s", self._ping_timeout)
        self.abort(ConnectionLost(f"no PINGRESP within {self._ping_timeout:g} s"))

    def _cancel_timers(self) -> None:
        for handle in (self._flush_handle, self._ping_handle, self._pong_deadline):
            if handle is not None:
                handle.cancel()
        self._flush_handle = self._ping_handle = self._pong_deadline = None
