"""Real MQTT clients against the broker: paho-mqtt 2.x (3.1.1 and 5) and mosquitto_pub/sub."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties

from .conftest import Running

WAIT = 5.0


class Paho:
    """A paho client on its own network thread, with a queue of received messages."""

    def __init__(self, port: int, client_id: str, protocol: int, *, clean: bool = True) -> None:
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.published: set[int] = set()
        self.published_event = threading.Event()
        self.connect_rc: object = None
        kwargs: dict[str, object] = {"client_id": client_id, "protocol": protocol}
        if protocol != mqtt.MQTTv5:
            kwargs["clean_session"] = clean
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, **kwargs)  # type: ignore[arg-type]
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.client.on_subscribe = lambda c, u, mid, rc, p: self.subscribed.set()
        self.client.on_publish = self._on_publish
        self.port = port
        self.protocol = protocol

    def _on_connect(
        self, client: object, userdata: object, flags: object, rc: object, props: object
    ) -> None:
        self.connect_rc = rc
        self.connected.set()

    def _on_publish(
        self, client: object, userdata: object, mid: int, rc: object, props: object
    ) -> None:
        self.published.add(mid)
        self.published_event.set()

    def start(self, **connect: object) -> None:
        self.client.connect("127.0.0.1", self.port, keepalive=30, **connect)  # type: ignore[arg-type]
        self.client.loop_start()
        assert self.connected.wait(WAIT), "no CONNACK"

    def subscribe(self, topic: str, qos: int, **kw: object) -> None:
        self.subscribed.clear()
        self.client.subscribe(topic, qos, **kw)  # type: ignore[arg-type]
        assert self.subscribed.wait(WAIT), "no SUBACK"

    def publish_and_wait(self, topic: str, payload: bytes, qos: int, **kw: object) -> None:
        info = self.client.publish(topic, payload, qos, **kw)  # type: ignore[arg-type]
        info.wait_for_publish(WAIT)
        assert info.is_published()

    def get(self) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=WAIT)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextmanager
def paho(port: int, client_id: str, protocol: int, **kw: object) -> Iterator[Paho]:
    client = Paho(port, client_id, protocol, **kw)  # type: ignore[arg-type]
    try:
        yield client
    finally:
        client.stop()


@pytest.mark.parametrize(
    "protocol", [mqtt.MQTTv31, mqtt.MQTTv311, mqtt.MQTTv5], ids=["3.1", "3.1.1", "5"]
)
async def test_paho_pub_sub_all_qos(running: Running, protocol: int) -> None:
    def scenario() -> None:
        with (
            paho(running.port, "paho-sub", protocol) as sub,
            paho(running.port, "paho-pub", protocol) as pub,
        ):
            sub.start()
            pub.start()
            sub.subscribe("paho/#", 2)
            for qos in (0, 1, 2):
                pub.publish_and_wait(f"paho/{qos}", f"m{qos}".encode(), qos)
            got = sorted((m.topic, m.payload, m.qos) for m in (sub.get(), sub.get(), sub.get()))
            assert got == [("paho/0", b"m0", 0), ("paho/1", b"m1", 1), ("paho/2", b"m2", 2)]
            pub.publish_and_wait("paho/retained", b"r", 1, retain=True)
            sub.get()
            with paho(running.port, "paho-late", protocol) as late:
                late.start()
                late.subscribe("paho/retained", 1)
                m = late.get()
                assert (m.payload, m.retain) == (b"r", True)

    await asyncio.to_thread(scenario)


async def test_paho_v5_request_response_properties(running: Running) -> None:
    def scenario() -> None:
        with (
            paho(running.port, "responder", mqtt.MQTTv5) as responder,
            paho(running.port, "requester", mqtt.MQTTv5) as requester,
        ):
            responder.start()
            requester.start()
            responder.subscribe("svc/req", 1)
            requester.subscribe("svc/resp", 1)
            props = PahoProperties(PacketTypes.PUBLISH)
            props.ResponseTopic = "svc/resp"
            props.CorrelationData = b"id-1"
            props.UserProperty = [("who", "test")]
            requester.publish_and_wait("svc/req", b"ping", 1, properties=props)
            req = responder.get()
            assert req.properties.ResponseTopic == "svc/resp"
            assert req.properties.CorrelationData == b"id-1"
            assert req.properties.UserProperty == [("who", "test")]
            reply = PahoProperties(PacketTypes.PUBLISH)
            reply.CorrelationData = req.properties.CorrelationData
            responder.publish_and_wait(req.properties.ResponseTopic, b"pong", 1, properties=reply)
            resp = requester.get()
            assert (resp.payload, resp.properties.CorrelationData) == (b"pong", b"id-1")

    await asyncio.to_thread(scenario)


async def test_paho_persistent_session_gets_missed_qos1(running: Running) -> None:
    def scenario() -> None:
        with paho(running.port, "persist", mqtt.MQTTv311, clean=False) as first:
            first.start()
            first.subscribe("keep/#", 1)
        with paho(running.port, "sender", mqtt.MQTTv311) as sender:
            sender.start()
            sender.publish_and_wait("keep/1", b"missed", 1)
        with paho(running.port, "persist", mqtt.MQTTv311, clean=False) as again:
            again.start()
            assert again.get().payload == b"missed"

    await asyncio.to_thread(scenario)


@pytest.mark.mosquitto
async def test_mosquitto_pub_sub(running: Running) -> None:
    port = str(running.port)
    sub = await asyncio.create_subprocess_exec(
        "mosquitto_sub",
        "-h",
        "127.0.0.1",
        "-p",
        port,
        "-t",
        "mq/#",
        "-q",
        "2",
        "-C",
        "3",
        "-v",
        "-i",
        "mq-sub",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(WAIT):
            while (
                "mq-sub" not in {cid for cid, _ in running.broker.clients()}
                or not running.broker.stats().subscriptions
            ):
                await asyncio.sleep(0.01)
        for qos in (0, 1, 2):
            pub = await asyncio.create_subprocess_exec(
                "mosquitto_pub",
                "-h",
                "127.0.0.1",
                "-p",
                port,
                "-t",
                f"mq/{qos}",
                "-m",
                f"v{qos}",
                "-q",
                str(qos),
                "-V",
                "mqttv5" if qos == 2 else "mqttv311",
            )
            assert await asyncio.wait_for(pub.wait(), WAIT) == 0
        out, _ = await asyncio.wait_for(sub.communicate(), WAIT)
    finally:
        if sub.returncode is None:
            sub.kill()
            await sub.wait()
    assert out.decode().splitlines() == ["mq/0 v0", "mq/1 v1", "mq/2 v2"]
