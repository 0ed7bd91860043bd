"""The offline queue: messages published while no core is reachable.

Bounded, with a drop policy, and store-and-forward: ``peek`` hands out the oldest messages
without removing them; the sender calls ``ack(id)`` only once the publish completed (PUBACK
for QoS 1), so a message that was in flight when the connection dropped is sent again.
``MemoryQueue`` loses its content when the process ends; ``SqliteQueue`` keeps it across a
reboot (one SQLite file, WAL journal).

When full, ``DropPolicy.OLDEST`` evicts the oldest message to make room (fresh readings
matter more), ``DropPolicy.NEWEST`` refuses the new one; both count what they dropped.
"""

from __future__ import annotations

import enum
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path


class DropPolicy(enum.Enum):
    OLDEST = "drop-oldest"
    NEWEST = "drop-newest"


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    id: int
    topic: str
    payload: bytes
    qos: int


@dataclass(frozen=True, slots=True)
class QueueCounters:
    """Since this queue object was opened."""

    enqueued: int
    delivered: int
    dropped: int
    depth: int


class OfflineQueue(ABC):
    """A bounded FIFO of messages waiting for a connection."""

    def __init__(self, maxlen: int, policy: DropPolicy) -> None:
        if maxlen < 1:
            raise ValueError("queue maxlen must be at least 1")
        self.maxlen = maxlen
        self.policy = policy
        self.enqueued = 0
        self.delivered = 0
        self.dropped = 0

    def put(self, topic: str, payload: bytes, qos: int = 1) -> bool:
        """Queue a message; False if the policy dropped it (drop-newest on a full queue)."""
        if len(self) >= self.maxlen:
            if self.policy is DropPolicy.NEWEST:
                self.dropped += 1
                return False
            while len(self) >= self.maxlen:
                self._drop_oldest()
                self.dropped += 1
        self._append(topic, payload, qos)
        self.enqueued += 1
        return True

    def ack(self, message_id: int) -> None:
        """The message was delivered: remove it (no-op if it was already dropped)."""
        if self._remove(message_id):
            self.delivered += 1

    def counters(self) -> QueueCounters:
        return QueueCounters(self.enqueued, self.delivered, self.dropped, len(self))

    @abstractmethod
    def peek(self, limit: int) -> list[QueuedMessage]:
        """Up to ``limit`` oldest messages, oldest first, left in the queue."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def _append(self, topic: str, payload: bytes, qos: int) -> None: ...

    @abstractmethod
    def _drop_oldest(self) -> None: ...

    @abstractmethod
    def _remove(self, message_id: int) -> bool: ...

    def close(self) -> None:
        """Release resources (the disk queue's database)."""
        return None


class MemoryQueue(OfflineQueue):
    def __init__(self, maxlen: int = 10_000, policy: DropPolicy = DropPolicy.OLDEST) -> None:
        super().__init__(maxlen, policy)
        self._items: OrderedDict[int, QueuedMessage] = OrderedDict()
        self._next_id = 1

    def __len__(self) -> int:
        return len(self._items)

    def peek(self, limit: int) -> list[QueuedMessage]:
        out: list[QueuedMessage] = []
        for message in self._items.values():
            if len(out) >= limit:
                break
            out.append(message)
        return out

    def _append(self, topic: str, payload: bytes, qos: int) -> None:
        self._items[self._next_id] = QueuedMessage(self._next_id, topic, payload, qos)
        self._next_id += 1

    def _drop_oldest(self) -> None:
        self._items.popitem(last=False)

    def _remove(self, message_id: int) -> bool:
        return self._items.pop(message_id, None) is not None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL
)
"""


class SqliteQueue(OfflineQueue):
    """A queue in one SQLite file; survives restarts (unacknowledged messages stay)."""

    def __init__(
        self, path: str | Path, maxlen: int = 100_000, policy: DropPolicy = DropPolicy.OLDEST
    ) -> None:
        super().__init__(maxlen, policy)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._count = int(self._db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])

    def __len__(self) -> int:
        return self._count

    def peek(self, limit: int) -> list[QueuedMessage]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload, qos FROM messages ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
        return [QueuedMessage(int(r[0]), str(r[1]), bytes(r[2]), int(r[3])) for r in rows]

    def _append(self, topic: str, payload: bytes, qos: int) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO messages (topic, payload, qos) VALUES (?, ?, ?)", (topic, payload, qos)
            )
            self._count += 1

    def _drop_oldest(self) -> None:
        with self._lock:
            cur = self._db.execute("DELETE FROM messages WHERE id = (SELECT MIN(id) FROM messages)")
            self._count -= cur.rowcount

    def _remove(self, message_id: int) -> bool:
        with self._lock:
            cur = self._db.execute("DELETE FROM messages WHERE id = ?", (message_id,))
            self._count -= cur.rowcount
        return cur.rowcount > 0

    def close(self) -> None:
        with self._lock:
            self._db.close()
