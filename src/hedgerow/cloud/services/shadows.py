"""Synced thing shadows: the cloud's copy, read and changed by the API and by cores.

The rules (versions, conflicts, who wins which section) are ``hedgerow.contract.shadow``;
this service runs them on the stored copy and tells the cores that sync the thing
(``$hedgerow/cores/{core}/shadow``, QoS 1) the result after every change, and answers
every update a core sends, accepted or not.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hedgerow.cloud.errors import Conflict, InvalidInput
from hedgerow.cloud.services.notify import Notifier
from hedgerow.cloud.storage.repository import Repository
from hedgerow.contract.errors import ContractError
from hedgerow.contract.shadow import (
    MAX_DOCUMENT_BYTES,
    CloudShadow,
    ShadowUpdate,
    merge_cloud_update,
    merge_core_update,
)
from hedgerow.contract.topics import CoreLeaf, core_topic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShadowChange:
    """A change asked in the cloud: AWS-style merge patches (``None``: section untouched;
    ``clear_*``: the section was ``null``), optionally checked against ``version``."""

    desired: Mapping[str, Any] | None = None
    reported: Mapping[str, Any] | None = None
    clear_desired: bool = False
    clear_reported: bool = False
    version: int | None = None
    client_token: str | None = None


class ShadowService:
    def __init__(self, store: Repository, notifier: Notifier) -> None:
        self.store = store
        self.notifier = notifier

    async def get(self, thing: str) -> CloudShadow:
        return await asyncio.to_thread(self.store.get_shadow, thing)

    async def synced_by(self, thing: str) -> list[str]:
        """The cores that sync this thing's shadow (none: the cloud's copy stays here)."""
        return await asyncio.to_thread(self.store.shadow_cores, thing)

    async def update(self, thing: str, change: ShadowChange) -> CloudShadow:
        """A change from the API; 409 when ``version`` is given and is not the current one."""

        def apply(current: CloudShadow) -> tuple[CloudShadow, None]:
            if change.version is not None and change.version != current.version:
                raise Conflict(
                    f"version conflict: the shadow of {thing!r} is at version "
                    f"{current.version}, not {change.version}: read it again, then update"
                )
            new = merge_cloud_update(
                current,
                change.desired,
                change.reported,
                clear_desired=change.clear_desired,
                clear_reported=change.clear_reported,
            )
            size = len(json.dumps({"desired": new.desired, "reported": new.reported}))
            if size > MAX_DOCUMENT_BYTES:
                raise InvalidInput(
                    f"the shadow would be {size} bytes; at most {MAX_DOCUMENT_BYTES} are kept",
                    field="state",
                )
            return new, None

        before = await self.get(thing)
        shadow, _ = await asyncio.to_thread(self.store.change_shadow, thing, apply)
        if shadow.version != before.version:
            log.info("cloud.shadow.updated thing=%s version=%d", thing, shadow.version)
            await self._announce(shadow, change.client_token)
        return shadow

    async def from_core(self, core: str, payload: bytes) -> None:
        """A ``ShadowUpdate`` from a core: merged by the rule, answered to that core (and
        announced to any other core syncing the thing)."""
        try:
            update = ShadowUpdate.from_json(payload)
        except ContractError as exc:
            raise InvalidInput(f"shadow update: {exc}", field=exc.field) from exc
        if not await asyncio.to_thread(self.store.core_syncs, core, update.thing):
            log.warning("cloud.shadow.not_synced core=%s thing=%s", core, update.thing)
            return

        def apply(current: CloudShadow) -> tuple[CloudShadow, tuple[bool, tuple[str, ...]]]:
            outcome = merge_core_update(current, core, update)
            return outcome.shadow, (outcome.changed, outcome.rejected)

        shadow, (changed, rejected) = await asyncio.to_thread(
            self.store.change_shadow, update.thing, apply
        )
        if rejected:
            log.info(
                "cloud.shadow.conflict core=%s thing=%s sections=%s base=%d version=%d",
                core,
                update.thing,
                ",".join(rejected),
                update.base_version,
                shadow.version,
            )
        await self._publish(core, shadow, rejected)
        if changed:
            log.info(
                "cloud.shadow.synced core=%s thing=%s version=%d",
                core,
                update.thing,
                shadow.version,
            )
            others = [c for c in await self.synced_by(update.thing) if c != core]
            for other in others:
                await self._publish(other, shadow)

    async def _announce(self, shadow: CloudShadow, client_token: str | None) -> None:
        for core in await self.synced_by(shadow.thing):
            await self._publish(core, shadow, client_token=client_token)

    async def _publish(
        self,
        core: str,
        shadow: CloudShadow,
        rejected: tuple[str, ...] = (),
        client_token: str | None = None,
    ) -> None:
        payload = shadow.state_for(core, rejected, client_token).to_json()
        try:
            await self.notifier.publish(core_topic(core, CoreLeaf.SHADOW), payload, retain=False)
        except Exception as exc:  # the core asks again on its next connect
            log.warning("cloud.shadow.publish_failed core=%s error=%s", core, exc)
