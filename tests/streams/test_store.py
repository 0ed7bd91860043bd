"""FileStore on a real directory: reads across segments, reopen, torn tails, dropped segments."""

from __future__ import annotations

import os
from pathlib import Path

from hedgerow.streams.log import StreamLog
from hedgerow.streams.model import Strategy
from hedgerow.streams.store import FileStore, MemoryStore, StreamStore


def append(log: StreamLog, store: StreamStore, payload: bytes, t: int = 7) -> int:
    plan = log.plan_append(len(payload))
    store.append(plan, t, payload)
    log.commit(plan, t)
    return plan.sequence


def test_file_and_memory_stores_read_the_same_runs(tmp_path: Path) -> None:
    for store in (FileStore.create(tmp_path / "s", {"name": "s"}), MemoryStore()):
        log = StreamLog("s", 100_000, 1024, Strategy.OverwriteOldestData)
        for i in range(200):
            append(log, store, b"m%03d" % i)
        assert len(log.segments) > 5
        got = store.read(37, 100)
        assert [r[0] for r in got] == list(range(37, 137))
        assert [r[2] for r in got] == [b"m%03d" % i for i in range(37, 137)]
        assert all(r[1] == 7 for r in got)
        store.close()


def test_reopen_finds_every_record_and_cuts_a_torn_tail(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    store = FileStore.create(directory, {"name": "s"})
    log = StreamLog("s", 100_000, 2048, Strategy.RejectNewData)
    for i in range(100):
        append(log, store, b"x%d" % i)
    store.close()
    last = sorted(directory.glob("*.seg"))[-1]
    with open(last, "ab") as f:
        f.write(b"\x00\x00\x00\x10garbage")  # half a record: a power cut mid-write

    store, segments = FileStore.open(directory)
    log = StreamLog("s", 100_000, 2048, Strategy.RejectNewData, segments)
    assert (log.oldest, log.newest) == (0, 99)
    assert os.path.getsize(last) == segments[-1].bytes
    assert append(log, store, b"after") == 100
    assert [r[2] for r in store.read(98, 10)] == [b"x98", b"x99", b"after"]
    store.close()


def test_dropped_segments_leave_the_disk(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    store = FileStore.create(directory, {"name": "s"})
    log = StreamLog("s", 4096, 1024, Strategy.OverwriteOldestData)
    for _i in range(500):
        append(log, store, b"y" * 50)
    files = sorted(directory.glob("*.seg"))
    assert len(files) == len(log.segments) <= 5
    assert sum(f.stat().st_size for f in files) == log.total_bytes <= 4096
    assert int(files[0].stem) == log.oldest
    store.close()
