"""Support bundles: ask a core over its MQTT link, take its upload over device HTTPS.

The cloud never connects to a gateway: ``request`` records the ask and publishes a
``SupportBundleRequest`` on ``$hedgerow/cores/{core}/support-bundle``; the core builds the
bundle and uploads it (``receive``, from the device server: only the core asked may).
"""

from __future__ import annotations

import asyncio
import logging
import secrets

from hedgerow.cloud.errors import InvalidInput, TooLarge
from hedgerow.cloud.services.notify import Notifier
from hedgerow.cloud.storage.repository import Repository
from hedgerow.cloud.storage.support_bundles import SupportBundle
from hedgerow.contract.support import MAX_BUNDLE_BYTES, SupportBundleRequest
from hedgerow.contract.topics import CoreLeaf, core_topic

log = logging.getLogger(__name__)
GZIP_MAGIC = b"\x1f\x8b"


class SupportBundleService:
    def __init__(self, store: Repository, notifier: Notifier) -> None:
        self.store = store
        self.notifier = notifier

    async def request(self, core: str) -> SupportBundle:
        request_id = f"sb-{secrets.token_hex(8)}"
        bundle = await asyncio.to_thread(self.store.add_support_bundle, core, request_id)
        payload = SupportBundleRequest(request_id).to_json()
        await self.notifier.publish(
            core_topic(core, CoreLeaf.SUPPORT_BUNDLE), payload, retain=False
        )
        log.info("cloud.support_bundle.requested core=%s id=%s", core, request_id)
        return bundle

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
        return bundle

    async def get(self, core: str, request_id: str) -> tuple[SupportBundle, bytes | None]:
        return await asyncio.to_thread(self.store.get_support_bundle, core, request_id)
