from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from hedgerow.core.errors import SpoolError
from hedgerow.core.spool import RECORD_OVERHEAD, IntakeLog, MemorySpool, Spool, SqliteSpool

Factory = Callable[..., Spool]


@pytest.fixture(params=["memory", "sqlite"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    if request.param == "memory":
        return lambda **kw: MemorySpool(**kw)
    return lambda **kw: SqliteSpool(tmp_path / "spool.db", fsync="normal", **kw)


def items(n: int, start: int = 0, size: int = 10) -> list[tuple[str, bytes, int]]:
    return [("t", str(i).zfill(size).encode(), 1) for i in range(start, start + n)]


def test_in_order_and_removed_only_by_ack(make: Factory) -> None:
    spool = make()
    assert spool.append_many(items(5)) == 5
    first = spool.peek(0, 3)
    assert [r.payload for r in first] == [str(i).zfill(10).encode() for i in range(3)]
    assert [r.payload for r in spool.peek(first[-1].id, 10)][0] == b"0000000003"
    assert spool.stats().depth == 5  # peeking does not remove
    spool.ack([first[0].id, first[2].id])
    assert [r.payload[-1:] for r in spool.peek(0, 10)] == [b"1", b"3", b"4"]
    s = spool.stats()
    assert (s.depth, s.appended, s.acked) == (3, 5, 2)
    assert s.bytes == 3 * (1 + 10 + RECORD_OVERHEAD)


def test_drop_oldest_keeps_the_newest(make: Factory) -> None:
    per = 1 + 10 + RECORD_OVERHEAD
    spool = make(max_bytes=per * 4, overflow="drop-oldest")
    spool.append_many(items(3))
    spool.append_many(items(3, start=3))
    assert [r.payload[-1:] for r in spool.peek(0, 10)] == [b"2", b"3", b"4", b"5"]
    assert spool.stats().dropped_oldest == 2
    assert spool.stats().bytes <= per * 4


def test_drop_newest_refuses_what_does_not_fit(make: Factory) -> None:
    per = 1 + 10 + RECORD_OVERHEAD
    spool = make(max_bytes=per * 4, overflow="drop-newest")
    assert spool.append_many(items(3)) == 3
    assert spool.append_many(items(3, start=3)) == 1
    assert [r.payload[-1:] for r in spool.peek(0, 10)] == [b"0", b"1", b"2", b"3"]
    assert spool.stats().dropped_newest == 2


def test_sqlite_spool_survives_reopen(tmp_path: Path) -> None:
    spool = SqliteSpool(tmp_path / "s.db", fsync="always")
    spool.append_many(items(10))
    spool.ack([r.id for r in spool.peek(0, 4)])
    spool.close()
    again = SqliteSpool(tmp_path / "s.db")
    assert [r.payload[-1:] for r in again.peek(0, 100)] == [str(i).encode() for i in range(4, 10)]
    assert again.stats().depth == 6
    again.append_many(items(1, start=10))
    assert again.peek(0, 100)[-1].payload.endswith(b"10")
    again.close()


def test_disk_full_drops_and_keeps_working(tmp_path: Path) -> None:
    spool = SqliteSpool(tmp_path / "s.db", fsync="normal")
    spool._db.execute("PRAGMA max_page_count = 8")  # the database cannot grow: SQLITE_FULL
    accepted = 0
    for i in range(200):
        accepted += spool.append_many(items(20, start=i * 20, size=200))
    s = spool.stats()
    assert s.dropped_disk_full > 0
    assert accepted + s.dropped_disk_full == 4000
    assert s.depth == accepted == len(spool.peek(0, 10_000))
    spool.ack([r.id for r in spool.peek(0, 10_000)])
    assert spool.append_many(items(1)) == 1  # room again: appends work


def test_unusable_path_is_a_spool_error(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(SpoolError):
        SqliteSpool(tmp_path / "dir.db")


def test_intake_log_recovers_all_but_a_torn_tail(tmp_path: Path) -> None:
    log = IntakeLog(tmp_path / "intake.log")
    assert log.write("a/b", b"one", 1) == 1
    assert log.write("c", b"\x00two", 0) == 2
    assert log.write("d", b"three", 1) == 3
    log.close()
    with (tmp_path / "intake.log").open("ab") as f:
        f.write(b"\x00\x00\x00\x40garbage")  # a record cut short by a crash
    items, last = IntakeLog.recover(tmp_path / "intake.log")
    assert items == [("a/b", b"one", 1), ("c", b"\x00two", 0), ("d", b"three", 1)] and last == 3
    # records the spool already committed (its mark) are skipped
    assert IntakeLog.recover(tmp_path / "intake.log", after=2) == ([("d", b"three", 1)], 3)
    again = IntakeLog(tmp_path / "intake.log", start=last)
    again.reset()
    assert IntakeLog.recover(tmp_path / "intake.log") == ([], 0)
    assert again.write("x", b"y", 1) == 4
    again.clear()
    assert IntakeLog.recover(tmp_path / "intake.log", after=7) == ([], 7)
    again.close()


def test_sqlite_spool_keeps_the_intake_mark(tmp_path: Path) -> None:
    spool = SqliteSpool(tmp_path / "s.db")
    assert spool.mark() == 0
    spool.append_many(items(2), mark=41)
    spool.append_many([], mark=42)
    spool.close()
    assert SqliteSpool(tmp_path / "s.db").mark() == 42


WRITER = """
import sys
from pathlib import Path
from hedgerow.core.spool import SqliteSpool
spool = SqliteSpool(Path(sys.argv[1]), fsync="normal")
i = 0
while True:
    spool.append_many([("t", str(i + k).encode(), 1) for k in range(10)])
    i += 10
    print(i, flush=True)
"""


def test_sqlite_spool_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    committed = 0
    for line in proc.stdout:
        committed = int(line)
        if committed >= 3000:
            break
    proc.kill()
    proc.wait()
    proc.stdout.close()
    spool = SqliteSpool(path)
    payloads = [int(r.payload) for r in spool.peek(0, 1_000_000)]
    assert len(payloads) >= committed  # everything reported committed is there
    assert payloads == list(range(len(payloads)))  # in order, no gaps
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    spool.close()


def test_ack_scattered_and_unknown_ids(make: Factory) -> None:
    spool = make()
    spool.append_many(items(40))
    ids = [r.id for r in spool.peek(0, 100)]
    spool.ack(ids[::2] + [10_000_000])  # 20 runs of one id each, and one that is not there
    left = spool.peek(0, 100)
    assert [r.id for r in left] == ids[1::2]
    s = spool.stats()
    assert (s.depth, s.acked) == (20, 20)
    assert s.bytes == 20 * (1 + 10 + RECORD_OVERHEAD)
    spool.ack(ids)  # already-removed ids are ignored
    assert spool.stats().depth == 0 and spool.stats().bytes == 0
