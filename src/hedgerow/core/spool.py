"""The durable spool between the router and the cloud connector.

Everything routed to ``cloud`` is appended here and stays until the cloud acknowledged it
(PUBACK); ``peek`` returns records in order, ``ack`` removes them by id. After a crash the
connector simply peeks from the start again: unacknowledged records are re-sent
(at-least-once; the cloud counts duplicates).

Bounded by size (``max_bytes``, counted as topic + payload + a fixed overhead). When an
append does not fit, the overflow policy applies:

* ``drop-oldest`` (default): the oldest records are removed to make room (``dropped_oldest``);
* ``drop-newest``: the new record is refused (``dropped_newest``).

A full disk is treated like ``drop-newest`` (``dropped_disk_full``): the core keeps running.

``SqliteSpool`` fsync policy (``spool.fsync``), SQLite in WAL mode:

* ``always`` – ``synchronous=FULL``: every commit is fsynced; survives power loss;
* ``normal`` – ``synchronous=NORMAL``: commits reach the OS at once (survive ``kill -9``),
  fsync only at checkpoints, so a power loss may lose the last commits;
* ``off`` – ``synchronous=OFF``: the OS decides.

Callers batch appends (one transaction per event-loop tick, see ``SpoolWriter`` in
``hedgerow.core.router``), so even ``always`` costs one fsync per batch, not per message.
Acknowledgements are committed without fsync under every policy: losing one to a power
cut only means that record is sent again (a duplicate, never a loss).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import struct
import zlib
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .config import FsyncPolicy, Overflow
from .errors import SpoolError

log = logging.getLogger(__name__)

#: Bytes counted per record on top of topic and payload (row and index overhead).
RECORD_OVERHEAD = 32

Item = tuple[str, bytes, int]


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    id: int
    topic: str
    payload: bytes
    qos: int


@dataclass(frozen=True, slots=True)
class SpoolStats:
    depth: int
    bytes: int
    appended: int
    acked: int
    dropped_oldest: int
    dropped_newest: int
    dropped_disk_full: int


def record_size(topic: str, payload: bytes) -> int:
    return len(topic) + len(payload) + RECORD_OVERHEAD


class Spool(Protocol):
    max_bytes: int
    overflow: Overflow

    def append_many(self, items: Sequence[Item], mark: int | None = None) -> int:
        """Append in order; returns how many were accepted (the rest were dropped, counted).

        ``mark`` (the intake log's sequence number of the last item) is stored in the same
        transaction; ``mark()`` returns it, so a recovery skips what was committed already.
        """
        ...

    def mark(self) -> int: ...

    def peek(self, after_id: int, limit: int) -> list[SpoolRecord]: ...

    def ack(self, ids: Iterable[int]) -> None: ...

    def stats(self) -> SpoolStats: ...

    def close(self) -> None: ...


class _Counters:
    def __init__(self) -> None:
        self.appended = 0
        self.acked = 0
        self.dropped_oldest = 0
        self.dropped_newest = 0
        self.dropped_disk_full = 0


class MemorySpool:
    """The spool in memory: same behaviour, nothing survives the process."""

    def __init__(
        self, max_bytes: int = 64 * 1024 * 1024, overflow: Overflow = "drop-oldest"
    ) -> None:
        self.max_bytes = max_bytes
        self.overflow: Overflow = overflow
        self._records: deque[SpoolRecord] = deque()
        self._acked: set[int] = set()
        self._next_id = 1
        self._mark = 0
        self._bytes = 0
        self._c = _Counters()

    def mark(self) -> int:
        return self._mark

    def append_many(self, items: Sequence[Item], mark: int | None = None) -> int:
        if mark is not None:
            self._mark = mark
        accepted = 0
        for topic, payload, qos in items:
            size = record_size(topic, payload)
            if size > self.max_bytes:
                self._c.dropped_newest += 1
                continue
            if self._bytes + size > self.max_bytes:
                if self.overflow == "drop-newest":
                    self._c.dropped_newest += 1
                    continue
                while self._records and self._bytes + size > self.max_bytes:
                    old = self._records.popleft()
                    self._bytes -= record_size(old.topic, old.payload)
                    self._c.dropped_oldest += 1
            self._records.append(SpoolRecord(self._next_id, topic, payload, qos))
            self._next_id += 1
            self._bytes += size
            accepted += 1
        self._c.appended += accepted
        return accepted

    def peek(self, after_id: int, limit: int) -> list[SpoolRecord]:
        out: list[SpoolRecord] = []
        for record in self._records:
            if record.id > after_id:
                out.append(record)
                if len(out) >= limit:
                    break
        return out

    def ack(self, ids: Iterable[int]) -> None:
        wanted = set(ids)
        if not wanted:
            return
        kept: deque[SpoolRecord] = deque()
        for record in self._records:
            if record.id in wanted:
                self._bytes -= record_size(record.topic, record.payload)
                self._c.acked += 1
            else:
                kept.append(record)
        self._records = kept

    def stats(self) -> SpoolStats:
        c = self._c
        return SpoolStats(
            len(self._records), self._bytes, c.appended, c.acked, c.dropped_oldest, c.dropped_newest,
            c.dropped_disk_full,
        )  # fmt: skip

    def close(self) -> None:
        return None


_SYNCHRONOUS = {"always": "FULL", "normal": "NORMAL", "off": "OFF"}
#: ``DELETE ... RETURNING`` (SQLite 3.35+) saves a SELECT per acknowledgement batch.
_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)


def _id_ranges(ids: Sequence[int]) -> list[tuple[str, Sequence[int]]]:
    """WHERE clauses for sorted ids: ``BETWEEN`` per contiguous run (the usual case: acks
    come in order), ``IN`` chunks when the ids are scattered."""
    runs: list[tuple[int, int]] = []
    for i in ids:
        if runs and i == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    if len(runs) <= 8:
        return [("id BETWEEN ? AND ?", run) for run in runs]
    return [
        (f"id IN ({','.join('?' * len(chunk))})", chunk)
        for chunk in (ids[start : start + 500] for start in range(0, len(ids), 500))
    ]


class SqliteSpool:
    """The spool in an SQLite database (WAL); survives ``kill -9`` (and power loss with
    ``fsync="always"``)."""

    def __init__(
        self,
        path: Path,
        max_bytes: int = 64 * 1024 * 1024,
        overflow: Overflow = "drop-oldest",
        fsync: FsyncPolicy = "always",
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.overflow: Overflow = overflow
        self._c = _Counters()
        self._sync = _SYNCHRONOUS[fsync]
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={_SYNCHRONOUS[fsync]}")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS spool (id INTEGER PRIMARY KEY AUTOINCREMENT,"
                " topic TEXT NOT NULL, payload BLOB NOT NULL, qos INTEGER NOT NULL,"
                " size INTEGER NOT NULL)"
            )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)"
            )
            row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM spool").fetchone()
            mark = self._db.execute("SELECT value FROM meta WHERE key = 'intake_mark'").fetchone()
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot open the spool at {path}: {exc}", str(path)) from exc
        self._depth = int(row[0])
        self._bytes = int(row[1])
        self._mark = int(mark[0]) if mark else 0

    def mark(self) -> int:
        return self._mark

    def append_many(self, items: Sequence[Item], mark: int | None = None) -> int:
        rows: list[tuple[str, bytes, int, int]] = []
        incoming = 0
        for topic, payload, qos in items:
            size = record_size(topic, payload)
            if size > self.max_bytes:
                self._c.dropped_newest += 1
                continue
            rows.append((topic, payload, qos, size))
            incoming += size
        if not rows and mark is None:
            return 0
        db = self._db
        freed_bytes = freed_rows = 0
        try:
            db.execute("BEGIN IMMEDIATE")
            if self._bytes + incoming > self.max_bytes:
                if self.overflow == "drop-newest":
                    room = self.max_bytes - self._bytes
                    kept: list[tuple[str, bytes, int, int]] = []
                    for row in rows:
                        if row[3] <= room:
                            kept.append(row)
                            room -= row[3]
                        else:
                            break  # keep order: nothing after a refused record
                    self._c.dropped_newest += len(rows) - len(kept)
                    rows = kept
                    incoming = sum(r[3] for r in rows)
                else:
                    need = self._bytes + incoming - self.max_bytes
                    last_id = None
                    for row_id, size in db.execute("SELECT id, size FROM spool ORDER BY id"):
                        freed_bytes += size
                        freed_rows += 1
                        last_id = row_id
                        if freed_bytes >= need:
                            break
                    if last_id is not None:
                        db.execute("DELETE FROM spool WHERE id <= ?", (last_id,))
                    if freed_bytes < need:  # the batch alone overflows: drop its oldest too
                        excess = need - freed_bytes
                        while rows and excess > 0:
                            excess -= rows.pop(0)[3]
                            self._c.dropped_oldest += 1
                        incoming = sum(r[3] for r in rows)
            db.executemany(
                "INSERT INTO spool (topic, payload, qos, size) VALUES (?, ?, ?, ?)", rows
            )
            if mark is not None:
                db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('intake_mark', ?)", (mark,)
                )
            db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            self._rollback()
            if "full" in str(exc).lower():
                self._c.dropped_disk_full += len(rows)
                log.warning("core.spool.disk_full dropped=%d error=%s", len(rows), exc)
                return 0
            raise SpoolError(f"spool write failed: {exc}", str(self.path)) from exc
        except sqlite3.Error as exc:
            self._rollback()
            raise SpoolError(f"spool write failed: {exc}", str(self.path)) from exc
        self._c.dropped_oldest += freed_rows
        self._depth += len(rows) - freed_rows
        self._bytes += incoming - freed_bytes
        self._c.appended += len(rows)
        if mark is not None:
            self._mark = mark
        return len(rows)

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            log.debug("core.spool.rollback_failed")

    def peek(self, after_id: int, limit: int) -> list[SpoolRecord]:
        try:
            rows = self._db.execute(
                "SELECT id, topic, payload, qos FROM spool WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        except sqlite3.Error as exc:
            raise SpoolError(f"spool read failed: {exc}", str(self.path)) from exc
        return [SpoolRecord(int(r[0]), str(r[1]), bytes(r[2]), int(r[3])) for r in rows]

    def ack(self, ids: Iterable[int]) -> None:
        id_list = sorted(set(ids))
        if not id_list:
            return
        db = self._db
        relaxed = self._sync == "FULL"
        try:
            if relaxed:  # a lost ack only means a duplicate: no fsync for it
                db.execute("PRAGMA synchronous=NORMAL")
            db.execute("BEGIN IMMEDIATE")
            removed_rows = removed_bytes = 0
            for where, params in _id_ranges(id_list):
                rows, size = self._delete(where, params)
                removed_rows += rows
                removed_bytes += size
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise SpoolError(f"spool ack failed: {exc}", str(self.path)) from exc
        finally:
            if relaxed:
                db.execute("PRAGMA synchronous=FULL")
        self._depth -= removed_rows
        self._bytes -= removed_bytes
        self._c.acked += removed_rows

    def _delete(self, where: str, params: Sequence[int]) -> tuple[int, int]:
        """Delete matching rows; returns (rows, bytes) removed."""
        db = self._db
        if _RETURNING:
            sizes = db.execute(f"DELETE FROM spool WHERE {where} RETURNING size", params).fetchall()
            return len(sizes), sum(int(r[0]) for r in sizes)
        row = db.execute(
            f"SELECT COUNT(*), COALESCE(SUM(size), 0) FROM spool WHERE {where}", params
        ).fetchone()
        db.execute(f"DELETE FROM spool WHERE {where}", params)
        return int(row[0]), int(row[1])

    def stats(self) -> SpoolStats:
        c = self._c
        return SpoolStats(
            self._depth, self._bytes, c.appended, c.acked, c.dropped_oldest, c.dropped_newest,
            c.dropped_disk_full,
        )  # fmt: skip

    def close(self) -> None:
        try:
            self._db.close()
        except sqlite3.Error as exc:
            log.warning("core.spool.close_failed error=%s", exc)


# ---- the intake log: durability before the PUBACK ----------------------------------------

_FRAME = struct.Struct(">II")
_HEAD = struct.Struct(">QBH")


class IntakeLog:
    """An append-only file written (``os.write``, no buffering) as each message is accepted.

    The broker acknowledges a device's QoS 1 PUBLISH right after the router saw it, while
    the spool commits once per event-loop tick. Writing each message here first closes that
    window for ``kill -9``: the bytes are in the kernel before the PUBACK leaves. After each
    spool commit the log is truncated; on start, ``recover()`` returns what a crash left
    (a torn last record is ignored), to be appended to the spool again.
    """

    def __init__(self, path: Path, start: int = 0) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._dirty = False
        #: sequence number of the last record written (continues across restarts)
        self.seq = start

    def write(self, topic: str, payload: bytes, qos: int) -> int:
        raw_topic = topic.encode()
        self.seq += 1
        body = _HEAD.pack(self.seq, qos, len(raw_topic)) + raw_topic + payload
        os.write(self._fd, _FRAME.pack(len(body), zlib.crc32(body)) + body)
        self._dirty = True
        return self.seq

    def clear(self) -> None:
        if self._dirty:
            os.ftruncate(self._fd, 0)
            self._dirty = False

    def reset(self) -> None:
        os.ftruncate(self._fd, 0)
        self._dirty = False

    def close(self) -> None:
        os.close(self._fd)

    @staticmethod
    def recover(path: Path, after: int = 0) -> tuple[list[Item], int]:
        """Records with a sequence number above ``after`` (committed ones are skipped), and
        the highest sequence number seen."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return [], after
        items: list[Item] = []
        last = after
        pos = 0
        while pos + _FRAME.size <= len(data):
            length, crc = _FRAME.unpack_from(data, pos)
            body = data[pos + _FRAME.size : pos + _FRAME.size + length]
            if len(body) < length or zlib.crc32(body) != crc or length < _HEAD.size:
                break
            seq, qos, topic_len = _HEAD.unpack_from(body)
            pos += _FRAME.size + length
            last = max(last, seq)
            if seq <= after:
                continue
            topic = body[_HEAD.size : _HEAD.size + topic_len].decode(errors="replace")
            items.append((topic, bytes(body[_HEAD.size + topic_len :]), qos))
        return items, last
