"""The repository: every read and write of the registry, each call one transaction.

Methods are synchronous (SQLAlchemy sessions); the async layers call them through
``asyncio.to_thread``. They return the frozen entities of ``hedgerow.cloud.domain`` and
raise the cloud's errors (``NotFound``, ``Conflict``, ``InvalidInput``); a failed call
leaves nothing half-written.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from hedgerow.cloud import domain
from hedgerow.cloud.domain import (
    Certificate,
    Core,
    Deployment,
    DeploymentEvent,
    DeploymentStatus,
    Endpoint,
    FunctionSettings,
    FunctionVersion,
    Group,
    Message,
    Subscription,
    Thing,
)
from hedgerow.cloud.envelope import kek_id_of
from hedgerow.cloud.errors import Conflict, InvalidInput, NotFound
from hedgerow.cloud.storage.models import (
    ApiTokenRow,
    ArtifactRow,
    CertificateRow,
    CoreRow,
    DeploymentEventRow,
    DeploymentRow,
    FunctionRow,
    FunctionVersionRow,
    GroupCARow,
    GroupRow,
    GroupThingRow,
    MessageRow,
    SubscriptionRow,
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


@dataclass(frozen=True)
class DiscoveryGroup:
    group: str
    core: str
    endpoints: Sequence[Endpoint]
    ca_rotation_days: int | None = None


class Repository:
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

    # ---- lookups -----------------------------------------------------------------

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

    # ---- groups ------------------------------------------------------------------

    def create_group(
        self,
        name: str,
        description: str = "",
        settings: dict[str, Any] | None = None,
        ca_rotation_days: int | None = None,
    ) -> Group:
        with self._tx() as s:
            if s.scalar(sa.select(GroupRow.id).where(GroupRow.name == name)) is not None:
                raise Conflict(f"group {name!r} already exists")
            row = GroupRow(
                name=name,
                description=description,
                settings=settings or {"open_broker": False},
                ca_rotation_days=ca_rotation_days,
                created_at=now(),
            )
            s.add(row)
            s.flush()
            return self._group_entity(s, row)

    def list_groups(self) -> list[Group]:
        with self._tx() as s:
            cores = dict(s.execute(sa.select(CoreRow.group_id, CoreRow.name)).all())
            return [
                Group(
                    name=r.name,
                    description=r.description,
                    created_at=utc(r.created_at),
                    core=cores.get(r.id),
                    settings=dict(r.settings or {}),
                    ca_rotation_days=r.ca_rotation_days,
                )
                for r in s.scalars(sa.select(GroupRow).order_by(GroupRow.name))
            ]

    def get_group(self, name: str) -> Group:
        with self._tx() as s:
            return self._group_entity(s, self._group(s, name))

    def update_group(
        self,
        name: str,
        *,
        description: str | None = None,
        settings: dict[str, Any] | None = None,
        ca_rotation_days: int | None = None,
    ) -> Group:
        with self._tx() as s:
            row = self._group(s, name)
            if description is not None:
                row.description = description
            if settings is not None:
                row.settings = {**(row.settings or {}), **settings}
            if ca_rotation_days is not None:
                row.ca_rotation_days = ca_rotation_days
            s.flush()
            return self._group_entity(s, row)

    def delete_group(self, name: str) -> list[str]:
        """Delete a group and everything only it owns; returns the certificates it revoked."""
        with self._tx() as s:
            row = self._group(s, name)
            revoked: list[str] = []
            core = s.scalar(sa.select(CoreRow).where(CoreRow.group_id == row.id))
            if core is not None:
                revoked += self._revoke_owner(s, core.name, "core deleted with its group")
                s.delete(core)
            s.execute(sa.delete(GroupThingRow).where(GroupThingRow.group_id == row.id))
            function_ids = s.scalars(
                sa.select(FunctionRow.id).where(FunctionRow.group_id == row.id)
            ).all()
            if function_ids:
                s.execute(
                    sa.delete(FunctionVersionRow).where(
                        FunctionVersionRow.function_id.in_(function_ids)
                    )
                )
            s.execute(sa.delete(FunctionRow).where(FunctionRow.group_id == row.id))
            s.execute(sa.delete(SubscriptionRow).where(SubscriptionRow.group_id == row.id))
            deployment_ids = s.scalars(
                sa.select(DeploymentRow.id).where(DeploymentRow.group_id == row.id)
            ).all()
            if deployment_ids:
                s.execute(
                    sa.delete(DeploymentEventRow).where(
                        DeploymentEventRow.deployment_id.in_(deployment_ids)
                    )
                )
            s.execute(sa.delete(DeploymentRow).where(DeploymentRow.group_id == row.id))
            s.execute(sa.delete(GroupCARow).where(GroupCARow.group_id == row.id))
            s.delete(row)
            return revoked

    # ---- group CAs -----------------------------------------------------------------

    def group_cas(self, group: str) -> list[GroupCA]:
        """The group's CAs, newest first."""
        with self._tx() as s:
            row = self._group(s, group)
            rows = s.scalars(
                sa.select(GroupCARow)
                .where(GroupCARow.group_id == row.id)
                .order_by(GroupCARow.generation.desc())
            )
            return [
                GroupCA(
                    group,
                    r.generation,
                    r.fingerprint,
                    r.cert_pem,
                    r.key_pem,
                    utc(r.created_at),
                    utc(r.not_after),
                    r.key_sealed,
                )
                for r in rows
            ]

    def add_group_ca(self, ca: GroupCA) -> None:
        with self._tx() as s:
            row = self._group(s, ca.group)
            s.add(
                GroupCARow(
                    group_id=row.id,
                    generation=ca.generation,
                    fingerprint=ca.fingerprint,
                    cert_pem=ca.cert_pem,
                    key_pem=ca.key_pem,
                    key_sealed=ca.key_sealed,
                    kek_id=kek_id_of(ca.key_sealed) if ca.key_sealed else None,
                    created_at=ca.created_at,
                    not_after=ca.not_after,
                )
            )

    # ---- cores -----------------------------------------------------------------------

    def create_core(self, name: str, group: str, certificate: Callable[[], NewCertificate]) -> Core:
        with self._tx() as s:
            group_row = self._group(s, group)
            taken = self._identity_taken(s, name)
            if taken:
                raise Conflict(f"the name {name!r} is already used by a {taken}")
            existing = s.scalar(sa.select(CoreRow.name).where(CoreRow.group_id == group_row.id))
            if existing:
                raise Conflict(
                    f"group {group!r} already has a core ({existing!r}); a group has one core"
                )
            row = CoreRow(name=name, group_id=group_row.id, endpoints=[], created_at=now())
            s.add(row)
            s.flush()
            self._add_certificate(s, certificate())
            return self._core_entity(row, group)

    def get_core(self, name: str) -> Core:
        with self._tx() as s:
            row = self._core(s, name)
            group = s.scalar(sa.select(GroupRow.name).where(GroupRow.id == row.group_id))
            return self._core_entity(row, str(group))

    def list_cores(self) -> list[Core]:
        with self._tx() as s:
            query = (
                sa.select(CoreRow, GroupRow.name)
                .join(GroupRow, GroupRow.id == CoreRow.group_id)
                .order_by(CoreRow.name)
            )
            return [self._core_entity(row, group) for row, group in s.execute(query)]

    def delete_core(self, name: str) -> list[str]:
        with self._tx() as s:
            row = self._core(s, name)
            revoked = self._revoke_owner(s, name, "core deleted")
            s.delete(row)
            return revoked

    def set_endpoints(self, core: str, endpoints: Sequence[Endpoint]) -> Core:
        with self._tx() as s:
            row = self._core(s, core)
            row.endpoints = [e.to_json() for e in endpoints]
            group = s.scalar(sa.select(GroupRow.name).where(GroupRow.id == row.group_id))
            s.flush()
            return self._core_entity(row, str(group))

    def record_heartbeat(self, core: str, heartbeat: dict[str, Any] | None) -> None:
        with self._tx() as s:
            row = self._core(s, core)
            row.last_seen = now()
            if heartbeat is not None:
                row.heartbeat = heartbeat

    def add_core_certificate(self, core: str, certificate: NewCertificate) -> None:
        with self._tx() as s:
            self._core(s, core)
            self._add_certificate(s, certificate)

    # ---- things ------------------------------------------------------------------------

    def create_thing(
        self,
        name: str,
        groups: Sequence[str],
        attributes: dict[str, str],
        certificate: Callable[[], NewCertificate],
    ) -> Thing:
        with self._tx() as s:
            group_rows = [self._group(s, g) for g in dict.fromkeys(groups)]
            taken = self._identity_taken(s, name)
            if taken:
                raise Conflict(f"the name {name!r} is already used by a {taken}")
            row = ThingRow(name=name, attributes=attributes, created_at=now())
            s.add(row)
            s.flush()
            for group_row in group_rows:
                s.add(GroupThingRow(group_id=group_row.id, thing_id=row.id))
            self._add_certificate(s, certificate())
            return self._thing_entity(row, sorted(g.name for g in group_rows))

    def get_thing(self, name: str) -> Thing:
        with self._tx() as s:
            row = self._thing(s, name)
            return self._thing_entity(row, self._thing_groups(s, [row.id]).get(row.id, []))

    def list_things(
        self, *, group: str | None = None, prefix: str = "", limit: int = 1000, offset: int = 0
    ) -> list[Thing]:
        limit = max(1, min(limit, MAX_PAGE))
        with self._tx() as s:
            query = sa.select(ThingRow.id, ThingRow.name, ThingRow.attributes, ThingRow.created_at)
            if group is not None:
                group_row = self._group(s, group)
                query = query.join(GroupThingRow, GroupThingRow.thing_id == ThingRow.id).where(
                    GroupThingRow.group_id == group_row.id
                )
            if prefix:
                query = query.where(ThingRow.name.startswith(prefix, autoescape=True))
            page = query.order_by(ThingRow.name).limit(limit).offset(max(offset, 0)).subquery()
            rows = s.execute(sa.select(page).order_by(page.c.name)).all()
            groups: dict[int, list[str]] = defaultdict(list)
            membership = (
                sa.select(GroupThingRow.thing_id, GroupRow.name)
                .join(GroupRow, GroupRow.id == GroupThingRow.group_id)
                .join(page, page.c.id == GroupThingRow.thing_id)
                .order_by(GroupRow.name)
            )
            for thing_id, group_name in s.execute(membership):
                groups[thing_id].append(group_name)
            return [
                Thing(
                    name=r.name,
                    groups=groups.get(r.id, []),
                    created_at=utc(r.created_at),
                    attributes=dict(r.attributes or {}),
                )
                for r in rows
            ]

    def count_things(self) -> int:
        with self._tx() as s:
            return int(s.scalar(sa.select(sa.func.count()).select_from(ThingRow)) or 0)

    def update_thing(self, name: str, attributes: dict[str, str]) -> Thing:
        with self._tx() as s:
            row = self._thing(s, name)
            row.attributes = attributes
            s.flush()
            return self._thing_entity(row, self._thing_groups(s, [row.id]).get(row.id, []))

    def delete_thing(self, name: str) -> tuple[list[str], list[str]]:
        """Delete a thing; returns (revoked fingerprints, groups it was in)."""
        with self._tx() as s:
            row = self._thing(s, name)
            groups = self._thing_groups(s, [row.id]).get(row.id, [])
            revoked = self._revoke_owner(s, name, "thing deleted")
            s.execute(sa.delete(GroupThingRow).where(GroupThingRow.thing_id == row.id))
            s.delete(row)
            return revoked, groups

    def attach_thing(self, group: str, thing: str) -> Thing:
        with self._tx() as s:
            group_row = self._group(s, group)
            row = self._thing(s, thing)
            exists = s.get(GroupThingRow, (group_row.id, row.id))
            if exists is not None:
                raise Conflict(f"thing {thing!r} is already in group {group!r}")
            s.add(GroupThingRow(group_id=group_row.id, thing_id=row.id))
            s.flush()
            return self._thing_entity(row, self._thing_groups(s, [row.id]).get(row.id, []))

    def detach_thing(self, group: str, thing: str) -> None:
        with self._tx() as s:
            group_row = self._group(s, group)
            row = self._thing(s, thing)
            link = s.get(GroupThingRow, (group_row.id, row.id))
            if link is None:
                raise NotFound("thing", thing, f"thing {thing!r} is not in group {group!r}")
            ref = f"thing:{thing}"
            used = s.scalar(
                sa.select(SubscriptionRow.id).where(
                    SubscriptionRow.group_id == group_row.id,
                    sa.or_(SubscriptionRow.source == ref, SubscriptionRow.target == ref),
                )
            )
            if used is not None:
                raise Conflict(
                    f"thing {thing!r} is used by subscriptions of group {group!r}: remove them first"
                )
            s.delete(link)

    def add_thing_certificate(self, thing: str, certificate: NewCertificate) -> None:
        with self._tx() as s:
            self._thing(s, thing)
            self._add_certificate(s, certificate)

    # ---- certificates ------------------------------------------------------------------

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
    def _certificate_entity(r: CertificateRow) -> Certificate:
        return Certificate(
            fingerprint=r.fingerprint,
            kind=r.kind,
            owner=r.owner,
            serial=r.serial,
            issued_at=utc(r.issued_at),
            not_after=utc(r.not_after),
            revoked_at=utc_or_none(r.revoked_at),
            pem=r.pem,
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

    def get_certificate(self, fingerprint: str) -> Certificate:
        with self._tx() as s:
            row = s.get(CertificateRow, fingerprint)
            if row is None:
                raise NotFound("certificate", fingerprint)
            return self._certificate_entity(row)

    def find_certificate(self, fingerprint: str) -> Certificate | None:
        with self._tx() as s:
            row = s.get(CertificateRow, fingerprint)
            return self._certificate_entity(row) if row else None

    def list_certificates(
        self, *, owner: str | None = None, kind: str | None = None, limit: int = 1000
    ) -> list[Certificate]:
        with self._tx() as s:
            query = (
                sa.select(CertificateRow)
                .order_by(CertificateRow.issued_at.desc())
                .limit(min(limit, MAX_PAGE))
            )
            if owner:
                query = query.where(CertificateRow.owner == owner)
            if kind:
                query = query.where(CertificateRow.kind == kind)
            return [self._certificate_entity(r) for r in s.scalars(query)]

    def revoke_certificate(self, fingerprint: str, reason: str = "revoked") -> Certificate:
        with self._tx() as s:
            row = s.get(CertificateRow, fingerprint)
            if row is None:
                raise NotFound("certificate", fingerprint)
            if row.revoked_at is not None:
                raise Conflict(f"certificate {fingerprint} is already revoked")
            row.revoked_at = now()
            row.revoke_reason = reason
            s.flush()
            return self._certificate_entity(row)

    def revoke_owner(self, owner: str, reason: str = "revoked") -> list[str]:
        with self._tx() as s:
            if self._identity_taken(s, owner) is None:
                raise NotFound("thing", owner)
            return self._revoke_owner(s, owner, reason)

    def revoked_fingerprints(self) -> list[str]:
        """Revoked certificates that have not expired yet (expired ones fail on their own)."""
        with self._tx() as s:
            query = sa.select(CertificateRow.fingerprint).where(
                CertificateRow.revoked_at.is_not(None), CertificateRow.not_after > now()
            )
            return sorted(s.scalars(query))

    def groups_of_owner(self, owner: str) -> list[str]:
        with self._tx() as s:
            core = s.scalar(sa.select(CoreRow).where(CoreRow.name == owner))
            if core is not None:
                return [str(s.scalar(sa.select(GroupRow.name).where(GroupRow.id == core.group_id)))]
            thing = s.scalar(sa.select(ThingRow).where(ThingRow.name == owner))
            if thing is None:
                return []
            return self._thing_groups(s, [thing.id]).get(thing.id, [])

    # ---- artifacts -----------------------------------------------------------------------

    def put_artifact(self, data: bytes) -> tuple[str, int]:
        sha = hashlib.sha256(data).hexdigest()
        with self._tx() as s:
            if s.get(ArtifactRow, sha) is None:
                s.add(ArtifactRow(sha256=sha, size=len(data), data=data, created_at=now()))
        return sha, len(data)

    def get_artifact(self, sha256: str) -> bytes:
        with self._tx() as s:
            row = s.get(ArtifactRow, sha256)
            if row is None:
                raise NotFound("artifact", sha256)
            return bytes(row.data)

    def artifact_size(self, sha256: str) -> int:
        with self._tx() as s:
            size = s.scalar(sa.select(ArtifactRow.size).where(ArtifactRow.sha256 == sha256))
            if size is None:
                raise NotFound("artifact", sha256, f"artifact {sha256} was never uploaded")
            return int(size)

    # ---- functions ---------------------------------------------------------------------

    @staticmethod
    def _version_entity(group: str, name: str, r: FunctionVersionRow) -> FunctionVersion:
        return FunctionVersion(
            group=group,
            name=name,
            version=r.version,
            settings=FunctionSettings(**r.settings),
            artifact_sha256=r.artifact_sha256,
            artifact_size=r.artifact_size,
            created_at=utc(r.created_at),
        )

    def _put_function(
        self,
        s: Session,
        group_row: GroupRow,
        name: str,
        settings: FunctionSettings,
        sha256: str,
        *,
        create: bool,
    ) -> FunctionVersion:
        size = s.scalar(sa.select(ArtifactRow.size).where(ArtifactRow.sha256 == sha256))
        if size is None:
            raise InvalidInput(
                f"artifact {sha256} was never uploaded: upload the code first", field="artifact"
            )
        row = s.scalar(
            sa.select(FunctionRow).where(
                FunctionRow.group_id == group_row.id, FunctionRow.name == name
            )
        )
        if row is None and not create:
            raise NotFound(
                "function", name, f"function {name!r} does not exist in group {group_row.name!r}"
            )
        if row is not None and create:
            raise Conflict(f"function {name!r} already exists in group {group_row.name!r}")
        if row is None:
            row = FunctionRow(group_id=group_row.id, name=name, latest_version=1, created_at=now())
            s.add(row)
            s.flush()
            version = 1
        else:
            version = row.latest_version + 1
            row.latest_version = version
        version_row = FunctionVersionRow(
            function_id=row.id,
            version=version,
            settings=settings.to_json(),
            artifact_sha256=sha256,
            artifact_size=int(size),
            created_at=now(),
        )
        s.add(version_row)
        s.flush()
        return self._version_entity(group_row.name, name, version_row)

    def create_function(
        self, group: str, name: str, settings: FunctionSettings, sha256: str
    ) -> FunctionVersion:
        with self._tx() as s:
            return self._put_function(s, self._group(s, group), name, settings, sha256, create=True)

    def update_function(
        self,
        group: str,
        name: str,
        update: Callable[[FunctionVersion], tuple[FunctionSettings, str]],
    ) -> FunctionVersion:
        """A new version from the latest one: ``update(latest) -> (settings, sha256)``."""
        with self._tx() as s:
            group_row = self._group(s, group)
            latest = self._latest_version(s, group_row, self._function(s, group_row, name))
            settings, sha256 = update(latest)
            return self._put_function(s, group_row, name, settings, sha256, create=False)

    def _latest_version(self, s: Session, group_row: GroupRow, row: FunctionRow) -> FunctionVersion:
        version_row = s.scalar(
            sa.select(FunctionVersionRow).where(
                FunctionVersionRow.function_id == row.id,
                FunctionVersionRow.version == row.latest_version,
            )
        )
        assert version_row is not None
        return self._version_entity(group_row.name, row.name, version_row)

    def get_function(self, group: str, name: str, version: int | None = None) -> FunctionVersion:
        with self._tx() as s:
            group_row = self._group(s, group)
            row = self._function(s, group_row, name)
            if version is None:
                return self._latest_version(s, group_row, row)
            version_row = s.scalar(
                sa.select(FunctionVersionRow).where(
                    FunctionVersionRow.function_id == row.id, FunctionVersionRow.version == version
                )
            )
            if version_row is None:
                raise NotFound("function version", f"{name}:{version}")
            return self._version_entity(group, name, version_row)

    def list_function_versions(self, group: str, name: str) -> list[FunctionVersion]:
        with self._tx() as s:
            group_row = self._group(s, group)
            row = self._function(s, group_row, name)
            rows = s.scalars(
                sa.select(FunctionVersionRow)
                .where(FunctionVersionRow.function_id == row.id)
                .order_by(FunctionVersionRow.version)
            )
            return [self._version_entity(group, name, r) for r in rows]

    def _functions(self, s: Session, group_row: GroupRow) -> list[FunctionVersion]:
        query = (
            sa.select(FunctionRow.name, FunctionVersionRow)
            .join(FunctionVersionRow, FunctionVersionRow.function_id == FunctionRow.id)
            .where(
                FunctionRow.group_id == group_row.id,
                FunctionVersionRow.version == FunctionRow.latest_version,
            )
            .order_by(FunctionRow.name)
        )
        return [self._version_entity(group_row.name, name, r) for name, r in s.execute(query)]

    def list_functions(self, group: str) -> list[FunctionVersion]:
        with self._tx() as s:
            return self._functions(s, self._group(s, group))

    def delete_function(self, group: str, name: str) -> None:
        with self._tx() as s:
            group_row = self._group(s, group)
            row = self._function(s, group_row, name)
            ref = f"function:{name}"
            used = s.execute(
                sa.select(
                    SubscriptionRow.id,
                    SubscriptionRow.source,
                    SubscriptionRow.topic,
                    SubscriptionRow.target,
                )
                .where(
                    SubscriptionRow.group_id == group_row.id,
                    sa.or_(SubscriptionRow.source == ref, SubscriptionRow.target == ref),
                )
                .order_by(SubscriptionRow.id)
            ).all()
            if used:
                named = "; ".join(f"{u.id}: {u.source} {u.topic} -> {u.target}" for u in used)
                raise Conflict(
                    f"function {name!r} is used by subscriptions of group {group!r} ({named}):"
                    f" remove them first (hedgerow cloud subscription remove --group {group} ID)"
                )
            s.execute(sa.delete(FunctionVersionRow).where(FunctionVersionRow.function_id == row.id))
            s.delete(row)

    # ---- subscriptions -----------------------------------------------------------------

    def _check_ref(
        self,
        s: Session,
        group_row: GroupRow,
        ref: domain.EndpointRef,
        function_names: set[str] | None = None,
    ) -> None:
        if ref.kind == "thing":
            thing = s.scalar(sa.select(ThingRow).where(ThingRow.name == ref.name))
            if thing is None or s.get(GroupThingRow, (group_row.id, thing.id)) is None:
                raise InvalidInput(
                    f"thing {ref.name!r} is not in group {group_row.name!r}", field="thing"
                )
        elif ref.kind == "function":
            if function_names is not None:
                if ref.name not in function_names:
                    raise InvalidInput(
                        f"function {ref.name!r} is not in group {group_row.name!r}",
                        field="function",
                    )
                return
            exists = s.scalar(
                sa.select(FunctionRow.id).where(
                    FunctionRow.group_id == group_row.id, FunctionRow.name == ref.name
                )
            )
            if exists is None:
                raise InvalidInput(
                    f"function {ref.name!r} is not in group {group_row.name!r}", field="function"
                )

    def add_subscription(self, group: str, source: str, topic: str, target: str) -> Subscription:
        src = domain.parse_endpoint_ref(source, "source")
        dst = domain.parse_endpoint_ref(target, "target")
        topic = domain.validate_topic_filter_text(topic)
        if str(src) == str(dst):
            raise InvalidInput("source and target must differ")
        with self._tx() as s:
            group_row = self._group(s, group)
            self._check_ref(s, group_row, src)
            self._check_ref(s, group_row, dst)
            dup = s.scalar(
                sa.select(SubscriptionRow.id).where(
                    SubscriptionRow.group_id == group_row.id,
                    SubscriptionRow.source == str(src),
                    SubscriptionRow.topic == topic,
                    SubscriptionRow.target == str(dst),
                )
            )
            if dup is not None:
                raise Conflict(f"subscription {src} {topic} -> {dst} already exists (id {dup})")
            row = SubscriptionRow(
                group_id=group_row.id,
                source=str(src),
                topic=topic,
                target=str(dst),
                created_at=now(),
            )
            s.add(row)
            s.flush()
            return Subscription(row.id, group, row.source, row.topic, row.target)

    def _subscriptions(self, s: Session, group_row: GroupRow) -> list[Subscription]:
        rows = s.scalars(
            sa.select(SubscriptionRow)
            .where(SubscriptionRow.group_id == group_row.id)
            .order_by(SubscriptionRow.id)
        )
        return [Subscription(r.id, group_row.name, r.source, r.topic, r.target) for r in rows]

    def list_subscriptions(self, group: str) -> list[Subscription]:
        with self._tx() as s:
            return self._subscriptions(s, self._group(s, group))

    def all_cloud_routes(self) -> dict[str, tuple[list[str], list[str]]]:
        """Per group: (filters routed to the cloud, filters routed from the cloud)."""
        with self._tx() as s:
            query = sa.select(GroupRow.name, SubscriptionRow).join(
                GroupRow, GroupRow.id == SubscriptionRow.group_id
            )
            routes: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
            for group, row in s.execute(query):
                if row.target == "cloud":
                    routes[group][0].append(row.topic)
                if row.source == "cloud":
                    routes[group][1].append(row.topic)
            return dict(routes)

    @staticmethod
    def _subscription(s: Session, group_row: GroupRow, subscription_id: int) -> SubscriptionRow:
        row = s.get(SubscriptionRow, subscription_id)
        if row is None or row.group_id != group_row.id:
            raise NotFound(
                "subscription",
                str(subscription_id),
                f"subscription {subscription_id} does not exist in group {group_row.name!r}",
            )
        return row

    def get_subscription(self, group: str, subscription_id: int) -> Subscription:
        with self._tx() as s:
            group_row = self._group(s, group)
            row = self._subscription(s, group_row, subscription_id)
            return Subscription(row.id, group, row.source, row.topic, row.target)

    def update_subscription(
        self, group: str, subscription_id: int, changes: dict[str, Any]
    ) -> Subscription:
        with self._tx() as s:
            group_row = self._group(s, group)
            row = self._subscription(s, group_row, subscription_id)
            src = domain.parse_endpoint_ref(changes.get("source", row.source), "source")
            dst = domain.parse_endpoint_ref(changes.get("target", row.target), "target")
            topic = domain.validate_topic_filter_text(changes.get("topic", row.topic))
            if str(src) == str(dst):
                raise InvalidInput("source and target must differ")
            self._check_ref(s, group_row, src)
            self._check_ref(s, group_row, dst)
            row.source, row.topic, row.target = str(src), topic, str(dst)
            s.flush()
            return Subscription(row.id, group, row.source, row.topic, row.target)

    def delete_subscription(self, group: str, subscription_id: int) -> None:
        with self._tx() as s:
            s.delete(self._subscription(s, self._group(s, group), subscription_id))

    # ---- fleet -------------------------------------------------------------------------

    def apply_to_groups(
        self,
        groups: Sequence[str],
        functions: Sequence[tuple[str, FunctionSettings, str]],
        subscriptions: Sequence[tuple[str, str, str]],
    ) -> None:
        """Make each group's functions and subscriptions exactly these, all or nothing."""
        parsed = [
            (
                domain.parse_endpoint_ref(src, "source"),
                domain.validate_topic_filter_text(topic),
                domain.parse_endpoint_ref(dst, "target"),
            )
            for src, topic, dst in subscriptions
        ]
        names = {name for name, _, _ in functions}
        with self._tx() as s:
            for group in groups:
                group_row = self._group(s, group)
                for src, _, dst in parsed:
                    self._check_ref(s, group_row, src, names)
                    self._check_ref(s, group_row, dst, names)
                s.execute(
                    sa.delete(SubscriptionRow).where(SubscriptionRow.group_id == group_row.id)
                )
                current = {f.name: f for f in self._functions(s, group_row)}
                for name in set(current) - names:
                    function_row = self._function(s, group_row, name)
                    s.execute(
                        sa.delete(FunctionVersionRow).where(
                            FunctionVersionRow.function_id == function_row.id
                        )
                    )
                    s.delete(function_row)
                s.flush()
                for name, settings, sha in functions:
                    old = current.get(name)
                    if old is not None and old.settings == settings and old.artifact_sha256 == sha:
                        continue
                    self._put_function(s, group_row, name, settings, sha, create=old is None)
                for src_text, topic, dst_text in dict.fromkeys(
                    (str(a), b, str(c)) for a, b, c in parsed
                ):
                    s.add(
                        SubscriptionRow(
                            group_id=group_row.id,
                            source=src_text,
                            topic=topic,
                            target=dst_text,
                            created_at=now(),
                        )
                    )

    # ---- deployments -------------------------------------------------------------------

    def _snapshot(self, s: Session, group_row: GroupRow, *, empty: bool) -> Snapshot:
        core = s.scalar(sa.select(CoreRow.name).where(CoreRow.group_id == group_row.id))
        if core is None:
            raise Conflict(
                f"group {group_row.name!r} has no core: create one with `hedgerow cloud core create`"
            )
        things = s.scalars(
            sa.select(ThingRow.name)
            .join(GroupThingRow, GroupThingRow.thing_id == ThingRow.id)
            .where(GroupThingRow.group_id == group_row.id)
            .order_by(ThingRow.name)
        ).all()
        return Snapshot(
            group=self._group_entity(s, group_row),
            core=core,
            things=list(things),
            functions=[] if empty else self._functions(s, group_row),
            subscriptions=[] if empty else self._subscriptions(s, group_row),
        )

    def create_deployment(
        self,
        group: str,
        kind: str,
        build: Callable[[Snapshot], tuple[str, str, str]],
        *,
        document_of: str | None = None,
    ) -> Deployment:
        """Freeze the group and store the deployment ``build(snapshot) -> (id, document, signature)``.

        With ``document_of`` the snapshot is that earlier deployment's (a redeployment).
        """
        with self._tx() as s:
            group_row = self._group(s, group)
            snapshot = self._snapshot(s, group_row, empty=kind == domain.DeploymentKind.RESET)
            if document_of is not None:
                old = s.get(DeploymentRow, document_of)
                if old is None or old.group_id != group_row.id:
                    raise NotFound(
                        "deployment",
                        document_of,
                        f"deployment {document_of!r} does not exist in group {group!r}",
                    )
                snapshot = _snapshot_from_document(snapshot, old.document)
            deployment_id, document, signature = build(snapshot)
            at = now()
            row = DeploymentRow(
                id=deployment_id,
                group_id=group_row.id,
                core=snapshot.core,
                kind=kind,
                document=document,
                signature=signature,
                status=DeploymentStatus.PENDING.value,
                detail="",
                created_at=at,
                updated_at=at,
            )
            s.add(row)
            s.flush()
            s.add(
                DeploymentEventRow(
                    deployment_id=deployment_id, status=row.status, detail="created", at=at
                )
            )
            s.flush()
            return self._deployment_entity(s, row, group)

    def _deployment_entity(
        self, s: Session, row: DeploymentRow, group: str, *, events: bool = True
    ) -> Deployment:
        event_list: list[DeploymentEvent] = []
        if events:
            event_list = [
                DeploymentEvent(e.status, e.detail, utc(e.at))
                for e in s.scalars(
                    sa.select(DeploymentEventRow)
                    .where(DeploymentEventRow.deployment_id == row.id)
                    .order_by(DeploymentEventRow.id)
                )
            ]
        return Deployment(
            id=row.id,
            group=group,
            core=row.core,
            kind=row.kind,
            created_at=utc(row.created_at),
            status=row.status,
            detail=row.detail,
            updated_at=utc(row.updated_at),
            events=event_list,
        )

    def get_deployment(self, deployment_id: str) -> Deployment:
        with self._tx() as s:
            row = s.get(DeploymentRow, deployment_id)
            if row is None:
                raise NotFound("deployment", deployment_id)
            group = s.scalar(sa.select(GroupRow.name).where(GroupRow.id == row.group_id))
            return self._deployment_entity(s, row, str(group))

    def deployment_document(self, deployment_id: str) -> tuple[str, str, str]:
        """(core, document, signature)."""
        with self._tx() as s:
            row = s.get(DeploymentRow, deployment_id)
            if row is None:
                raise NotFound("deployment", deployment_id)
            return row.core, row.document, row.signature

    def list_deployments(self, group: str, limit: int = 100) -> list[Deployment]:
        with self._tx() as s:
            group_row = self._group(s, group)
            rows = s.scalars(
                sa.select(DeploymentRow)
                .where(DeploymentRow.group_id == group_row.id)
                .order_by(DeploymentRow.created_at.desc(), DeploymentRow.id.desc())
                .limit(min(limit, MAX_PAGE))
            )
            return [self._deployment_entity(s, r, group, events=False) for r in rows]

    def latest_deployment(self, core: str) -> str | None:
        with self._tx() as s:
            row = self._core(s, core)
            return s.scalar(
                sa.select(DeploymentRow.id)
                .where(DeploymentRow.group_id == row.group_id, DeploymentRow.core == core)
                .order_by(DeploymentRow.created_at.desc(), DeploymentRow.id.desc())
                .limit(1)
            )

    def artifact_in_core_deployments(self, core: str, sha256: str) -> bool:
        with self._tx() as s:
            row = self._core(s, core)
            exists = s.scalar(
                sa.select(FunctionVersionRow.id)
                .join(FunctionRow, FunctionRow.id == FunctionVersionRow.function_id)
                .where(
                    FunctionRow.group_id == row.group_id,
                    FunctionVersionRow.artifact_sha256 == sha256,
                )
                .limit(1)
            )
            if exists is not None:
                return True
            documents = s.scalars(
                sa.select(DeploymentRow.document).where(DeploymentRow.group_id == row.group_id)
            )
            return any(sha256 in d for d in documents)

    def set_deployment_status(
        self, deployment_id: str, core: str, status: DeploymentStatus, detail: str
    ) -> Deployment:
        with self._tx() as s:
            row = s.get(DeploymentRow, deployment_id)
            if row is None or row.core != core:
                raise NotFound(
                    "deployment", deployment_id, f"deployment {deployment_id!r} is not {core!r}'s"
                )
            group = s.scalar(sa.select(GroupRow.name).where(GroupRow.id == row.group_id))
            seen = s.scalar(
                sa.select(DeploymentEventRow.id).where(
                    DeploymentEventRow.deployment_id == deployment_id,
                    DeploymentEventRow.status == status.value,
                )
            )
            if seen is not None:  # the same report again (several cloud processes, a resend)
                return self._deployment_entity(s, row, str(group))
            at = now()
            row.status = status.value
            row.detail = detail
            row.updated_at = at
            s.add(
                DeploymentEventRow(
                    deployment_id=deployment_id, status=status.value, detail=detail, at=at
                )
            )
            s.flush()
            group = s.scalar(sa.select(GroupRow.name).where(GroupRow.id == row.group_id))
            return self._deployment_entity(s, row, str(group))

    # ---- discovery ---------------------------------------------------------------------

    def discovery_groups(self, thing: str) -> list[DiscoveryGroup]:
        with self._tx() as s:
            row = self._thing(s, thing)
            query = (
                sa.select(GroupRow.name, GroupRow.ca_rotation_days, CoreRow)
                .join(GroupThingRow, GroupThingRow.group_id == GroupRow.id)
                .join(CoreRow, CoreRow.group_id == GroupRow.id)
                .where(GroupThingRow.thing_id == row.id)
                .order_by(GroupRow.name)
            )
            return [
                DiscoveryGroup(group, core.name, self._core_entity(core, group).endpoints, rotation)
                for group, rotation, core in s.execute(query)
            ]

    @functools.cache  # noqa: B019 - two statements per repository, built once
    def _discovery_statements(self) -> tuple[sa.Select[Any], sa.Select[Any]]:
        certificates, groups, cores, things, links = (
            sa.inspect(CertificateRow).local_table,
            sa.inspect(GroupRow).local_table,
            sa.inspect(CoreRow).local_table,
            sa.inspect(ThingRow).local_table,
            sa.inspect(GroupThingRow).local_table,
        )
        c, g, k, t, gt = certificates.c, groups.c, cores.c, things.c, links.c
        identity = sa.select(
            c.fingerprint, c.kind, c.owner, c.serial, c.issued_at, c.not_after, c.revoked_at
        ).where(c.fingerprint == sa.bindparam("fingerprint"))
        member_of = (
            sa.select(g.name, g.ca_rotation_days, k.name.label("core"), k.endpoints)
            .select_from(things)
            .join(links, gt.thing_id == t.id)
            .join(groups, g.id == gt.group_id)
            .join(cores, k.group_id == g.id)
            .where(t.name == sa.bindparam("thing"))
            .order_by(g.name)
        )
        return identity, member_of

    def identity_and_groups(
        self, fingerprint: str, thing: str
    ) -> tuple[Certificate | None, list[DiscoveryGroup]]:
        """Discovery's hot path in one connection with two Core queries (no ORM)."""
        identity_query, groups_query = self._discovery_statements()
        with self.engine.connect() as connection:
            row = connection.execute(identity_query, {"fingerprint": fingerprint}).first()
            if row is None:
                return None, []
            certificate = Certificate(
                fingerprint=row.fingerprint,
                kind=row.kind,
                owner=row.owner,
                serial=row.serial,
                issued_at=utc(row.issued_at),
                not_after=utc(row.not_after),
                revoked_at=utc_or_none(row.revoked_at),
                pem="",
            )
            if row.owner != thing:
                return certificate, []
            rows = connection.execute(groups_query, {"thing": thing}).all()
        groups = [
            DiscoveryGroup(
                r.name,
                r.core,
                [
                    Endpoint(e["host"], int(e["port"]), e.get("metadata", ""))
                    for e in r.endpoints or []
                ],
                r.ca_rotation_days,
            )
            for r in rows
        ]
        return certificate, groups

    # ---- telemetry ---------------------------------------------------------------------

    def insert_messages(self, rows: Sequence[tuple[str, bytes, str, float]]) -> None:
        if not rows:
            return
        if self.dialect == "postgresql":
            self._copy_messages(rows)
            return
        with self.engine.begin() as connection:
            connection.execute(
                sa.insert(MessageRow.__table__),  # type: ignore[arg-type]
                [{"topic": t, "payload": p, "core": c, "ts": ts} for t, p, c, ts in rows],
            )

    def _copy_messages(self, rows: Sequence[tuple[str, bytes, str, float]]) -> None:
        """PostgreSQL's COPY: an order of magnitude faster than INSERTs for telemetry."""
        raw = self.engine.raw_connection()
        try:
            cursor = raw.cursor()
            with cursor.copy("COPY messages (topic, payload, core, ts) FROM STDIN") as copy:  # type: ignore[attr-defined]
                for row in rows:
                    copy.write_row(row)
            raw.commit()
        except Exception:
            raw.rollback()
            raise
        finally:
            raw.close()

    def query_messages(
        self,
        *,
        topic_filter: str | None = None,
        since: float | None = None,
        until: float | None = None,
        after_id: int | None = None,
        up_to_id: int | None = None,
        limit: int = 100,
        newest_first: bool = True,
    ) -> list[Message]:
        limit = max(1, min(limit, MAX_PAGE))
        prefix = _literal_prefix(topic_filter) if topic_filter else ""
        exact = topic_filter is not None and "+" not in topic_filter and "#" not in topic_filter
        table = MessageRow
        result: list[Message] = []
        cursor: int | None = None
        with self._tx() as s:
            while len(result) < limit:
                query = sa.select(table.id, table.topic, table.payload, table.core, table.ts)
                if exact:
                    query = query.where(table.topic == topic_filter)
                elif prefix:
                    query = query.where(table.topic.startswith(prefix, autoescape=True))
                if since is not None:
                    query = query.where(table.ts >= since)
                if until is not None:
                    query = query.where(table.ts <= until)
                if after_id is not None:
                    query = query.where(table.id > after_id)
                if up_to_id is not None:
                    query = query.where(table.id <= up_to_id)
                if cursor is not None:
                    query = query.where(table.id < cursor if newest_first else table.id > cursor)
                order = table.id.desc() if newest_first else table.id.asc()
                chunk = s.execute(
                    query.order_by(order).limit(QUERY_CHUNK if not exact else limit)
                ).all()
                for mid, topic, payload, core, ts in chunk:
                    if topic_filter is None or exact or domain.topic_matches(topic_filter, topic):
                        result.append(Message(mid, topic, bytes(payload), core, ts))
                        if len(result) >= limit:
                            break
                if len(chunk) < (QUERY_CHUNK if not exact else limit) or not chunk:
                    break
                cursor = chunk[-1][0]
        return result

    def delete_messages_before(self, ts: float) -> int:
        with self.engine.begin() as connection:
            result = connection.execute(sa.delete(MessageRow).where(MessageRow.ts < ts))
            return int(result.rowcount or 0)

    def max_message_id(self) -> int:
        with self._tx() as s:
            return int(s.scalar(sa.select(sa.func.max(MessageRow.id))) or 0)

    def count_messages(self) -> int:
        with self._tx() as s:
            return int(s.scalar(sa.select(sa.func.count()).select_from(MessageRow)) or 0)

    # ---- tokens ------------------------------------------------------------------------

    def add_token(self, name: str, token: str) -> None:
        with self._tx() as s:
            s.add(ApiTokenRow(name=name, token_sha256=token_digest(token), created_at=now()))

    def token_valid(self, token: str) -> bool:
        with self._tx() as s:
            return (
                s.scalar(
                    sa.select(ApiTokenRow.id).where(ApiTokenRow.token_sha256 == token_digest(token))
                )
                is not None
            )


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _literal_prefix(topic_filter: str) -> str:
    cut = len(topic_filter)
    for marker in ("+", "#"):
        index = topic_filter.find(marker)
        if index != -1:
            cut = min(cut, index)
    return topic_filter[:cut]


def _first_line(exc: BaseException | None) -> str:
    return str(exc).splitlines()[0] if exc else "constraint violated"


def _snapshot_from_document(current: Snapshot, document: str) -> Snapshot:
    """The functions and subscriptions an earlier document froze (for a redeployment)."""
    import json

    data = json.loads(document)
    functions = [
        FunctionVersion(
            group=current.group.name,
            name=f["name"],
            version=f["version"],
            settings=FunctionSettings(
                **{k: f[k] for k in FunctionSettings.__dataclass_fields__ if k in f}
            ),
            artifact_sha256=f["artifact"]["sha256"],
            artifact_size=f["artifact"]["size"],
            created_at=now(),
        )
        for f in data.get("functions", [])
    ]
    subscriptions = [
        Subscription(0, current.group.name, sub["source"], sub["topic"], sub["target"])
        for sub in data.get("subscriptions", [])
    ]
    return Snapshot(current.group, current.core, current.things, functions, subscriptions)
