"""Cross-check: packets built by paho-mqtt's encoder decode to what paho meant."""

from __future__ import annotations

from typing import Any

import pytest
from paho.mqtt import client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties
from paho.mqtt.reasoncodes import ReasonCode as PahoReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from hedgerow.mqtt import (
    Connect,
    Decoder,
    Disconnect,
    Packet,
    PingReq,
    Properties,
    ProtocolVersion,
    Publish,
    Subscribe,
    Subscription,
    Unsubscribe,
    Will,
)

PAHO_VERSIONS = {
    ProtocolVersion.V31: paho.MQTTv31,
    ProtocolVersion.V311: paho.MQTTv311,
    ProtocolVersion.V5: paho.MQTTv5,
}


class _NotASocket:
    def close(self) -> None:
        pass


class CapturingClient(paho.Client):
    """A paho client whose outgoing packets are kept instead of written to a socket."""

    def __init__(self, version: ProtocolVersion) -> None:
        super().__init__(
            paho.CallbackAPIVersion.VERSION2,
            client_id="paho-1",
            protocol=PAHO_VERSIONS[version],
        )
        self.wire = bytearray()
        self._sock = _NotASocket()  # paho refuses to build PUBLISH without a socket

    def _packet_queue(self, command: int, packet: Any, mid: int, qos: int, info: Any = None) -> Any:
        self.wire += packet
        return paho.MQTT_ERR_SUCCESS


def _decode(client: CapturingClient, version: ProtocolVersion) -> list[Packet]:
    decoder = Decoder()
    decoder.receive_data(bytes(client.wire))
    packets = decoder.packets()
    assert decoder.version == version
    assert decoder.buffered == 0
    return packets


@pytest.mark.parametrize("version", list(PAHO_VERSIONS))
def test_paho_session_decodes(version: ProtocolVersion) -> None:
    client = CapturingClient(version)
    client.username_pw_set("user", "pw")
    client.will_set("status/paho-1", b"gone", qos=1, retain=True)
    client._send_connect(30)
    client._send_publish(7, b"sensors/t", b"21.5", qos=1, retain=True)
    client._send_publish(0, b"sensors/h", b"40", qos=0)
    client._send_publish(8, b"cmd/x", b"go", qos=2, dup=True)
    options: list[Any] = [1, 2]
    if version == ProtocolVersion.V5:
        options = [SubscribeOptions(qos=1), SubscribeOptions(qos=2)]
    client._send_subscribe(False, [(b"sensors/#", options[0]), (b"cmd/+", options[1])])
    client._send_unsubscribe(False, [b"cmd/+"])
    client._send_simple_command(paho.PINGREQ)
    if version == ProtocolVersion.V5:
        client._send_disconnect(PahoReasonCode(PacketTypes.DISCONNECT, identifier=0))
    else:
        client._send_disconnect()
    packets = _decode(client, version)
    connect = packets[0]
    assert isinstance(connect, Connect)
    assert (connect.client_id, connect.version, connect.keepalive) == ("paho-1", version, 30)
    assert (connect.username, connect.password) == ("user", b"pw")
    assert connect.will == Will("status/paho-1", b"gone", 1, True)
    assert packets[1:4] == [
        Publish("sensors/t", b"21.5", 1, True, False, 7),
        Publish("sensors/h", b"40"),
        Publish("cmd/x", b"go", 2, False, True, 8),
    ]
    subscribe, unsubscribe = packets[4], packets[5]
    assert isinstance(subscribe, Subscribe) and isinstance(unsubscribe, Unsubscribe)
    assert subscribe.subscriptions == (Subscription("sensors/#", 1), Subscription("cmd/+", 2))
    assert unsubscribe.topic_filters == ("cmd/+",)
    assert packets[6:] == [PingReq(), Disconnect()]


def test_paho_mqtt5_properties_decode() -> None:
    client = CapturingClient(ProtocolVersion.V5)
    connect_props = PahoProperties(PacketTypes.CONNECT)
    connect_props.SessionExpiryInterval = 3600
    connect_props.ReceiveMaximum = 10
    client._connect_properties = connect_props
    client._send_connect(60)
    publish_props = PahoProperties(PacketTypes.PUBLISH)
    publish_props.MessageExpiryInterval = 30
    publish_props.ContentType = "application/json"
    publish_props.ResponseTopic = "reply/here"
    publish_props.CorrelationData = b"\x01\x02"
    publish_props.UserProperty = [("core", "pi-1"), ("k", "v")]
    client._send_publish(3, b"a/b", b"{}", qos=1, properties=publish_props)
    options = SubscribeOptions(qos=1, noLocal=True, retainAsPublished=True, retainHandling=2)
    sub_props = PahoProperties(PacketTypes.SUBSCRIBE)
    sub_props.SubscriptionIdentifier = 42
    client._send_subscribe(False, [(b"x/#", options)], sub_props)
    packets = _decode(client, ProtocolVersion.V5)
    connect = packets[0]
    assert isinstance(connect, Connect)
    assert connect.properties == Properties(session_expiry_interval=3600, receive_maximum=10)
    assert packets[1] == Publish(
        "a/b",
        b"{}",
        1,
        packet_id=3,
        properties=Properties(
            message_expiry_interval=30,
            content_type="application/json",
            response_topic="reply/here",
            correlation_data=b"\x01\x02",
            user_properties=(("core", "pi-1"), ("k", "v")),
        ),
    )
    subscribe = packets[2]
    assert isinstance(subscribe, Subscribe)
    assert subscribe.subscriptions == (Subscription("x/#", 1, True, True, 2),)
    assert subscribe.properties == Properties(subscription_identifiers=(42,))
