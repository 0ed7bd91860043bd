"""One client's MQTT protocol rules, apart from any I/O (sans-IO, like h11 or mqttproto).

``ClientProtocol`` is the per-connection state machine of the broker. It takes decoded
packets (from ``hedgerow.mqtt``), the time ``now`` and the verdicts of the authenticator
and authorizer, and answers with decisions and packets to send. It holds no socket, no
event loop and reads no clock, so every rule here is tested by feeding it packets
(``tests/broker/test_protocol.py``); ``client_io.py`` is the asyncio shell that drives it.

Phases (``Phase``, changed only through ``_TRANSITIONS``)::

    CONNECTING --CONNECT--> AUTHENTICATING --accepted--> CONNECTED --> CLOSED
         \\________________________\\____refused / timeout______________/

What lives here: CONNECT checks (protocol version, client id rules, assigned ids),
the refusal reason codes for 3.1.1 and 5, the session-present flag and the CONNACK with
the negotiated terms (``negotiate.py``: keep-alive cap, Server Keep Alive, session
expiry), SUBSCRIBE checks and SUBACK reason codes (topic filter validation, shared
subscriptions, authorization verdicts, the subscription quota), UNSUBACK, the CONNECT
timeout and the keep-alive deadline (1.5 x keep-alive after the last packet).
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from hedgerow.broker.config import BrokerConfig
from hedgerow.broker.negotiate import Terms, negotiate
from hedgerow.mqtt.errors import ProtocolError
from hedgerow.mqtt.packets import (
    NO_PROPERTIES,
    ConnAck,
    Connect,
    Properties,
    ProtocolVersion,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
)
from hedgerow.mqtt.reasons import ReasonCode
from hedgerow.mqtt.topics import parse_shared, validate_topic_filter

#: The SUBACK return code of MQTT 3.1.1 for any refused filter.
FAILURE_V311 = 0x80
#: Assigned client ids start with this.
ASSIGNED_PREFIX = "hedgerow-"
SUPPORTED_VERSIONS = frozenset(ProtocolVersion)


class Phase(enum.Enum):
    CONNECTING = "connecting"
    AUTHENTICATING = "authenticating"
    CONNECTED = "connected"
    CLOSED = "closed"


_TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.CONNECTING: frozenset({Phase.AUTHENTICATING, Phase.CLOSED}),
    Phase.AUTHENTICATING: frozenset({Phase.CONNECTED, Phase.CLOSED}),
    Phase.CONNECTED: frozenset({Phase.CLOSED}),
    Phase.CLOSED: frozenset(),
}


class PhaseError(ProtocolError):
    """A packet or decision that the current phase does not allow."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """Refuse the connection: send ``connack`` (unless None) and close."""

    reason_code: int
    message: str
    #: The CONNACK to send (None: a silent 3.1.1 refusal closes without one).
    connack: ConnAck | None


@dataclass(frozen=True, slots=True)
class Authenticate:
    """Ask the authenticator about this client id (assigned by us when ``assigned``)."""

    client_id: str
    assigned: str | None


@dataclass(frozen=True, slots=True)
class Accepted:
    """The connection is accepted: send ``connack`` and apply ``terms``."""

    terms: Terms
    connack: ConnAck


@dataclass(frozen=True, slots=True)
class Grant:
    """One filter of a SUBSCRIBE that was granted (the caller adds it to the table)."""

    request: Subscription
    #: The share name of a ``$share/<group>/<filter>`` subscription, else None.
    group: str | None
    #: The filter replaces one the session already had.
    replaces: bool


@dataclass(frozen=True, slots=True)
class FilterRefused:
    """One filter of a SUBSCRIBE that was refused, and why (for the log)."""

    topic_filter: str
    reason_code: int
    why: str
    #: Refused by the authorizer (counted as ``denied_subscribe``).
    denied: bool = False


@dataclass(frozen=True, slots=True)
class SubscribeDecision:
    suback: SubAck
    granted: tuple[Grant, ...]
    refused: tuple[FilterRefused, ...]
    #: The v5 Subscription Identifier of the packet (None = none).
    identifier: int | None


class ClientProtocol:
    """The protocol state of one client connection (pure: no I/O, no clock)."""

    __slots__ = ("config", "phase", "version", "v5", "client_id", "connect", "keepalive", "seen")

    def __init__(self, config: BrokerConfig, now: float) -> None:
        self.config = config
        self.phase = Phase.CONNECTING
        self.version = ProtocolVersion.V311
        self.v5 = False
        self.client_id = ""
        self.connect: Connect | None = None
        #: Keep-alive in force (seconds, 0 = none), known once connected.
        self.keepalive = 0
        #: When the client was last heard from (the CONNECT timeout counts from opening).
        self.seen = now

    def _move(self, to: Phase) -> None:
        if to not in _TRANSITIONS[self.phase]:
            raise PhaseError(f"{self.phase.value} cannot become {to.value}")
        self.phase = to

    # ---- CONNECT -------------------------------------------------------------------------

    def receive_connect(self, c: Connect, now: float) -> Authenticate | Refusal:
        """A CONNECT arrived: ask the authenticator, or refuse right away."""
        if self.phase is not Phase.CONNECTING:
            raise PhaseError("a second CONNECT")
        self.seen = now
        self.version = c.version
        self.v5 = c.version == ProtocolVersion.V5
        self.connect = c
        if c.version not in SUPPORTED_VERSIONS:
            return self.refuse(
                ReasonCode.UNSUPPORTED_PROTOCOL_VERSION,
                f"protocol level {int(c.version)} (this broker speaks 3, 4 and 5)",
            )
        client_id = c.client_id
        assigned = None
        if not client_id:
            if self.v5:
                client_id = assigned = ASSIGNED_PREFIX + secrets.token_hex(8)
            elif c.clean_start and self.config.allow_empty_client_id:
                client_id = ASSIGNED_PREFIX + secrets.token_hex(8)
            else:
                why = (
                    "empty client id with clean session off"
                    if c.clean_start is False and self.config.allow_empty_client_id
                    else "empty client id"
                )
                return self.refuse(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID, why)
        self.client_id = client_id
        self._move(Phase.AUTHENTICATING)
        return Authenticate(client_id, assigned)

    def authenticated(self, identity: str, holder: str | None) -> Refusal | None:
        """The authenticator accepted ``identity``; ``holder`` is the identity owning a
        session under this client id (None = none). A client id is not an identity:
        claiming another's must neither kick it off nor resume its session."""
        if self.phase is not Phase.AUTHENTICATING:
            raise PhaseError("authenticated outside CONNECT")
        if holder is not None and holder != identity:
            return self.refuse(
                ReasonCode.NOT_AUTHORIZED,
                f"client id {self.client_id!r} is held by identity {holder!r}, not {identity!r}",
            )
        return None

    def accept(self, session_present: bool, assigned: str | None, now: float) -> Accepted:
        """Accept the connection: the negotiated terms and the CONNACK to send."""
        c = self.connect
        if c is None or self.phase is not Phase.AUTHENTICATING:
            raise PhaseError("accept before CONNECT")
        terms = negotiate(c, self.config, assigned)
        self.keepalive = terms.keepalive
        self.seen = now
        self._move(Phase.CONNECTED)
        self.connect = None  # its password and will are not kept per connection
        if self.v5:
            return Accepted(terms, ConnAck(session_present, 0, terms.ack_properties))
        return Accepted(terms, ConnAck(session_present, 0))

    def refuse(self, reason_code: int, message: str, *, silent: bool = False) -> Refusal:
        """Refuse the connection (the authenticator's ``Refused``, or our own checks).

        The CONNACK carries the v5 reason code; the codec maps it to the 3.1.1 return
        code; a v5 client also gets ``message`` as Reason String. A ``silent`` refusal
        sends no CONNACK to a 3.1.1 client."""
        if self.phase is not Phase.CLOSED:
            self._move(Phase.CLOSED)
        if not self.v5:
            return Refusal(reason_code, message, None if silent else ConnAck(False, reason_code))
        # a v5 client is also told why (reason string), silent or not
        props = Properties(reason_string=message) if message else NO_PROPERTIES
        return Refusal(reason_code, message, ConnAck(False, reason_code, props))

    # ---- SUBSCRIBE / UNSUBSCRIBE ------------------------------------------------------------

    def check_subscribe(
        self, p: Subscribe, authorize: Callable[[str], bool], held: Collection[str]
    ) -> SubscribeDecision:
        """Check each filter of a SUBSCRIBE: valid, authorized (``authorize`` is the
        authorizer's verdict for a filter), within the subscription quota given the
        filters the session ``held`` already. A shared subscription with No Local breaks
        the protocol (``ProtocolError``: the connection closes)."""
        if self.phase is not Phase.CONNECTED:
            raise PhaseError("SUBSCRIBE before CONNACK")
        v5 = self.v5
        ids = p.properties.subscription_identifiers
        codes: list[int] = []
        granted: list[Grant] = []
        refused: list[FilterRefused] = []
        count = len(held)
        added: set[str] = set()
        limit = self.config.max_subscriptions
        for s in p.subscriptions:
            topic_filter = s.topic_filter
            try:
                validate_topic_filter(topic_filter)
                group, _ = parse_shared(topic_filter)
            except ProtocolError as exc:
                code = ReasonCode.TOPIC_FILTER_INVALID if v5 else FAILURE_V311
                refused.append(FilterRefused(topic_filter, code, f"bad topic filter: {exc}"))
                codes.append(code)
                continue
            if group is not None and s.no_local:
                raise ProtocolError("no local on a shared subscription")
            if not authorize(topic_filter):
                code = ReasonCode.NOT_AUTHORIZED if v5 else FAILURE_V311
                refused.append(FilterRefused(topic_filter, code, "not authorized", denied=True))
                codes.append(code)
                continue
            replaces = topic_filter in held or topic_filter in added
            if not replaces and count >= limit:
                code = ReasonCode.QUOTA_EXCEEDED if v5 else FAILURE_V311
                refused.append(
                    FilterRefused(topic_filter, code, f"more than {limit} subscriptions")
                )
                codes.append(code)
                continue
            if not replaces:
                count += 1
                added.add(topic_filter)
            granted.append(Grant(s, group, replaces))
            codes.append(s.qos)
        return SubscribeDecision(
            SubAck(p.packet_id, tuple(codes)),
            tuple(granted),
            tuple(refused),
            ids[0] if ids else None,
        )

    def unsuback(self, p: Unsubscribe, existed: Sequence[bool]) -> UnsubAck:
        """The UNSUBACK for ``p``, given which of its filters the session had."""
        if self.phase is not Phase.CONNECTED:
            raise PhaseError("UNSUBSCRIBE before CONNACK")
        if not self.v5:
            return UnsubAck(p.packet_id, ())
        return UnsubAck(
            p.packet_id,
            tuple(
                ReasonCode.SUCCESS if had else ReasonCode.NO_SUBSCRIPTION_EXISTED for had in existed
            ),
        )

    # ---- time ------------------------------------------------------------------------------

    def heard(self, now: float) -> None:
        """The client sent something at ``now`` (or before: the sweep notes it late)."""
        self.seen = now

    def deadline(self) -> float | None:
        """When the client is late: 1.5 x keep-alive after it was last heard from while
        connected, ``connect_timeout`` after opening while no CONNECT came; None without
        a deadline (keep-alive 0, authenticating, closed)."""
        phase = self.phase
        if phase is Phase.CONNECTED:
            return self.seen + self.keepalive * 1.5 if self.keepalive else None
        if phase is Phase.CONNECTING:
            return self.seen + self.config.connect_timeout
        return None

    def overdue(self, now: float) -> bool:
        """Whether the deadline passed at ``now`` (a keep-alive expires at exactly 1.5 x)."""
        due = self.deadline()
        return due is not None and now >= due

    def close(self) -> None:
        if self.phase is not Phase.CLOSED:
            self._move(Phase.CLOSED)
