"""The stream manager wire protocol, sans-IO: what the Greengrass stream manager SDKs speak.

Both ``greengrasssdk.stream_manager`` (V1) and the V2 ``stream_manager`` package open one
TCP connection and send:

1. one byte, the *connect version* (1), then a ``Connect`` frame;
2. frames of ``[length: int32 big-endian][operation: int8][payload: CBOR map]`` where
   ``length`` counts the operation byte plus the payload.

The server answers the connect version byte, then a ``ConnectResponse`` frame, then one
response frame per request (matched by the payload's ``requestId``; responses may come in
any order, so a long-polling read does not hold up an append on the same connection).
Payload keys are the SDK's camelCase names (``requestId``, ``definition``, ``maxSize`` …);
enums travel as their integer values.

``ServerConnection`` is the server's side as a state machine: ``receive_data(bytes)``, then
``next_event()`` until ``NEED_DATA``; ``send_*()`` return the bytes to write.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Any, Final

import cbor2

from .codes import Operation, Status
from .errors import ProtocolError

CONNECT_VERSION: Final = 1
#: The protocol version the SDKs of 2020-2024 send; 1.0.0 is what the oldest still speak.
PROTOCOL_VERSION: Final = "1.1.0"
SUPPORTED_PROTOCOL_VERSIONS: Final = ("1.1.0", "1.0.0")
SERVER_VERSION: Final = "hedgerow-1.1.0"
#: The largest frame accepted (the SDKs allow 1 GiB; a gateway does not).
DEFAULT_MAX_FRAME: Final = 16 * 1024 * 1024
_HEADER = struct.Struct(">iB")


class ConnState(enum.Enum):
    AWAIT_VERSION = "await-version"
    AWAIT_CONNECT = "await-connect"
    CONNECTED = "connected"
    CLOSED = "closed"


#: The states each state may move to.
TRANSITIONS: Final[dict[ConnState, frozenset[ConnState]]] = {
    ConnState.AWAIT_VERSION: frozenset({ConnState.AWAIT_CONNECT, ConnState.CLOSED}),
    ConnState.AWAIT_CONNECT: frozenset({ConnState.CONNECTED, ConnState.CLOSED}),
    ConnState.CONNECTED: frozenset({ConnState.CLOSED}),
    ConnState.CLOSED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class ConnectRequested:
    connect_version: int
    request_id: str
    protocol_version: str
    other_versions: tuple[str, ...]
    sdk_version: str | None
    auth_token: str | None


@dataclass(frozen=True, slots=True)
class RequestReceived:
    operation: int  #: an ``Operation`` value, or any int a newer client sends
    request_id: str
    body: dict[str, Any]


class _NeedData(enum.Enum):
    NEED_DATA = "need-data"


NEED_DATA: Final = _NeedData.NEED_DATA
Event = ConnectRequested | RequestReceived | _NeedData


def encode_frame(operation: int, body: dict[str, Any]) -> bytes:
    payload: bytes = cbor2.dumps(body)
    return _HEADER.pack(len(payload) + 1, operation) + payload


def _decode_body(payload: bytes) -> dict[str, Any]:
    try:
        body = cbor2.loads(payload)
    except (cbor2.CBORDecodeError, ValueError, TypeError) as exc:
        raise ProtocolError(f"a frame's payload is not CBOR: {exc}") from exc
    if not isinstance(body, dict):
        raise ProtocolError("a frame's payload is not a CBOR map")
    return body


class ServerConnection:
    """One client connection's protocol state; no I/O."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.state = ConnState.AWAIT_VERSION
        self.max_frame = max_frame
        self._buffer = bytearray()
        self._pos = 0

    def _move(self, state: ConnState) -> None:
        if state not in TRANSITIONS[self.state]:
            raise ProtocolError(f"connection state {self.state.value} cannot become {state.value}")
        self.state = state

    def receive_data(self, data: bytes) -> None:
        if self._pos > 65536 and self._pos * 2 > len(self._buffer):
            del self._buffer[: self._pos]
            self._pos = 0
        self._buffer += data

    def next_event(self) -> Event:
        if self.state is ConnState.CLOSED:
            raise ProtocolError("the connection is closed")
        if self.state is ConnState.AWAIT_VERSION:
            if len(self._buffer) - self._pos < 1:
                return NEED_DATA
            self.connect_version = self._buffer[self._pos]
            self._pos += 1
            self._move(ConnState.AWAIT_CONNECT)
        frame = self._next_frame()
        if frame is None:
            return NEED_DATA
        operation, body = frame
        if self.state is ConnState.AWAIT_CONNECT:
            if operation != Operation.Connect:
                self._move(ConnState.CLOSED)
                raise ProtocolError(f"expected a Connect frame first, got operation {operation}")
            return _connect_event(self.connect_version, body)
        request_id = body.get("requestId")
        if not isinstance(request_id, str) or not request_id:
            raise ProtocolError(f"operation {operation} without a requestId")
        return RequestReceived(operation, request_id, body)

    def _next_frame(self) -> tuple[int, dict[str, Any]] | None:
        available = len(self._buffer) - self._pos
        if available < _HEADER.size:
            return None
        length, operation = _HEADER.unpack_from(self._buffer, self._pos)
        if length < 1 or length > self.max_frame:
            self._move(ConnState.CLOSED)
            raise ProtocolError(
                f"a frame of {length} bytes (the limit is {self.max_frame}): "
                "split the data into smaller messages"
            )
        if available < 4 + length:
            return None
        start = self._pos + _HEADER.size
        end = self._pos + 4 + length
        payload = bytes(self._buffer[start:end])
        self._pos = end
        return operation, _decode_body(payload)

    def send_connect_response(
        self, request_id: str, status: Status, protocol_version: str, message: str | None = None
    ) -> bytes:
        body: dict[str, Any] = {
            "requestId": request_id,
            "status": int(status),
            "protocolVersion": protocol_version,
            "supportedProtocolVersions": list(SUPPORTED_PROTOCOL_VERSIONS),
            "serverVersion": SERVER_VERSION,
        }
        if message:
            body["errorMessage"] = message
        self._move(ConnState.CONNECTED if status is Status.Success else ConnState.CLOSED)
        return bytes([CONNECT_VERSION]) + encode_frame(Operation.ConnectResponse, body)

    def send_response(self, operation: int, body: dict[str, Any]) -> bytes:
        return encode_frame(operation, body)


def _connect_event(version: int, body: dict[str, Any]) -> ConnectRequested:
    others = body.get("otherSupportedProtocolVersions") or []
    token = body.get("authToken")
    sdk = body.get("sdkVersion")
    return ConnectRequested(
        connect_version=version,
        request_id=str(body.get("requestId") or ""),
        protocol_version=str(body.get("protocolVersion") or ""),
        other_versions=tuple(str(v) for v in others if isinstance(v, str)),
        sdk_version=sdk if isinstance(sdk, str) else None,
        auth_token=token if isinstance(token, str) else None,
    )


def choose_protocol_version(event: ConnectRequested) -> str | None:
    """The version to speak with this client, or None when there is none in common."""
    for version in (event.protocol_version, *event.other_versions):
        if version in SUPPORTED_PROTOCOL_VERSIONS:
            return version
    return None


def error_body(request_id: str, status: Status, message: str) -> dict[str, Any]:
    return {"requestId": request_id, "status": int(status), "errorMessage": message}
