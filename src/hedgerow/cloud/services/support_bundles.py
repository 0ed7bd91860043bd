"""Support bundles: ask a core over its MQTT link, take its upload over device HTTPS.

The cloud never connects to a gateway: ``request`` records the ask and publishes a
``SupportBundleRequest`` on ``$hedgerow/cores/{core}/support-bundle``, **retained**, so a
core that is offline hears it when it connects; the core builds the bundle and uploads it
(``receive``, from the device server: only the core asked may). The retained request is
cleared once the bundle is in, or when it expires (``run``: the sweep; ``wait_s``, 24 h by
default, at most ``MAX_WAIT_S``). ``announce_waiting`` publishes the waiting requests again
at start (the embedded broker keeps no retained messages across a restart).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
from typing import Final

from hedgerow.cloud.errors import CloudError, InvalidInput, TooLarge
from hedgerow.cloud.services.cores import Presence, presence_of, presence_unknown
from hedgerow.cloud.services.notify import Notifier
from hedgerow.cloud.storage.repository import Repository
from hedgerow.cloud.storage.support_bundles import DEFAULT_WAIT, SupportBundle
from hedgerow.contract.support import MAX_BUNDLE_BYTES, SupportBundleRequest
from hedgerow.contract.topics import CoreLeaf, core_topic

log = logging.getLogger(__name__)
GZIP_MAGIC = b"\x1f\x8b"
#: How long a request waits for an offline core by default, and at most (seconds).
DEFAULT_WAIT_S: Final = DEFAULT_WAIT.total_seconds()
MAX_WAIT_S: Final = 7 * 86400.0
#: Seconds between two sweeps for requests that expired (their retained message cleared).
SWEEP_EVERY_S: Final = 5.0


def status_of(bundle: SupportBundle, connected: bool | None, at: dt.datetime) -> str:
    """``received``; ``expired`` (never uploaded in time); ``waiting`` (the core is not
    connected: it is asked when it connects); ``requested`` (asked, not in yet)."""
    if bundle.received_at is not None:
        return "received"
    if bundle.expired(at):
        return "expired"
    return "waiting" if connected is False else "requested"


class SupportBundleService:
    def __init__(
        self, store: Repository, notifier: Notifier, presence: Presence = presence_unknown
    ) -> None:
        self.store = store
        self.notifier = notifier
        self.presence = presence

    def connected(self, core: str) -> bool | None:
        """The core's live session at the embedded endpoint (None: not known here)."""
        return presence_of(self.presence(), core)

    def status(self, bundle: SupportBundle) -> str:
        return status_of(bundle, self.connected(bundle.core), dt.datetime.now(dt.UTC))

    async def request(self, core: str, wait_s: float = DEFAULT_WAIT_S) -> SupportBundle:
        if not 1.0 <= wait_s <= MAX_WAIT_S:
            raise InvalidInput(f"wait_s must be within 1..{MAX_WAIT_S:.0f} seconds", field="wait_s")
        request_id = f"sb-{secrets.token_hex(8)}"
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=wait_s)
        bundle = await asyncio.to_thread(self.store.add_support_bundle, core, request_id, expires)
        await self._announce(bundle)  # again for one already waiting: the core may retry
        log.info(
            "cloud.support_bundle.requested core=%s id=%s new=%s expires_at=%s",
            core,
            bundle.request_id,
            bundle.request_id == request_id,
            bundle.expires_at.isoformat(),
        )
        return bundle

    async def _announce(self, bundle: SupportBundle) -> None:
        payload = SupportBundleRequest(
            bundle.request_id, expires_at=bundle.expires_at.timestamp()
        ).to_json()
        await self.notifier.publish(
            core_topic(bundle.core, CoreLeaf.SUPPORT_BUNDLE), payload, retain=True
        )

    async def _clear(self, core: str) -> None:
        """Remove the retained request (an empty retained message)."""
        try:
            await self.notifier.publish(core_topic(core, CoreLeaf.SUPPORT_BUNDLE), b"", retain=True)
        except (CloudError, OSError, TimeoutError) as exc:
            log.warning("cloud.support_bundle.clear_failed core=%s error=%s", core, exc)

    async def receive(self, core: str, request_id: str, data: bytes) -> SupportBundle:
        if len(data) > MAX_BUNDLE_BYTES:
            raise TooLarge(
                f"a support bundle is at most {MAX_BUNDLE_BYTES} bytes", limit=MAX_BUNDLE_BYTES
            )
        if not data.startswith(GZIP_MAGIC):
            raise InvalidInput("a support bundle is a gzip'd tar", field="body")
        bundle = await asyncio.to_thread(self.store.receive_support_bundle, core, request_id, data)
        log.info(
            "cloud.support_bundle.received core=%s id=%s bytes=%d", core, request_id, len(data)
        )
        await self._clear(core)
        return bundle

    async def get(self, core: str, request_id: str) -> tuple[SupportBundle, bytes | None]:
        return await asyncio.to_thread(self.store.get_support_bundle, core, request_id)

    async def announce_waiting(self) -> int:
        """Publish every waiting request again (retained); how many."""
        waiting = await asyncio.to_thread(self.store.waiting_support_bundles)
        for bundle in waiting:
            await self._announce(bundle)
        if waiting:
            log.info("cloud.support_bundle.announced count=%d", len(waiting))
        return len(waiting)

    async def sweep(self, start: dt.datetime, end: dt.datetime) -> list[SupportBundle]:
        """Clear the retained requests that expired in ``(start, end]``."""
        expired = await asyncio.to_thread(self.store.support_bundles_expired_between, start, end)
        for bundle in expired:
            await self._clear(bundle.core)
            log.info("cloud.support_bundle.expired core=%s id=%s", bundle.core, bundle.request_id)
        return expired

    async def run(self) -> None:
        """The cloud's job: announce what waits, then clear what expires."""
        swept = dt.datetime.now(dt.UTC)
        try:
            await self.announce_waiting()
        except Exception as exc:  # an unreachable external broker at start: the sweep goes on
            log.warning("cloud.support_bundle.announce_failed error=%s", exc)
        while True:
            await asyncio.sleep(SWEEP_EVERY_S)
            end = dt.datetime.now(dt.UTC)
            try:
                await self.sweep(swept, end)
                swept = end
            except Exception as exc:
                log.warning("cloud.support_bundle.sweep_failed error=%s", exc)
