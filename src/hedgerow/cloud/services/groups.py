"""Groups and their CAs: creation, settings, rotation, and telling cores about new CAs."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import logging
from typing import Any

from hedgerow import pki
from hedgerow.cloud.domain import Group
from hedgerow.cloud.errors import NotFound
from hedgerow.cloud.pki_service import PKIService
from hedgerow.cloud.services.notify import (
    DiscoveryChanged,
    Notifier,
    RoutesChanged,
    discovery_unchanged,
    group_cas_topic,
)
from hedgerow.cloud.storage.groups import GroupStore

log = logging.getLogger(__name__)


class GroupService:
    def __init__(
        self,
        store: GroupStore,
        pki_service: PKIService,
        notifier: Notifier,
        routes_changed: RoutesChanged,
        discovery_changed: DiscoveryChanged = discovery_unchanged,
    ) -> None:
        self.store = store
        self.pki = pki_service
        self.notifier = notifier
        self.routes_changed = routes_changed
        #: a new group CA, a group's rotation period or its removal change discovery
        self.discovery_changed = discovery_changed
        #: after a takeover of the CA job: announce the CAs made since then (``ca_job``)
        self._catch_up_since: dt.datetime | None = None

    async def create(
        self,
        name: str,
        description: str,
        settings: dict[str, Any],
        ca_rotation_days: int | None,
        labels: dict[str, str] | None = None,
    ) -> Group:
        group = await asyncio.to_thread(
            self.store.create_group,
            name,
            description,
            {"open_broker": False, **settings},
            ca_rotation_days,
            labels,
        )
        log.info("group.created name=%s", name)
        return group

    async def all(
        self,
        labels: dict[str, str] | None = None,
        *,
        prefix: str = "",
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Group]:
        """Every group, or those carrying all of ``labels`` (a page: ``limit``, ``offset``)."""
        return await asyncio.to_thread(
            functools.partial(
                self.store.list_groups, labels, prefix=prefix, limit=limit, offset=offset
            )
        )

    async def get(self, name: str) -> Group:
        return await asyncio.to_thread(self.store.get_group, name)

    async def update(
        self,
        name: str,
        *,
        description: str | None,
        settings: dict[str, Any] | None,
        ca_rotation_days: int | None,
        labels: dict[str, str] | None = None,
    ) -> Group:
        """Change the given fields (``None``: leave as is; labels are merged, ``""``
        removes one)."""
        group = await asyncio.to_thread(
            self.store.update_group,
            name,
            description=description,
            settings=settings,
            ca_rotation_days=ca_rotation_days,
            labels=labels,
        )
        self.pki.forget(name)
        self.discovery_changed()
        return group

    async def delete(self, name: str) -> None:
        group = await self.get(name)
        revoked = await asyncio.to_thread(self.store.delete_group, name)
        self.discovery_changed()
        await self.routes_changed()
        if group.core and revoked:
            await self.notifier.disconnect(group.core, "core deleted")
        log.info("group.deleted name=%s", name)

    async def cas(self, name: str) -> list[dict[str, Any]]:
        group = await self.get(name)
        cas = await asyncio.to_thread(self.pki.group_cas, name, group.ca_rotation_days)
        await self.announce_rotations()
        return [_ca_json(c) for c in cas]

    async def rotate_ca(self, name: str) -> list[dict[str, Any]]:
        group = await self.get(name)
        cas = await asyncio.to_thread(self.pki.rotate, name, group.ca_rotation_days)
        await self.announce_rotations()
        return [_ca_json(c) for c in cas]

    async def rotate_due_cas(self) -> None:
        """Make a new CA for every group whose current one is due (and tell their cores)."""
        for group in await self.all():
            await asyncio.to_thread(self.pki.group_cas, group.name, group.ca_rotation_days)
        await self.announce_rotations()

    def take_over_ca_job(self, window_s: float) -> None:
        """This process just took the CA job (``hedgerow.cloud.jobs``): its next tick also
        announces the CAs made in the last ``window_s`` — a replica killed between storing
        a new CA and announcing it left that announcement to whoever comes next."""
        self._catch_up_since = pki.now() - dt.timedelta(seconds=window_s)

    async def ca_job(self) -> None:
        """One tick of the CA job: rotate what is due, and catch up after a takeover."""
        await self.rotate_due_cas()
        since, self._catch_up_since = self._catch_up_since, None
        if since is None:
            return
        for group in await self.all():
            if not group.core:
                continue
            cas = await asyncio.to_thread(self.pki.group_cas, group.name, group.ca_rotation_days)
            if cas and cas[0].created_at >= since:
                await self.announce_cas(group.name)

    async def announce_rotations(self) -> None:
        """Tell the cores of the groups this process rotated (on demand, due or lazily)."""
        rotated = self.pki.take_rotated()
        if rotated:
            self.discovery_changed()
        for name in rotated:
            if not await self.announce_cas(name):
                # no core yet (its CA was made first): the core gets it once it has one
                self.pki.keep_rotated(name)

    async def announce_cas(self, name: str) -> bool:
        """Publish the group's CAs (newest first, retained) to its core.

        A core whose server certificate is not signed by the newest CA renews it; a core
        that misses this (offline, or the publish failed) catches up when it polls
        ``GET /core/v1/group-cas``, so a failed publish is logged, not raised. False: the
        group has no core to tell (yet).
        """
        try:
            group = await self.get(name)
        except NotFound:
            return True  # nobody to tell, ever
        if not group.core:
            return False
        cas = await asyncio.to_thread(self.pki.group_cas, name, group.ca_rotation_days)
        payload = json.dumps({"group_cas": [c.cert_pem for c in cas]}).encode()
        try:
            await self.notifier.publish(group_cas_topic(group.core), payload, retain=True)
        except Exception as exc:
            log.warning(
                "group.cas_announce_failed group=%s core=%s error=%r", name, group.core, exc
            )
            return True
        log.info(
            "group.cas_announced group=%s core=%s generation=%s",
            name,
            group.core,
            cas[0].generation,
        )
        return True


def _ca_json(ca: Any) -> dict[str, Any]:
    return {
        "generation": ca.generation,
        "fingerprint": ca.fingerprint,
        "certificate": ca.cert_pem,
        "created_at": ca.created_at.isoformat(),
        "not_after": ca.not_after.isoformat(),
    }
