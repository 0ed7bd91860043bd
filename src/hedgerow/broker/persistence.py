"""Sessions, their queued QoS 1/2 messages and retained messages kept across restarts.

Layout: one SQLite database (``broker.db`` in the persistence directory; stdlib
``sqlite3``, WAL journal, ``synchronous=FULL``), written by a worker thread, never on the
per-message path. Only sessions that outlive their connection (expiry != 0) are kept.

When is what durable (kill -9 included):

* **QoS 1/2 messages for a persistent session.** The broker's interceptor sees each QoS
  1/2 PUBLISH; if a persistent session will receive it (or it is retained), the
  PUBACK/PUBREC is held until the commit that contains it has been fsynced (group commit:
  every message that arrived during one commit goes into the next). So a message the
  publisher saw acknowledged is on disk; one that was not is resent by the publisher.
* **Everything else** (QoS 0, subscription changes, acknowledgements from subscribers,
  retained QoS 0, session expiry) is written every ``interval`` seconds: a crash loses
  at most that much of it. A lost subscriber acknowledgement means a redelivery (DUP) after
  the restart: at-least-once holds, QoS 2 to the subscriber may be delivered twice then.
* A clean shutdown writes everything.

On start, sessions come back disconnected (their expiry counts from the restart), with
their subscriptions, their in-flight messages (redelivered with DUP when the client
returns) and their queue; retained messages come back; message expiry counts on.

Cost: each commit walks the queues of the sessions that changed (every session at the
periodic full pass), so very long queues (10^5) make commits slower, not the hot path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hedgerow.broker.auth import Identity
from hedgerow.broker.errors import BrokerError
from hedgerow.broker.hub import Hub
from hedgerow.broker.messages import Message
from hedgerow.broker.sessions import RELEASED, Session
from hedgerow.broker.subscriptions import Subscription
from hedgerow.mqtt.codec import Decoder, encode_publish
from hedgerow.mqtt.errors import MQTTError
from hedgerow.mqtt.packets import ProtocolVersion, Publish

if TYPE_CHECKING:
    from hedgerow.broker.client_io import Connection

log = logging.getLogger(__name__)

#: File name of the database inside the persistence directory.
DB_NAME = "broker.db"
#: Default seconds between periodic commits (mosquitto's autosave_interval is 1800 s).
DEFAULT_INTERVAL = 1.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    client_id TEXT PRIMARY KEY, owner TEXT NOT NULL, expiry INTEGER,
    expires_wall REAL, released TEXT NOT NULL, next_seq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS subscriptions (
    client_id TEXT NOT NULL, filter TEXT NOT NULL, qos INTEGER NOT NULL,
    no_local INTEGER NOT NULL, rap INTEGER NOT NULL, rh INTEGER NOT NULL, identifier INTEGER,
    PRIMARY KEY (client_id, filter)
);
CREATE TABLE IF NOT EXISTS messages (
    client_id TEXT NOT NULL, seq INTEGER NOT NULL, pid INTEGER, qos INTEGER NOT NULL,
    retain INTEGER NOT NULL, ids TEXT NOT NULL, packet BLOB NOT NULL, expires_wall REAL,
    PRIMARY KEY (client_id, seq)
);
CREATE TABLE IF NOT EXISTS retained (
    topic TEXT PRIMARY KEY, packet BLOB NOT NULL, expires_wall REAL
);
"""


class PersistenceError(BrokerError):
    """The persistence directory or database cannot be used (the message says why)."""


# ---- encoding (pure) -----------------------------------------------------------------------


def encode_message(message: Message) -> bytes:
    """A message as a v5 PUBLISH packet (topic, payload, properties in one blob)."""
    qos = message.qos if message.qos else 0
    return encode_publish(
        message.topic,
        message.payload,
        qos,
        message.retain,
        False,
        1 if qos else None,
        ProtocolVersion.V5,
        message.properties,
    )


def decode_message(packet: bytes, expires_wall: float | None, now: float, wall: float) -> Message:
    decoder = Decoder(ProtocolVersion.V5, server=True)
    decoder.receive_data(packet)
    publish = decoder.next_packet()
    if not isinstance(publish, Publish):
        raise PersistenceError("a stored message is not a PUBLISH")
    message = Message(
        publish.topic, publish.payload, publish.qos, publish.retain, publish.properties
    )
    message.expires_at = None if expires_wall is None else now + (expires_wall - wall)
    return message


def _identity_json(identity: Identity | None) -> str:
    if identity is None:
        return "null"
    return json.dumps([identity.name, identity.kind, dict(identity.attributes)])


def _identity(text: str) -> Identity | None:
    data = json.loads(text)
    if data is None:
        return None
    return Identity(str(data[0]), str(data[1]), {str(k): str(v) for k, v in data[2].items()})


