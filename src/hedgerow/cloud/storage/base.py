"""What every store shares: the engine, one transaction per call, row lookups.

Methods are synchronous (SQLAlchemy sessions); the async layers call them through
``asyncio.to_thread``. They return the frozen entities of ``hedgerow.cloud.domain`` and
raise the cloud's errors (``NotFound``, ``Conflict``, ``InvalidInput``); a failed call
leaves nothing half-written.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from hedgerow.cloud.domain import (
    Core,
    Endpoint,
    FunctionVersion,
    Group,
    Subscription,
    Thing,
)
from hedgerow.cloud.errors import Conflict, NotFound
from hedgerow.cloud.storage.models import (
    CertificateRow,
    CoreRow,
    FunctionRow,
    GroupRow,
    GroupThingRow,
    ThingRow,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
#: Largest page a list call returns.
MAX_PAGE = 10_000
#: Rows fetched per round while filtering telemetry by a wildcard topic filter.
QUERY_CHUNK = 2_000


def utc(value: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes: they are UTC."""
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def utc_or_none(value: dt.datetime | None) -> dt.datetime | None:
    return utc(value) if value else None


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class GroupCA:
    group: str
    generation: int
    fingerprint: str
    cert_pem: str
    #: the private key in clear: only for rows written before keys were sealed
    key_pem: str | None
    created_at: dt.datetime
    not_after: dt.datetime
    #: the private key, envelope-encrypted (``hedgerow.cloud.group_ca_keys`` opens it)
    key_sealed: bytes | None = None


@dataclass(frozen=True)
class NewCertificate:
    """A certificate to record (the PEM and the facts read from it)."""

    fingerprint: str
    kind: str
    owner: str
    serial: str
    pem: str
    issued_at: dt.datetime
    not_after: dt.datetime


@dataclass(frozen=True)
class Snapshot:
    """What a deployment freezes of a group."""

    group: Group
    core: str
    things: Sequence[str]
    functions: Sequence[FunctionVersion]
    subscriptions: Sequence[Subscription]
    #: industrial connectors as the document carries them (``hedgerow.cloud.connectors``)
    connectors: Sequence[Mapping[str, Any]] = ()


@dataclass(frozen=True)
class DiscoveryGroup:
    group: str
    core: str
    endpoints: Sequence[Endpoint]
    ca_rotation_days: int | None = None


class Store:
    """The engine and one transaction per call; the row lookups every store uses."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        try:
            with self._sessions.begin() as session:
                yield session
        except sa.exc.IntegrityError as exc:
            log.info("repository.conflict error=%s", exc.orig)
            raise Conflict(f"conflicting change: {_first_line(exc.orig)}") from exc

    @staticmethod
    def _group(s: Session, name: str) -> GroupRow:
        row = s.scalar(sa.select(GroupRow).where(GroupRow.name == name))
        if row is None:
            raise NotFound("group", name)
        return row

    @staticmethod
    def _thing(s: Session, name: str) -> ThingRow:
        row = s.scalar(sa.select(ThingRow).where(ThingRow.name == name))
        if row is None:
            raise NotFound("thing", name)
        return row

    @staticmethod
    def _core(s: Session, name: str) -> CoreRow:
        row = s.scalar(sa.select(CoreRow).where(CoreRow.name == name))
        if row is None:
            raise NotFound("core", name)
        return row

    @staticmethod
    def _function(s: Session, group: GroupRow, name: str) -> FunctionRow:
        row = s.scalar(
            sa.select(FunctionRow).where(FunctionRow.group_id == group.id, FunctionRow.name == name)
        )
        if row is None:
            raise NotFound(
                "function", name, f"function {name!r} does not exist in group {group.name!r}"
            )
        return row

    @staticmethod
    def _identity_taken(s: Session, name: str) -> str | None:
        if s.scalar(sa.select(ThingRow.id).where(ThingRow.name == name)) is not None:
            return "thing"
        if s.scalar(sa.select(CoreRow.id).where(CoreRow.name == name)) is not None:
            return "core"
        return None

    def _group_entity(self, s: Session, row: GroupRow) -> Group:
        core = s.scalar(sa.select(CoreRow.name).where(CoreRow.group_id == row.id))
        return Group(
            name=row.name,
            description=row.description,
            created_at=utc(row.created_at),
            core=core,
            settings=dict(row.settings or {}),
            ca_rotation_days=row.ca_rotation_days,
            labels=dict(row.labels or {}),
        )

    @staticmethod
    def _core_entity(row: CoreRow, group: str) -> Core:
        return Core(
            name=row.name,
            group=group,
            created_at=utc(row.created_at),
            endpoints=[
                Endpoint(e["host"], int(e["port"]), e.get("metadata", ""))
                for e in row.endpoints or []
            ],
            last_seen=utc_or_none(row.last_seen),
            heartbeat=row.heartbeat,
        )

    @staticmethod
    def _thing_groups(s: Session, thing_ids: Sequence[int]) -> dict[int, list[str]]:
        result: dict[int, list[str]] = defaultdict(list)
        if not thing_ids:
            return result
        query = (
            sa.select(GroupThingRow.thing_id, GroupRow.name)
            .join(GroupRow, GroupRow.id == GroupThingRow.group_id)
            .where(GroupThingRow.thing_id.in_(thing_ids))
            .order_by(GroupRow.name)
        )
        for thing_id, group in s.execute(query):
            result[thing_id].append(group)
        return result

    @staticmethod
    def _thing_entity(row: ThingRow, groups: Sequence[str]) -> Thing:
        return Thing(
            name=row.name,
            groups=list(groups),
            created_at=utc(row.created_at),
            attributes=dict(row.attributes or {}),
        )

    @staticmethod
    def _add_certificate(s: Session, c: NewCertificate) -> None:
        s.add(
            CertificateRow(
                fingerprint=c.fingerprint,
                kind=c.kind,
                owner=c.owner,
                serial=c.serial,
                pem=c.pem,
                issued_at=c.issued_at,
                not_after=c.not_after,
                revoked_at=None,
                revoke_reason="",
            )
        )

    @staticmethod
    def _revoke_owner(s: Session, owner: str, reason: str) -> list[str]:
        rows = s.scalars(
            sa.select(CertificateRow).where(
                CertificateRow.owner == owner, CertificateRow.revoked_at.is_(None)
            )
        ).all()
        at = now()
        for r in rows:
            r.revoked_at = at
            r.revoke_reason = reason
        return [r.fingerprint for r in rows]


def _first_line(exc: BaseException | None) -> str:
    return str(exc).splitlines()[0] if exc else "constraint violated"
