"""Mutual TLS: identity from the client certificate, enforcement, and the AWS device SDKs."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import ssl
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
from awscrt import mqtt5
from awsiot import mqtt5_client_builder
from AWSIoTPythonSDK.MQTTLib import AWSIoTMQTTClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from hedgerow import certinfo, pki
from hedgerow.broker import (
    AllowAll,
    Authenticator,
    Broker,
    CertificateAuthenticator,
    ConnectInfo,
    Identity,
    Refused,
)
from hedgerow.mqtt.packets import ConnAck, Connect, ProtocolVersion, Publish
from hedgerow.mqtt.reasons import ReasonCode

from .conftest import RawClient

if TYPE_CHECKING:
    from ..conftest import CertFiles, TestPKI

WAIT = 10.0


@dataclass
class TLSBroker:
    broker: Broker
    port: int
    seen: list[tuple[str, str, bytes]]


async def start_tls_broker(
    test_pki: TestPKI, *, require: bool, authenticator: Authenticator | None = None
) -> AsyncIterator[TLSBroker]:
    server = test_pki.server()
    context = pki.server_context(
        str(server.cert), str(server.key), str(test_pki.ca_file), require_client_cert=require
    )
    async with Broker(authenticator=authenticator or CertificateAuthenticator()) as broker:
        _, port = await broker.listen("127.0.0.1", 0, ssl=context)
        seen: list[tuple[str, str, bytes]] = []

        def record(identity: Identity, publish: Publish) -> None:
            seen.append((identity.name, publish.topic, publish.payload))

        broker.add_interceptor(record)
        yield TLSBroker(broker, port, seen)


@pytest.fixture
async def mtls(test_pki: TestPKI) -> AsyncIterator[TLSBroker]:
    async for running in start_tls_broker(test_pki, require=True):
        yield running


@pytest.fixture
async def optional_tls(test_pki: TestPKI) -> AsyncIterator[TLSBroker]:
    async for running in start_tls_broker(test_pki, require=False):
        yield running


async def test_identity_is_the_certificate_not_the_client_id(
    mtls: TLSBroker, test_pki: TestPKI
) -> None:
    files = test_pki.client("sensor-7")
    context = pki.client_context(str(test_pki.ca_file), str(files.cert), str(files.key))
    client = await RawClient.open(mtls.port, ssl=context, server_hostname="127.0.0.1")
    await client.send(Connect("i-claim-to-be-someone-else", ProtocolVersion.V311))
    ack = await client.recv()
    assert isinstance(ack, ConnAck) and ack.reason_code == 0
    await client.send(Publish("sensors/t", b"21"))
    await client.send_bytes(b"\xc0\x00")
    await client.recv()
    assert mtls.seen == [("sensor-7", "sensors/t", b"21")]


async def test_required_client_certificate_is_enforced(mtls: TLSBroker, test_pki: TestPKI) -> None:
    context = pki.client_context(str(test_pki.ca_file))  # trusts the server, presents nothing
    with pytest.raises((ssl.SSLError, ConnectionError)):
        client = await RawClient.open(mtls.port, ssl=context, server_hostname="127.0.0.1")
        await client.send(Connect("anon", ProtocolVersion.V311))
        await client.recv()
    assert mtls.broker.stats().clients_connected == 0


async def test_certificate_from_another_ca_is_rejected(mtls: TLSBroker, test_pki: TestPKI) -> None:
    rogue_ca = pki.make_ca("Rogue CA")
    files = test_pki.client("rogue", ca=rogue_ca)
    context = pki.client_context(str(test_pki.ca_file), str(files.cert), str(files.key))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        client = await RawClient.open(mtls.port, ssl=context, server_hostname="127.0.0.1")
        await client.send(Connect("rogue", ProtocolVersion.V311))
        await client.recv()
    assert mtls.broker.stats().clients_connected == 0


async def test_optional_tls_without_certificate_is_refused_by_authenticator(
    optional_tls: TLSBroker, test_pki: TestPKI
) -> None:
    context = pki.client_context(str(test_pki.ca_file))
    v311 = await RawClient.open(optional_tls.port, ssl=context, server_hostname="127.0.0.1")
    await v311.send(Connect("anon", ProtocolVersion.V311))
    # 3.1.1 return code 5 on the wire ("not authorized"), read back as the v5 code
    assert await v311.closed() == [ConnAck(False, ReasonCode.NOT_AUTHORIZED)]
    v5 = await RawClient.open(
        optional_tls.port, ProtocolVersion.V5, ssl=context, server_hostname="127.0.0.1"
    )
    await v5.send(Connect("anon5", ProtocolVersion.V5))
    # a v5 client is also told why, in the reason string
    [connack] = await v5.closed()
    assert isinstance(connack, ConnAck) and connack.reason_code == ReasonCode.NOT_AUTHORIZED
    assert connack.properties.reason_string
    assert optional_tls.broker.stats().refused == 2


class Recording:
    """Records what the broker hands the authenticator, then lets CertificateAuthenticator decide."""

    def __init__(self) -> None:
        self.seen: list[ConnectInfo] = []

    async def authenticate(self, info: ConnectInfo) -> Identity:
        self.seen.append(info)
        return await CertificateAuthenticator().authenticate(info)


def signed_by_root(test_pki: TestPKI, name: str, subject: x509.Name) -> CertFiles:
    """A client certificate of the test root with any subject (pki always writes a CN)."""
    key = pki.new_key()
    start = certinfo.now() - dt.timedelta(minutes=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(test_pki.root.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=1))
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(test_pki.root.key.public_key()),
            critical=False,
        )
        .sign(test_pki.root.key, hashes.SHA256())
    )
    return test_pki.write(name, pki.Issued(cert, key))


@dataclass
class Recorded:
    running: TLSBroker
    recording: Recording


@pytest.fixture
async def recorded(test_pki: TestPKI) -> AsyncIterator[Recorded]:
    """A mutual-TLS broker whose authenticator records what it was handed."""
    recording = Recording()
    async for running in start_tls_broker(test_pki, require=True, authenticator=recording):
        yield Recorded(running, recording)


async def test_authenticator_reads_the_verified_certificate_without_cryptography(
    recorded: Recorded, test_pki: TestPKI
) -> None:
    files = test_pki.client("sensor-9")
    issued = pki.cert_from_pem(files.cert.read_bytes())
    context = pki.client_context(str(test_pki.ca_file), str(files.cert), str(files.key))
    client = await RawClient.open(recorded.running.port, ssl=context, server_hostname="127.0.0.1")
    await client.send(Connect("whoever", ProtocolVersion.V311))
    ack = await client.recv()
    assert isinstance(ack, ConnAck) and ack.reason_code == 0
    [info] = recorded.recording.seen
    cert = info.peer_cert
    assert isinstance(cert, certinfo.CertInfo)
    assert cert.name == pki.name_of(issued) == "sensor-9"
    assert cert.fingerprint == pki.fingerprint(issued)
    assert cert.issued_by(certinfo.from_pem(test_pki.root.cert_pem))
    assert info.client_id == "whoever"


async def test_a_certificate_without_a_common_name_is_refused(
    recorded: Recorded, test_pki: TestPKI
) -> None:
    files = signed_by_root(
        test_pki, "nameless", x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme")])
    )
    context = pki.client_context(str(test_pki.ca_file), str(files.cert), str(files.key))
    client = await RawClient.open(
        recorded.running.port, ProtocolVersion.V5, ssl=context, server_hostname="127.0.0.1"
    )
    await client.send(Connect("nameless", ProtocolVersion.V5))
    [ack] = await client.closed()
    assert isinstance(ack, ConnAck) and ack.reason_code == ReasonCode.NOT_AUTHORIZED
    assert recorded.running.broker.stats().refused == 1
    [info] = recorded.recording.seen
    assert info.peer_cert is not None and info.peer_cert.subject_cn is None


async def test_a_verified_certificate_the_reader_cannot_parse_counts_as_none(
    recorded: Recorded, test_pki: TestPKI, caplog: pytest.LogCaptureFixture
) -> None:
    """OpenSSL accepts a NumericString common name; certinfo does not read one. The
    connection is refused by the authenticator, not broken by the reader."""
    odd = x509.NameAttribute(NameOID.COMMON_NAME, "12345", _type=x509.name._ASN1Type.NumericString)
    files = signed_by_root(test_pki, "numeric", x509.Name([odd]))
    port = recorded.running.port
    context = pki.client_context(str(test_pki.ca_file), str(files.cert), str(files.key))
    client = await RawClient.open(port, ssl=context, server_hostname="127.0.0.1")
    with caplog.at_level(logging.WARNING, logger="hedgerow.broker"):
        await client.send(Connect("numeric", ProtocolVersion.V311))
        assert await client.closed() == [ConnAck(False, ReasonCode.NOT_AUTHORIZED)]
    # the broker is still serving: a good client connects after it
    good = test_pki.client("after")
    context = pki.client_context(str(test_pki.ca_file), str(good.cert), str(good.key))
    client = await RawClient.open(port, ssl=context, server_hostname="127.0.0.1")
    await client.send(Connect("after", ProtocolVersion.V311))
    ack = await client.recv()
    assert isinstance(ack, ConnAck) and ack.reason_code == 0
    assert [info.peer_cert is None for info in recorded.recording.seen] == [True, False]
    assert "broker.client.unreadable_certificate" in caplog.text
    assert "error='unsupported string type 0x12" in caplog.text


async def test_allow_all_names_a_certificate_holder_by_its_certificate() -> None:
    root = pki.make_ca("Allow-all root")
    cert = certinfo.from_pem(pki.issue(root, "dev-1").cert_pem)
    identity = await AllowAll().authenticate(ConnectInfo("cid", None, None, 4, None, cert, True))
    assert (identity.name, identity.kind) == ("dev-1", "certificate")
    anonymous = await AllowAll().authenticate(ConnectInfo("cid", None, None, 4, None, None, True))
    assert anonymous.name == "cid"
    nameless = dataclasses.replace(cert, subject_cn=None)
    for authenticator in (AllowAll(), CertificateAuthenticator()):
        with pytest.raises(Refused, match="unusable client certificate: .*no common name"):
            await authenticator.authenticate(
                ConnectInfo("cid", None, None, 4, None, nameless, True)
            )


async def test_awsiot_python_sdk_over_mutual_tls(mtls: TLSBroker, test_pki: TestPKI) -> None:
    files = test_pki.client("thing-1")

    def scenario() -> list[bytes]:
        client = AWSIoTMQTTClient("thing-1")
        client.configureEndpoint("127.0.0.1", mtls.port)
        client.configureCredentials(str(test_pki.ca_file), str(files.key), str(files.cert))
        client.configureConnectDisconnectTimeout(10)
        client.configureMQTTOperationTimeout(5)
        got: list[bytes] = []
        arrived = threading.Event()

        def on_message(_client: object, _userdata: object, message: object) -> None:
            got.append(message.payload)  # type: ignore[attr-defined]
            arrived.set()

        assert client.connect(keepAliveIntervalSecond=600)
        try:
            assert client.subscribe("things/thing-1/in", 1, on_message)  # SUBACK within 5 s
            assert client.publish("things/thing-1/in", b'{"t": 21.5}', 1)  # PUBACK within 5 s
            assert arrived.wait(WAIT)
        finally:
            client.disconnect()
        return got

    got = await asyncio.to_thread(scenario)
    assert got == [b'{"t": 21.5}']
    assert mtls.seen == [("thing-1", "things/thing-1/in", b'{"t": 21.5}')]


async def test_awscrt_mqtt5_client_over_mutual_tls(mtls: TLSBroker, test_pki: TestPKI) -> None:
    files = test_pki.client("thing-5")

    def scenario() -> bytes:
        connected = threading.Event()
        stopped = threading.Event()
        received: list[bytes] = []
        arrived = threading.Event()

        def on_publish(data: mqtt5.PublishReceivedData) -> None:
            received.append(bytes(data.publish_packet.payload))
            arrived.set()

        client = mqtt5_client_builder.mtls_from_path(
            endpoint="127.0.0.1",
            port=mtls.port,
            cert_filepath=str(files.cert),
            pri_key_filepath=str(files.key),
            ca_filepath=str(test_pki.ca_file),
            client_id="thing-5",
            on_publish_received=on_publish,
            on_lifecycle_connection_success=lambda data: connected.set(),
            on_lifecycle_stopped=lambda data: stopped.set(),
        )
        client.start()
        try:
            assert connected.wait(WAIT)
            sub = client.subscribe(
                mqtt5.SubscribePacket(
                    subscriptions=[mqtt5.Subscription("crt/+", mqtt5.QoS.AT_LEAST_ONCE)]
                )
            ).result(WAIT)
            assert sub.reason_codes == [mqtt5.SubackReasonCode.GRANTED_QOS_1]
            client.publish(
                mqtt5.PublishPacket(topic="crt/x", payload=b"from crt", qos=mqtt5.QoS.AT_LEAST_ONCE)
            ).result(WAIT)
            assert arrived.wait(WAIT)
        finally:
            client.stop()
            stopped.wait(WAIT)
        return received[0]

    assert await asyncio.to_thread(scenario) == b"from crt"
    assert mtls.seen == [("thing-5", "crt/x", b"from crt")]
