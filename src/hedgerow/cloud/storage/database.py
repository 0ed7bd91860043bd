"""Engines and migrations: SQLite (WAL) by default, PostgreSQL (psycopg 3) by URL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy.engine import Engine

from hedgerow.cloud.errors import ConfigError
from hedgerow.cloud.storage.locks import lock_key

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"
#: Milliseconds a SQLite writer waits for another writer's lock before failing.
SQLITE_BUSY_TIMEOUT_MS = 10_000


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


async def dispose_when_returned(engine: Engine, wait_s: float = 5.0) -> None:
    """Dispose of ``engine`` once every connection a worker thread still holds came back.

    A task cancelled at shutdown leaves its ``to_thread`` query running to its end; a
    connection checked out when ``dispose()`` runs goes back to the discarded pool and is
    never closed (psycopg warns when it is collected). Waits at most ``wait_s``."""
    checkedout = getattr(engine.pool, "checkedout", None)
    if checkedout is not None and checkedout() > 0:
        loop = asyncio.get_running_loop()
        returned = asyncio.Event()

        def on_checkin(*_: Any) -> None:  # in the worker thread
            loop.call_soon_threadsafe(returned.set)

        sa.event.listen(engine, "checkin", on_checkin)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    while checkedout() > 0:
                        returned.clear()
                        await returned.wait()
        finally:
            sa.event.remove(engine, "checkin", on_checkin)
    engine.dispose()


def create_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys and a busy timeout."""
    try:
        if url.startswith("sqlite"):
            engine = sa.create_engine(
                url,
                connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            )
            sa.event.listen(engine, "connect", _sqlite_pragmas)
            return engine
        return sa.create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise ConfigError(f"cannot use database {url!r}: {exc}") from exc


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent; on PostgreSQL one replica at a
    time, under an advisory lock)."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as connection:
            if engine.dialect.name == "postgresql":
                # replicas starting together: one migrates, the others wait for its commit
                # and find nothing left to do
                schema = connection.scalar(sa.text("SELECT current_schema()")) or ""
                connection.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:key)"),
                    {"key": lock_key(str(schema), "migrate")},
                )
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")
    except sa.exc.OperationalError as exc:
        raise ConfigError(f"cannot reach the database: {exc.orig}") from exc
    log.info("database.migrated url=%s", engine.url.render_as_string(hide_password=True))
