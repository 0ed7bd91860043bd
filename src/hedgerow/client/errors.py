"""Errors raised by the MQTT client.

The whole tree, each with the data it carries as attributes::

    ClientError                     root: catch this to catch everything below
    ├── ConnectError                the connection could not be established
    │                               (.reason_code: the CONNACK code, None for network/TLS/timeout)
    ├── ConnectionLost              an established connection ended (or none is open)
    │                               (.reason_code: the server's DISCONNECT reason, if it sent one)
    ├── PublishError                the server refused a QoS 1/2 publish (.reason_code, .packet_id)
    ├── SubscribeError              a SUBACK/UNSUBACK code >= 0x80 (.reason_code, .reason_codes)
    └── ProtocolViolation           the server broke the protocol (.reason_code); the connection
                                    is closed and pending operations fail with ConnectionLost

Errors from lower layers (``OSError``, ``ssl.SSLError``, ``hedgerow.mqtt.errors.MQTTError``)
are translated at this boundary with ``raise ... from exc``, so the original is ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Sequence


class ClientError(Exception):
    """Root of every error the client raises."""


class ConnectError(ClientError):
    """``connect()`` failed: refused by the server (``reason_code`` set) or unreachable (None)."""

    def __init__(self, message: str, reason_code: int | None = None) -> None:
        super().__init__(message)
        self.reason_code = reason_code


class ConnectionLost(ClientError):
    """The connection is gone; the operation that raised this did not complete.

    A QoS 1/2 publish that was in flight may still have reached the server: with a persistent
    session (``clean_start=False``) it is re-sent with DUP on the next ``connect()``.
    """

    def __init__(self, message: str = "connection lost", reason_code: int | None = None) -> None:
        super().__init__(message)
        self.reason_code = reason_code


class PublishError(ClientError):
    """The server answered a QoS 1/2 PUBLISH with a failure reason code (>= 0x80)."""

    def __init__(self, message: str, reason_code: int, packet_id: int | None = None) -> None:
        super().__init__(message)
        self.reason_code = reason_code
        self.packet_id = packet_id


class SubscribeError(ClientError):
    """At least one topic filter of a SUBSCRIBE or UNSUBSCRIBE was refused.

    ``reason_codes`` holds every code in request order; ``reason_code`` is the first failure.
    """

    def __init__(self, message: str, reason_codes: Sequence[int]) -> None:
        super().__init__(message)
        self.reason_codes = tuple(reason_codes)
        self.reason_code = next((code for code in self.reason_codes if code >= 0x80), 0x80)


class ProtocolViolation(ClientError):
    """The server sent something MQTT does not allow (malformed or out-of-order packet)."""

    def __init__(self, message: str, reason_code: int = 0x82) -> None:
        super().__init__(message)
        self.reason_code = reason_code
