"""Function code, content-addressed: ``artifacts/<sha[:2]>/<sha256>`` on disk, the database
holding the same bytes so every cloud process sharing the database can serve them."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


class ArtifactCache:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, sha256: str) -> Path:
        return self.directory / sha256[:2] / sha256

    def read(self, sha256: str) -> bytes | None:
        try:
            data = self.path(sha256).read_bytes()
        except FileNotFoundError:
            return None
        if hashlib.sha256(data).hexdigest() != sha256:
            log.warning("artifacts.corrupt sha256=%s", sha256)
            return None
        return data

    def write(self, sha256: str, data: bytes) -> None:
        target = self.path(sha256)
        if target.exists():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(temp, target)
        except OSError as exc:
            log.warning("artifacts.cache_failed sha256=%s error=%s", sha256, exc)
            Path(temp).unlink(missing_ok=True)
