"""Telemetry export to AMQP 0-9-1 (``kind = "amqp"``): the config and the publish rendering
(pure), then the machine's RabbitMQ on 127.0.0.1:5672 — each test on an exchange and
queues of its own — reached directly or through a forwarder that refuses and cuts."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import sys
import tomllib
from pathlib import Path

import pytest

from hedgerow.cloud import config as config_module
from hedgerow.cloud.domain import Message
from hedgerow.cloud.errors import ConfigError
from hedgerow.cloud.exporters import TargetExporter, sender_for
from hedgerow.cloud.services.exports import ExportService
from hedgerow.cloud.storage.repository import Repository
from hedgerow.cloud.telemetry_export import (
    ExportConfigError,
    ExportTarget,
    amqp_login_url,
    amqp_publish,
    export_target,
    shown_url,
)
from tests.conftest import TestPKI as PKIFiles
from tests.conftest import free_port

from .export_peers import AmqpPeer, Forwarder
from .test_telemetry_export import (  # noqa: F401  (the repository fixture)
    FAST_RETRY,
    _export_until,
    _exported,
    _store,
    repository,
)

RABBITMQ = ("127.0.0.1", 5672)
LOGIN = "amqp://guest:guest@127.0.0.1:5672/"


def _amqp(**changes: object) -> ExportTarget:
    fields: dict[str, object] = {"name": "bus", "kind": "amqp", "url": LOGIN}
    fields.update(changes)
    return export_target(**fields)  # type: ignore[arg-type]


# ---- config and rendering (pure) ----------------------------------------------------------


def test_amqp_targets_are_read_from_config_toml_and_written_back(tmp_path: Path) -> None:
    text = """
