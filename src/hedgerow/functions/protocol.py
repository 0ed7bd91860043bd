"""The framed binary protocol between the core and a function's worker process (sans-IO).

Every frame is a 9-byte header — body length (u32), kind (u8), id (u32), network order —
followed by the body. Both sides pipeline: many frames may be in flight, and a reader
decodes every complete frame its buffer holds in one go (``receive_data`` then
``events()``). ``encode(message) -> bytes``; concatenate several to write them at once.

core -> worker: INVOKE, CALL_RESULT, CALL_ERROR, LOG_LEVEL
worker -> core: READY, FATAL, RESULT, ERROR, PUBLISH, CALL
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from hedgerow.functions.errors import IPCProtocolError

HEADER: Final = struct.Struct("!IBI")
MAX_FRAME: Final = 64 * 1024 * 1024

_INVOKE_HEAD: Final = struct.Struct("!BHHI")
_U16: Final = struct.Struct("!H")


class Kind(IntEnum):
    READY = 1
    FATAL = 2
    INVOKE = 3
    RESULT = 4
    ERROR = 5
    PUBLISH = 6
    CALL = 7
    CALL_RESULT = 8
    CALL_ERROR = 9
    LOG_LEVEL = 10


class ErrorKind(IntEnum):
    HANDLED = 1  # the handler raised
    MEMORY = 2  # MemoryError: the worker exits after reporting it
    DECODE = 3  # the event could not be decoded for the handler's encoding
    TIMEOUT = 4  # the handler ran past its timeout: the worker exits after reporting it


@dataclass(frozen=True, slots=True)
class Ready:
    pid: int
    looping: bool = False  # module-level code is still running (a V1 sensor loop)


@dataclass(frozen=True, slots=True)
class Fatal:
    message: str


@dataclass(frozen=True, slots=True)
class Invoke:
    id: int
    topic: str
    source: str
    payload: bytes
    want_result: bool = True
    client_context: bytes = b""


@dataclass(frozen=True, slots=True)
class Result:
    id: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Error:
    id: int
    kind: ErrorKind
    error_type: str
    message: str
    traceback: str = ""


@dataclass(frozen=True, slots=True)
class Publish:
    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Call:
    id: int
    function: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class CallResult:
    id: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class CallError:
    id: int
    message: str


@dataclass(frozen=True, slots=True)
class LogLevel:
    """The worker's ``logging`` level from now on (set from the cloud, no restart)."""

    level: int


Message = (
    Ready | Fatal | Invoke | Result | Error | Publish | Call | CallResult | CallError | LogLevel
)


def _frame(kind: Kind, ident: int, body: bytes) -> bytes:
    return HEADER.pack(len(body), kind, ident) + body


def encode(message: Message) -> bytes:
    """The bytes of one frame."""
    match message:
        case Result(ident, payload):
            return HEADER.pack(len(payload), Kind.RESULT, ident) + payload
        case Invoke(ident, topic, source, payload, want_result, context):
            t, s = topic.encode(), source.encode()
            head = _INVOKE_HEAD.pack(1 if want_result else 0, len(t), len(s), len(context))
            body = b"".join((head, t, s, context, payload))
            return HEADER.pack(len(body), Kind.INVOKE, ident) + body
        case Publish(topic, payload):
            t = topic.encode()
            return _frame(Kind.PUBLISH, 0, _U16.pack(len(t)) + t + payload)
        case Call(ident, function, payload):
            f = function.encode()
            return _frame(Kind.CALL, ident, _U16.pack(len(f)) + f + payload)
        case CallResult(ident, payload):
            return _frame(Kind.CALL_RESULT, ident, payload)
        case CallError(ident, text):
            return _frame(Kind.CALL_ERROR, ident, text.encode())
        case Error(ident, kind, error_type, text, tb):
            body = json.dumps({"k": int(kind), "t": error_type, "m": text, "tb": tb}).encode()
            return _frame(Kind.ERROR, ident, body)
        case Ready(pid, looping):
            return _frame(Kind.READY, pid, b"\x01" if looping else b"\x00")
        case Fatal(text):
            return _frame(Kind.FATAL, 0, text.encode())
        case LogLevel(level):
            return _frame(Kind.LOG_LEVEL, level, b"")
    raise TypeError(f"not a protocol message: {message!r}")


def _decode(kind: int, ident: int, body: bytes) -> Message:
    if kind == Kind.RESULT:
        return Result(ident, body)
    if kind == Kind.INVOKE:
        if len(body) < _INVOKE_HEAD.size:
            raise IPCProtocolError("INVOKE frame too short")
        flags, tl, sl, cl = _INVOKE_HEAD.unpack_from(body)
        start = _INVOKE_HEAD.size
        end = start + tl + sl + cl
        if end > len(body):
            raise IPCProtocolError("INVOKE lengths exceed the frame")
        topic = body[start : start + tl].decode()
        source = body[start + tl : start + tl + sl].decode()
        context = body[start + tl + sl : end]
        return Invoke(ident, topic, source, body[end:], bool(flags & 1), context)
    if kind == Kind.PUBLISH or kind == Kind.CALL:
        if len(body) < 2:
            raise IPCProtocolError("frame too short")
        (n,) = _U16.unpack_from(body)
        if 2 + n > len(body):
            raise IPCProtocolError("name length exceeds the frame")
        name = body[2 : 2 + n].decode()
        if kind == Kind.PUBLISH:
            return Publish(name, body[2 + n :])
        return Call(ident, name, body[2 + n :])
    if kind == Kind.CALL_RESULT:
        return CallResult(ident, body)
    if kind == Kind.CALL_ERROR:
        return CallError(ident, body.decode(errors="replace"))
    if kind == Kind.ERROR:
        try:
            data = json.loads(body)
            return Error(
                ident, ErrorKind(data["k"]), str(data["t"]), str(data["m"]), str(data["tb"])
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise IPCProtocolError(f"bad ERROR frame: {exc}") from exc
    if kind == Kind.READY:
        return Ready(ident, body[:1] == b"\x01")
    if kind == Kind.FATAL:
        return Fatal(body.decode(errors="replace"))
    if kind == Kind.LOG_LEVEL:
        return LogLevel(ident)
    raise IPCProtocolError(f"unknown frame kind {kind}")


class Decoder:
    """Buffers bytes and yields every complete frame as a message."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buffer = bytearray()
        self._max_frame = max_frame

    def receive_data(self, data: bytes) -> None:
        self._buffer += data

    def events(self) -> list[Message]:
        """Every complete message in the buffer (an empty list: need more data)."""
        buf = self._buffer
        size = len(buf)
        pos = 0
        out: list[Message] = []
        head = HEADER.size
        unpack = HEADER.unpack_from
        while size - pos >= head:
            length, kind, ident = unpack(buf, pos)
            if length > self._max_frame:
                raise IPCProtocolError(f"frame of {length} bytes exceeds {self._max_frame}")
            end = pos + head + length
            if end > size:
                break
            body = bytes(buf[pos + head : end])
            if kind == Kind.RESULT:
                out.append(Result(ident, body))
            else:
                out.append(_decode(kind, ident, body))
            pos = end
        if pos:
            del buf[:pos]
        return out

    @property
    def buffered(self) -> int:
        return len(self._buffer)


# Exit codes a worker uses to tell the core why it ended (beyond a plain crash).
EXIT_IMPORT_FAILED: Final = 3
EXIT_MEMORY: Final = 4
EXIT_TIMEOUT: Final = 5
EXIT_PROTOCOL: Final = 6
