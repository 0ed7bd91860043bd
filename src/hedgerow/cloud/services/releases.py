"""Releases of Hedgerow for over-the-air updates of cores: checked, signed, listed, removed.

A release is made from wheels already uploaded as artifacts (``POST /api/v1/artifacts``):
the ``hedgerow`` wheel itself and the wheels of its dependencies (the wheelhouse a gateway
without internet installs from). The cloud reads the release's version from the wheel's
own metadata, checks every wheel is stored, and signs the manifest (the contract's
``CoreRelease``) with its deployment key; a deployment that names the release carries the
same manifest inside its signed document.
"""

from __future__ import annotations

import asyncio
import email.parser
import io
import json
import logging
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass

from hedgerow.cloud import domain
from hedgerow.cloud.domain import Release
from hedgerow.cloud.errors import InvalidInput
from hedgerow.cloud.pki_service import PKIService
from hedgerow.cloud.storage.artifacts import ArtifactStore
from hedgerow.cloud.storage.releases import ReleaseStore
from hedgerow.contract.deployment import CoreRelease
from hedgerow.contract.errors import ContractError

log = logging.getLogger(__name__)

PROJECT = "hedgerow"


@dataclass(frozen=True)
class WheelRef:
    """An uploaded wheel: its file name and the sha256 the upload answered."""

    filename: str
    sha256: str


class ReleaseService:
    def __init__(
        self, store: ReleaseStore, artifacts: ArtifactStore, pki_service: PKIService
    ) -> None:
        self.store = store
        self.artifacts = artifacts
        self.pki = pki_service

    async def create(self, wheels: Sequence[WheelRef]) -> Release:
        return await asyncio.to_thread(self._create, wheels)

    def _create(self, wheels: Sequence[WheelRef]) -> Release:
        for index, w in enumerate(wheels):
            try:
                domain.validate_sha256(w.sha256)
            except InvalidInput as exc:
                raise InvalidInput(str(exc), field=f"wheels[{index}].sha256") from exc
        own = [w for w in wheels if _project_of(w.filename) == PROJECT]
        if len(own) != 1:
            raise InvalidInput(
                f"a release needs exactly one {PROJECT} wheel, got {len(own)}",
                field="wheels",
            )
        ordered = [own[0], *(w for w in wheels if w is not own[0])]
        entries = [
            {
                "filename": w.filename,
                "sha256": w.sha256,
                "size": self.artifacts.artifact_size(w.sha256),
            }
            for w in ordered
        ]
        version = _version_in(self.artifacts.get_artifact(own[0].sha256), own[0].filename)
        try:
            release = CoreRelease.from_json({"version": version, "wheels": entries})
        except ContractError as exc:
            raise InvalidInput(f"release: {exc}", field=exc.field) from exc
        manifest = json.dumps(release.to_json(), separators=(",", ":"))
        stored = self.store.put_release(release.version, entries, manifest, self.pki.sign(manifest))
        log.info(
            "release.created version=%s wheels=%d bytes=%d",
            release.version,
            len(entries),
            sum(w.size for w in release.wheels),
        )
        return stored

    async def all(self) -> list[Release]:
        return await asyncio.to_thread(self.store.list_releases)

    async def get(self, version: str) -> Release:
        return await asyncio.to_thread(self.store.get_release, version)

    async def remove(self, version: str) -> None:
        await asyncio.to_thread(self.store.remove_release, version)
        log.info("release.removed version=%s", version)


def as_core_release(release: Release) -> CoreRelease:
    """A stored release as a deployment document carries it."""
    return CoreRelease.from_json({"version": release.version, "wheels": list(release.wheels)})


def _project_of(filename: str) -> str:
    return filename.split("-", 1)[0].lower().replace("_", "-")


def _version_in(wheel: bytes, filename: str) -> str:
    """The version in the wheel's ``METADATA`` (which must agree with its file name)."""
    try:
        with zipfile.ZipFile(io.BytesIO(wheel)) as archive:
            names = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
            if len(names) != 1:
                raise InvalidInput(f"{filename}: no single .dist-info/METADATA", field="wheels")
            metadata = email.parser.BytesParser().parsebytes(archive.read(names[0]))
    except zipfile.BadZipFile as exc:
        raise InvalidInput(f"{filename}: not a wheel (zip): {exc}", field="wheels") from exc
    name, version = str(metadata.get("Name", "")), str(metadata.get("Version", ""))
    if name.lower() != PROJECT:
        raise InvalidInput(f"{filename}: the wheel is {name!r}, not {PROJECT}", field="wheels")
    parts = filename.split("-")
    if len(parts) < 2 or parts[1] != version:
        raise InvalidInput(f"{filename}: its METADATA says version {version!r}", field="wheels")
    return version
