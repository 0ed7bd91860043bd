"""Errors of the stream manager package.

The whole tree; each error carries the wire status the SDKs turn into their own exception
(``status``, a ``protocol.Status``) and a message that says what to do next::

    StreamsError                 root: catch this to catch everything below
    ├── InvalidRequest           a malformed or impossible request (InvalidRequestException)
    │   ├── ExportNotAvailable   a Kinesis / IoT Analytics / SiteWise / S3 export (.export_type)
    │   ├── StreamExists         create of a name already taken (.stream)
    │   ├── StreamFull           RejectNewData stream at its max size (.stream)
    │   └── UpdateNotAllowed     an update that changes what cannot change (.stream)
    ├── StreamNotFound           no stream of that name (ResourceNotFoundException, .stream)
    ├── NotEnoughMessages        fewer than minMessageCount within the read timeout
    ├── ProtocolError            the peer broke the framing or the handshake (connection closes)
    └── StoreError               the stream's files cannot be read or written (.path)
"""

from __future__ import annotations

from .codes import Status


class StreamsError(Exception):
    """Root of the stream manager's own exceptions."""

    status: Status = Status.UnknownFailure

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(StreamsError):
    status = Status.InvalidRequest


class ExportNotAvailable(InvalidRequest):
    def __init__(self, export_type: str, message: str) -> None:
        super().__init__(message)
        self.export_type = export_type


class StreamExists(InvalidRequest):
    def __init__(self, stream: str) -> None:
        super().__init__(
            f"stream {stream!r} already exists: use UpdateMessageStream to change it, "
            "or delete it first"
        )
        self.stream = stream


class StreamFull(InvalidRequest):
    def __init__(self, stream: str, max_size: int) -> None:
        super().__init__(
            f"stream {stream!r} is full ({max_size} bytes, strategy RejectNewData): read and "
            "export faster, raise maxSize, or use OverwriteOldestData"
        )
        self.stream = stream


class UpdateNotAllowed(InvalidRequest):
    status = Status.UpdateNotAllowed

    def __init__(self, stream: str, message: str) -> None:
        super().__init__(message)
        self.stream = stream


class StreamNotFound(StreamsError):
    status = Status.ResourceNotFound

    def __init__(self, stream: str) -> None:
        super().__init__(f"stream {stream!r} does not exist: create it first (list_streams)")
        self.stream = stream


class NotEnoughMessages(StreamsError):
    status = Status.NotEnoughMessages


class ProtocolError(StreamsError):
    """The peer sent something that is not the stream manager protocol."""


class StoreError(StreamsError):
    status = Status.MessageStoreReadError

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path
