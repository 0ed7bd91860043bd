"""Things and their group membership."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence

import sqlalchemy as sa

from hedgerow.cloud.domain import (
    Thing,
)
from hedgerow.cloud.errors import Conflict, NotFound
from hedgerow.cloud.storage.base import (
    MAX_PAGE,
    NewCertificate,
    Store,
    now,
    utc,
)
from hedgerow.cloud.storage.models import (
    ExternalCertificateRow,
    GroupRow,
    GroupThingRow,
    SubscriptionRow,
    ThingRow,
)

log = logging.getLogger(__name__)


class ThingStore(Store):
    def create_thing(
        self,
        name: str,
        groups: Sequence[str],
        attributes: dict[str, str],
        certificate: Callable[[], NewCertificate],
        *,
        external: bool = False,
    ) -> Thing:
        """``external``: the certificate is the device's own, registered as it is (the core
        trusts it as its own anchor; ``storage/claims.py``)."""
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
            record = certificate()
            self._add_certificate(s, record)
            if external:
                s.flush()
                s.add(ExternalCertificateRow(fingerprint=record.fingerprint, created_at=now()))
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
