"""The asyncio MQTT client (3.1.1 and 5; TCP, TLS, mutual TLS; QoS 0/1/2) and a sync wrapper.

``from hedgerow.client import Client, Message, Will`` — see ``README.md`` in this package.
"""

from hedgerow.mqtt.packets import Properties, ProtocolVersion, Subscription

from .client import Client, MessageIterator
from .errors import (
    ClientError,
    ConnectError,
    ConnectionLost,
    ProtocolViolation,
    PublishError,
    SubscribeError,
)
from .message import Message, Will

__all__ = [
    "Client",
    "ClientError",
    "ConnectError",
    "ConnectionLost",
    "Message",
    "MessageIterator",
    "Properties",
    "ProtocolVersion",
    "ProtocolViolation",
    "PublishError",
    "SubscribeError",
    "Subscription",
    "Will",
]
