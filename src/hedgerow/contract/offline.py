"""The offline deployment file: a signed deployment with its artifacts, for a core the
cloud cannot reach (``hedgerow cloud deployment export`` writes it, ``hedgerow core deploy
--file`` applies it).

A tar (in memory here: ``pack`` returns bytes, ``unpack`` takes them) holding exactly:

- ``manifest.json``: ``{"schema": 1, "deployment_id", "group", "core", "artifacts": [sha256, ..]}``
- ``deployment.json``: the document, the exact text the signature covers
- ``deployment.sig``: the Ed25519 signature, base64
- ``artifacts/<sha256>.zip``: each artifact the document names

Nothing here is trusted: the core verifies the signature, the addressee and every
artifact's hash as it does for a deployment fetched from the cloud. ``unpack`` only refuses
what is not this format (``InvalidMessage`` naming the member), bounded in size.
"""

from __future__ import annotations

import io
import re
import tarfile
from dataclasses import dataclass, field
from typing import Final

from . import _wire
from .errors import InvalidMessage

SCHEMA: Final = 1
#: The largest offline deployment file read (members are read into memory).
MAX_BYTES: Final = 512 * 1024 * 1024
MANIFEST: Final = "manifest.json"
DOCUMENT: Final = "deployment.json"
SIGNATURE: Final = "deployment.sig"
_ARTIFACT = re.compile(r"artifacts/([0-9a-f]{64})\.zip")


@dataclass(frozen=True)
class OfflineDeployment:
    deployment_id: str
    group: str
    core: str
    document: str
    signature: str
    artifacts: dict[str, bytes] = field(default_factory=dict)


def pack(offline: OfflineDeployment) -> bytes:
    """The file's bytes (members in a fixed order, times zero: the same input, the same bytes)."""
    manifest = {
        "schema": SCHEMA,
        "deployment_id": offline.deployment_id,
        "group": offline.group,
        "core": offline.core,
        "artifacts": sorted(offline.artifacts),
    }
    members = [
        (MANIFEST, _wire.dumps(manifest).encode()),
        (DOCUMENT, offline.document.encode("utf-8")),
        (SIGNATURE, offline.signature.encode("ascii")),
        *((f"artifacts/{sha}.zip", offline.artifacts[sha]) for sha in sorted(offline.artifacts)),
    ]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o600
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def unpack(data: bytes) -> OfflineDeployment:
    """The file's parts; ``InvalidMessage`` names what is wrong with its form."""
    if len(data) > MAX_BYTES:
        raise InvalidMessage("file", f"{len(data)} bytes: more than {MAX_BYTES}")
    parts: dict[str, bytes] = {}
    artifacts: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar:
                if not member.isfile():
                    raise InvalidMessage(member.name, "not a regular file")
                reader = tar.extractfile(member)
                assert reader is not None  # a regular file has a reader
                body = reader.read()
                matched = _ARTIFACT.fullmatch(member.name)
                if matched:
                    artifacts[matched.group(1)] = body
                elif member.name in (MANIFEST, DOCUMENT, SIGNATURE):
                    parts[member.name] = body
                else:
                    raise InvalidMessage(member.name, "not a member of an offline deployment")
    except tarfile.TarError as exc:
        raise InvalidMessage("file", f"not a tar file: {exc}") from exc
    for name in (MANIFEST, DOCUMENT, SIGNATURE):
        if name not in parts:
            raise InvalidMessage(name, "missing")
    manifest = _wire.load_object(parts[MANIFEST], "manifest")
    _wire.check_schema(manifest, SCHEMA)
    texts = {}
    for key in ("deployment_id", "group", "core"):
        value = manifest.get(key)
        if not isinstance(value, str) or not value:
            raise InvalidMessage(f"manifest.{key}", "missing or not a string")
        texts[key] = value
    try:
        document = parts[DOCUMENT].decode("utf-8")
        signature = parts[SIGNATURE].decode("ascii").strip()
    except UnicodeDecodeError as exc:
        raise InvalidMessage(DOCUMENT, f"not text: {exc}") from exc
    return OfflineDeployment(
        texts["deployment_id"], texts["group"], texts["core"], document, signature, artifacts
    )