# ---- the database (the only module part touching the disk) ---------------------------------

Op = tuple[str, tuple[object, ...]]


class Database:
    """The SQLite file; ``apply`` runs in a worker thread, one call at a time."""

    def __init__(self, directory: Path) -> None:
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.path = directory / DB_NAME
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise PersistenceError(
                f"cannot use {directory} for persistence: {exc} (check the path and its"
                " permissions, or move a damaged broker.db aside)"
            ) from exc

    def apply(self, ops: list[Op]) -> None:
        db = self._db
        db.execute("BEGIN")
        try:
            for sql, args in ops:
                db.execute(sql, args)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return list(self._db.execute(sql))

    def close(self) -> None:
        self._db.close()


# ---- what was written, to write only changes -------------------------------------------------


@dataclass(slots=True)
class _Written:
    """What the database holds of one session."""

    meta: tuple[object, ...] = ()
    subs: dict[str, tuple[object, ...]] = field(default_factory=dict)
    #: message -> (seq, pid or None when queued)
    messages: dict[Message, tuple[int, int | None]] = field(default_factory=dict)
    next_seq: int = 0


class Persister:
    """Keeps a hub's persistent state in a :class:`Database`, off the hot path."""

    def __init__(
        self, hub: Hub[Connection], directory: Path, interval: float = DEFAULT_INTERVAL
    ) -> None:
        self.hub = hub
        self.interval = interval
        self.db = Database(directory)
        self._written: dict[str, tuple[Session, _Written]] = {}
        self._retained: dict[str, Message] = {}
        self._dirty: set[Session] = set()
        #: topics whose retained message a waiting acknowledgement depends on
        self._retained_dirty: set[str] = set()
        self._waiters: list[asyncio.Future[None]] = []
        self._wake = asyncio.Event()
        self._last_full = 0.0
        #: After a failed commit: clear the tables and write everything again.
        self._rewrite = False
        self._stopping = False
        self.commits = 0

    # ---- restore ----------------------------------------------------------------------

    def restore(self) -> tuple[int, int]:
        """Load sessions and retained messages into the hub; (sessions, retained)."""
        hub = self.hub
        now = hub.clock.now()
        wall = time.time()
        by_id: dict[str, tuple[Session, _Written]] = {}
        try:
            for client_id, owner, expiry, expires_wall, released, next_seq in self.db.rows(
                "SELECT client_id, owner, expiry, expires_wall, released, next_seq FROM sessions"
            ):
                session = hub.sessions.create(str(client_id))
                session.owner = _identity(str(owner))
                session.expiry = None if expiry is None else int(expiry)
                if expires_wall is not None:
                    session.expires_at = now + (float(expires_wall) - wall)
                elif session.expiry is not None:
                    session.expires_at = now + session.expiry
                pids = json.loads(str(released))
                if pids:
                    session.inflight = dict.fromkeys(pids, RELEASED)
                written = _Written(next_seq=int(next_seq))
                by_id[session.client_id] = (session, written)
            for client_id, flt, qos, no_local, rap, rh, ident in self.db.rows(
                "SELECT client_id, filter, qos, no_local, rap, rh, identifier FROM subscriptions"
            ):
                entry = by_id.get(str(client_id))
                if entry is None:
                    continue
                session, written = entry
                sub = Subscription(
                    session,
                    str(flt),
                    int(qos),
                    no_local=bool(no_local),
                    retain_as_published=bool(rap),
                    retain_handling=int(rh),
                    identifier=None if ident is None else int(ident),
                )
                if session.subscriptions is None:
                    session.subscriptions = {}
                session.subscriptions[sub.filter] = sub
                hub.table.add(sub)
                written.subs[sub.filter] = _sub_row(sub)
            for client_id, seq, pid, qos, retain, ids, packet, expires_wall in self.db.rows(
                "SELECT client_id, seq, pid, qos, retain, ids, packet, expires_wall"
                " FROM messages ORDER BY client_id, seq"
            ):
                entry = by_id.get(str(client_id))
                if entry is None:
                    continue
                session, written = entry
                message = decode_message(
                    bytes(packet),
                    None if expires_wall is None else float(expires_wall),
                    now,
                    wall,
                )
                item = (message, int(qos), bool(retain), tuple(json.loads(str(ids))))
                session.restore(item, None if pid is None else int(pid))
                written.messages[message] = (int(seq), None if pid is None else int(pid))
            retained = 0
            for topic, packet, expires_wall in self.db.rows(
                "SELECT topic, packet, expires_wall FROM retained"
            ):
                message = decode_message(
                    bytes(packet),
                    None if expires_wall is None else float(expires_wall),
                    now,
                    wall,
                )
                if not message.expired(now) and hub.retained.store(message):
                    self._retained[str(topic)] = message
                    retained += 1
        except (sqlite3.Error, MQTTError, ValueError, KeyError, IndexError) as exc:
            raise PersistenceError(
                f"cannot read {self.db.path}: {exc} (move the file aside to start empty)"
            ) from exc
        for session, written in by_id.values():
            written.meta = _meta_row(session, now, wall)
            self._written[session.client_id] = (session, written)
        log.info(
            "persistence_restored path=%s sessions=%d retained=%d",
            self.db.path,
            len(by_id),
            retained,
        )
        return len(by_id), retained

    # ---- the hook on inbound PUBLISH ----------------------------------------------------

    def intercept(self, identity: Identity, publish: Publish) -> asyncio.Future[None] | None:
        """For QoS 1/2: hold the acknowledgement until a persistent session that gets the
        message (or the retained store) has it on disk. Anything else: no wait."""
        if not publish.qos:
            return None
        routes, groups = self.hub.table.routes(publish.topic)
        durable = publish.retain
        if durable:
            self._retained_dirty.add(publish.topic)
        dirty = self._dirty
        for route in routes:
            if route.session.expiry != 0:
                dirty.add(route.session)
                durable = True
        for group in groups:
            for sub in group.members:
                if sub.session.expiry != 0:
                    dirty.add(sub.session)
                    durable = True
        if not durable:
            return None
        waiter: asyncio.Future[None] = self.hub.loop.create_future()
        self._waiters.append(waiter)
        self._wake.set()
        return waiter

    # ---- the writer -------------------------------------------------------------------------

    async def run(self) -> None:
        """Commit when acknowledgements wait, and every ``interval`` in any case, until
        :meth:`stop` (never cancelled mid-commit: the database has one writer at a time)."""
        loop = self.hub.loop
        while not self._stopping:
            try:
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            if self._stopping:
                return
            await asyncio.sleep(0)  # let the PUBLISH that woke us be routed first
            full = loop.time() - self._last_full >= self.interval
            await self.commit(full=full)

    def stop(self) -> None:
        """Ask :meth:`run` to return after the commit in progress, if any."""
        self._stopping = True
        self._wake.set()

    async def commit(self, *, full: bool) -> None:
        loop = self.hub.loop
        waiters, self._waiters = self._waiters, []
        if full:
            self._last_full = loop.time()
        ops = self.snapshot(full=full)
        try:
            if ops:
                await asyncio.to_thread(self.db.apply, ops)
                self.commits += 1
        except (sqlite3.Error, OSError) as exc:
            log.error("persistence_failed path=%s error=%s", self.db.path, exc)
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(PersistenceError(f"not stored: {exc}"))
            self._forget_all()  # rewrite everything next time
            return
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def close(self) -> None:
        """Write everything and close; after :meth:`run` returned (the loop is shutting
        down, so this one commit runs on it)."""
        try:
            self.db.apply(self.snapshot(full=True))
        except (sqlite3.Error, OSError) as exc:
            log.error("persistence_failed path=%s error=%s", self.db.path, exc)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.cancel()
        self.db.close()

    def _forget_all(self) -> None:
        self._written.clear()
        self._retained.clear()
        self._last_full = 0.0
        self._rewrite = True

    # ---- snapshots (what changed since the last commit) ------------------------------------

    def snapshot(self, *, full: bool) -> list[Op]:
        hub = self.hub
        now = hub.clock.now()
        wall = time.time()
        ops: list[Op] = []
        if self._rewrite:
            self._rewrite = False
            for table in ("sessions", "subscriptions", "messages", "retained"):
                ops.append((f"DELETE FROM {table}", ()))
        sessions: Iterable[Session]
        if full:
            sessions = [s for s in hub.sessions if s.expiry != 0]
            live = {s.client_id for s in sessions}
            for client_id, (old, _) in list(self._written.items()):
                current = hub.sessions.get(client_id)
                if client_id not in live or current is not old:
                    ops.extend(_delete_session(client_id))
                    del self._written[client_id]
            ops.extend(self._retained_ops(wall))
        else:
            sessions = [s for s in self._dirty if s.expiry != 0]
            ops.extend(self._retained_ops(wall, self._retained_dirty))
        self._dirty = set()
        self._retained_dirty = set()
        for session in sessions:
            if hub.sessions.get(session.client_id) is not session:
                continue
            ops.extend(self._session_ops(session, now, wall, full=full))
        return ops

    def _session_ops(
        self, session: Session, now: float, wall: float, *, full: bool = True
    ) -> list[Op]:
        """Rows to write for one session. ``full=False`` (a commit acknowledgements wait
        for) only adds what is new: the in-flight window and the queue's tail back to the
        first message already written (new messages are appended), so a long queue is not
        walked per commit; removals wait for the next full pass."""
        ops: list[Op] = []
        client_id = session.client_id
        entry = self._written.get(client_id)
        if entry is None or entry[0] is not session:
            if entry is not None:
                ops.extend(_delete_session(client_id))
            entry = self._written[client_id] = (session, _Written())
        written = entry[1]
        meta = _meta_row(session, now, wall)
        current: dict[Message, tuple[int | None, Queued]] = {}
        for sent, held in (session.inflight or {}).items():
            if held is not RELEASED:
                current[held[0]] = (sent, held)
        old = written.messages
        if full:
            for item in session.queue or ():
                current.setdefault(item[0], (None, item))
        else:
            tail: list[Queued] = []
            for item in reversed(session.queue or ()):
                if item[0] in old:
                    break
                tail.append(item)
            for item in reversed(tail):
                current.setdefault(item[0], (None, item))
        for message in [m for m in old if m not in current] if full else ():
            gone, _ = old.pop(message)
            ops.append(("DELETE FROM messages WHERE client_id=? AND seq=?", (client_id, gone)))
        for message, (pid, item) in current.items():
            had = old.get(message)
            if had is None:
                seq = written.next_seq
                written.next_seq += 1
                old[message] = (seq, pid)
                ops.append(
                    (
                        "INSERT OR REPLACE INTO messages VALUES (?,?,?,?,?,?,?,?)",
                        (
                            client_id,
                            seq,
                            pid,
                            item[1],
                            int(item[2]),
                            json.dumps(list(item[3])),
                            encode_message(message),
                            _wall(message.expires_at, now, wall),
                        ),
                    )
                )
            elif had[1] != pid:
                old[message] = (had[0], pid)
                ops.append(
                    (
                        "UPDATE messages SET pid=? WHERE client_id=? AND seq=?",
                        (pid, client_id, had[0]),
                    )
                )
        meta = (*meta[:-1], written.next_seq)
        if meta != written.meta:
            written.meta = meta
            ops.append(("INSERT OR REPLACE INTO sessions VALUES (?,?,?,?,?,?)", meta))
        subs = {f: _sub_row(s) for f, s in (session.subscriptions or {}).items()}
        for flt in [f for f in written.subs if f not in subs]:
            del written.subs[flt]
            ops.append(
                ("DELETE FROM subscriptions WHERE client_id=? AND filter=?", (client_id, flt))
            )
        for flt, row in subs.items():
            if written.subs.get(flt) != row:
                written.subs[flt] = row
                ops.append(("INSERT OR REPLACE INTO subscriptions VALUES (?,?,?,?,?,?,?)", row))
        return ops

    def _retained_ops(self, wall: float, topics: set[str] | None = None) -> list[Op]:
        """Rows for retained messages that changed: all, or just ``topics``."""
        now = self.hub.clock.now()
        store = self.hub.retained
        current: dict[str, Message]
        if topics is None:
            current = dict(store.items())
            gone = [t for t in self._retained if t not in current]
        else:
            found = {t: store.get(t) for t in topics}
            current = {t: m for t, m in found.items() if m is not None}
            gone = [t for t, m in found.items() if m is None and t in self._retained]
        ops: list[Op] = []
        for topic in gone:
            del self._retained[topic]
            ops.append(("DELETE FROM retained WHERE topic=?", (topic,)))
        for topic, message in current.items():
            if self._retained.get(topic) is not message:
                self._retained[topic] = message
                ops.append(
                    (
                        "INSERT OR REPLACE INTO retained VALUES (?,?,?)",
                        (topic, encode_message(message), _wall(message.expires_at, now, wall)),
                    )
                )
        return ops


Queued = tuple[Message, int, bool, tuple[int, ...]]


def _wall(expires_at: float | None, now: float, wall: float) -> float | None:
    return None if expires_at is None else wall + (expires_at - now)


def _meta_row(session: Session, now: float, wall: float) -> tuple[object, ...]:
    released = sorted(p for p, v in (session.inflight or {}).items() if v is RELEASED)
    expires_wall = _wall(session.expires_at, now, wall) if session.connection is None else None
    if expires_wall is not None:
        expires_wall = round(expires_wall)  # unchanged sessions are not rewritten each pass
    return (
        session.client_id,
        _identity_json(session.owner),
        session.expiry,
        expires_wall,
        json.dumps(released),
        0,
    )


def _sub_row(sub: Subscription[Session]) -> tuple[object, ...]:
    return (
        sub.session.client_id,
        sub.filter,
        sub.qos,
        int(sub.no_local),
        int(sub.retain_as_published),
        sub.retain_handling,
        sub.identifier,
    )


def _delete_session(client_id: str) -> list[Op]:
    return [
        (f"DELETE FROM {table} WHERE client_id=?", (client_id,))
        for table in ("sessions", "subscriptions", "messages")
    ]
