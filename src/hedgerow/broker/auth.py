"""The two small interfaces the core and the cloud plug into, and two implementations.

* :class:`Authenticator` turns a CONNECT (and the verified client certificate) into an
  :class:`Identity`, or raises :class:`Refused`.
* :class:`Authorizer` answers "may this identity publish to / subscribe to this topic?".

The broker calls ``authenticate`` once per connection and ``authorize`` for every
PUBLISH and every subscription filter, so ``authorize`` must be cheap (cache if needed).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol, runtime_checkable

from hedgerow.broker.errors import BrokerError
from hedgerow.certinfo import CertInfo, CertInfoError

#: v5 reason codes an authenticator typically refuses with (the 3.1.1 return code is mapped).
NOT_AUTHORIZED = 0x87
BAD_USER_NAME_OR_PASSWORD = 0x86
CLIENT_IDENTIFIER_NOT_VALID = 0x85
BANNED = 0x8A

_EMPTY: Mapping[str, str] = MappingProxyType({})


class Action(enum.Enum):
    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"


@dataclass(frozen=True, slots=True)
class ConnectInfo:
    """What a client presented: its CONNECT fields and, over mutual TLS, its certificate."""

    client_id: str
    username: str | None
    password: bytes | None
    version: int
    peer: tuple[str, int] | None
    #: The client certificate, already verified against the listener's CA (TLS did that;
    #: this is what it says, read without ``cryptography``); None without a usable one.
    peer_cert: CertInfo | None
    clean_start: bool


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a connection is. ``name`` is what authorization decisions are made on."""

    name: str
    kind: str = "client"
    attributes: Mapping[str, str] = field(default_factory=lambda: _EMPTY, hash=False)


class Refused(BrokerError):
    """Raised by an authenticator: the connection is refused with a v5 reason code.

    A 3.1.1 client gets the mapped CONNACK return code, or no CONNACK at all when
    ``silent`` (some clients, e.g. AWSIoTPythonSDK, treat any CONNACK as success).
    """

    def __init__(self, reason_code: int, message: str, *, silent: bool = False) -> None:
        super().__init__(message)
        self.reason_code = int(reason_code)
        self.message = message
        self.silent = silent


@runtime_checkable
class Authenticator(Protocol):
    async def authenticate(self, info: ConnectInfo) -> Identity: ...


@runtime_checkable
class Authorizer(Protocol):
    def authorize(self, identity: Identity, action: Action, topic: str) -> bool: ...


class DeliveryAuthorizer(Protocol):
    """Optional, on an authorizer: may a message ``publisher`` sent on ``topic`` reach
    ``subscriber``? Asked for every client-to-client delivery when the authorizer has it
    (the core's routing table: a device hears another only where a subscription routes it).
    Messages published from inside the process (publisher None) are not asked about."""

    def may_deliver(self, publisher: Identity, subscriber: Identity, topic: str) -> bool: ...


class ReadAuthorizer(Protocol):
    """Optional, on an authorizer: may ``subscriber`` receive a message on ``topic``?
    Asked for every delivery when the authorizer has it, whoever published (clients, the
    process itself, wills, retained messages on SUBSCRIBE): mosquitto's ``read`` access."""

    def may_read(self, subscriber: Identity, topic: str) -> bool: ...


class AllowAll:
    """Accepts every client (identity = the client id) and allows every action."""

    async def authenticate(self, info: ConnectInfo) -> Identity:
        if info.peer_cert is not None:
            try:
                return Identity(info.peer_cert.name, kind="certificate")
            except CertInfoError as exc:
                raise Refused(NOT_AUTHORIZED, f"unusable client certificate: {exc}") from exc
        return Identity(info.client_id)

    def authorize(self, identity: Identity, action: Action, topic: str) -> bool:
        return True


class CertificateAuthenticator:
    """The identity is the verified client certificate's common name; no certificate, no entry.

    The client id a device claims is never its identity (see ``docs/architecture.md``).
    """

    def __init__(self, kind: str = "thing") -> None:
        self.kind = kind

    async def authenticate(self, info: ConnectInfo) -> Identity:
        if info.peer_cert is None:
            raise Refused(NOT_AUTHORIZED, "no client certificate")
        try:
            name = info.peer_cert.name
        except CertInfoError as exc:
            raise Refused(NOT_AUTHORIZED, f"unusable client certificate: {exc}") from exc
        return Identity(name, kind=self.kind, attributes={"client_id": info.client_id})
