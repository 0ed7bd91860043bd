"""The secrets of the deployment a core runs, opened only when a function asks.

The cloud puts in each core's deployment document only the secrets its group's functions
declare, each version sealed to that core's identity key (``pki.seal_to``, P-256 ECIES,
associated data :func:`secret_aad`). The document is stored on disk as it arrived, so the
secrets are there, encrypted, after a restart with the cloud down. The daemon does not load
``cryptography`` (its memory budget): the short-lived key-tool child opens a version the
first time a function reads it; the plaintext is then kept in this process's memory until
a deployment drops that version. Values never reach a log, a heartbeat or a file here.

A document entry: ``{"name", "version_id", "stages": [..], "created_ms", "binary",
"sealed": base64}``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hedgerow.functions.secrets import SecretVersion

from . import keytool
from .errors import DeploymentError

log = logging.getLogger(__name__)

Opener = Callable[[str | os.PathLike[str], Sequence[tuple[bytes, bytes]]], Awaitable[list[bytes]]]


def secret_aad(group: str, core: str, name: str, version_id: str) -> bytes:
    """What a sealed version is bound to: a blob copied to another record does not open."""
    return f"hedgerow-secret/1/{group}/{core}/{name}/{version_id}".encode()


@dataclass(frozen=True)
class SealedVersion:
    name: str
    version_id: str
    stages: tuple[str, ...]
    created_ms: int
    binary: bool
    sealed: bytes = field(repr=False)


def parse_secrets(deployment_id: str, entries: object) -> tuple[SealedVersion, ...]:
    """The document's ``secrets`` (``DeploymentError`` naming the bad entry)."""
    if entries is None:
        return ()
    if not isinstance(entries, list):
        raise DeploymentError(deployment_id, "secrets: must be a list")
    out = []
    for index, entry in enumerate(entries):
        try:
            if not isinstance(entry, Mapping):
                raise TypeError("not an object")
            stages = entry["stages"]
            if not isinstance(stages, list) or not all(isinstance(s, str) for s in stages):
                raise TypeError("stages must be a list of labels")
            out.append(
                SealedVersion(
                    name=str(entry["name"]),
                    version_id=str(entry["version_id"]),
                    stages=tuple(stages),
                    created_ms=int(entry["created_ms"]),
                    binary=bool(entry.get("binary", False)),
                    sealed=base64.b64decode(entry["sealed"], validate=True),
                )
            )
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise DeploymentError(deployment_id, f"secrets[{index}]: {exc}") from exc
    return tuple(out)


class CoreSecrets:
    """``await get(name, stage)``: the runtime's ``SecretSource`` for this core."""

    def __init__(
        self, key_file: str | os.PathLike[str], group: str, core: str, opener: Opener | None = None
    ) -> None:
        self._key_file = key_file
        self._group = group
        self._core = core
        self._opener: Opener = opener or keytool.open_sealed
        self._versions: tuple[SealedVersion, ...] = ()
        self._opened: dict[str, bytes] = {}
        self._lock = asyncio.Lock()

    def set_versions(self, versions: Sequence[SealedVersion]) -> None:
        """The versions of the deployment now in effect (opened values of others are dropped)."""
        self._versions = tuple(versions)
        keep = {v.version_id for v in versions}
        self._opened = {k: v for k, v in self._opened.items() if k in keep}
        log.info("core.secrets.set names=%s", sorted({v.name for v in versions}))

    def names(self) -> list[str]:
        return sorted({v.name for v in self._versions})

    async def get(self, name: str, stage: str) -> SecretVersion | None:
        chosen = next((v for v in self._versions if v.name == name and stage in v.stages), None)
        if chosen is None:
            return None
        async with self._lock:
            value = self._opened.get(chosen.version_id)
            if value is None:
                aad = secret_aad(self._group, self._core, name, chosen.version_id)
                (value,) = await self._opener(self._key_file, [(chosen.sealed, aad)])
                self._opened[chosen.version_id] = value
                log.info("core.secrets.opened name=%s version=%s", name, chosen.version_id)
        return SecretVersion(
            name=name,
            version_id=chosen.version_id,
            stages=chosen.stages,
            created_ms=chosen.created_ms,
            value=value,
            binary=chosen.binary,
        )

    def status(self) -> dict[str, Any]:
        """For the heartbeat: names and how many versions, never values."""
        return {"names": self.names(), "versions": len(self._versions)}
