"""Group membership reaches the core as revocations do: no deployment needed to join or leave.

Whenever the things of a group change (a thing created into it, attached, detached or
deleted; a core created for it), the cloud publishes the group's thing names, retained, on
``$hedgerow/cores/{core}/things``; a core that was away reads the same list from
``GET /core/v1/things`` when it reconnects. The core admits exactly those things (a
deployment still carries the full state, things included, for a core that never heard the
list). A failed publish is logged, not raised: the core catches up on its next connect.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Sequence
from typing import Protocol

from hedgerow.cloud.errors import NotFound
from hedgerow.cloud.services.notify import DiscoveryChanged, Notifier, discovery_unchanged
from hedgerow.cloud.storage.repository import Repository
from hedgerow.contract.provisioning import Membership
from hedgerow.contract.topics import CoreLeaf, core_topic

log = logging.getLogger(__name__)

#: things read per repository call while listing a group's members
PAGE = 1000


def things_topic(core: str) -> str:
    return core_topic(core, CoreLeaf.THINGS)


class DeviceTrust(Protocol):
    """Where the device HTTPS server learns a certificate to trust (a device CA, or a
    device's own certificate), as soon as it is registered."""

    def add(self, pems: Sequence[str]) -> None: ...


class NoDeviceTrust:
    def add(self, pems: Sequence[str]) -> None:
        return None


class MembershipService:
    def __init__(
        self,
        store: Repository,
        notifier: Notifier,
        discovery_changed: DiscoveryChanged = discovery_unchanged,
    ) -> None:
        self.store = store
        self.notifier = notifier
        self.discovery_changed = discovery_changed

    async def group_things(self, group: str) -> list[str]:
        """Every thing of ``group`` by name (all pages)."""
        names: list[str] = []
        while True:
            page = await asyncio.to_thread(
                self.store.list_things, group=group, prefix="", limit=PAGE, offset=len(names)
            )
            names += [t.name for t in page]
            if len(page) < PAGE:
                return names

    async def membership(self, group: str) -> Membership:
        """The group's things, and what its core trusts besides the root CA: the device CAs
        registered for the group and its things' own registered certificates (by name)."""

        def trust() -> tuple[list[str], dict[str, str]]:
            cas = self.store.list_device_cas(live_only=True)
            own = self.store.external_certificates_of_group(group)
            pems = [ca.cert_pem for ca in cas if ca.group == group] + [pem for pem, _, _ in own]
            return pems, {fingerprint: thing for _, fingerprint, thing in own}

        pems, names = await asyncio.to_thread(trust)
        return Membership(tuple(await self.group_things(group)), tuple(pems), names)

    async def core_things(self, core: str) -> dict[str, object]:
        """``GET /core/v1/things``: the things of the core's group (``Membership``)."""
        group = (await asyncio.to_thread(self.store.get_core, core)).group
        return dict(json.loads((await self.membership(group)).to_json()))

    async def announce(self, groups: Iterable[str]) -> None:
        """Publish each group's things (retained) to its core, if it has one; discovery
        answers are forgotten first (the same changes move them)."""
        self.discovery_changed()
        for name in dict.fromkeys(groups):
            try:
                group = await asyncio.to_thread(self.store.get_group, name)
                if not group.core:
                    continue
                membership = await self.membership(name)
            except NotFound:
                continue
            try:
                await self.notifier.publish(
                    things_topic(group.core), membership.to_json().encode(), retain=True
                )
            except Exception as exc:  # the core reads GET /core/v1/things when it reconnects
                log.warning(
                    "group.membership_announce_failed group=%s core=%s error=%r",
                    name,
                    group.core,
                    exc,
                )
                continue
            log.info(
                "group.membership_announced group=%s core=%s things=%d",
                name,
                group.core,
                len(membership.things),
            )
