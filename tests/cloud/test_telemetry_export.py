"""Telemetry export: the batch rule (pure), the config, and real targets — a webhook
server on a loopback port and a private Mosquitto over TLS — over SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from hedgerow.backoff import BackoffPolicy
from hedgerow.cloud import config as config_module
from hedgerow.cloud.domain import Message
from hedgerow.cloud.errors import ConfigError
from hedgerow.cloud.exporters import EXPORT_HEADER, IDS_HEADER, TargetExporter, sender_for
from hedgerow.cloud.services.exports import ExportService
from hedgerow.cloud.storage.database import create_engine, migrate
from hedgerow.cloud.storage.repository import Repository
from hedgerow.cloud.telemetry_export import (
    Batch,
    ExportConfigError,
    ExportTarget,
    export_target,
    plan_batch,
    shown_url,
    webhook_body,
)
from tests.client.conftest import (  # noqa: F401  (fixtures)
    Mosquitto,
    MosquittoFactory,
    mosquitto,
    tls_options,
    wait_for_port,
)
from tests.conftest import TestPKI as PKIFiles
from tests.conftest import free_port

from .export_peers import Receiver, webhook_server

WAIT = 20.0
FAST_RETRY = BackoffPolicy(base=0.05, cap=0.2)


def _m(i: int, topic: str = "sensors/t") -> Message:
    return Message(i, topic, str(i).encode(), "pi-1", 1000.0 + i)


def _target(**changes: object) -> ExportTarget:
    fields: dict[str, object] = {"name": "lake", "kind": "webhook", "url": "https://h.example/x"}
    fields.update(changes)
    return export_target(**fields)  # type: ignore[arg-type]


# ---- the batch rule (pure) ------------------------------------------------------------------


def test_a_batch_takes_rows_in_order_up_to_its_size() -> None:
    batch = plan_batch(10, [_m(i) for i in range(11, 20)], _target(batch_size=4))
    assert [m.id for m in batch.messages] == [11, 12, 13, 14]
    assert batch.cursor == 14 and batch.lost == 0 and batch.hole is None


def test_a_hole_stops_the_batch_until_it_is_known_settled() -> None:
    rows = [_m(1), _m(2), _m(5), _m(6)]
    waiting = plan_batch(0, rows, _target())
    assert [m.id for m in waiting.messages] == [1, 2]
    assert waiting.cursor == 2 and waiting.hole == 3 and waiting.lost == 0
    # once no write can fill ids 3..4 any more, they are skipped and counted lost
    skipped = plan_batch(2, rows[2:], _target(), settled_hole=3)
    assert [m.id for m in skipped.messages] == [5, 6]
    assert skipped.cursor == 6 and skipped.lost == 2 and skipped.hole is None
    # a second hole in the same rows is looked at again
    again = plan_batch(2, [_m(5), _m(7)], _target(), settled_hole=3)
    assert [m.id for m in again.messages] == [5] and again.hole == 6 and again.lost == 2


def test_rows_outside_the_filter_move_the_cursor_without_sending() -> None:
    rows = [_m(1, "other/a"), _m(2, "sensors/t"), _m(3, "other/b")]
    batch = plan_batch(0, rows, _target(topic_filter="sensors/#"))
    assert [m.id for m in batch.messages] == [2]
    assert batch.cursor == 3
    quiet = plan_batch(3, [_m(4, "other/c")], _target(topic_filter="sensors/#"))
    assert quiet == Batch((), 4, 0) and not quiet.moves


def test_a_target_that_saw_an_empty_table_counts_nothing_lost() -> None:
    first = plan_batch(None, [_m(7), _m(8)], _target())
    assert first.messages == () and first.hole == 1 and first.cursor is None
    settled = plan_batch(None, [_m(7), _m(8)], _target(), settled_hole=1)
    assert [m.id for m in settled.messages] == [7, 8] and settled.lost == 0


def test_the_webhook_body_carries_text_and_bytes() -> None:
    body = webhook_body("lake", [_m(1), Message(2, "t", b"\xff\x00", "pi-2", 5.5)])
    assert body == (
        b'{"target":"lake","messages":[{"id":1,"topic":"sensors/t","core":"pi-1","ts":1001.0,'
        b'"payload":"1","encoding":"utf-8"},{"id":2,"topic":"t","core":"pi-2","ts":5.5,'
        b'"payload":"/wA=","encoding":"base64"}]}'
    )


# ---- config -----------------------------------------------------------------------------


def test_targets_are_read_from_config_toml(tmp_path: Path) -> None:
    text = """
