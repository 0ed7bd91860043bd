"""MQTT over WebSocket: paho-mqtt (transport="websockets") plain and over TLS with a CA the
test creates, talking with TCP clients through the same broker; the handshake's refusals.

(mosquitto_pub/sub 2.0 on this system have no WebSocket transport, so paho is the peer.)
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import ssl
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt
import pytest

from hedgerow import tlscontext
from hedgerow.broker import Broker, BrokerConfig, CertificateAuthenticator
from hedgerow.broker.aclfile import AclFileAuthorizer, parse_acl
from hedgerow.broker.passwordfile import PasswordFileAuthenticator, parse_password_file
from hedgerow.broker.websocket import WebSocketError, WebSocketFraming
from hedgerow.mqtt.packets import ProtocolVersion, Publish, SubAck, Subscribe, Subscription

from ..conftest import free_port
from .conftest import RawClient

if TYPE_CHECKING:
    from ..conftest import TestPKI

WAIT = 5.0


class WsPaho:
    """A paho client over WebSocket on its own network thread."""

    def __init__(self, port: int, client_id: str, protocol: int, path: str = "/mqtt") -> None:
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.rc: object = None
        self.granted: list[int] = []
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=protocol,  # type: ignore[arg-type]
            transport="websockets",
        )
        self.client.ws_set_options(path=path)
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.client.on_subscribe = self._on_subscribe
        self.port = port

    def _on_connect(self, c: object, u: object, flags: object, rc: object, p: object) -> None:
        self.rc = rc
        self.connected.set()

    def _on_subscribe(self, c: object, u: object, mid: int, codes: list[object], p: object) -> None:
        self.granted = [int(getattr(code, "value", code)) for code in codes]  # type: ignore[call-overload]
        self.subscribed.set()

    def start(self) -> None:
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        assert self.connected.wait(WAIT), "no CONNACK over WebSocket"

    def subscribe(self, topic: str, qos: int) -> list[int]:
        self.subscribed.clear()
        self.client.subscribe(topic, qos)
        assert self.subscribed.wait(WAIT), "no SUBACK"
        return self.granted

    def publish(self, topic: str, payload: bytes, qos: int) -> None:
        info = self.client.publish(topic, payload, qos)
        info.wait_for_publish(WAIT)
        assert info.is_published()

    def get(self) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=WAIT)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
async def ws_broker() -> AsyncIterator[tuple[int, int]]:
    async with Broker(BrokerConfig(sweep_interval=0.1)) as broker:
        _, tcp = await broker.listen("127.0.0.1", 0)
        _, ws = await broker.listen_websocket("127.0.0.1", 0)
        yield tcp, ws


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["3.1.1", "5"])
@pytest.mark.parametrize("path", ["/mqtt", "/"])
async def test_paho_over_websocket_meets_tcp_clients(
    ws_broker: tuple[int, int], protocol: int, path: str
) -> None:
    tcp, ws = ws_broker
    version = ProtocolVersion.V5 if protocol == mqtt.MQTTv5 else ProtocolVersion.V311
    tcp_sub = await RawClient.connected(tcp, "tcp-sub", version)
    await tcp_sub.send(Subscribe(1, (Subscription("from/ws", 1),)))
    assert isinstance(await tcp_sub.recv(), SubAck)

    def scenario() -> None:
        client = WsPaho(ws, "ws-client", protocol, path)
        try:
            client.start()
            assert client.subscribe("to/ws/#", 2) == [2]
            for qos in (0, 1, 2):
                client.publish("from/ws", b"x" * 70_000 + bytes([qos]), qos)  # multi-frame
            ready.set()
            got = sorted(m.payload for m in (client.get(), client.get()))
            assert got == [b"tcp-1", b"tcp-2"]
        finally:
            client.stop()

    ready = threading.Event()
    task = asyncio.ensure_future(asyncio.to_thread(scenario))
    for qos in (0, 1, 2):
        got = await tcp_sub.recv()
        assert isinstance(got, Publish) and got.payload[-1] == qos and len(got.payload) == 70_001
        if got.qos:
            from hedgerow.mqtt.packets import PubAck

            await tcp_sub.send(PubAck(got.packet_id))  # type: ignore[arg-type]
    await asyncio.to_thread(ready.wait, WAIT)
    tcp_pub = await RawClient.connected(tcp, "tcp-pub", version)
    await tcp_pub.send(Publish("to/ws/a", b"tcp-1", qos=0))
    await tcp_pub.send(Publish("to/ws/b", b"tcp-2", qos=0))
    await task


async def test_paho_over_wss_with_a_test_ca_and_client_certificates(test_pki: TestPKI) -> None:
    server = test_pki.server()
    thing = test_pki.client("ws-thing")
    context = tlscontext.server_context(
        server.cert, server.key, test_pki.ca_file, require_client_cert=True
    )
    acl = AclFileAuthorizer(parse_acl("user ws-thing\ntopic readwrite things/ws-thing/#\n"))
    async with Broker(
        BrokerConfig(), authenticator=CertificateAuthenticator(), authorizer=acl
    ) as broker:
        _, port = await broker.listen_websocket("127.0.0.1", 0, ssl=context)

        def scenario() -> None:
            client = WsPaho(port, "any-id", mqtt.MQTTv5)
            client.client.tls_set(
                ca_certs=str(test_pki.ca_file), certfile=str(thing.cert), keyfile=str(thing.key)
            )
            try:
                client.start()
                # the identity is the certificate's name, so the ACL applies to it
                assert client.subscribe("things/ws-thing/#", 1) == [1]
                assert client.subscribe("things/other/#", 1) == [0x87]
                client.publish("things/ws-thing/echo", b"over wss", 1)
                assert client.get().payload == b"over wss"
            finally:
                client.stop()

        await asyncio.to_thread(scenario)
        # without a client certificate the TLS handshake fails: no WebSocket, no MQTT
        client_context = ssl.create_default_context(cafile=str(test_pki.ca_file))
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context)
        try:
            writer.write(upgrade("/mqtt"))
            with pytest.raises((ssl.SSLError, ConnectionError)):
                async with asyncio.timeout(WAIT):
                    data = await reader.read()
                    if not data:
                        raise ConnectionError("closed without an answer")
        finally:
            writer.close()
            with contextlib.suppress(ssl.SSLError, ConnectionError):
                await writer.wait_closed()


async def test_password_and_acl_apply_over_websocket(tmp_path: Path) -> None:
    import shutil
    import subprocess

    passwd = tmp_path / "passwd"
    binary = shutil.which("mosquitto_passwd")
    assert binary
    subprocess.run([binary, "-c", "-b", str(passwd), "dash", "board"], check=True, timeout=30)
    authenticator = PasswordFileAuthenticator(parse_password_file(passwd.read_text()))
    async with Broker(BrokerConfig(), authenticator=authenticator) as broker:
        _, port = await broker.listen_websocket("127.0.0.1", 0)

        def scenario() -> None:
            bad = WsPaho(port, "dash", mqtt.MQTTv5)
            bad.client.username_pw_set("dash", "wrong")
            bad.start()
            assert int(getattr(bad.rc, "value", 0)) == 0x86
            bad.stop()
            good = WsPaho(port, "dash", mqtt.MQTTv5)
            good.client.username_pw_set("dash", "board")
            good.start()
            assert int(getattr(good.rc, "value", -1)) == 0
            good.stop()

        await asyncio.to_thread(scenario)


async def raw_http(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(WAIT):
            return await reader.readuntil(b"\r\n\r\n")  # the response head
    finally:
        writer.close()


def upgrade(path: str, protocol: str = "mqtt") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Protocol: {protocol}\r\n\r\n"
    ).encode()


async def test_handshake_refusals(ws_broker: tuple[int, int]) -> None:
    _, ws = ws_broker
    assert (await raw_http(ws, upgrade("/elsewhere"))).startswith(b"HTTP/1.1 404")
    assert (await raw_http(ws, upgrade("/mqtt", "chat"))).startswith(b"HTTP/1.1 400")
    assert (await raw_http(ws, b"NOT HTTP AT ALL\r\n\r\n")).startswith(b"HTTP/1.1 400")
    ok = await raw_http(ws, upgrade("/mqtt?x=1"))
    assert ok.startswith(b"HTTP/1.1 101") and b"Sec-WebSocket-Protocol: mqtt" in ok


def test_text_frames_are_refused() -> None:
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import Request, TextMessage

    client = WSConnection(ConnectionType.CLIENT)
    server = WebSocketFraming()
    _, reply = server.receive(client.send(Request(host="x", target="/mqtt", subprotocols=["mqtt"])))
    client.receive_data(reply)
    list(client.events())
    with pytest.raises(WebSocketError, match="binary only") as caught:
        server.receive(client.send(TextMessage(data="hello")))
    assert caught.value.reply  # a close frame (1003) goes out first


async def test_cli_ws_port(test_pki: TestPKI) -> None:
    import sys

    server = test_pki.server()
    port, ws = free_port(), free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hedgerow", "broker", "--port", str(port), "--ws-port", str(ws),
        "--ws-tls", "--tls-cert", str(server.cert), "--tls-key", str(server.key),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        await asyncio.wait_for(proc.stdout.readline(), 10)
        line = await asyncio.wait_for(proc.stdout.readline(), 10)
        assert f"wss://127.0.0.1:{ws}/mqtt" in line.decode()

        def scenario() -> None:
            client = WsPaho(ws, "cli-ws", mqtt.MQTTv311)
            client.client.tls_set(ca_certs=str(test_pki.ca_file))
            try:
                client.start()
                client.subscribe("cli/ws", 1)
                client.publish("cli/ws", b"hello", 1)
                assert client.get().payload == b"hello"
            finally:
                client.stop()

        await asyncio.to_thread(scenario)
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)


async def test_a_handshake_that_never_completes_is_closed_by_the_connect_timeout() -> None:
    async with Broker(BrokerConfig(connect_timeout=0.5, sweep_interval=0.1)) as broker:
        _, port = await broker.listen_websocket("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET /mqtt HTTP/1.1\r\nHost: x\r\n")  # and then nothing
            await writer.drain()
            async with asyncio.timeout(WAIT):
                assert await reader.read() == b""  # closed by the broker
            assert broker.stats().clients_connected == 0
        finally:
            writer.close()
