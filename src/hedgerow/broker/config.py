"""Broker configuration: one frozen dataclass, limits as named constants.

Loaded once by whoever composes the broker (the ``hedgerow broker`` command, the core,
the cloud) and passed down; nothing here reads files or the environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: Listen backlog: connect storms overflow small queues and clients then retry after ~1 s.
LISTEN_BACKLOG = 4096
#: Largest packet accepted by default (the protocol allows 256 MiB; an IoT broker needs less).
DEFAULT_MAX_PACKET_SIZE = 1024 * 1024
#: Seconds a new connection has to send its CONNECT.
DEFAULT_CONNECT_TIMEOUT = 10.0
#: A client is disconnected after 1.5 times its keep-alive without a packet (MQTT spec).
KEEPALIVE_GRACE = 1.5
#: QoS 1/2 messages in flight to one client (capped by the client's v5 Receive Maximum).
DEFAULT_MAX_INFLIGHT = 1000
#: QoS 1/2 messages queued for one client beyond the in-flight window.
DEFAULT_MAX_QUEUED_MESSAGES = 100_000
#: Bytes the broker holds for one client at most (QoS 1/2 messages in flight and queued,
#: packets waiting for its socket); see ``budget.py`` for what happens beyond.
DEFAULT_MAX_OUTBOUND_BYTES = 8 * 1024 * 1024
#: Bytes the broker holds for all clients together at most (same policy).
DEFAULT_MAX_TOTAL_OUTBOUND_BYTES = 256 * 1024 * 1024
#: The transport's write-buffer high and low water marks (pause / resume).
DEFAULT_WRITE_HIGH_WATER = 512 * 1024
DEFAULT_WRITE_LOW_WATER = 128 * 1024
#: Publishers feeding a congested subscriber (socket or in-flight window full) are paused
#: while it keeps taking data; once it has taken nothing (no acknowledgement, socket not
#: drained) for this long it is stalled: it never pauses a publisher, and what does not
#: fit its byte budget is dropped (QoS 0) or gets it disconnected (QoS 1/2).
DEFAULT_BACKPRESSURE_TIMEOUT = 0.25
#: A client that takes nothing for this long while data waits for it (socket congested,
#: or in-flight window full with messages queued) is disconnected as a slow consumer.
DEFAULT_SLOW_CLIENT_TIMEOUT = 30.0
#: QoS 1/2 messages a client may have in flight towards us (our v5 Receive Maximum).
DEFAULT_RECEIVE_MAXIMUM = 65535
#: Topic aliases a v5 client may use towards us.
DEFAULT_TOPIC_ALIAS_MAXIMUM = 64
#: Subscriptions one session may hold (more are refused in the SUBACK).
DEFAULT_MAX_SUBSCRIPTIONS = 1000
#: Retained messages kept at most (new topics beyond it are not retained).
DEFAULT_MAX_RETAINED = 100_000
#: Seconds between housekeeping sweeps (keep-alive, session expiry, will delay, slow clients).
DEFAULT_SWEEP_INTERVAL = 0.5

DenyPolicy = Literal["drop", "disconnect"]


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """Limits and behaviour of one broker. Every field has a safe default."""

    max_packet_size: int = DEFAULT_MAX_PACKET_SIZE
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    #: v5 Server Keep Alive: when set, clients asking for more (or 0) are told this value.
    max_keepalive: int | None = None
    max_inflight: int = DEFAULT_MAX_INFLIGHT
    max_queued_messages: int = DEFAULT_MAX_QUEUED_MESSAGES
    #: outbound bytes held for one client (in flight + queued + unsent) at most
    max_outbound_bytes: int = DEFAULT_MAX_OUTBOUND_BYTES
    #: outbound bytes held for all clients of this broker together at most
    max_total_outbound_bytes: int = DEFAULT_MAX_TOTAL_OUTBOUND_BYTES
    write_high_water: int = DEFAULT_WRITE_HIGH_WATER
    write_low_water: int = DEFAULT_WRITE_LOW_WATER
    backpressure_timeout: float = DEFAULT_BACKPRESSURE_TIMEOUT
    slow_client_timeout: float = DEFAULT_SLOW_CLIENT_TIMEOUT
    receive_maximum: int = DEFAULT_RECEIVE_MAXIMUM
    topic_alias_maximum: int = DEFAULT_TOPIC_ALIAS_MAXIMUM
    max_retained: int = DEFAULT_MAX_RETAINED
    max_subscriptions: int = DEFAULT_MAX_SUBSCRIPTIONS
    #: Upper bound on a v5 Session Expiry Interval (seconds); None = as the client asks.
    max_session_expiry: int | None = None
    #: Expiry of 3.1.1 persistent sessions (clean session 0); None = never (the spec's rule).
    persistent_session_expiry: int | None = None
    allow_empty_client_id: bool = True
    #: What happens to a client whose PUBLISH is not authorized.
    deny_policy: DenyPolicy = "drop"
    #: Publish broker statistics under ``$SYS/broker/...`` every this many seconds (0 = off).
    sys_interval: float = 0.0
    sweep_interval: float = DEFAULT_SWEEP_INTERVAL
    #: Seconds to wait for clients to take their DISCONNECT before closing hard on shutdown.
    shutdown_grace: float = 2.0

    def __post_init__(self) -> None:
        if self.max_packet_size < 64:
            raise ValueError("max_packet_size must be at least 64 bytes")
        if self.write_low_water > self.write_high_water:
            raise ValueError("write_low_water must not exceed write_high_water")
        if self.max_outbound_bytes < 1024 or self.max_total_outbound_bytes < 1024:
            raise ValueError(
                "max_outbound_bytes and max_total_outbound_bytes must be at least 1024 bytes"
            )
        if self.max_inflight < 1:
            raise ValueError("max_inflight must be at least 1")
        if self.max_keepalive is not None and not 1 <= self.max_keepalive <= 65535:
            raise ValueError("max_keepalive must be within 1..65535 seconds")
        if self.deny_policy not in ("drop", "disconnect"):
            raise ValueError("deny_policy must be 'drop' or 'disconnect'")
        if not 1 <= self.receive_maximum <= 65535:
            raise ValueError("receive_maximum must be within 1..65535")
        if not 0 <= self.topic_alias_maximum <= 65535:
            raise ValueError("topic_alias_maximum must be within 0..65535")
