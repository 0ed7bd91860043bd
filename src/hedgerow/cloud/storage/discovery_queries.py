"""What Greengrass V1 discovery reads, in as few queries as possible."""

from __future__ import annotations

import functools
import logging
from typing import Any

import sqlalchemy as sa

from hedgerow.cloud.domain import (
    Certificate,
    Endpoint,
)
from hedgerow.cloud.storage.base import (
    DiscoveryGroup,
    Store,
    utc,
    utc_or_none,
)
from hedgerow.cloud.storage.models import (
    CertificateRow,
    CoreRow,
    GroupRow,
    GroupThingRow,
    ThingRow,
)

log = logging.getLogger(__name__)


class DiscoveryStore(Store):
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
