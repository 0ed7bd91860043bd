"""Artifacts (function code, content-addressed) and functions (versioned settings)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from hedgerow.cloud import domain
from hedgerow.cloud.artifacts import ArtifactCache
from hedgerow.cloud.domain import FunctionSettings, FunctionVersion
from hedgerow.cloud.storage.artifacts import ArtifactStore
from hedgerow.cloud.storage.functions import FunctionStore

log = logging.getLogger(__name__)


class ArtifactService:
    def __init__(self, store: ArtifactStore, cache: ArtifactCache | None) -> None:
        """``cache``: content-addressed copies on local disk (None: the database only)."""
        self.store = store
        self.cache = cache

    async def put(self, data: bytes) -> tuple[str, int]:
        sha, size = await asyncio.to_thread(self.store.put_artifact, data)
        if self.cache is not None:
            await asyncio.to_thread(self.cache.write, sha, data)
        log.info("artifact.stored sha256=%s size=%s", sha, size)
        return sha, size

    async def get(self, sha256: str) -> bytes:
        sha256 = domain.validate_sha256(sha256)
        if self.cache is not None:
            cached = await asyncio.to_thread(self.cache.read, sha256)
            if cached is not None:
                return cached
        data = await asyncio.to_thread(self.store.get_artifact, sha256)
        if self.cache is not None:
            await asyncio.to_thread(self.cache.write, sha256, data)
        return data

    async def size(self, sha256: str) -> int:
        """The stored size; ``NotFound`` if it was never uploaded."""
        return await asyncio.to_thread(self.store.artifact_size, sha256)


class FunctionService:
    def __init__(self, store: FunctionStore) -> None:
        self.store = store

    async def create(
        self, group: str, name: str, settings: FunctionSettings, artifact_sha256: str
    ) -> FunctionVersion:
        result = await asyncio.to_thread(
            self.store.create_function, group, name, settings, artifact_sha256
        )
        log.info("function.created group=%s name=%s", group, name)
        return result

    async def update(
        self, group: str, name: str, changes: Mapping[str, Any], artifact_sha256: str | None
    ) -> FunctionVersion:
        """A new version: the latest settings with ``changes`` (JSON fields) over them."""

        def update(latest: FunctionVersion) -> tuple[FunctionSettings, str]:
            return domain.function_settings_from_json(
                changes, latest.settings
            ), artifact_sha256 or latest.artifact_sha256

        return await asyncio.to_thread(self.store.update_function, group, name, update)

    async def all(self, group: str) -> list[FunctionVersion]:
        return await asyncio.to_thread(self.store.list_functions, group)

    async def get(self, group: str, name: str, version: int | None = None) -> FunctionVersion:
        return await asyncio.to_thread(self.store.get_function, group, name, version)

    async def versions(self, group: str, name: str) -> list[FunctionVersion]:
        return await asyncio.to_thread(self.store.list_function_versions, group, name)

    async def delete(self, group: str, name: str) -> None:
        await asyncio.to_thread(self.store.delete_function, group, name)