[[telemetry.export]]
name = "bus"
kind = "amqp"
url = "amqps://exporter:s3cret@rabbit.example.org/plant%2Fa"
exchange = "telemetry"
topic = "export/{core}/{topic}"
ca_file = "pki/rabbit-ca.pem"
cert_file = "pki/exporter.pem"
key_file = "pki/exporter.key"
mandatory = false
[[telemetry.export]]
name = "plain"
kind = "amqp"
url = "amqp://127.0.0.1"
"""
    loaded = config_module.from_toml(tmp_path, tomllib.loads(text))
    bus, plain = loaded.exports
    assert bus.tls and bus.port == 5671 and bus.exchange == "telemetry" and not bus.mandatory
    assert bus.ca_file == str(tmp_path / "pki/rabbit-ca.pem")
    assert shown_url(bus.url) == "amqps://rabbit.example.org/plant%2Fa"
    assert not plain.tls and plain.port == 5672 and plain.exchange == "amq.topic"
    assert plain.mandatory and plain.topic == "{topic}"
    again = config_module.from_toml(tmp_path, loaded.to_toml())
    assert again.exports == loaded.exports


@pytest.mark.parametrize(
    ("entry", "field", "says"),
    [
        ('url = "mqtt://h"', "url", "amqps:// or amqp://"),
        ('url = "amqp://h/a/b"', "url", "%2F"),
        ('url = "amqp://h/v?cafile=x"', "url", "no query"),
        ('url = "amqp://h"\nexchange = "a b"', "exchange", "letters, digits"),
        ('url = "amqp://h"\nsecret = "s"', "secret", "not for AMQP targets"),
        ('url = "amqp://h"\nclient_id = "c"', "client_id", "not for AMQP targets"),
        ('url = "amqp://h"\nprotocol = "3.1.1"', "protocol", "for MQTT targets"),
        ('url = "amqp://h"\ncert_file = "c"\nkey_file = "k"', "url", "amqps://"),
        ('url = "amqp://u:p@h"\nusername = "v"', "username", "given twice"),
        ('url = "amqp://h"\ntopic = "x/{device}"', "topic", "use {topic} and {core}"),
    ],
)  # fmt: skip
def test_a_bad_amqp_target_is_refused_naming_the_key(
    tmp_path: Path, entry: str, field: str, says: str
) -> None:
    text = f'[[telemetry.export]]\nname = "bus"\nkind = "amqp"\n{entry}\n'
    with pytest.raises(ConfigError) as caught:
        config_module.from_toml(tmp_path, tomllib.loads(text))
    assert caught.value.field == f"telemetry.export[0].{field}"
    assert says in caught.value.message


def test_amqp_keys_are_refused_on_other_kinds() -> None:
    with pytest.raises(ExportConfigError, match="exchange is for AMQP targets") as caught:
        export_target(name="a", kind="mqtt", url="mqtt://h", exchange="x")
    assert caught.value.field == "exchange"
    with pytest.raises(ExportConfigError, match="mandatory is for AMQP targets"):
        export_target(name="a", kind="webhook", url="https://h/x", mandatory=False)


def test_without_the_amqp_client_the_config_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = config_module.importlib.util.find_spec
    monkeypatch.setattr(
        config_module.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "aiormq" else real(name, *a),
    )
    text = '[[telemetry.export]]\nname = "bus"\nkind = "amqp"\nurl = "amqp://h"\n'
    with pytest.raises(ConfigError) as caught:
        config_module.from_toml(tmp_path, tomllib.loads(text))
    assert caught.value.field == "telemetry.export[0].kind"
    assert "pip install 'hedgerow[amqp]'" in caught.value.message


def test_without_the_amqp_client_the_sender_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "aiormq", None)  # import aiormq: ImportError
    monkeypatch.delitem(sys.modules, "hedgerow.cloud.amqp_sender", raising=False)
    with pytest.raises(ExportConfigError, match=r"pip install 'hedgerow\[amqp\]'") as caught:
        sender_for(_amqp())
    assert caught.value.field == "kind"


def test_a_message_is_published_as_rabbitmq_mqtt_users_bind_it() -> None:
    message = Message(42, "sensors/hall/t", b"\xff21.5", "pi-1", 1_700_000_000.25)
    publish = amqp_publish(_amqp(topic="export/{core}/{topic}", exchange="tele"), message)
    assert publish.exchange == "tele" and publish.routing_key == "export.pi-1.sensors.hall.t"
    assert publish.body == b"\xff21.5" and publish.message_id == "42"
    assert publish.timestamp == 1_700_000_000.25 and publish.key_fits
    assert dict(publish.headers) == {
        "hedgerow-id": "42",
        "hedgerow-core": "pi-1",
        "hedgerow-ts": "1700000000.25",
        "hedgerow-topic": "sensors/hall/t",
    }
    long = amqp_publish(_amqp(), Message(1, "a/" * 130, b"", "pi-1", 0.0))
    assert not long.key_fits


def test_the_login_goes_into_the_url_quoted() -> None:
    assert amqp_login_url(_amqp()) == LOGIN
    target = _amqp(url="amqps://rabbit:5671/v%2Fa", username="ex@port", password="p:w/d")
    assert amqp_login_url(target) == "amqps://ex%40port:p%3Aw%2Fd@rabbit:5671/v%2Fa"


# ---- against the machine's RabbitMQ --------------------------------------------------------


def _header(message: object, key: str) -> object:
    headers = message.header.properties.headers or {}  # type: ignore[attr-defined]
    value = headers[key]
    return value.decode() if isinstance(value, bytes) else value


@pytest.mark.rabbitmq
async def test_amqp_target_gets_every_message_in_order_with_headers(
    repository: Repository,  # noqa: F811
) -> None:
    total = 1_200
    await asyncio.to_thread(_store, repository, total // 2, 0, "sensors/a")
    await asyncio.to_thread(_store, repository, 10, 10_000, "other/x")  # outside the filter
    await asyncio.to_thread(_store, repository, total // 2, total // 2, "sensors/b")
    async with AmqpPeer() as peer:
        queue = await peer.bind("export.pi-1.sensors.*")
        target = _amqp(
            exchange=peer.exchange,
            topic_filter="sensors/#",
            topic="export/{core}/{topic}",
            batch_size=500,
        )
        exporter = TargetExporter(target, repository, sender_for(target), retry=FAST_RETRY)
        try:
            await _export_until(exporter, lambda: _exported(repository) == total, "all confirmed")
        finally:
            await exporter.sender.close()
        got = await peer.take(queue)
    assert [int(m.body) for m in got] == list(range(total))  # in order, nothing else
    stored = {m.id: m for m in repository.messages_after(None, 10_000)}
    ids = [int(str(m.header.properties.message_id)) for m in got]
    assert ids == sorted(ids) and len(set(ids)) == total
    assert {m.routing_key for m in got} == {"export.pi-1.sensors.a", "export.pi-1.sensors.b"}
    first = got[0]
    source = stored[ids[0]]
    props = first.header.properties
    assert props.delivery_mode == 2 and props.content_type == "application/octet-stream"
    assert props.app_id == "hedgerow"
    assert props.timestamp is not None  # whole seconds (AMQP); exact in the headers
    assert props.timestamp.replace(tzinfo=dt.UTC).timestamp() == int(source.ts)
    assert _header(first, "hedgerow-id") == str(source.id)
    assert _header(first, "hedgerow-core") == "pi-1"
    assert _header(first, "hedgerow-topic") == "sensors/a"
    assert float(str(_header(first, "hedgerow-ts"))) == source.ts
    [status] = await ExportService(repository, [target]).status()
    assert status["exported"] == total and status["lag"] == 0 and status["failures"] == 0


@pytest.mark.rabbitmq
async def test_unreachable_then_cut_mid_batch_rabbitmq_gets_everything_without_a_gap(
    repository: Repository,  # noqa: F811
) -> None:
    total = 2_000
    await asyncio.to_thread(_store, repository, total)
    port = free_port()
    forwarder = Forwarder(port, RABBITMQ)
    async with AmqpPeer() as peer:
        queue = await peer.bind()
        target = _amqp(
            url=f"amqp://guest:guest@127.0.0.1:{port}/",
            exchange=peer.exchange,
            batch_size=500,
            timeout_s=5,
        )
        exporter = TargetExporter(target, repository, sender_for(target), retry=FAST_RETRY)
        try:
            for _ in range(3):  # nothing listens on the port: refused, counted, nothing moved
                exporter.retry_at = 0.0
                await exporter.tick()
            [status] = await ExportService(repository, [target]).status()
            assert status["failing"] == 3 and "cannot connect" in status["last_error"]
            assert status["exported"] == 0 and status["lag"] == total

            # reachable, but each connection is cut ~60 KB into its publishes: mid-batch
            forwarder.cut_after = 60_000
            await forwarder.accept()
            exporter.retry_at = 0.0
            async with asyncio.timeout(20):
                while forwarder.cuts < 2:
                    await exporter.tick()
                    await asyncio.sleep(0.01)
            [status] = await ExportService(repository, [target]).status()
            cut_exported = status["exported"]
            assert status["lag"] == total - cut_exported and status["failing"] >= 2
            assert cut_exported % 500 == 0  # only whole confirmed batches moved the cursor

            await forwarder.refuse()  # the broker goes away again: still nothing lost
            exporter.retry_at = 0.0
            await exporter.tick()
            [status] = await ExportService(repository, [target]).status()
            assert status["exported"] == cut_exported
            assert "cannot connect" in status["last_error"]

            forwarder.cut_after = None
            await forwarder.accept()
            await _export_until(exporter, lambda: _exported(repository) == total, "caught up")
        finally:
            await exporter.sender.close()
            await forwarder.refuse()
        got = await peer.take(queue)
    values = [int(m.body) for m in got]
    assert set(values) == set(range(total))  # no gap
    assert len(values) > total  # what a cut batch had delivered came again: at least once
    first_seen = list(dict.fromkeys(values))
    assert first_seen == list(range(total))  # in order
    [status] = await ExportService(repository, [target]).status()
    assert status["lag"] == 0 and status["failing"] == 0 and status["exported"] == total


@pytest.mark.rabbitmq
async def test_a_nacked_batch_is_not_counted_as_sent(
    repository: Repository,  # noqa: F811
) -> None:
    await asyncio.to_thread(_store, repository, 8)
    async with AmqpPeer() as peer:
        # a queue that refuses (basic.nack) what is past its 5th message
        full = await peer.bind(
            suffix="-full", arguments={"x-max-length": 5, "x-overflow": "reject-publish"}
        )
        target = _amqp(exchange=peer.exchange, batch_size=8)
        exporter = TargetExporter(target, repository, sender_for(target), retry=FAST_RETRY)
        try:
            await exporter.tick()
            [status] = await ExportService(repository, [target]).status()
            assert status["exported"] == 0 and status["lag"] == 8 and status["failing"] == 1
            assert "nacked by the broker" in status["last_error"]
            await peer.unbind(full)
            queue = await peer.bind()
            exporter.retry_at = 0.0
            await _export_until(exporter, lambda: _exported(repository) == 8, "all eight")
        finally:
            await exporter.sender.close()
        assert [int(m.body) for m in await peer.take(queue)] == list(range(8))
        assert len(await peer.take(full)) == 5


@pytest.mark.rabbitmq
async def test_an_unroutable_message_is_returned_not_counted_as_sent(
    repository: Repository,  # noqa: F811
) -> None:
    await asyncio.to_thread(_store, repository, 20)
    async with AmqpPeer() as peer:
        target = _amqp(exchange=peer.exchange, batch_size=10)
        exporter = TargetExporter(target, repository, sender_for(target), retry=FAST_RETRY)
        try:
            await exporter.tick()  # no queue is bound: every message comes back
            [status] = await ExportService(repository, [target]).status()
            assert status["exported"] == 0 and status["lag"] == 20 and status["failing"] == 1
            assert "312 NO_ROUTE" in status["last_error"]
            assert "no queue is bound" in status["last_error"]
            queue = await peer.bind("sensors.#")
            exporter.retry_at = 0.0
            await _export_until(exporter, lambda: _exported(repository) == 20, "all twenty")
        finally:
            await exporter.sender.close()
        assert [int(m.body) for m in await peer.take(queue)] == list(range(20))


@pytest.mark.rabbitmq
async def test_with_mandatory_off_unroutable_messages_are_dropped_by_the_broker(
    repository: Repository,  # noqa: F811
) -> None:
    await asyncio.to_thread(_store, repository, 5)
    async with AmqpPeer() as peer:
        target = _amqp(exchange=peer.exchange, mandatory=False)
        exporter = TargetExporter(target, repository, sender_for(target))
        try:
            await exporter.tick()
        finally:
            await exporter.sender.close()
    [status] = await ExportService(repository, [target]).status()
    assert status["exported"] == 5 and status["lag"] == 0 and status["failures"] == 0


@pytest.mark.rabbitmq
async def test_a_missing_exchange_fails_naming_it_and_moves_nothing(
    repository: Repository,  # noqa: F811
) -> None:
    await asyncio.to_thread(_store, repository, 3)
    target = _amqp(exchange="hedgerow-test-no-such-exchange")
    exporter = TargetExporter(target, repository, sender_for(target))
    try:
        await exporter.tick()
    finally:
        await exporter.sender.close()
    [status] = await ExportService(repository, [target]).status()
    assert status["exported"] == 0 and status["failing"] == 1
    assert "NOT_FOUND" in status["last_error"] and "no-such-exchange" in status["last_error"]


@pytest.mark.rabbitmq
async def test_amqps_trusts_the_configured_ca_and_presents_the_client_certificate(
    repository: Repository,  # noqa: F811
    test_pki: PKIFiles,
) -> None:
    await asyncio.to_thread(_store, repository, 30)
    server = test_pki.server()
    exporter_cert = test_pki.client("exporter")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(test_pki.ca_file))
    tls.load_cert_chain(server.cert, server.key)
    tls.verify_mode = ssl.CERT_REQUIRED  # no client certificate, no connection
    port = free_port()
    forwarder = Forwarder(port, RABBITMQ, tls=tls)
    await forwarder.accept()
    url = f"amqps://guest:guest@localhost:{port}/"
    async with AmqpPeer() as peer:
        queue = await peer.bind()
        untrusting = _amqp(name="system-trust", url=url, exchange=peer.exchange)
        trusting = _amqp(
            url=url,
            exchange=peer.exchange,
            ca_file=str(test_pki.ca_file),
            cert_file=str(exporter_cert.cert),
            key_file=str(exporter_cert.key),
        )
        refused = TargetExporter(untrusting, repository, sender_for(untrusting))
        exporter = TargetExporter(trusting, repository, sender_for(trusting))
        try:
            await refused.tick()  # the test CA is not in the system's trust store
            await _export_until(exporter, lambda: _exported(repository) == 30, "all thirty")
        finally:
            await refused.sender.close()
            await exporter.sender.close()
            await forwarder.refuse()
        assert [int(m.body) for m in await peer.take(queue)] == list(range(30))
    statuses = {
        s["name"]: s for s in await ExportService(repository, [untrusting, trusting]).status()
    }
    assert statuses["system-trust"]["exported"] == 0
    assert "CERTIFICATE_VERIFY_FAILED" in statuses["system-trust"]["last_error"]
    assert statuses["bus"]["exported"] == 30 and statuses["bus"]["failures"] == 0
