"""The manager's own rules, in process: config, budget, update, TTL, deletes under a waiting
read, and the heartbeat's view."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from hedgerow.core.config import parse_config
from hedgerow.core.errors import ConfigError
from hedgerow.core.status import Snapshot, heartbeat, prometheus
from hedgerow.streams.errors import InvalidRequest, StreamNotFound
from hedgerow.streams.manager import StreamManager, StreamsSettings
from hedgerow.streams.model import ReadOptions

BASE = """
[core]
name = "pi-1"
group = "g"
[cloud]
https = "https://127.0.0.1:8443"
mqtt = "mqtts://127.0.0.1:8884"
"""


def test_streams_config_defaults_and_errors(tmp_path: Path) -> None:
    c = parse_config(BASE, default_data_dir=tmp_path)
    assert not c.streams.enabled and c.streams.port == 8088
    assert c.streams_dir == tmp_path / "streams"
    c = parse_config(
        BASE + "[streams]\nenabled = true\nport = 9000\ndir = 'st'\nmax_bytes = 4096\n",
        default_data_dir=tmp_path,
    )
    assert (c.streams.enabled, c.streams.port, c.streams.max_bytes) == (True, 9000, 4096)
    assert c.streams_dir == tmp_path / "st"
    for bad, field in (("enabled = 'yes'", "streams.enabled"), ("host = '0.0.0.0'", "streams.host"),
                       ("port = 70000", "streams.port")):  # fmt: skip
        with pytest.raises(ConfigError) as caught:
            parse_config(BASE + f"[streams]\n{bad}\n", default_data_dir=tmp_path)
        assert caught.value.field == field


def stream(name: str, **extra: object) -> dict[str, object]:
    return {"name": name, "strategyOnFull": 1, "persistence": 0, **extra}


async def test_budget_update_and_ttl(tmp_path: Path) -> None:
    now = [1_000_000]
    settings = StreamsSettings(tmp_path, max_bytes=64 * 1024, fsync_interval=0.01)
    async with StreamManager(settings, clock=lambda: now[0]) as manager:
        manager.create(stream("a", maxSize=32 * 1024, streamSegmentSize=1024))
        with pytest.raises(InvalidRequest, match="streams.max_bytes"):
            manager.create(stream("b", maxSize=33 * 1024))
        for _ in range(200):
            await manager.append("a", b"z" * 100)
        before = manager.streams["a"].log.total_bytes
        manager.update(stream("a", maxSize=4096, streamSegmentSize=1024))
        log = manager.streams["a"].log
        assert log.total_bytes <= 4096 < before and log.newest == 199
        assert (
            json.loads((tmp_path / b"a".hex() / "definition.json").read_text())["maxSize"] == 4096
        )

        manager.update(stream("a", maxSize=4096, streamSegmentSize=1024, timeToLiveMillis=60_000))
        now[0] += 61_000
        await manager.append("a", b"fresh")
        async with asyncio.timeout(5):  # the housekeeping task drops the expired segments
            while len(log.segments) > 1:
                await asyncio.sleep(0.01)
        # only the newest segment (where "fresh" went) is left
        assert log.newest == 200 and log.oldest == log.segments[0].first > 150
        assert len(list((tmp_path / b"a".hex()).glob("*.seg"))) == 1


async def test_a_waiting_read_learns_that_its_stream_was_deleted(tmp_path: Path) -> None:
    async with StreamManager(StreamsSettings(tmp_path)) as manager:
        manager.create(stream("gone"))
        reader = asyncio.create_task(manager.read("gone", ReadOptions(0, 1, 1, 30_000)))
        await asyncio.sleep(0)  # let it start waiting
        manager.delete("gone")
        with pytest.raises(StreamNotFound):
            await asyncio.wait_for(reader, 5)
        assert not (tmp_path / b"gone".hex()).exists()


async def test_progress_reaches_the_heartbeat_and_the_metrics(tmp_path: Path) -> None:
    async with StreamManager(StreamsSettings(tmp_path)) as manager:
        manager.create(
            stream(
                "line", exportDefinition={"http": [{"identifier": "c", "uri": "hedgerow://cloud"}]}
            )
        )
        for _ in range(3):
            await manager.append("line", b"x")
        progress = manager.progress()
    assert progress["line"]["newest"] == 2 and progress["line"]["backlog"] == 3  # no cloud yet
    snap = Snapshot("pi-1", 1.0, 0, {}, {"depth": 0}, {}, streams=progress)
    assert json.loads(heartbeat(snap))["streams"] == {"line": {"newest": 2, "backlog": 3}}
    assert 'hedgerow_core_stream{stream="line",field="backlog"} 3' in prometheus(snap)


async def test_unreadable_stream_files_are_kept_and_named_not_overwritten(tmp_path: Path) -> None:
    async with StreamManager(StreamsSettings(tmp_path)) as manager:
        manager.create(stream("keep"))
        await manager.append("keep", b"precious")
    (tmp_path / b"keep".hex() / "definition.json").write_text("{broken")
    async with StreamManager(StreamsSettings(tmp_path)) as manager:
        assert manager.list_streams() == []  # logged, not fatal
        with pytest.raises(InvalidRequest, match="could not be opened"):
            manager.create(stream("keep"))
    segments = list((tmp_path / b"keep".hex()).glob("*.seg"))
    assert segments and b"precious" in segments[0].read_bytes()
