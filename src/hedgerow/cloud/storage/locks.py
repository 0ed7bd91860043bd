"""Job locks: "run this job only if I hold its lock", so that background jobs (rollouts,
alerts, retention, CA rotation) run once across replicas sharing one database.

``held(job)`` says whether this process holds ``job``'s lock now, taking it when it is
free; a caller asks before each tick and runs the tick only on True.

- ``AdvisoryLocks`` (PostgreSQL): session-level advisory locks (``pg_try_advisory_lock``)
  on one dedicated connection, outside the engine's pool. A lock stays with its session
  until the session ends: a replica killed with -9 frees its locks as soon as the server
  sees the socket close (a host that vanishes: after the TCP keepalives set below), and
  another replica takes them on its next try. Each ``held`` of a lock already taken
  checks that the connection still answers; one that does not is closed and every lock is
  counted lost (the server frees them with the session).
- ``LocalLocks`` (SQLite): one process owns the database file, so it holds every lock.

Lock ids are derived from the job's name and the connection's schema (``lock_key``), so
clouds sharing a database in different schemas do not exclude each other.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.engine import Engine

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

#: Seconds any statement on the lock connection may take before the locks count as lost.
LOCK_TIMEOUT_S = 5.0
#: The server closes the session of a host that stopped answering after about
#: idle + interval * count seconds (and with it frees the locks).
SERVER_KEEPALIVES = {
    "tcp_keepalives_idle": 5,
    "tcp_keepalives_interval": 2,
    "tcp_keepalives_count": 3,
}


def lock_key(namespace: str, job: str) -> int:
    """A stable signed 64-bit advisory lock id for ``job`` in ``namespace`` (the schema)."""
    digest = hashlib.blake2b(f"hedgerow-job:{namespace}:{job}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class JobLocks(Protocol):
    async def held(self, job: str) -> bool:
        """Whether this process holds ``job``'s lock now (taking it when it is free)."""
        ...

    async def close(self) -> None:
        """Give every lock back."""
        ...


class LocalLocks:
    """A single process (SQLite): always the holder."""

    async def held(self, job: str) -> bool:
        return True

    async def close(self) -> None:
        return None


def connect_args(engine: Engine) -> dict[str, Any]:
    """psycopg's connection arguments for the engine's database (URL, schema options)."""
    args, params = engine.dialect.create_connect_args(engine.url)
    out: dict[str, Any] = dict(params)
    if args:
        out["conninfo"] = args[0]
    return out


class AdvisoryLocks:
    """PostgreSQL session-level advisory locks on a dedicated connection."""

    def __init__(self, engine: Engine, *, timeout_s: float = LOCK_TIMEOUT_S) -> None:
        import psycopg  # the postgres extra: only a PostgreSQL cloud gets here

        self._psycopg = psycopg
        self._connect_args = connect_args(engine)
        self.timeout_s = timeout_s
        self._connection: psycopg.AsyncConnection[Any] | None = None
        self._namespace = ""
        self._held: set[str] = set()
        self._guard = asyncio.Lock()

    async def held(self, job: str) -> bool:
        async with self._guard:
            try:
                async with asyncio.timeout(self.timeout_s):
                    connection = await self._connect()
                    if job in self._held:
                        await connection.execute("SELECT 1")  # the session, so the lock, lives
                        return True
                    cursor = await connection.execute(
                        "SELECT pg_try_advisory_lock(%s)", (lock_key(self._namespace, job),)
                    )
                    row = await cursor.fetchone()
            except (self._psycopg.Error, OSError, TimeoutError) as exc:
                await self._lost(exc)
                return False
            if row is not None and row[0]:
                self._held.add(job)
                log.info("locks.taken job=%s namespace=%s", job, self._namespace)
                return True
            return False

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        if self._connection is not None and not self._connection.closed:
            return self._connection
        self._held.clear()
        connection = await self._psycopg.AsyncConnection.connect(
            **self._connect_args,
            autocommit=True,
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=3,
            application_name="hedgerow-job-locks",
        )
        try:
            for name, value in SERVER_KEEPALIVES.items():
                await connection.execute(f"SET {name} = {int(value)}")
            cursor = await connection.execute("SELECT current_schema()")
            row = await cursor.fetchone()
        except BaseException:
            await connection.close()
            raise
        self._namespace = str(row[0]) if row and row[0] else ""
        self._connection = connection
        return connection

    async def _lost(self, exc: BaseException) -> None:
        if self._held:
            log.warning("locks.lost jobs=%s error=%s", ",".join(sorted(self._held)), exc)
        else:
            log.info("locks.unavailable error=%s", exc)
        self._held.clear()
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                await connection.close()
            except Exception as close_exc:  # already broken: nothing more to give back
                log.info("locks.close_failed error=%s", close_exc)

    async def close(self) -> None:
        async with self._guard:
            connection, self._connection = self._connection, None
            self._held.clear()
            if connection is not None:
                await connection.close()


def job_locks(engine: Engine) -> JobLocks:
    """Advisory locks on PostgreSQL, a single holder otherwise."""
    if engine.dialect.name == "postgresql":
        return AdvisoryLocks(engine)
    return LocalLocks()