[telemetry]
retention_days = 2
[[telemetry.export]]
name = "lake"
kind = "webhook"
url = "https://hooks.example.org/t?key=s3cret"
secret = "k"
headers = { Authorization = "Bearer abc" }
[[telemetry.export]]
name = "broker"
kind = "mqtt"
url = "mqtts://user:pw@broker.example.org:8883"
topic_filter = "sensors/#"
topic = "export/{core}/{topic}"
ca_file = "pki/other-ca.pem"
username = "exporter"
password = "pw"
"""
    loaded = config_module.from_toml(tmp_path, _toml(text))
    lake, broker = loaded.exports
    assert lake.kind == "webhook" and lake.headers == (("Authorization", "Bearer abc"),)
    assert broker.port == 8883 and broker.tls and broker.topic_filter == "sensors/#"
    assert broker.ca_file == str(tmp_path / "pki/other-ca.pem")
    assert shown_url(lake.url) == "https://hooks.example.org/t"
    assert shown_url(broker.url) == "mqtts://broker.example.org:8883"
    # written back and read again: the same targets
    again = config_module.from_toml(tmp_path, loaded.to_toml())
    assert again.exports == loaded.exports


@pytest.mark.parametrize(
    ("entry", "field", "says"),
    [
        ('name = "a"\nkind = "kafka"\nurl = "x"', "kind", 'write kind = "webhook"'),
        ('name = "a"\nkind = "webhook"\nurl = "ftp://h/x"', "url", "https://"),
        ('name = "a"\nkind = "mqtt"\nurl = "mqtt://h:1883"\ntopic = "x/{device}"', "topic",
         "use {topic} and {core}"),
        ('name = "a"\nkind = "mqtt"\nurl = "mqtt://h"\nsecret = "s"', "secret", "for webhooks"),
        ('name = "a"\nkind = "webhook"\nurl = "https://h"\nbatch_size = 0', "batch_size", "1..10000"),
        ('name = "a"\nkind = "mqtt"\nurl = "mqtt://h"\ntopic_filter = "a/#/b"', "topic_filter",
         "not an MQTT topic filter"),
        ('name = "a b"\nkind = "mqtt"\nurl = "mqtt://h"', "name", "letters, digits"),
        ('name = "a"\nkind = "mqtt"\nurl = "mqtt://h"\nprotocol = "4"', "protocol", '"3.1.1"'),
        ('name = "a"\nkind = "mqtt"\nurl = "mqtt://h"\ncert_file = "c.pem"', "key_file",
         "set both"),
    ],
)  # fmt: skip
def test_a_bad_target_is_refused_naming_the_key(
    tmp_path: Path, entry: str, field: str, says: str
) -> None:
    good = '[[telemetry.export]]\nname = "ok"\nkind = "webhook"\nurl = "https://h/x"\n'
    with pytest.raises(ConfigError) as caught:
        config_module.from_toml(tmp_path, _toml(good + "[[telemetry.export]]\n" + entry))
    assert caught.value.field == f"telemetry.export[1].{field}"
    assert says in caught.value.message
    assert str(tmp_path / "config.toml") in caught.value.message


def test_unknown_keys_and_duplicate_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        config_module.from_toml(
            tmp_path,
            _toml('[[telemetry.export]]\nname = "a"\nkind = "mqtt"\nurl = "mqtt://h"\ntopc = "x"'),
        )
    assert (
        'telemetry.export[0].topc: unknown key in [telemetry.export[0]]; did you mean "topic"'
        in (caught.value.message)
    )
    two = '[[telemetry.export]]\nname = "a"\nkind = "mqtt"\nurl = "mqtt://h"\n'
    with pytest.raises(ConfigError, match="two targets are named 'a'"):
        config_module.from_toml(tmp_path, _toml(two + two))
    with pytest.raises(ExportConfigError, match="password without username"):
        _target(kind="mqtt", url="mqtt://h", password="p")


def _toml(text: str) -> dict[str, object]:
    import tomllib

    return tomllib.loads(text)


# ---- against real peers ---------------------------------------------------------------------


@pytest.fixture
def repository(tmp_path: Path, database_url: str) -> Iterator[Repository]:
    url = database_url or f"sqlite:///{tmp_path / 'cloud.db'}"
    engine = create_engine(config_module.normalise_database_url(url))
    migrate(engine)
    try:
        yield Repository(engine)
    finally:
        engine.dispose()


def _store(repository: Repository, count: int, start: int = 0, topic: str = "sensors/t") -> None:
    now = time.time()
    repository.insert_messages(
        [(topic, str(start + i).encode(), "pi-1", now) for i in range(count)]
    )


def _exported(repository: Repository) -> int:
    return sum(c.exported for c in repository.export_cursors())


async def _export_until(exporter: TargetExporter, done: object, what: str) -> None:
    """Tick (as the job would) until ``done()`` holds, within ``WAIT`` seconds."""
    async with asyncio.timeout(WAIT):
        while not done():  # type: ignore[operator]
            await exporter.tick()
            await asyncio.sleep(0.01)
    assert done(), what  # type: ignore[operator]


async def test_webhook_gets_every_message_in_order_signed_despite_500s(
    repository: Repository,
) -> None:
    total = 1_000
    await asyncio.to_thread(_store, repository, total)
    stored = [m.id for m in repository.messages_after(None, 10_000)]
    receiver = Receiver("s3cret", fail_next=4)
    with webhook_server(receiver, free_port()) as url:
        target = _target(url=url, secret="s3cret", batch_size=128, headers={"X-Tenant": "t1"})
        exporter = TargetExporter(target, repository, sender_for(target), retry=FAST_RETRY)
        try:
            await _export_until(exporter, lambda: receiver.distinct() >= set(stored), "all sent")
        finally:
            await exporter.sender.close()
    assert receiver.refused == 4 and receiver.bad_signatures == 0
    assert receiver.ids == stored  # in order, no gap, no duplicate (a 500 took nothing)
    assert {int(p) for p in receiver.payloads.values()} == set(range(total))
    assert receiver.headers[0]["x-tenant"] == "t1"
    assert receiver.headers[0][EXPORT_HEADER.lower()] == "lake"
    assert receiver.headers[0][IDS_HEADER.lower()] == f"{stored[0]}-{stored[127]}"
    [status] = await ExportService(repository, [target]).status()
    assert status["cursor"] == stored[-1] and status["lag"] == 0
    assert status["exported"] == total and status["lost"] == 0
    assert status["failures"] == 4 and status["failing"] == 0
    assert status["last_error"] == "HTTP 500" and status["last_success_at"] is not None


async def test_a_wrong_secret_never_moves_the_cursor(repository: Repository) -> None:
    await asyncio.to_thread(_store, repository, 10)
    receiver = Receiver("right")
    with webhook_server(receiver, free_port()) as url:
        target = _target(url=url, secret="wrong")
        exporter = TargetExporter(target, repository, sender_for(target), retry=FAST_RETRY)
        try:
            await _export_until(exporter, lambda: receiver.bad_signatures >= 3, "three tries")
        finally:
            await exporter.sender.close()
    assert receiver.ids == []
    [status] = await ExportService(repository, [target]).status()
    assert status["exported"] == 0 and status["lag"] == 10 and status["failing"] >= 3
    assert status["last_error"] == "HTTP 401"


async def test_messages_deleted_before_export_are_counted_lost(
    repository: Repository, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = Receiver()
    with webhook_server(receiver, free_port()) as url:
        target = _target(url=url)
        await asyncio.to_thread(_store, repository, 5)
        cursor = repository.open_export("lake", newest=False)  # the target exists already
        assert cursor.cursor is not None
        # five more, then the first eight go (retention) before the target is reached
        await asyncio.to_thread(_store, repository, 5, 5)
        ids = [m.id for m in repository.messages_after(None, 100)]
        with repository.engine.begin() as connection:
            connection.execute(sa.text("DELETE FROM messages WHERE id <= :id"), {"id": ids[7]})
        exporter = TargetExporter(target, repository, sender_for(target))
        try:
            await _export_until(exporter, lambda: receiver.distinct() >= set(ids[8:]), "rest")
        finally:
            await exporter.sender.close()
    [status] = await ExportService(repository, [target]).status()
    assert status["lost"] == 8 and status["exported"] == 2 and status["lag"] == 0
    assert "telemetry_export.lost target=lake count=8" in caplog.text


async def test_a_new_target_can_start_at_the_newest_message(repository: Repository) -> None:
    await asyncio.to_thread(_store, repository, 20)
    receiver = Receiver()
    with webhook_server(receiver, free_port()) as url:
        target = _target(url=url, start="newest")
        exporter = TargetExporter(target, repository, sender_for(target))
        try:
            await exporter.tick()
            await asyncio.to_thread(_store, repository, 3, 100)
            await _export_until(exporter, lambda: len(receiver.ids) >= 3, "the new three")
        finally:
            await exporter.sender.close()
    assert sorted(int(p) for p in receiver.payloads.values()) == [100, 101, 102]


# ---- MQTT: a private Mosquitto over TLS --------------------------------------------------------


@pytest.fixture
async def subscriber(
    mosquitto: MosquittoFactory,  # noqa: F811
    tls_options: dict[str, object],  # noqa: F811
    test_pki: PKIFiles,
    tmp_path: Path,
) -> AsyncIterator[tuple[int, Path, subprocess.Popen[bytes]]]:
    """A TLS Mosquitto and a mosquitto_sub (QoS 1) on ``export/#``, subscribed."""
    server = mosquitto(**tls_options)
    out = tmp_path / "sub.out"
    with out.open("wb") as stream:
        process = subprocess.Popen(
            ["stdbuf", "-oL", "mosquitto_sub", "-h", "localhost", "-p", str(server.port), "--cafile",
             str(test_pki.ca_file), "-q", "1", "-t", "export/#", "-v", "-d", "-i", "sub-1"],
            stdout=stream, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        async with asyncio.timeout(WAIT):
            while "SUBACK" not in out.read_text(errors="replace"):
                assert process.poll() is None, out.read_text()
                await asyncio.sleep(0.02)
        yield server.port, out, process
    finally:
        process.terminate()
        process.wait(5)


def _received(out: Path) -> list[tuple[str, str]]:
    lines = out.read_text(errors="replace").splitlines()
    return [tuple(line.split(" ", 1)) for line in lines if line.startswith("export/")]  # type: ignore[misc]


@pytest.mark.mosquitto
async def test_mqtt_target_gets_every_message_over_tls(
    repository: Repository,
    subscriber: tuple[int, Path, subprocess.Popen[bytes]],
    test_pki: PKIFiles,
) -> None:
    port, out, _ = subscriber
    total = 600
    await asyncio.to_thread(_store, repository, total // 2, 0, "sensors/a")
    await asyncio.to_thread(_store, repository, 10, 10_000, "other/x")  # outside the filter
    await asyncio.to_thread(_store, repository, total // 2, total // 2, "sensors/b")
    target = export_target(
        name="broker",
        kind="mqtt",
        url=f"mqtts://localhost:{port}",
        topic_filter="sensors/#",
        topic="export/{core}/{topic}",
        ca_file=str(test_pki.ca_file),
        batch_size=100,
    )
    exporter = TargetExporter(target, repository, sender_for(target))
    try:
        await _export_until(exporter, lambda: len(_received(out)) >= total, "all at mosquitto_sub")
    finally:
        await exporter.sender.close()
    got = _received(out)
    assert [int(p) for _, p in got] == list(range(total))  # in order, nothing else
    assert {t for t, _ in got} == {"export/pi-1/sensors/a", "export/pi-1/sensors/b"}
    [status] = await ExportService(repository, [target]).status()
    assert status["exported"] == total and status["lag"] == 0 and status["failures"] == 0


@pytest.mark.mosquitto
async def test_mqtt_target_that_is_down_is_retried_then_gets_everything(
    repository: Repository,
    tmp_path: Path,
) -> None:
    await asyncio.to_thread(_store, repository, 50)
    port = free_port()
    target = export_target(name="b", kind="mqtt", url=f"mqtt://127.0.0.1:{port}", timeout_s=2)
    exporter = TargetExporter(target, repository, sender_for(target), retry=FAST_RETRY)
    try:
        for _ in range(3):
            exporter.retry_at = 0.0
            await exporter.tick()
        [status] = await ExportService(repository, [target]).status()
        assert status["failing"] == 3 and "cannot connect" in status["last_error"]
        assert status["exported"] == 0 and status["lag"] == 50
        with mosquitto_on(port, tmp_path):
            await _export_until(
                exporter,
                lambda: _exported(repository) == 50,
                "all fifty acknowledged",
            )
    finally:
        await exporter.sender.close()
    [status] = await ExportService(repository, [target]).status()
    assert status["failing"] == 0 and status["lag"] == 0


@contextlib.contextmanager
def mosquitto_on(port: int, directory: Path) -> Iterator[Mosquitto]:
    """A private Mosquitto on a port chosen before it starts (the target's URL names it)."""
    conf = directory / "late-mosquitto.conf"
    log = directory / "late-mosquitto.log"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\n"
    )
    with log.open("wb") as stream:
        process = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=stream, stderr=stream)
    server = Mosquitto(port, process, log)
    try:
        wait_for_port(port, process, log)
        yield server
    finally:
        server.stop()


@pytest.mark.postgres
async def test_a_write_still_in_progress_is_waited_for_not_skipped(pg_schema: str) -> None:
    """PostgreSQL hands out ids when a write starts: a later write can commit first. The
    export waits at the hole until the earlier write ends, and then sends its row too."""
    from .conftest import pg_url

    engine = create_engine(config_module.normalise_database_url(pg_url(pg_schema)))
    migrate(engine)
    repository = Repository(engine)
    receiver = Receiver()
    slow = engine.connect()
    try:
        with webhook_server(receiver, free_port()) as url:
            target = _target(url=url)
            await asyncio.to_thread(_store, repository, 2)  # ids 1, 2: sent
            exporter = TargetExporter(target, repository, sender_for(target), hole_grace_s=0.0)
            await _export_until(exporter, lambda: len(receiver.ids) == 2, "the first two")
            slow.begin()  # takes id 3 and does not commit yet
            slow.execute(
                sa.text("INSERT INTO messages (topic, payload, core, ts) VALUES ('s', 'x', 'c', 1)")
            )
            await asyncio.to_thread(_store, repository, 2, 10)  # ids 4, 5 committed
            for _ in range(5):
                await exporter.tick()
            assert receiver.ids == [1, 2]  # not past the hole while id 3 may still come
            assert exporter.hole is not None and exporter.hole[0] == 3
            slow.commit()
            await _export_until(exporter, lambda: len(receiver.ids) == 5, "3, then 4 and 5")
        assert receiver.ids == [1, 2, 3, 4, 5]
        [status] = await ExportService(repository, [target]).status()
        assert status["lost"] == 0
    finally:
        slow.close()
        engine.dispose()


@pytest.mark.mosquitto
@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_mqtt_5_exports_carry_the_id_for_receivers_to_dedupe(
    repository: Repository,
    mosquitto: MosquittoFactory,  # noqa: F811
    protocol: str,
) -> None:
    from hedgerow.client import Client

    server = mosquitto()
    await asyncio.to_thread(_store, repository, 5)
    ids = [m.id for m in repository.messages_after(None, 10)]
    target = export_target(
        name="b", kind="mqtt", url=f"mqtt://127.0.0.1:{server.port}", protocol=protocol
    )
    exporter = TargetExporter(target, repository, sender_for(target))
    async with Client("127.0.0.1", server.port, client_id="receiver") as receiver:
        await receiver.subscribe("sensors/#", qos=1)
        try:
            await _export_until(exporter, lambda: _exported(repository) == 5, "five")
        finally:
            await exporter.sender.close()
        async with asyncio.timeout(WAIT):
            got = [await receiver.get_message() for _ in ids]
    assert [m.payload for m in got] == [b"0", b"1", b"2", b"3", b"4"]
    props = [dict(m.properties.user_properties) for m in got]
    if protocol == "5":
        assert [int(p["hedgerow-id"]) for p in props] == ids
        assert {p["hedgerow-core"] for p in props} == {"pi-1"}
    else:
        assert props == [{}] * 5


async def test_webhook_over_https_trusts_the_configured_ca_only(
    repository: Repository, test_pki: PKIFiles, tmp_path: Path
) -> None:
    from hedgerow import pki

    await asyncio.to_thread(_store, repository, 30)
    files = test_pki.server()
    tls = pki.server_context(str(files.cert), str(files.key))
    receiver = Receiver()
    with webhook_server(receiver, free_port(), tls) as url:
        assert url.startswith("https://localhost:")
        other_ca = tmp_path / "other-ca.pem"
        other_ca.write_bytes(pki.make_ca("Someone Else").cert_pem)
        wrong = _target(name="wrong", url=url, ca_file=str(other_ca))
        refused = TargetExporter(wrong, repository, sender_for(wrong))
        right = _target(name="right", url=url, ca_file=str(test_pki.ca_file))
        exporter = TargetExporter(right, repository, sender_for(right))
        try:
            await refused.tick()
            await _export_until(exporter, lambda: len(receiver.ids) == 30, "thirty over TLS")
        finally:
            await refused.sender.close()
            await exporter.sender.close()
    wrong_status, right_status = await ExportService(repository, [wrong, right]).status()
    assert "CERTIFICATE_VERIFY_FAILED" in str(wrong_status["last_error"])
    assert wrong_status["exported"] == 0 and right_status["exported"] == 30


class _Refusing:
    """A target that never acknowledges (in memory)."""

    def __init__(self) -> None:
        self.tries = 0

    async def send(self, messages: object) -> None:
        from hedgerow.cloud.exporters import ExportFailed

        self.tries += 1
        raise ExportFailed("x", "refused")

    async def close(self) -> None:
        pass


async def test_a_failing_target_is_retried_on_a_capped_jittered_backoff(
    repository: Repository,
) -> None:
    from hedgerow.clock import ManualClock

    await asyncio.to_thread(_store, repository, 3)
    clock = ManualClock()
    sender = _Refusing()
    draws: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        draws.append((low, high))
        return high  # the ceiling: the schedule's longest delay

    exporter = TargetExporter(
        _target(), repository, sender, clock=clock, uniform=uniform,
        retry=BackoffPolicy(base=1.0, cap=4.0),
    )  # fmt: skip
    waits = []
    for _ in range(5):
        await exporter.tick()
        await exporter.tick()  # too early: not tried again
        waits.append(exporter.retry_at - clock.now())
        clock.advance(exporter.retry_at - clock.now())
    assert sender.tries == 5
    assert waits == [1.0, 2.0, 4.0, 4.0, 4.0]  # doubling, capped
    assert draws == [(0.0, 1.0), (0.0, 2.0), (0.0, 4.0), (0.0, 4.0), (0.0, 4.0)]  # full jitter
    exporter.taken_over()  # a replica taking the job over tries at once
    await exporter.tick()
    assert sender.tries == 6
    assert repository.export_cursors()[0].failures == 6


async def test_the_cursor_moves_only_from_where_it_was(repository: Repository) -> None:
    """Compare and set: a replica that lost the job mid-batch cannot move the cursor back
    over what the new holder did, nor count its batch twice."""
    await asyncio.to_thread(_store, repository, 10)
    ids = [m.id for m in repository.messages_after(None, 100)]
    start = repository.open_export("lake", newest=False).cursor
    assert start == ids[0] - 1
    assert repository.advance_export("lake", start, ids[7], 8, 0)  # the new holder
    assert not repository.advance_export("lake", start, ids[3], 4, 0)  # the old one, late
    [cursor] = repository.export_cursors()
    assert cursor.cursor == ids[7] and cursor.exported == 8
    # a target no longer in config.toml keeps its cursor and is shown as removed
    [shown] = await ExportService(repository, []).status()
    assert shown["name"] == "lake" and not shown["configured"] and shown["lag"] == 2


def test_a_password_in_a_targets_url_stays_out_of_its_repr_and_shown_url() -> None:
    broker = export_target(
        name="broker", kind="mqtt", url="mqtts://user:s3cret@broker.example.org:8883"
    )
    assert "s3cret" not in repr(broker)
    assert shown_url(broker.url) == "mqtts://broker.example.org:8883"
