"""The state every connection of one broker shares, and message fan-out.

``Hub.route`` hands a message to each matching session. Outgoing bytes are not written
there: each connection gathers its packets and the hub flushes every connection that has
something to send once per event-loop tick (one ``transport.write`` per burst).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

from hedgerow.broker.auth import AllowAll, Authenticator, Authorizer, Identity
from hedgerow.broker.budget import OutboundBudget
from hedgerow.broker.config import BrokerConfig
from hedgerow.broker.messages import Message
from hedgerow.broker.retained import RetainedStore
from hedgerow.broker.sessions import Session, SessionStore
from hedgerow.broker.stats import Counters
from hedgerow.broker.subscriptions import SubscriptionTable
from hedgerow.broker.wills import DelayedWills
from hedgerow.clock import Clock, MonotonicClock
from hedgerow.mqtt.packets import Publish

log = logging.getLogger(__name__)

#: Called for every authorized inbound client PUBLISH. It may return an awaitable: for a
#: QoS 1/2 message the broker then acknowledges (PUBACK/PUBREC) only once it completed, so
#: an interceptor that stores messages makes "acknowledged" mean "stored". If it fails, the
#: sender is disconnected without the acknowledgement and will send the message again.
Interceptor = Callable[[Identity, Publish], "Awaitable[object] | None"]


class Writer(Protocol):
    """What the hub asks of a connection (``connection.Connection``): write what it
    gathered. The hub is generic over the connection type, so it needs nothing of the
    layer above it."""

    def flush(self) -> None: ...


C = TypeVar("C", bound=Writer)


class Hub(Generic[C]):
    def __init__(
        self,
        config: BrokerConfig,
        authenticator: Authenticator,
        authorizer: Authorizer,
        loop: asyncio.AbstractEventLoop,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.loop = loop
        #: Keep-alive, CONNECT timeout, session and will expiry, the sweep (tests advance
        #: a ManualClock); backpressure and pacing use ``loop.time()`` and its timers.
        self.clock: Clock = clock if clock is not None else MonotonicClock()
        self.counters = Counters()
        #: bytes held for clients, against the per-client and total limits
        self.budget = OutboundBudget(config.max_outbound_bytes, config.max_total_outbound_bytes)
        self.sessions = SessionStore(self.counters, config.max_queued_messages, self.budget)
        self.table: SubscriptionTable[Session] = SubscriptionTable()
        self.retained = RetainedStore(config.max_retained)
        self.wills = DelayedWills()
        self.authenticator = authenticator
        self.authorizer = authorizer
        #: False when every PUBLISH is allowed anyway (skips a call per message).
        self.check_publish = not isinstance(authorizer, AllowAll)
        #: the authorizer's per-delivery check, when it has one (see DeliveryAuthorizer)
        self.may_deliver: Callable[[Identity, Identity, str], bool] | None = getattr(
            authorizer, "may_deliver", None
        )
        #: the authorizer's read check on every delivery, when it has one (ReadAuthorizer)
        self.may_read: Callable[[Identity, str], bool] | None = getattr(
            authorizer, "may_read", None
        )
        self.interceptors: list[Interceptor] = []
        #: told the identity of every connected client whose connection ended
        self.disconnect_listeners: list[Callable[[Identity], None]] = []
        #: Every open connection, connected or not yet.
        self.connections: set[C] = set()
        #: Authentication tasks in progress (cancelled on shutdown).
        self.tasks: set[asyncio.Task[None]] = set()
        #: The connection whose PUBLISH is being routed (paused when a subscriber congests).
        self.publisher: C | None = None
        self.closing = False
        #: No client is taken any more (the broker closes, or shut its doors first).
        self.refusing = False
        #: Set once clients are refused and the last connection is gone.
        self.drained = asyncio.Event()
        self._dirty: list[C] = []
        self._flush_handle: asyncio.Handle | None = None

    # ---- fan-out -----------------------------------------------------------------------

    def route(self, message: Message, publisher: C | None) -> None:
        """Deliver to every matching subscriber (and retain if the message asks)."""
        if message.retain:
            self.retained.store(message)
        routes, groups = self.table.routes(message.topic)
        if not routes and not groups:
            return
        if self.may_read is not None:
            routes = [r for r in routes if self.readable(r[0], message.topic)]
        self.publisher = publisher
        origin = message.origin
        mq = message.qos
        retain = message.retain
        may_deliver = self.may_deliver
        # the origin is the publisher's Session (None for in-process publishes)
        sender = origin.owner if may_deliver is not None and isinstance(origin, Session) else None
        # QoS 0 skips the sessions whose stalled connection drops it for now: a stalled
        # subscriber costs its publishers a comparison, not a call (bench/hostile.py)
        skip_before = self.loop.time() if mq == 0 else math.inf
        for session, qos, rap, no_local, ids in routes:
            if session.drop0_until > skip_before:
                self.counters.dropped_qos0 += 1
                continue
            if no_local and session is origin:
                continue
            if sender is not None and not self._deliverable(sender, session, message.topic):
                continue
            session.deliver(message, qos if qos < mq else mq, rap and retain, ids)
        for group in groups:
            sub = group.pick()
            if sub is not None:
                if self.may_read is not None and not self.readable(sub.session, message.topic):
                    continue
                if sender is not None and not self._deliverable(sender, sub.session, message.topic):
                    continue
                q = sub.qos if sub.qos < mq else mq
                ids = (sub.identifier,) if sub.identifier else ()
                sub.session.deliver(message, q, sub.retain_as_published and retain, ids)
        self.publisher = None

    def retained_deliverable(self, message: Message, session: Session) -> bool:
        """Whether a retained message may go to ``session`` on SUBSCRIBE: a client's retained
        message is a client-to-client delivery too, asked about like ``route``'s."""
        origin = message.origin
        if self.may_deliver is None or not isinstance(origin, Session) or origin.owner is None:
            return True
        return self._deliverable(origin.owner, session, message.topic)

    def _deliverable(self, sender: Identity, session: Session, topic: str) -> bool:
        receiver = session.owner
        if receiver is None or self.may_deliver is None:
            return True
        if self.may_deliver(sender, receiver, topic):
            return True
        self.counters.undelivered += 1
        return False

    def readable(self, session: Session, topic: str) -> bool:
        """The authorizer's ``may_read`` for the session's owner (no owner: not readable)."""
        owner = session.owner
        if self.may_read is None:
            return True
        if owner is not None and self.may_read(owner, topic):
            return True
        self.counters.undelivered += 1
        return False

    def intercept(self, identity: Identity, publish: Publish) -> list[Awaitable[object]] | None:
        """Run the interceptors; the awaitables some returned (None when none did)."""
        waits: list[Awaitable[object]] | None = None
        for fn in self.interceptors:
            try:
                result = fn(identity, publish)
            except Exception:
                log.exception(
                    "broker.interceptor_failed interceptor=%r topic=%s", fn, publish.topic
                )
                continue
            if result is not None:
                if not hasattr(result, "__await__"):  # a bug in the interceptor: not awaited
                    log.error(
                        "broker.interceptor_bad_result interceptor=%r result=%r expected=%r",
                        fn,
                        result,
                        "an awaitable or None",
                    )
                    continue
                if waits is None:
                    waits = []
                waits.append(result)
        return waits

    def disconnected(self, identity: Identity) -> None:
        """A connected client's connection ended: tell the listeners."""
        for fn in self.disconnect_listeners:
            try:
                fn(identity)
            except Exception:
                log.exception("broker.disconnect_listener_failed listener=%r", fn)

    # ---- batched writes ----------------------------------------------------------------

    def want_flush(self, conn: C) -> None:
        self._dirty.append(conn)
        if self._flush_handle is None:
            self._flush_handle = self.loop.call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        self._flush_handle = None
        self.flush()

    def flush(self) -> None:
        """Write what every connection gathered. Called at the end of each read burst
        (an event loop may run many reads before its next tick) and once per tick."""
        dirty = self._dirty
        if not dirty:
            return
        self._dirty = []
        for conn in dirty:
            conn.flush()

    # ---- session lifecycle ---------------------------------------------------------------

    def end_session(self, session: Session) -> None:
        """Forget a session (expired, or clean); a will still waiting on it goes out now."""
        self.sessions.discard(session, self.table.remove)
        will = self.wills.take(session.client_id)
        if will is not None:
            self.route(will, None)

    def sweep_sessions(self, now: float) -> None:
        for session in self.sessions.expired(now):
            log.info("broker.session_expired client=%s", session.client_id)
            self.end_session(session)
        for will in self.wills.due(now):
            log.info("broker.delayed_will topic=%s", will.topic)
            self.route(will, None)
