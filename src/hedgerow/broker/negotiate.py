"""What a CONNECT and the broker's limits agree on (pure: no I/O, easy to test)."""

from __future__ import annotations

from dataclasses import dataclass

from hedgerow.broker.config import BrokerConfig
from hedgerow.mqtt.packets import Connect, Properties, ProtocolVersion

#: v5 Session Expiry Interval meaning "never expires".
NEVER_EXPIRES = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Terms:
    #: Seconds the session outlives the connection (None = never).
    session_expiry: int | None
    #: QoS 1/2 messages in flight to the client at most.
    window: int
    #: Keep-alive in force (0 = none).
    keepalive: int
    #: The client's v5 Maximum Packet Size (None = no limit).
    max_out_packet: int | None
    #: CONNACK properties (v5; empty for 3.1.1).
    ack_properties: Properties


def negotiate(c: Connect, config: BrokerConfig, assigned_client_id: str | None = None) -> Terms:
    props = c.properties
    v5 = c.version == ProtocolVersion.V5
    expiry: int | None
    if v5:
        asked = props.session_expiry_interval or 0
        expiry = None if asked == NEVER_EXPIRES else asked
        cap = config.max_session_expiry
        if cap is not None and (expiry is None or expiry > cap):
            expiry = cap
    else:
        expiry = 0 if c.clean_start else config.persistent_session_expiry
    window = config.max_inflight
    if v5 and props.receive_maximum:
        window = min(window, props.receive_maximum)
    keepalive = c.keepalive
    server_keepalive = None
    limit = config.max_keepalive
    if limit is not None and (keepalive == 0 or keepalive > limit):
        keepalive = server_keepalive = limit
    if not v5:
        return Terms(expiry, window, keepalive, None, Properties())
    told_expiry = None
    if expiry != (props.session_expiry_interval or 0):
        told_expiry = NEVER_EXPIRES if expiry is None else expiry
    ack = Properties(
        receive_maximum=config.receive_maximum,
        topic_alias_maximum=config.topic_alias_maximum,
        maximum_packet_size=config.max_packet_size,
        assigned_client_identifier=assigned_client_id,
        server_keep_alive=server_keepalive,
        session_expiry_interval=told_expiry,
        retain_available=True,
        wildcard_subscription_available=True,
        subscription_identifier_available=True,
        shared_subscription_available=True,
    )
    return Terms(expiry, window, keepalive, props.maximum_packet_size, ack)
