"""Artifacts: function code by its SHA-256."""

from __future__ import annotations

import hashlib
import logging

import sqlalchemy as sa

from hedgerow.cloud.errors import NotFound
from hedgerow.cloud.storage.base import (
    Store,
    now,
)
from hedgerow.cloud.storage.models import (
    ArtifactRow,
)

log = logging.getLogger(__name__)


class ArtifactStore(Store):
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
