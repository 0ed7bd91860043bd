"""MQTT 5 flow control with real peers: Receive Maximum, outbound topic aliases and Server
Keep Alive, each with paho-mqtt 2.x (v5) and awscrt (the AWS IoT device SDK's client)."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import paho.mqtt.client as mqtt
import pytest
from awscrt import mqtt5
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties

from hedgerow.broker import Broker, BrokerConfig

WAIT = 10.0


@dataclass
class Running:
    broker: Broker
    port: int


@pytest.fixture
async def flow_broker() -> AsyncIterator[Running]:
    async with Broker(BrokerConfig(sweep_interval=0.05, max_keepalive=20)) as broker:
        _, port = await broker.listen("127.0.0.1", 0)
        yield Running(broker, port)


# ---- paho-mqtt 2.x, v5 ---------------------------------------------------------------------


class PahoV5:
    def __init__(self, port: int, client_id: str, *, manual_ack: bool = False) -> None:
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=manual_ack,
        )
        self.port = port
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.connack_properties: PahoProperties | None = None
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.client.on_subscribe = lambda c, u, mid, rc, p: self.subscribed.set()

    def _on_connect(self, c: object, u: object, f: object, rc: object, props: object) -> None:
        self.connack_properties = props  # type: ignore[assignment]
        self.connected.set()

    def start(self, keepalive: int = 30, **props: int) -> None:
        properties = PahoProperties(PacketTypes.CONNECT)
        for name, value in props.items():
            setattr(properties, name, value)
        self.client.connect("127.0.0.1", self.port, keepalive=keepalive, properties=properties)
        self.client.loop_start()
        assert self.connected.wait(WAIT), "no CONNACK"

    def subscribe(self, topic: str, qos: int) -> None:
        self.subscribed.clear()
        self.client.subscribe(topic, qos)
        assert self.subscribed.wait(WAIT), "no SUBACK"

    def publish(self, topic: str, payload: bytes, qos: int) -> None:
        info = self.client.publish(topic, payload, qos)
        info.wait_for_publish(WAIT)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextmanager
def paho(port: int, client_id: str, **kw: bool) -> Iterator[PahoV5]:
    client = PahoV5(port, client_id, **kw)
    try:
        yield client
    finally:
        client.stop()


async def test_paho_receive_maximum_bounds_unacknowledged_deliveries(
    flow_broker: Running,
) -> None:
    """paho acknowledges only when told (manual_ack): never more than 3 arrive unacked."""

    def scenario() -> None:
        with (
            paho(flow_broker.port, "slow-reader", manual_ack=True) as sub,
            paho(flow_broker.port, "writer") as pub,
        ):
            sub.start(ReceiveMaximum=3)
            pub.start()
            sub.subscribe("rm/#", 1)
            for i in range(10):
                pub.publish("rm/x", b"%d" % i, 1)
            got = [sub.messages.get(timeout=WAIT) for _ in range(3)]
            with pytest.raises(queue.Empty):
                sub.messages.get(timeout=0.5)  # the broker waits for acknowledgements
            pending = list(got)
            while len(got) < 10:
                sub.client.ack(pending.pop(0).mid, 1)
                more = sub.messages.get(timeout=WAIT)
                got.append(more)
                pending.append(more)
                if len(got) < 10:
                    with pytest.raises(queue.Empty):  # one acknowledgement, one more message
                        sub.messages.get(timeout=0.2)
            assert [int(m.payload) for m in got] == list(range(10))

    await asyncio.to_thread(scenario)


async def test_paho_gets_topic_aliases_within_its_maximum(flow_broker: Running) -> None:
    def scenario() -> list[tuple[str, int | None]]:
        with paho(flow_broker.port, "aliased") as sub, paho(flow_broker.port, "pub") as pub:
            sub.start(TopicAliasMaximum=1)
            pub.start()
            sub.subscribe("ta/#", 0)
            for topic in ("ta/one", "ta/one", "ta/two", "ta/one"):
                pub.publish(topic, b"x", 0)
            seen = []
            for _ in range(4):
                m = sub.messages.get(timeout=WAIT)
                seen.append((m.topic, getattr(m.properties, "TopicAlias", None)))
            return seen

    # paho does not resolve aliases itself: what it shows is exactly what the broker sent
    assert await asyncio.to_thread(scenario) == [
        ("ta/one", 1),
        ("", 1),
        ("ta/two", None),  # its maximum is 1: no second alias
        ("", 1),
    ]


async def test_paho_without_alias_maximum_never_gets_an_alias(flow_broker: Running) -> None:
    def scenario() -> list[tuple[str, int | None]]:
        with paho(flow_broker.port, "no-alias") as sub, paho(flow_broker.port, "pub") as pub:
            sub.start()
            pub.start()
            sub.subscribe("ta/#", 1)
            for _ in range(3):
                pub.publish("ta/same", b"x", 1)
            return [
                (m.topic, getattr(m.properties, "TopicAlias", None))
                for m in (sub.messages.get(timeout=WAIT) for _ in range(3))
            ]

    assert await asyncio.to_thread(scenario) == [("ta/same", None)] * 3


async def test_paho_is_told_the_server_keep_alive(flow_broker: Running) -> None:
    def scenario() -> tuple[int | None, int | None]:
        with paho(flow_broker.port, "too-long") as capped, paho(flow_broker.port, "fine") as ok:
            capped.start(keepalive=600)
            ok.start(keepalive=10)
            return (
                getattr(capped.connack_properties, "ServerKeepAlive", None),
                getattr(ok.connack_properties, "ServerKeepAlive", None),
            )

    # 600 > --max-keepalive 20: told 20; 10 is within the cap: nothing to tell
    assert await asyncio.to_thread(scenario) == (20, None)


# ---- awscrt (AWS IoT device SDK v2) ------------------------------------------------------


class Crt:
    def __init__(
        self, port: int, client_id: str, *, keepalive: int = 30, receive_maximum: int = 0,
        alias_cache: int = 0,
    ) -> None:  # fmt: skip
        self.connected = threading.Event()
        self.stopped = threading.Event()
        self.received: queue.Queue[mqtt5.PublishPacket] = queue.Queue()
        self.settings: mqtt5.NegotiatedSettings | None = None
        connect = mqtt5.ConnectPacket(
            client_id=client_id,
            keep_alive_interval_sec=keepalive,
            receive_maximum=receive_maximum or None,
        )
        aliasing = (
            mqtt5.TopicAliasingOptions(
                inbound_behavior=mqtt5.InboundTopicAliasBehaviorType.ENABLED,
                inbound_cache_max_size=alias_cache,
            )
            if alias_cache
            else mqtt5.TopicAliasingOptions(
                inbound_behavior=mqtt5.InboundTopicAliasBehaviorType.DISABLED
            )
        )
        self.client = mqtt5.Client(
            mqtt5.ClientOptions(
                host_name="127.0.0.1",
                port=port,
                connect_options=connect,
                topic_aliasing_options=aliasing,
                on_publish_callback_fn=lambda data: self.received.put(data.publish_packet),
                on_lifecycle_event_connection_success_fn=self._success,
                on_lifecycle_event_stopped_fn=lambda data: self.stopped.set(),
            )
        )

    def _success(self, data: mqtt5.LifecycleConnectSuccessData) -> None:
        self.settings = data.negotiated_settings
        self.connected.set()

    def start(self) -> None:
        self.client.start()
        assert self.connected.wait(WAIT), "awscrt did not connect"

    def subscribe(self, topic: str) -> None:
        sub = self.client.subscribe(
            mqtt5.SubscribePacket(
                subscriptions=[mqtt5.Subscription(topic, mqtt5.QoS.AT_LEAST_ONCE)]
            )
        ).result(WAIT)
        assert sub.reason_codes == [mqtt5.SubackReasonCode.GRANTED_QOS_1]

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(
            mqtt5.PublishPacket(topic=topic, payload=payload, qos=mqtt5.QoS.AT_LEAST_ONCE)
        ).result(WAIT)

    def stop(self) -> None:
        self.client.stop()
        self.stopped.wait(WAIT)


@contextmanager
def crt(port: int, client_id: str, **kw: int) -> Iterator[Crt]:
    client = Crt(port, client_id, **kw)
    try:
        client.start()
        yield client
    finally:
        client.stop()


async def test_awscrt_receive_maximum_one_in_flight_in_order(flow_broker: Running) -> None:
    hub = flow_broker.broker.hub
    peak_inflight = 0
    sampling = True

    async def sample() -> None:
        nonlocal peak_inflight
        while sampling:
            s = hub.sessions.get("crt-rm")
            if s is not None and s.inflight:
                peak_inflight = max(peak_inflight, len(s.inflight))
            await asyncio.sleep(0)

    def scenario() -> list[bytes]:
        with (
            crt(flow_broker.port, "crt-rm", receive_maximum=1) as sub,
            crt(flow_broker.port, "crt-pub") as pub,
        ):
            sub.subscribe("crt/rm")
            for i in range(30):
                pub.publish("crt/rm", b"%d" % i)
            return [bytes(sub.received.get(timeout=WAIT).payload) for _ in range(30)]

    sampler = asyncio.create_task(sample())
    try:
        payloads = await asyncio.to_thread(scenario)
    finally:
        sampling = False
        await sampler
    assert payloads == [b"%d" % i for i in range(30)]
    assert peak_inflight == 1  # awscrt's Receive Maximum 1: one unacknowledged at a time


async def test_awscrt_resolves_the_aliases_the_broker_assigns(flow_broker: Running) -> None:
    def scenario() -> list[tuple[str, int | None]]:
        with (
            crt(flow_broker.port, "crt-alias", alias_cache=2) as sub,
            crt(flow_broker.port, "crt-pub2") as pub,
        ):
            sub.subscribe("al/#")
            for topic in ("al/a", "al/b", "al/a", "al/c", "al/b", "al/c"):
                pub.publish(topic, b"v")
            got = [sub.received.get(timeout=WAIT) for _ in range(6)]
            return [(p.topic, p.topic_alias) for p in got]

    seen = await asyncio.to_thread(scenario)
    # awscrt restores the topic from the alias; the aliases never exceed its maximum of 2
    assert [topic for topic, _ in seen] == ["al/a", "al/b", "al/a", "al/c", "al/b", "al/c"]
    assert [alias for _, alias in seen] == [1, 2, 1, None, 2, None]


async def test_awscrt_adopts_the_server_keep_alive(flow_broker: Running) -> None:
    def scenario() -> tuple[int | None, int | None]:
        with (
            crt(flow_broker.port, "crt-ka", keepalive=1200) as capped,
            crt(flow_broker.port, "crt-ka-ok", keepalive=15) as fine,
        ):
            assert capped.settings is not None and fine.settings is not None
            return capped.settings.server_keep_alive_sec, fine.settings.server_keep_alive_sec

    capped, fine = await asyncio.to_thread(scenario)
    assert capped == 20  # asked 1200, the broker's --max-keepalive is 20
    assert fine == 15


def test_keepalive_zero_gets_the_cap_as_server_keep_alive() -> None:
    """The rule for keep-alive 0 (none): with a cap set, the client is given the cap."""
    from hedgerow.broker.negotiate import negotiate
    from hedgerow.mqtt.packets import Connect, ProtocolVersion

    config = BrokerConfig(max_keepalive=45)
    terms = negotiate(Connect("c", ProtocolVersion.V5, keepalive=0), config)
    assert (terms.keepalive, terms.ack_properties.server_keep_alive) == (45, 45)
    uncapped = negotiate(Connect("c", ProtocolVersion.V5, keepalive=0), BrokerConfig())
    assert (uncapped.keepalive, uncapped.ack_properties.server_keep_alive) == (0, None)
