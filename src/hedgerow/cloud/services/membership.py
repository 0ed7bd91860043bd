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
from collections.abc import Iterable

from hedgerow.cloud.errors import NotFound
from hedgerow.cloud.services.notify import Notifier
from hedgerow.cloud.storage.repository import Repository
from hedgerow.contract.topics import CoreLeaf, core_topic

log = logging.getLogger(__name__)

#: things read per repository call while listing a group's members
PAGE = 1000


def things_topic(core: str) -> str:
    return core_topic(core, CoreLeaf.THINGS)


def membership_payload(things: Iterable[str]) -> bytes:
    return json.dumps({"things": sorted(things)}).encode()


class MembershipService:
    def __init__(self, store: Repository, notifier: Notifier) -> None:
        self.store = store
        self.notifier = notifier

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

    async def core_things(self, core: str) -> dict[str, list[str]]:
        """``GET /core/v1/things``: the things of the core's group."""
        group = (await asyncio.to_thread(self.store.get_core, core)).group
        return {"things": await self.group_things(group)}

    async def announce(self, groups: Iterable[str]) -> None:
        """Publish each group's things (retained) to its core, if it has one."""
        for name in dict.fromkeys(groups):
            try:
                group = await asyncio.to_thread(self.store.get_group, name)
                if not group.core:
                    continue
                things = await self.group_things(name)
            except NotFound:
                continue
            try:
                await self.notifier.publish(
                    things_topic(group.core), membership_payload(things), retain=True
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
                len(things),
            )
