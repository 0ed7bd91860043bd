"""Broker statistics: live counters (cheap to bump on the hot path) and frozen snapshots."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass


class Counters:
    """Mutable counters the connections bump; read through :meth:`snapshot`."""

    __slots__ = (
        "started",
        "connections_total",
        "refused",
        "messages_in",
        "messages_out",
        "bytes_in",
        "bytes_out",
        "dropped_qos0",
        "dropped_queue_full",
        "expired",
        "denied_publish",
        "denied_subscribe",
        "undelivered",
        "protocol_errors",
        "publishers_paused",
        "dropped_budget",
        "slow_consumers",
    )

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.connections_total = 0
        self.refused = 0
        self.messages_in = 0
        self.messages_out = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.dropped_qos0 = 0
        self.dropped_queue_full = 0
        self.expired = 0
        self.denied_publish = 0
        self.denied_subscribe = 0
        #: client-to-client deliveries the authorizer's may_deliver refused
        self.undelivered = 0
        self.protocol_errors = 0
        self.publishers_paused = 0
        #: QoS 1/2 messages dropped because a session's or the broker's byte budget was full
        self.dropped_budget = 0
        #: clients disconnected as slow consumers (budget full, or stalled too long)
        self.slow_consumers = 0


@dataclass(frozen=True, slots=True)
class BrokerStats:
    """A point-in-time view of the broker (``broker.stats()``)."""

    uptime: float
    clients_connected: int
    sessions: int
    subscriptions: int
    retained: int
    connections_total: int
    refused: int
    messages_in: int
    messages_out: int
    bytes_in: int
    bytes_out: int
    dropped_qos0: int
    dropped_queue_full: int
    expired: int
    denied_publish: int
    denied_subscribe: int
    undelivered: int
    protocol_errors: int
    publishers_paused: int
    queued_messages: int
    dropped_budget: int = 0
    slow_consumers: int = 0
    #: outbound bytes the broker holds for clients now, and the most it held (budget.py)
    outbound_bytes: int = 0
    outbound_bytes_peak: int = 0

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def snapshot(
    counters: Counters,
    *,
    clients_connected: int,
    sessions: int,
    subscriptions: int,
    retained: int,
    queued_messages: int,
    outbound_bytes: int = 0,
    outbound_bytes_peak: int = 0,
) -> BrokerStats:
    c = counters
    return BrokerStats(
        uptime=time.monotonic() - c.started,
        clients_connected=clients_connected,
        sessions=sessions,
        subscriptions=subscriptions,
        retained=retained,
        connections_total=c.connections_total,
        refused=c.refused,
        messages_in=c.messages_in,
        messages_out=c.messages_out,
        bytes_in=c.bytes_in,
        bytes_out=c.bytes_out,
        dropped_qos0=c.dropped_qos0,
        dropped_queue_full=c.dropped_queue_full,
        expired=c.expired,
        denied_publish=c.denied_publish,
        denied_subscribe=c.denied_subscribe,
        undelivered=c.undelivered,
        protocol_errors=c.protocol_errors,
        publishers_paused=c.publishers_paused,
        queued_messages=queued_messages,
        dropped_budget=c.dropped_budget,
        slow_consumers=c.slow_consumers,
        outbound_bytes=outbound_bytes,
        outbound_bytes_peak=outbound_bytes_peak,
    )


#: ``$SYS`` topics published when ``BrokerConfig.sys_interval`` is set.
SYS_PREFIX = "$SYS/broker/"


def sys_topics(stats: BrokerStats) -> list[tuple[str, bytes]]:
    """The ``$SYS/broker/<name>`` topics and payloads for one snapshot."""
    return [
        (SYS_PREFIX + name.replace("_", "/"), str(round(value, 3)).encode())
        for name, value in stats.as_dict().items()
    ]
