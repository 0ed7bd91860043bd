"""``Thing``: a device's connection to its core, kept up for as long as the thing runs.

What it does, in order, and again after every loss:

1. connection info from memory, else the on-disk cache (a rebooted device needs no cloud),
   else discovery (then cached);
2. every advertised endpoint in order (the last one that worked first), mutual TLS against
   the group CA with the host name checked;
3. a certificate verification failure against the core means the group CA rotated: discover
   again at once and retry with the fresh CAs; other failures with cached info re-discover
   after ``rediscover_after`` consecutive failures (the core may have moved);
4. retryable failures wait ``BackoffPolicy`` delays (full jitter, capped, reset once a
   connection stayed up ``stable_after``); non-retryable ones (bad credentials, a thing in
   no group, a refused discovery) end the thing with ``error`` set.

Publishing never waits for the network: ``publish`` puts the message in the bounded offline
queue and a drain task sends it whenever connected, removing it only once the publish
completed (PUBACK for QoS 1). Subscriptions are re-made on every connection; received
messages come out of ``messages()``.

One ``asyncio.TaskGroup`` owns the supervisor; each connection owns a TaskGroup with the
drain and read tasks. ``async with Thing(config) as thing`` starts it and, on exit, sends
what is queued (up to ``flush_timeout``) and disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from hedgerow import pki
from hedgerow.backoff import Backoff, BackoffPolicy, Uniform
from hedgerow.client import (
    Client,
    ClientError,
    ConnectError,
    ConnectionLost,
    Message,
    ProtocolVersion,
)

from .cache import CachedInfo, ConnInfoCache
from .credentials import Credentials
from .discovery import (
    DEFAULT_TIMEOUT,
    Candidate,
    DiscoveryClient,
    DiscoveryInfo,
    Endpoint,
    find_cause,
)
from .errors import CoreConnectError, DiscoveryUnavailable, ThingClosed, ThingError
from .queue import MemoryQueue, OfflineQueue

log = logging.getLogger(__name__)

#: consecutive failed connects with cached info before asking discovery again (core moved?)
REDISCOVER_AFTER = 3
#: messages handed to the client at once while draining the offline queue
DRAIN_BATCH = 100
#: received messages kept for ``messages()`` before the oldest are dropped
INBOX_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class ThingConfig:
    """How a thing reaches its core. ``client_id`` defaults to ``thing_name``."""

    thing_name: str
    discovery_endpoint: str
    credentials: Credentials
    client_id: str = ""
    cache_dir: Path | None = None
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    version: ProtocolVersion = ProtocolVersion.V311
    keepalive: int = 60
    clean_start: bool = True
    discovery_timeout: float = DEFAULT_TIMEOUT
    connect_timeout: float = 10.0
    rediscover_after: int = REDISCOVER_AFTER
    flush_timeout: float = 5.0
    drain_batch: int = DRAIN_BATCH


@dataclass(frozen=True, slots=True)
class ThingStats:
    connected: bool
    endpoint: str | None
    connects: int
    connect_failures: int
    disconnects: int
    discoveries: int
    queued: int
    enqueued: int
    delivered: int
    dropped: int
    last_error: str | None


class Thing:
    """A device connected to its core (see the module docstring)."""

    def __init__(
        self,
        config: ThingConfig,
        *,
        queue: OfflineQueue | None = None,
        uniform: Uniform | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.client_id = config.client_id or config.thing_name
        self.queue = queue if queue is not None else MemoryQueue()
        self.backoff = Backoff(config.backoff, uniform=uniform)
        self.cache = ConnInfoCache(config.cache_dir) if config.cache_dir is not None else None
        self._clock = clock
        self._info: DiscoveryInfo | None = None
        self._last_good: Endpoint | None = None
        self._failures_with_cache = 0
        self._subscriptions: dict[str, int] = {}
        self._contexts: dict[tuple[str, ...], ssl.SSLContext] = {}
        #: one TLS context for every discovery: later ones resume the cloud's session
        self.discovery = DiscoveryClient(
            config.credentials, request_timeout=config.discovery_timeout
        )
        self._remember_pending = False
        self._inbox: asyncio.Queue[Message] = asyncio.Queue(INBOX_SIZE)
        self._client: Client | None = None
        self._connected = asyncio.Event()
        self._finished = asyncio.Event()
        self._stop = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._change = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self.endpoint: Endpoint | None = None
        self.error: ThingError | None = None
        self.last_error: str | None = None
        self.connects = 0
        self.connect_failures = 0
        self.disconnects = 0
        self.discoveries = 0
        #: connects to a core that resumed the TLS session of an earlier one
        self.core_resumed = 0

    # ---- lifecycle --------------------------------------------------------------------

    async def __aenter__(self) -> Thing:
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        self._tg.create_task(self._supervise(), name=f"thing.{self.config.thing_name}.supervisor")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            await self.flush(self.config.flush_timeout)
        self._stop.set()
        self._wakeup.set()
        assert self._tg is not None
        try:
            if exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
                await self._tg.__aexit__(exc_type, exc, tb)
            else:  # the body's own error propagates as itself, not inside an ExceptionGroup
                await self._tg.__aexit__(None, None, None)
        finally:
            self.queue.close()

    @property
    def is_connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self) -> Endpoint:
        """Wait until connected (bound it with ``asyncio.timeout``); raises a fatal error."""
        while not self._connected.is_set():
            if self.error is not None:
                raise self.error
            if self._finished.is_set():
                raise ThingClosed("the thing has stopped")
            waiters = [
                asyncio.ensure_future(self._connected.wait()),
                asyncio.ensure_future(self._finished.wait()),
            ]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
        assert self.endpoint is not None
        return self.endpoint

    async def wait_finished(self) -> ThingError | None:
        """Wait until the supervisor stopped (closed, or a fatal error); returns that error."""
        await self._finished.wait()
        return self.error

    async def flush(self, limit: float | None = None) -> bool:
        """Wait up to ``limit`` s until the offline queue is empty (while connected)."""
        try:
            async with asyncio.timeout(limit):
                while len(self.queue) and self.is_connected:
                    self._idle.clear()
                    self._wakeup.set()
                    await self._idle.wait()
        except TimeoutError:
            return False
        return len(self.queue) == 0

    def _changed(self) -> None:
        """Wake everyone in ``wait_until`` (a connect, a failure, a loss, a stop)."""
        event, self._change = self._change, asyncio.Event()
        event.set()

    async def wait_until(self, predicate: Callable[[ThingStats], bool]) -> ThingStats:
        """Wait until ``predicate(stats())`` holds (bound it with ``asyncio.timeout``)."""
        while True:
            stats = self.stats()
            if predicate(stats):
                return stats
            if self._finished.is_set():
                raise self.error or ThingClosed("the thing has stopped")
            await self._change.wait()

    def stats(self) -> ThingStats:
        c = self.queue.counters()
        return ThingStats(
            connected=self.is_connected,
            endpoint=str(self.endpoint) if self.endpoint else None,
            connects=self.connects,
            connect_failures=self.connect_failures,
            disconnects=self.disconnects,
            discoveries=self.discoveries,
            queued=c.depth,
            enqueued=c.enqueued,
            delivered=c.delivered,
            dropped=c.dropped,
            last_error=self.last_error,
        )

    # ---- application API --------------------------------------------------------------

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> bool:
        """Queue a message for the core; False if the queue's drop policy refused it."""
        if self._stop.is_set() or self._finished.is_set():
            raise ThingClosed("the thing is closed")
        if qos not in (0, 1):
            raise ValueError("qos must be 0 or 1")
        data = payload.encode() if isinstance(payload, str) else payload
        accepted = self.queue.put(topic, data, qos)
        self._wakeup.set()
        return accepted

    async def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        """Subscribe now if connected and on every later connection."""
        self._subscriptions[topic_filter] = qos
        client = self._client
        if client is not None and client.is_connected:
            try:
                await client.subscribe(topic_filter, qos=qos)
            except ClientError as exc:
                log.info("thing.subscribe.deferred filter=%s error=%s", topic_filter, exc)

    async def messages(self) -> AsyncIterator[Message]:
        """Messages received on the subscriptions, across reconnections, until closed."""
        while True:
            if self._inbox.empty() and self._finished.is_set():
                return
            getter = asyncio.ensure_future(self._inbox.get())
            finished = asyncio.ensure_future(self._finished.wait())
            try:
                await asyncio.wait([getter, finished], return_when=asyncio.FIRST_COMPLETED)
            finally:
                finished.cancel()
                if not getter.done():
                    getter.cancel()
            if getter.done() and not getter.cancelled():
                yield getter.result()

    # ---- the supervisor ---------------------------------------------------------------

    async def _sleep(self, delay: float) -> None:
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stop.wait()

    async def _supervise(self) -> None:
        try:
            await self._sleep(self.backoff.first_delay())
            while not self._stop.is_set():
                try:
                    client = await self._attempt_unless_stopped()
                    if client is None:
                        return
                except ThingError as exc:
                    self.connect_failures += 1
                    self.last_error = exc.one_line()
                    self._changed()
                    if not exc.retryable:
                        log.error(
                            "thing.fatal thing=%s error=%s", self.config.thing_name, exc.one_line()
                        )
                        self.error = exc
                        return
                    retry_after = exc.retry_after if isinstance(exc, DiscoveryUnavailable) else None
                    delay = self.backoff.next_delay_after(retry_after)
                    log.warning(
                        "thing.connect.retry thing=%s in=%.2fs attempt=%s error=%s",
                        self.config.thing_name,
                        delay,
                        self.backoff.attempt,
                        exc,
                    )
                    await self._sleep(delay)
                    continue
                await self._session(client)
                if not self._stop.is_set():
                    await self._sleep(self.backoff.next_delay())
        finally:
            self._connected.clear()
            self._finished.set()
            self._idle.set()
            self._changed()

    async def _attempt_unless_stopped(self) -> Client | None:
        """``_attempt()``, abandoned (None) if the thing is closed meanwhile."""
        attempt = asyncio.ensure_future(self._attempt())
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait([attempt, stopper], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not attempt.done():
                attempt.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await attempt
        if attempt.cancelled():
            return None
        return attempt.result()

    async def _conn_info(self) -> tuple[DiscoveryInfo, bool]:
        """(info, fresh): memory, else disk cache, else discovery (fresh: discovered just now)."""
        if self._info is not None:
            return self._info, False
        if self.cache is not None:
            entry = self.cache.load(self.config.thing_name)
            if entry is not None:
                log.info(
                    "thing.cache.hit thing=%s fetched_at=%s",
                    self.config.thing_name,
                    entry.fetched_at,
                )
                self._info, self._last_good = entry.info, entry.last_good
                return entry.info, False
        return await self._discover(), True

    async def _discover(self) -> DiscoveryInfo:
        self.discoveries += 1
        info = await self.discovery.discover(self.config.discovery_endpoint, self.config.thing_name)
        self._info, self._failures_with_cache = info, 0
        if self.cache is not None:
            entry = CachedInfo(self.config.thing_name, time.time(), info, self._last_good)
            try:  # fsync takes milliseconds: not on the event loop
                await asyncio.to_thread(self.cache.save, entry)
            except OSError as exc:
                log.warning(
                    "thing.cache.write_failed thing=%s error=%s", self.config.thing_name, exc
                )
        return info

    async def _attempt(self) -> Client:
        info, fresh = await self._conn_info()
        try:
            return await self._connect_core(info)
        except CoreConnectError as exc:
            if fresh:
                raise
            self._failures_with_cache += 1
            if not exc.tls and self._failures_with_cache < self.config.rediscover_after:
                raise
            reason = "group CA rotated" if exc.tls else "cached endpoints keep failing"
            log.info("thing.rediscover thing=%s reason=%s", self.config.thing_name, reason)
            try:
                fresh_info = await self._discover()
            except DiscoveryUnavailable:
                raise exc from None
            return await self._connect_core(fresh_info)

    def _candidates(self, info: DiscoveryInfo) -> list[Candidate]:
        candidates = list(info.candidates())
        last = self._last_good
        if last is not None:
            candidates.sort(
                key=lambda c: (c.endpoint.host, c.endpoint.port) != (last.host, last.port)
            )
        return candidates

    def _core_context(self, cas: tuple[str, ...]) -> ssl.SSLContext:
        """One TLS context per set of group CAs (loading the key pair is not free on a Pi)."""
        ctx = self._contexts.get(cas)
        if ctx is None:
            # resuming: a reconnect to the same core skips the certificate exchange
            ctx = self.config.credentials.core_context(cas, resume=True)
            self._contexts = {cas: ctx}  # only the current CAs: a rotation replaces them
        return ctx

    async def _connect_core(self, info: DiscoveryInfo) -> Client:
        failures: list[tuple[str, str]] = []
        tls = False
        refused = 0
        for candidate in self._candidates(info):
            endpoint = candidate.endpoint
            client = Client(
                endpoint.host,
                endpoint.port,
                client_id=self.client_id,
                ssl=self._core_context(candidate.cas),
                server_hostname=endpoint.host,
                version=self.config.version,
                keepalive=self.config.keepalive,
                clean_start=self.config.clean_start,
                connect_timeout=self.config.connect_timeout,
            )
            try:
                await client.connect()
            except ConnectError as exc:
                verify = find_cause(exc, ssl.SSLCertVerificationError)
                tls = tls or verify is not None
                if exc.reason_code is not None or find_cause(exc, ConnectionLost) is not None:
                    refused += 1  # TLS and TCP were fine: the core said no, or hung up on us
                failures.append((str(endpoint), str(verify or exc)))
                log.info("thing.endpoint.failed endpoint=%s error=%s", endpoint, verify or exc)
                continue
            self.endpoint = endpoint
            self._failures_with_cache = 0
            self._keep_session(candidate.cas, endpoint.host, client)
            if self._last_good != Endpoint(endpoint.host, endpoint.port):
                self._last_good = Endpoint(endpoint.host, endpoint.port)
                self._remember_pending = self.cache is not None
            return client
        detail = (
            "; ".join(f"{where}: {why}" for where, why in failures) or "no endpoints advertised"
        )
        if tls:
            hint = "the core's certificate is not signed by the group CA from discovery (rotated?)"
        elif failures and refused == len(failures):
            hint = _refused_hint(self.config.thing_name, info)
        else:
            hint = "is the core running and reachable from here?"
        raise CoreConnectError(
            f"cannot connect to the core ({detail})", failures=failures, tls=tls, hint=hint
        )

    def _keep_session(self, cas: tuple[str, ...], host: str, client: Client) -> None:
        """Offer this connection's TLS session at the next connect (read after CONNACK: a
        TLS 1.3 ticket arrives after the handshake)."""
        tls, ctx = client.tls, self._contexts.get(cas)
        if tls is None or not isinstance(ctx, pki.ResumingContext):
            return
        ctx.keep(host, tls.session)
        self.core_resumed += tls.session_reused

    async def _session(self, client: Client) -> None:
        """One connection: re-subscribe, drain the queue, read messages, until it ends."""
        self._client = client
        stopper: asyncio.Task[bool] | None = None
        try:
            for topic_filter, qos in list(self._subscriptions.items()):
                await client.subscribe(topic_filter, qos=qos)
            self.connects += 1
            self.backoff.connected(self._clock())
            self._connected.set()
            self._changed()
            log.info("thing.connected thing=%s endpoint=%s", self.config.thing_name, self.endpoint)
            async with asyncio.TaskGroup() as tg:
                drain = tg.create_task(self._drain(client), name="thing.drain")
                reader = tg.create_task(self._read(client), name="thing.read")
                stable = tg.create_task(self._watch_stable(), name="thing.stable")
                stopper = tg.create_task(self._stop.wait(), name="thing.stop")
                if self._remember_pending:
                    self._remember_pending = False
                    tg.create_task(self._remember_endpoint(), name="thing.remember")
                waiters: list[asyncio.Future[Any]] = [stopper, client.closed]
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                self._connected.clear()  # at once: teardown below may take a moment
                for task in (drain, reader, stable, stopper):
                    task.cancel()
        except ClientError as exc:
            log.info("thing.session.error thing=%s error=%s", self.config.thing_name, exc)
        finally:
            self._connected.clear()
            self._client = None
            self._idle.set()
            if self._stop.is_set():
                with contextlib.suppress(ClientError, OSError):
                    await client.disconnect()
            else:
                self.disconnects += 1
                error = client.closed.result() if client.closed.done() else None
                self.last_error = f"connection lost: {error}" if error else "disconnected"
                log.warning("thing.disconnected thing=%s error=%s", self.config.thing_name, error)
                client.abort()
            self.backoff.disconnected(self._clock())
            self._changed()

    async def _remember_endpoint(self) -> None:
        """Record the endpoint that worked in the cache (off the event loop)."""
        if self.cache is None or self._last_good is None:
            return
        try:
            await asyncio.to_thread(
                self.cache.remember_endpoint, self.config.thing_name, self._last_good
            )
        except OSError as exc:
            log.warning("thing.cache.write_failed thing=%s error=%s", self.config.thing_name, exc)

    async def _watch_stable(self) -> None:
        await asyncio.sleep(self.config.backoff.stable_after)
        self.backoff.check_stable(self._clock())

    async def _drain(self, client: Client) -> None:
        try:
            while True:
                batch = self.queue.peek(self.config.drain_batch)
                if not batch:
                    self._idle.set()
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                futures = [(m, client.publish_nowait(m.topic, m.payload, m.qos)) for m in batch]
                for message, future in futures:
                    await future
                    self.queue.ack(message.id)
                self._changed()
        except ClientError as exc:
            log.info("thing.drain.stopped error=%s queued=%s", exc, len(self.queue))
        except ValueError as exc:  # a topic the client rejects: drop it, or it blocks the queue
            log.error("thing.drain.bad_message error=%s", exc)
            for message in self.queue.peek(1):
                self.queue.ack(message.id)
            raise

    async def _read(self, client: Client) -> None:
        with contextlib.suppress(ClientError):
            async for message in client.messages():
                if self._inbox.full():
                    self._inbox.get_nowait()
                self._inbox.put_nowait(message)


def _refused_hint(thing: str, info: DiscoveryInfo) -> str:
    """Why a core that accepted TLS closes the connection (a 3.1.1 client cannot be told:
    the core sends no CONNACK), and the commands that fix it."""
    group = info.groups[0].group_id if info.groups else "GROUP"
    return (
        f"the core refused thing {thing!r}: it admits only things of its group {group!r} whose"
        f" certificate is not revoked (the core's admission.log says which); check with"
        f" `hedgerow cloud thing show {thing}`, add it with"
        f" `hedgerow cloud thing attach --group {group} {thing}`"
    )


@contextlib.asynccontextmanager
async def connect(
    config: ThingConfig, *, queue: OfflineQueue | None = None, within: float | None = 60.0
) -> AsyncIterator[Thing]:
    """``async with connect(config) as thing``: a ``Thing`` that is connected when the body
    starts (``TimeoutError`` after ``within`` seconds; the thing's fatal error if it has one).
    It keeps reconnecting afterwards, like any ``Thing``."""
    async with Thing(config, queue=queue) as thing:
        async with asyncio.timeout(within):
            await thing.wait_connected()
        yield thing


def thing_config(
    thing_name: str,
    endpoint: str,
    root_ca: str | Path,
    cert: str | Path,
    key: str | Path,
    **options: object,
) -> ThingConfig:
    """Check the credential files and build a ``ThingConfig`` (``CredentialsError`` if unusable)."""
    credentials = Credentials.load(root_ca, cert, key)
    return dataclasses.replace(ThingConfig(thing_name, endpoint, credentials), **options)  # type: ignore[arg-type]


__all__ = ["Thing", "ThingConfig", "ThingStats", "connect", "thing_config"]
