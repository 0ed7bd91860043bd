"""The real SDK clients from PyPI against a real stream manager on a loopback port: the V1
``greengrasssdk.stream_manager`` and the V2 ``stream_manager`` package run the same tests."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from hedgerow.streams.manager import StreamsSettings

from .helpers import ServerThread, running, token_env

SDKS = ("greengrasssdk.stream_manager", "stream_manager")


@pytest.fixture(params=SDKS)
def sm(request: pytest.FixtureRequest) -> ModuleType:
    return importlib.import_module(request.param)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    with running(StreamsSettings(directory=tmp_path / "streams", core="pi-1")) as s:
        yield s


@pytest.fixture
def client(sm: ModuleType, server: ServerThread) -> Iterator[Any]:
    with token_env():
        c = sm.StreamManagerClient(port=server.port)
    try:
        yield c
    finally:
        c.close()


def definition(sm: ModuleType, name: str, **kw: Any) -> Any:
    kw.setdefault("strategy_on_full", sm.StrategyOnFull.RejectNewData)
    return sm.MessageStreamDefinition(name=name, **kw)


@pytest.mark.timeout(400)
def test_append_100000_messages_and_read_them_back_by_offset(sm: ModuleType, client: Any) -> None:
    client.create_message_stream(definition(sm, "telemetry", persistence=sm.Persistence.File))
    total = 100_000
    started = time.monotonic()
    for i in range(total):
        assert client.append_message("telemetry", b"reading-%06d" % i) == i
    elapsed = time.monotonic() - started
    assert elapsed < 300, f"100,000 appends took {elapsed:.0f} s"

    info = client.describe_message_stream("telemetry")
    assert info.storage_status.oldest_sequence_number == 0
    assert info.storage_status.newest_sequence_number == total - 1

    seen = 0
    batch = 2_000
    while seen < total:
        messages = client.read_messages(
            "telemetry",
            sm.ReadMessagesOptions(
                desired_start_sequence_number=seen, min_message_count=1, max_message_count=batch
            ),
        )
        assert len(messages) == min(batch, total - seen)
        for offset, message in enumerate(messages):
            assert message.sequence_number == seen + offset
            assert message.payload == b"reading-%06d" % (seen + offset)
            assert message.stream_name == "telemetry"
        seen += len(messages)
    assert seen == total


def test_reject_new_data_refuses_appends_once_full(sm: ModuleType, client: Any) -> None:
    client.create_message_stream(definition(sm, "small", max_size=1024, stream_segment_size=1024))
    accepted = 0
    with pytest.raises(sm.InvalidRequestException) as caught:
        for i in range(100):
            client.append_message("small", b"x" * 100)
            accepted = i + 1
    assert 0 < accepted < 10
    assert "full" in str(caught.value) and "OverwriteOldestData" in str(caught.value)
    # nothing was lost: every accepted message is still there, in order
    messages = client.read_messages(
        "small", sm.ReadMessagesOptions(min_message_count=accepted, max_message_count=100)
    )
    assert [m.sequence_number for m in messages] == list(range(accepted))


def test_overwrite_oldest_data_drops_whole_old_segments(sm: ModuleType, client: Any) -> None:
    client.create_message_stream(
        definition(
            sm,
            "ring",
            max_size=2048,
            stream_segment_size=1024,
            strategy_on_full=sm.StrategyOnFull.OverwriteOldestData,
        )
    )
    for i in range(50):
        assert client.append_message("ring", b"%03d" % i + b"y" * 97) == i
    status = client.describe_message_stream("ring").storage_status
    assert status.newest_sequence_number == 49
    assert 0 < status.oldest_sequence_number < 49
    assert status.total_bytes <= 2048
    # a read from 0 starts at the oldest message held (the SDKs' contract)
    messages = client.read_messages(
        "ring", sm.ReadMessagesOptions(desired_start_sequence_number=0, max_message_count=100)
    )
    assert messages[0].sequence_number == status.oldest_sequence_number
    assert messages[-1].sequence_number == 49
    assert messages[-1].payload.startswith(b"049")


def test_list_describe_update_delete(sm: ModuleType, client: Any) -> None:
    assert client.list_streams() == []
    client.create_message_stream(definition(sm, "a", persistence=sm.Persistence.Memory))
    client.create_message_stream(definition(sm, "b"))
    assert sorted(client.list_streams()) == ["a", "b"]
    with pytest.raises(sm.InvalidRequestException, match="already exists"):
        client.create_message_stream(definition(sm, "a"))

    info = client.describe_message_stream("a")
    assert info.definition.name == "a"
    assert info.definition.persistence == sm.Persistence.Memory
    assert info.definition.strategy_on_full == sm.StrategyOnFull.RejectNewData
    assert info.storage_status.newest_sequence_number == -1

    client.update_message_stream(
        definition(
            sm,
            "b",
            max_size=4096,
            strategy_on_full=sm.StrategyOnFull.OverwriteOldestData,
        )
    )
    info = client.describe_message_stream("b")
    assert info.definition.max_size == 4096
    assert info.definition.strategy_on_full == sm.StrategyOnFull.OverwriteOldestData
    with pytest.raises(sm.UpdateNotAllowedException, match="persistence"):
        client.update_message_stream(definition(sm, "b", persistence=sm.Persistence.Memory))

    client.delete_message_stream("a")
    assert client.list_streams() == ["b"]
    with pytest.raises(sm.ResourceNotFoundException):
        client.describe_message_stream("a")


def test_unknown_stream_is_resource_not_found_for_every_operation(
    sm: ModuleType, client: Any
) -> None:
    calls = [
        lambda: client.append_message("ghost", b"x"),
        lambda: client.read_messages("ghost"),
        lambda: client.describe_message_stream("ghost"),
        lambda: client.delete_message_stream("ghost"),
        lambda: client.update_message_stream(definition(sm, "ghost")),
    ]
    for call in calls:
        with pytest.raises(sm.ResourceNotFoundException, match="'ghost' does not exist"):
            call()


def test_aws_only_export_types_are_refused_naming_what_to_use(sm: ModuleType, client: Any) -> None:
    exports = [
        sm.ExportDefinition(kinesis=[sm.KinesisConfig(identifier="k", kinesis_stream_name="s")]),
        sm.ExportDefinition(iot_analytics=[sm.IoTAnalyticsConfig(identifier="a", iot_channel="c")]),
        sm.ExportDefinition(iot_sitewise=[sm.IoTSiteWiseConfig(identifier="w")]),
        sm.ExportDefinition(s3_task_executor=[sm.S3ExportTaskExecutorConfig(identifier="s")]),
    ]
    for export in exports:
        with pytest.raises(sm.InvalidRequestException) as caught:
            client.create_message_stream(definition(sm, "x", export_definition=export))
        text = str(caught.value)
        assert "not available in Hedgerow" in text
        assert "hedgerow://cloud" in text and "HTTPConfig" in text
    assert client.list_streams() == []


def test_read_options_min_max_and_not_enough_messages(sm: ModuleType, client: Any) -> None:
    client.create_message_stream(definition(sm, "r", persistence=sm.Persistence.Memory))
    for i in range(10):
        client.append_message("r", b"%d" % i)
    # defaults: one message from the oldest
    assert [m.payload for m in client.read_messages("r")] == [b"0"]
    got = client.read_messages(
        "r", sm.ReadMessagesOptions(desired_start_sequence_number=7, max_message_count=100)
    )
    assert [m.sequence_number for m in got] == [7, 8, 9]
    with pytest.raises(sm.NotEnoughMessagesException, match="at least 5"):
        client.read_messages(
            "r",
            sm.ReadMessagesOptions(
                desired_start_sequence_number=7, min_message_count=5, max_message_count=5
            ),
        )
    started = time.monotonic()
    with pytest.raises(sm.NotEnoughMessagesException):
        client.read_messages(
            "r",
            sm.ReadMessagesOptions(desired_start_sequence_number=10, read_timeout_millis=300),
        )
    assert time.monotonic() - started >= 0.29


def test_a_waiting_read_returns_as_soon_as_the_messages_arrive(
    sm: ModuleType, server: ServerThread, client: Any
) -> None:
    client.create_message_stream(definition(sm, "poll", persistence=sm.Persistence.Memory))
    with token_env():
        reader = sm.StreamManagerClient(port=server.port)
    result: list[Any] = []
    try:
        thread = threading.Thread(
            target=lambda: result.append(
                reader.read_messages(
                    "poll",
                    sm.ReadMessagesOptions(
                        min_message_count=3, max_message_count=3, read_timeout_millis=30_000
                    ),
                )
            )
        )
        started = time.monotonic()
        thread.start()
        for i in range(3):
            # the same connection keeps working while another client's read waits
            assert client.append_message("poll", b"p%d" % i) == i
        thread.join(timeout=30)
        assert not thread.is_alive()
        assert time.monotonic() - started < 10
        assert [m.payload for m in result[0]] == [b"p0", b"p1", b"p2"]
    finally:
        reader.close()


@pytest.mark.parametrize("token", [None, "not-the-token"])
def test_a_client_without_the_right_token_is_refused(
    sm: ModuleType, server: ServerThread, token: str | None
) -> None:
    # in a child process: the SDK leaves its socket and loop behind when connect fails
    code = (
        f"import {sm.__name__} as sm\n"
        "try:\n"
        f"    sm.StreamManagerClient(port={server.port})\n"
        "except sm.ConnectFailedException:\n"
        "    print('refused')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "AWS_CONTAINER_AUTHORIZATION_TOKEN"}
    if token is not None:
        env["AWS_CONTAINER_AUTHORIZATION_TOKEN"] = token
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == "refused", done.stderr
