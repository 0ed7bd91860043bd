"""Mosquitto ACL and password files: parsing, matching, and a broker enforcing them.

Password files are written by the real ``mosquitto_passwd``; the broker is exercised over
real sockets with the raw test client (exact reason codes) and with paho-mqtt.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from hedgerow.broker import Broker, BrokerConfig
from hedgerow.broker.aclfile import AclFileAuthorizer, load_acl_file, parse_acl
from hedgerow.broker.auth import Action, Identity
from hedgerow.broker.errors import BrokerFileError
from hedgerow.broker.passwordfile import (
    PasswordFileAuthenticator,
    load_password_file,
    parse_password_file,
)
from hedgerow.mqtt.packets import (
    ConnAck,
    Connect,
    ProtocolVersion,
    PubAck,
    Publish,
    SubAck,
    Subscribe,
    Subscription,
)
from hedgerow.mqtt.topics import filter_covers

from .conftest import RawClient
from .test_real_peers import paho

V5 = ProtocolVersion.V5
V311 = ProtocolVersion.V311

ACL = """\
# anonymous clients: read the public topics only
topic read public/#

user alice
topic readwrite sensors/#
topic deny sensors/secret/#
topic write cmd/+/set

user bob
topic read sensors/+/temp

pattern readwrite devices/%c/#
pattern read users/%u/inbox
"""


def user(name: str, client_id: str = "c1") -> Identity:
    return Identity(name, "user", {"username": name, "client_id": client_id})


def anonymous(client_id: str = "anon") -> Identity:
    return Identity(client_id, "anonymous", {"client_id": client_id})


# ---- the ACL file, pure -------------------------------------------------------------------


def test_acl_sections_access_and_patterns() -> None:
    acl = AclFileAuthorizer(parse_acl(ACL))
    alice, bob = user("alice", "pi-1"), user("bob", "pi-2")
    pub, sub = Action.PUBLISH, Action.SUBSCRIBE
    # anonymous section: read only, and only public/#
    assert acl.authorize(anonymous(), sub, "public/news")
    assert not acl.authorize(anonymous(), pub, "public/news")
    assert not acl.authorize(anonymous(), sub, "sensors/#")
    # alice: readwrite, deny wins over the broader grant
    assert acl.authorize(alice, pub, "sensors/a/temp")
    assert not acl.authorize(alice, pub, "sensors/secret/key")
    assert acl.authorize(alice, pub, "cmd/lamp/set")
    assert not acl.authorize(alice, sub, "cmd/lamp/set")  # write only
    assert not acl.authorize(alice, sub, "sensors/secret/#")
    # `sensors/#` is granted (covered by readwrite), secret/ is filtered at delivery
    assert acl.authorize(alice, sub, "sensors/#")
    assert acl.may_read(alice, "sensors/a/temp")
    assert not acl.may_read(alice, "sensors/secret/key")
    # bob: a filter broader than his rule is refused, a narrower one granted
    assert acl.authorize(bob, sub, "sensors/+/temp")
    assert acl.authorize(bob, sub, "sensors/kitchen/temp")
    assert not acl.authorize(bob, sub, "sensors/#")
    assert not acl.authorize(bob, pub, "sensors/kitchen/temp")
    # patterns: %c is the client id, %u the username
    assert acl.authorize(alice, pub, "devices/pi-1/up")
    assert not acl.authorize(alice, pub, "devices/pi-2/up")
    assert acl.authorize(bob, sub, "users/bob/inbox")
    assert not acl.authorize(bob, sub, "users/alice/inbox")
    # %u never applies to anonymous clients; %c does
    assert not acl.authorize(anonymous("x"), sub, "users/x/inbox")
    assert acl.authorize(anonymous("x"), pub, "devices/x/up")
    # unknown users get only the patterns
    assert not acl.authorize(user("mallory"), sub, "public/news")
    # shared subscriptions are checked on their filter
    assert acl.authorize(alice, sub, "$share/g/sensors/a/temp")
    assert not acl.authorize(alice, sub, "$share/g/sensors/secret/x")


def test_acl_wildcards_never_reach_dollar_topics_and_ids_cannot_inject() -> None:
    acl = AclFileAuthorizer(parse_acl("user root\ntopic #\ntopic read $SYS/broker/#\n"))
    root = user("root", "c")
    assert acl.authorize(root, Action.PUBLISH, "any/thing")
    assert not acl.authorize(root, Action.SUBSCRIBE, "$SYS/#")
    assert not acl.may_read(root, "$hedgerow/x")
    assert acl.authorize(root, Action.SUBSCRIBE, "$SYS/broker/uptime")
    patterns = AclFileAuthorizer(parse_acl("pattern devices/%c/#\n"))
    # a client id with a wildcard must not widen its pattern to everyone's devices
    assert not patterns.authorize(user("u", "+"), Action.SUBSCRIBE, "devices/+/#")
    assert not patterns.authorize(user("u", "#"), Action.SUBSCRIBE, "devices/#")


def test_covers() -> None:
    """ACL rules cover subscriptions with the one coverage rule of hedgerow.mqtt.topics."""
    covers = filter_covers
    assert covers("a/#", "a/b/+")
    assert covers("a/+", "a/b")
    assert not covers("a/+", "a/#")
    assert not covers("a/b", "a/+")
    assert covers("#", "x")
    assert not covers("#", "$SYS/x")


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("topic read a\nfrobnicate x\n", 2, "unknown keyword"),
        ("user\n", 1, "needs a username"),
        ("user a\ntopic\n", 2, "needs a topic"),
        ("topic read a/#/b\n", 1, "bad topic"),
        ("\n\ntopic devices/%c\n", 3, "only work in `pattern`"),
    ],
)
def test_bad_acl_file_names_file_and_line(text: str, line: int, words: str) -> None:
    with pytest.raises(BrokerFileError) as caught:
        parse_acl(text, "acl.conf")
    assert caught.value.line == line
    assert f"acl.conf:{line}:" in str(caught.value) and words in str(caught.value)


def test_unreadable_acl_file(tmp_path: Path) -> None:
    with pytest.raises(BrokerFileError, match="cannot read the ACL file"):
        load_acl_file(tmp_path / "missing")


# ---- password files written by mosquitto_passwd --------------------------------------------


def mosquitto_passwd(*args: str) -> None:
    binary = shutil.which("mosquitto_passwd")
    assert binary, "mosquitto_passwd is missing: make system-deps installs it"
    subprocess.run([binary, *args], check=True, timeout=30)


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "passwd"
    mosquitto_passwd("-c", "-b", str(path), "alice", "wonderland")  # $7$ (PBKDF2)
    mosquitto_passwd("-H", "sha512", "-b", str(path), "bob", "builder")  # $6$
    return path


def test_password_file_from_mosquitto_passwd(password_file: Path) -> None:
    text = password_file.read_text()
    assert "alice:$7$" in text and "bob:$6$" in text
    passwords = load_password_file(password_file)
    assert passwords.check("alice", b"wonderland")
    assert passwords.check("bob", b"builder")
    assert not passwords.check("alice", b"builder")
    assert not passwords.check("bob", None)
    assert not passwords.check("carol", b"x")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("alice:plaintext\n", "mosquitto_passwd -U"),
        ("alice\n", "username:hash"),
        ("alice:$6$!!$abc\n", "base64"),
        ("alice:$7$many$c2FsdA==$aGFzaA==\n", "not a number"),
        ("alice:$5$x$y\n", "unknown hash format"),
    ],
)
def test_bad_password_file_names_the_line(text: str, words: str) -> None:
    with pytest.raises(BrokerFileError) as caught:
        parse_password_file("# users\n" + text, "passwd")
    assert caught.value.line == 2 and words in str(caught.value)


# ---- a broker enforcing both, over real sockets ---------------------------------------------


@pytest.fixture
async def guarded(password_file: Path, tmp_path: Path) -> AsyncIterator[int]:
    (tmp_path / "acl").write_text(ACL)
    authenticator = PasswordFileAuthenticator(
        load_password_file(password_file), allow_anonymous=True
    )
    authorizer = AclFileAuthorizer(load_acl_file(tmp_path / "acl"))
    async with Broker(
        BrokerConfig(sweep_interval=0.1), authenticator=authenticator, authorizer=authorizer
    ) as broker:
        _, port = await broker.listen("127.0.0.1", 0)
        yield port


async def test_wrong_password_is_refused(guarded: int) -> None:
    # 3.1.1's return code 4 reads back as v5's 0x86 through the codec
    for version, code in ((V311, 0x86), (V5, 0x86)):
        client = await RawClient.open(guarded, version)
        await client.send(Connect("x", version, username="alice", password=b"nope"))
        ack = await client.recv()
        assert isinstance(ack, ConnAck) and ack.reason_code == code


@pytest.mark.parametrize(("version", "refused"), [(V311, 0x80), (V5, 0x87)])
async def test_refused_subscription_and_publish(
    guarded: int, version: ProtocolVersion, refused: int
) -> None:
    bob = await RawClient.connected(guarded, "bob-1", version, username="bob", password=b"builder")
    await bob.send(
        Subscribe(
            1,
            (
                Subscription("sensors/+/temp", 1),
                Subscription("sensors/#", 1),
                Subscription("users/bob/inbox", 0),
            ),
        )
    )
    ack = await bob.recv()
    assert isinstance(ack, SubAck) and ack.reason_codes == (1, refused, 0)
    await bob.send(Publish("sensors/kitchen/temp", b"21", qos=1, packet_id=7))
    puback = await bob.recv()
    assert isinstance(puback, PubAck) and puback.packet_id == 7
    if version == V5:
        assert puback.reason_code == 0x87
    # nothing reached his own subscription: the next thing he gets is a permitted message
    alice = await RawClient.connected(
        guarded, "alice-1", version, username="alice", password=b"wonderland"
    )
    await alice.send(Publish("sensors/kitchen/temp", b"22", qos=1, packet_id=1))
    assert isinstance(await alice.recv(), PubAck)
    got = await bob.recv()
    assert isinstance(got, Publish) and got.payload == b"22"


async def test_deny_wins_over_grants_for_publish(guarded: int) -> None:
    alice = await RawClient.connected(
        guarded, "alice-2", V5, username="alice", password=b"wonderland"
    )
    await alice.send(Subscribe(1, (Subscription("sensors/#", 0),)))
    assert isinstance(await alice.recv(), SubAck)
    anon = await RawClient.connected(guarded, "anon-1", V5)
    # anonymous may not write anywhere but its own devices/%c
    await anon.send(Publish("sensors/secret/key", b"x", qos=1, packet_id=3))
    ack = await anon.recv()
    assert isinstance(ack, PubAck) and ack.reason_code == 0x87
    writer = await RawClient.connected(
        guarded, "alice-3", V5, username="alice", password=b"wonderland"
    )
    # alice may not publish under secret/ either: the deny beats her readwrite sensors/#
    await writer.send(Publish("sensors/secret/key", b"x", qos=1, packet_id=4))
    ack = await writer.recv()
    assert isinstance(ack, PubAck) and ack.reason_code == 0x87
    await writer.send(Publish("sensors/open/t", b"ok", qos=0))
    got = await alice.recv()
    assert isinstance(got, Publish) and got.topic == "sensors/open/t"


async def test_read_is_checked_for_in_process_and_retained_messages(
    password_file: Path,
) -> None:
    authorizer = AclFileAuthorizer(parse_acl("user alice\ntopic read a/#\ntopic deny a/hidden\n"))
    authenticator = PasswordFileAuthenticator(load_password_file(password_file))
    async with Broker(BrokerConfig(), authenticator=authenticator, authorizer=authorizer) as broker:
        _, port = await broker.listen("127.0.0.1", 0)
        await broker.publish("a/hidden", b"secret", retain=True)
        await broker.publish("a/open", b"fine", retain=True)
        alice = await RawClient.connected(
            port, "alice", V5, username="alice", password=b"wonderland"
        )
        await alice.send(Subscribe(1, (Subscription("a/#", 0),)))
        assert isinstance(await alice.recv(), SubAck)
        got = await alice.recv()
        assert isinstance(got, Publish) and (got.topic, got.payload) == ("a/open", b"fine")
        await broker.publish("a/hidden", b"live secret")
        await broker.publish("a/open", b"live")
        got = await alice.recv()
        assert isinstance(got, Publish) and got.payload == b"live"
        assert broker.stats().undelivered >= 2


async def test_anonymous_refused_without_allow_anonymous(password_file: Path) -> None:
    authenticator = PasswordFileAuthenticator(load_password_file(password_file))
    async with Broker(BrokerConfig(), authenticator=authenticator) as broker:
        _, port = await broker.listen("127.0.0.1", 0)
        client = await RawClient.open(port, V5)
        await client.send(Connect("nobody", V5))
        ack = await client.recv()
        assert isinstance(ack, ConnAck) and ack.reason_code == 0x86


async def test_paho_v5_sees_not_authorized(guarded: int) -> None:
    def scenario() -> None:
        with paho(guarded, "bob-paho", mqtt.MQTTv5) as bob:
            bob.client.username_pw_set("bob", "builder")
            granted: list[object] = []
            got = threading.Event()

            def on_subscribe(
                c: object, u: object, mid: int, codes: list[object], p: object
            ) -> None:
                granted.extend(codes)
                got.set()

            bob.start()
            bob.client.on_subscribe = on_subscribe
            bob.client.subscribe([("sensors/#", 1), ("sensors/x/temp", 1)])
            assert got.wait(5)
            assert [int(c.value) for c in granted] == [0x87, 1]  # type: ignore[attr-defined]

    await asyncio.to_thread(scenario)


async def test_awscrt_mqtt5_sees_not_authorized(guarded: int) -> None:
    from awscrt import mqtt5

    def scenario() -> tuple[list[object], object]:
        connected = threading.Event()
        stopped = threading.Event()
        options = mqtt5.ClientOptions(
            host_name="127.0.0.1",
            port=guarded,
            connect_options=mqtt5.ConnectPacket(
                client_id="bob-crt", username="bob", password=b"builder"
            ),
            on_lifecycle_event_connection_success_fn=lambda data: connected.set(),
            on_lifecycle_event_stopped_fn=lambda data: stopped.set(),
            disable_metrics=True,  # else the SDK appends "?SDK=..." to the username
        )
        client = mqtt5.Client(options)
        client.start()
        try:
            assert connected.wait(5)
            suback = client.subscribe(
                mqtt5.SubscribePacket(
                    subscriptions=[
                        mqtt5.Subscription("sensors/#", mqtt5.QoS.AT_LEAST_ONCE),
                        mqtt5.Subscription("sensors/a/temp", mqtt5.QoS.AT_LEAST_ONCE),
                    ]
                )
            ).result(5)
            puback = client.publish(
                mqtt5.PublishPacket(
                    topic="sensors/a/temp", payload=b"21", qos=mqtt5.QoS.AT_LEAST_ONCE
                )
            ).result(5)
        finally:
            client.stop()
            stopped.wait(5)
        return list(suback.reason_codes), puback.puback.reason_code

    codes, published = await asyncio.to_thread(scenario)

    assert codes == [
        mqtt5.SubackReasonCode.NOT_AUTHORIZED,
        mqtt5.SubackReasonCode.GRANTED_QOS_1,
    ]
    assert published == mqtt5.PubackReasonCode.NOT_AUTHORIZED
