"""Sessions: what the broker remembers about a client id, connected or not.

A session owns its subscriptions, its outbound QoS 1/2 window (messages sent and not yet
acknowledged, redelivered on reconnect) and a bounded queue of messages waiting for room
in the window or for the client to come back. QoS 0 messages are never queued here: they
go straight to the connection or are dropped.

The window opens as a connection proves it reads (a slow start, as TCP's): it starts at
``FIRST_WINDOW`` messages and grows by one per acknowledgement up to what was negotiated
(the client's Receive Maximum, the broker's ``max_inflight``). A subscriber that never
reads costs its publishers ``FIRST_WINDOW`` encoded and written messages, not a thousand;
the rest wait in the queue, cheaply, until its byte budget disconnects it
(``bench/hostile.py``). A reading client is at its full window within a few round trips.

Every message in the window or the queue counts against the outbound byte budget
(``budget.py``): ``Session.held`` is this session's share, reported to the broker-wide
``OutboundBudget`` on every change.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol

from hedgerow.broker.budget import OutboundBudget, Verdict
from hedgerow.broker.messages import Message
from hedgerow.broker.stats import Counters
from hedgerow.mqtt.reasons import ReasonCode

if TYPE_CHECKING:
    from hedgerow.broker.auth import Identity
    from hedgerow.broker.subscriptions import Subscription

log = logging.getLogger(__name__)

#: Messages in flight to a connection before it has acknowledged any (see above).
FIRST_WINDOW = 32

#: A QoS 2 delivery whose PUBREC arrived: waiting for PUBCOMP after our PUBREL.
RELEASED = None
#: Largest packet identifier.
MAX_PACKET_ID = 65535

InFlight = tuple[Message, int, bool, tuple[int, ...]] | None
Queued = tuple[Message, int, bool, tuple[int, ...]]


class ClientLink(Protocol):
    """What a session asks of its client's connection (``connection.Connection``): write
    deliveries, say when the in-flight window is busy or full, disconnect it. Declared
    here so that sessions need nothing of the layer above them."""

    @property
    def max_out_packet(self) -> int | None: ...
    @property
    def overflowed(self) -> bool: ...
    def fits(self, message: Message, qos: int, retain: bool, ids: tuple[int, ...]) -> bool: ...
    def write_publish0(self, message: Message, retain: bool, ids: tuple[int, ...]) -> None: ...
    def write_publish(
        self, message: Message, qos: int, retain: bool, dup: bool, pid: int, ids: tuple[int, ...]
    ) -> None: ...
    def write_pubrel(self, pid: int) -> None: ...
    def busy(self) -> None: ...
    def window_full(self) -> None: ...
    def overflow(self, reason_code: int, message: str) -> None: ...
    def release_publishers(self) -> None: ...
    def flush(self) -> None: ...
    def kick(self, reason_code: int, message: str) -> None: ...


class Session:
    __slots__ = (
        "client_id",
        "owner",
        "connection",
        "subscriptions",
        "inflight",
        "queue",
        "inbound_qos2",
        "expiry",
        "expires_at",
        "window",
        "limit",
        "counters",
        "max_queued",
        "budget",
        "held",
        "queued_bytes",
        "store",
        "_next_id",
        "drop0_until",
    )

    def __init__(
        self, client_id: str, counters: Counters, max_queued: int, budget: OutboundBudget
    ) -> None:
        self.client_id = client_id
        #: the identity that holds the session: another identity may not take it over
        self.owner: Identity | None = None
        self.connection: ClientLink | None = None
        #: Until when QoS 0 to it is dropped without asking its connection (set by a
        #: stalled connection over its byte budget; ``Hub.route`` skips it for that long).
        self.drop0_until = 0.0
        #: Created on first use: most sessions of idle clients never need them.
        self.subscriptions: dict[str, Subscription[Session]] | None = None
        #: packet id -> (message, qos, retain, subscription ids), or RELEASED.
        self.inflight: dict[int, InFlight] | None = None
        self.queue: deque[Queued] | None = None
        #: Packet ids of inbound QoS 2 messages delivered and awaiting PUBREL.
        self.inbound_qos2: set[int] | None = None
        #: Seconds the session outlives its connection; None = forever.
        self.expiry: int | None = 0
        self.expires_at: float | None = None
        #: messages in flight at most now; it opens up to ``limit`` (the negotiated window)
        self.window = 1
        self.limit = 1
        self.counters = counters
        self.max_queued = max_queued
        self.budget = budget
        #: Bytes of the messages in ``inflight`` and ``queue`` (see ``message_cost``).
        self.held = 0
        #: The part of ``held`` in ``queue`` (the rest is in flight).
        self.queued_bytes = 0
        #: The store it belongs to (to find who gives way when the broker's total is full).
        self.store: SessionStore | None = None
        self._next_id = 1

    @property
    def queued(self) -> int:
        return len(self.queue) if self.queue is not None else 0

    # ---- outbound ------------------------------------------------------------------

    def deliver(self, message: Message, qos: int, retain: bool, ids: tuple[int, ...]) -> None:
        """Send to the client now, or queue (QoS 1/2) when the window is full or it is away."""
        conn = self.connection
        if qos == 0:
            if conn is not None:
                conn.write_publish0(message, retain, ids)
            return
        if conn is not None:
            if conn.max_out_packet is not None and not conn.fits(message, qos, retain, ids):
                self.counters.dropped_queue_full += 1  # larger than it accepts: as if sent
                return
            if conn.overflowed:
                conn = None  # being disconnected as a slow consumer: kept as for an offline one
        size = message.cost
        budget = self.budget
        held = self.held + size
        if held > budget.client_limit or budget.total + size > budget.total_limit:
            if size > budget.client_limit:
                self.counters.dropped_budget += 1  # could never fit: not a slow consumer
                return
            if not self._over_budget(conn, size):
                return
            conn = self.connection if conn is not None and not conn.overflowed else None
            held = self.held + size
        queue = self.queue
        if not queue:  # nothing waits before it: into the window, if it has room
            inflight = self.inflight
            if inflight is None:
                inflight = self.inflight = {}
            if (
                conn is not None
                and len(inflight) < self.window
                and (held <= budget.client_limit >> 1 or not inflight)
            ):
                if not inflight:
                    conn.busy()
                pid = self._new_id()
                inflight[pid] = (message, qos, retain, ids)
                self.held = held
                total = budget.total = budget.total + size  # budget.add, inlined: hot path
                if total > budget.peak:
                    budget.peak = total
                conn.write_publish(message, qos, retain, False, pid, ids)
                return
            if queue is None:
                queue = self.queue = deque()
        # queued (a stalled subscriber's every message comes this way: kept short)
        if len(queue) >= self.max_queued:
            self.counters.dropped_queue_full += 1
            return
        queue.append((message, qos, retain, ids))
        self.held = held
        self.queued_bytes += size
        total = budget.total = budget.total + size  # budget.add, inlined
        if total > budget.peak:
            budget.peak = total
        if conn is not None:
            conn.window_full()  # pace the publisher to the client's acknowledgements

    def _over_budget(self, conn: ClientLink | None, size: int) -> bool:
        """The budget policy for a QoS 1/2 message that does not fit; whether to keep it."""
        budget = self.budget
        verdict = budget.check(self.held, size)
        if verdict is Verdict.TOTAL_FULL and self._others_give_way(size):
            return True
        if conn is not None:
            if verdict is Verdict.CLIENT_FULL:
                conn.overflow(
                    ReasonCode.QUOTA_EXCEEDED,
                    f"outbound budget of {budget.client_limit} bytes full (slow consumer)",
                )
            else:
                conn.overflow(
                    ReasonCode.SERVER_BUSY,
                    f"broker outbound budget of {budget.total_limit} bytes full",
                )
        if self._make_room(size):
            return True
        self.counters.dropped_budget += 1
        return False

    def _others_give_way(self, size: int) -> bool:
        """The broker's total is full: the session holding the most (if not this one) drops
        its oldest queued messages, and its client is disconnected as a slow consumer
        (0x89 Server busy), so one hoarder does not get innocent subscribers disconnected.
        True when this message may be kept (room was made, or a new hoarder is going)."""
        store = self.store
        victim = store.largest() if store is not None else None
        if victim is None or victim is self or victim.held <= self.held + size:
            return False
        freed = victim.shed(size)
        conn = victim.connection
        newly = conn is not None and not conn.overflowed
        if conn is not None and newly:
            conn.overflow(
                ReasonCode.SERVER_BUSY,
                f"broker outbound budget of {self.budget.total_limit} bytes full and it holds"
                f" the most ({victim.held} bytes)",
            )
        return freed >= size or newly

    def shed(self, size: int) -> int:
        """Drop the oldest queued messages (counted) until ``size`` bytes are free."""
        freed = 0
        queue = self.queue
        while queue and freed < size:
            message = queue.popleft()[0]
            self.queued_bytes -= message.cost
            self._release(message)
            freed += message.cost
            self.counters.dropped_budget += 1
        return freed

    def _make_room(self, size: int) -> bool:
        """Offline rule: drop the oldest queued messages until ``size`` more bytes fit."""
        budget = self.budget
        queue = self.queue
        while budget.check(self.held, size) is not Verdict.FITS:
            if not queue:
                return False
            message = queue.popleft()[0]
            self.queued_bytes -= message.cost
            self._release(message)
            self.counters.dropped_budget += 1
        return True

    def _release(self, message: Message) -> None:
        size = message.cost
        self.held -= size
        self.budget.remove(size)

    def _new_id(self) -> int:
        pid = self._next_id
        inflight = self.inflight
        assert inflight is not None
        while pid in inflight:
            pid = pid % MAX_PACKET_ID + 1
        self._next_id = pid % MAX_PACKET_ID + 1
        return pid

    def drain(self, now: float) -> None:
        """Move queued messages into the window while it has room."""
        queue = self.queue
        conn = self.connection
        if not queue or conn is None:
            return
        inflight = self.inflight
        if inflight is None:
            inflight = self.inflight = {}
        window = self.window
        # in flight: half the client's byte budget at most (at least one message)
        room = self.budget.client_limit // 2 - (self.held - self.queued_bytes)
        while queue and len(inflight) < window:
            message = queue[0][0]
            size = message.cost
            if size > room and inflight:
                break
            room -= size
            self.queued_bytes -= size
            message, qos, retain, ids = queue.popleft()
            if message.expired(now):
                self._release(message)
                self.counters.expired += 1
                continue
            pid = self._new_id()
            inflight[pid] = (message, qos, retain, ids)
            conn.write_publish(message, qos, retain, False, pid, ids)
        if self.queued_bytes <= self.budget.client_limit // 8:
            conn.release_publishers()  # drained enough: the publishers it paced run again
        if not queue:
            self.queue = None

    def on_puback(self, pid: int) -> bool:
        """A QoS 1 acknowledgement; False if the id was not in flight."""
        inflight = self.inflight
        if inflight is None:
            return False
        entry = inflight.pop(pid, RELEASED)
        if entry is RELEASED:
            return False
        size = entry[0].cost  # _release, inlined: hot path
        self.held -= size
        self.budget.total -= size
        if self.window < self.limit:
            self.window += 1
        return True

    def open_window(self, limit: int) -> None:
        """A new connection: up to ``limit`` in flight once it proves it reads."""
        self.limit = limit
        self.window = min(limit, FIRST_WINDOW)

    def on_pubrec(self, pid: int) -> bool:
        inflight = self.inflight
        if inflight is None or pid not in inflight:
            return False
        entry = inflight[pid]
        if entry is not RELEASED:
            self._release(entry[0])  # the client has the message: only the id remains
        inflight[pid] = RELEASED
        return True

    def on_pubcomp(self, pid: int) -> bool:
        inflight = self.inflight
        if inflight is None or pid not in inflight:
            return False
        entry = inflight.pop(pid)
        if entry is not RELEASED:
            self._release(entry[0])
        if self.window < self.limit:
            self.window += 1
        return True

    def restore(self, item: Queued, pid: int | None) -> None:
        """Put back a message read from persistence (queued, or in flight as ``pid``),
        counted against the budget like any other (even beyond it: it was accepted)."""
        if pid is None:
            if self.queue is None:
                self.queue = deque()
            self.queue.append(item)
            self.queued_bytes += item[0].cost
        else:
            if self.inflight is None:
                self.inflight = {}
            self.inflight[pid] = item
        self.held += item[0].cost
        self.budget.add(item[0].cost)

    def release_all(self) -> None:
        """Give back every byte this session holds (it is being forgotten)."""
        if self.held:
            self.budget.remove(self.held)
            self.held = 0
        self.inflight = None
        self.queue = None
        self.queued_bytes = 0

    def redeliver(self, now: float) -> None:
        """After a reconnect: resend unacknowledged PUBLISHes (DUP) and PUBRELs, in order."""
        conn = self.connection
        inflight = self.inflight
        if conn is None:
            return
        for pid, entry in list(inflight.items()) if inflight else ():
            if entry is RELEASED:
                conn.write_pubrel(pid)
                continue
            message, qos, retain, ids = entry
            if message.expired(now):
                del inflight[pid]  # type: ignore[union-attr]
                self._release(message)
                self.counters.expired += 1
                continue
            conn.write_publish(message, qos, retain, True, pid, ids)
        self.drain(now)


class SessionStore:
    """Sessions by client id, and their expiry once their client is gone."""

    def __init__(self, counters: Counters, max_queued: int, budget: OutboundBudget) -> None:
        self._sessions: dict[str, Session] = {}
        self.counters = counters
        self.max_queued = max_queued
        self.budget = budget

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._sessions.values()))

    def get(self, client_id: str) -> Session | None:
        return self._sessions.get(client_id)

    def create(self, client_id: str) -> Session:
        session = Session(client_id, self.counters, self.max_queued, self.budget)
        session.store = self
        self._sessions[client_id] = session
        return session

    def discard(
        self, session: Session, unsubscribe: Callable[[Subscription[Session]], None]
    ) -> None:
        """Forget a session and its subscriptions."""
        if self._sessions.get(session.client_id) is session:
            del self._sessions[session.client_id]
        for sub in (session.subscriptions or {}).values():
            unsubscribe(sub)
        session.subscriptions = None
        session.release_all()

    def expired(self, now: float) -> list[Session]:
        """Disconnected sessions whose expiry has passed."""
        return [
            s
            for s in self._sessions.values()
            if s.connection is None and s.expires_at is not None and s.expires_at <= now
        ]

    def largest(self) -> Session | None:
        """The session holding the most outbound bytes (a scan: only when the total is full)."""
        return max(self._sessions.values(), key=lambda s: s.held, default=None)

    @property
    def queued_messages(self) -> int:
        return sum(s.queued for s in self._sessions.values())
