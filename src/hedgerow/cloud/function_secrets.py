"""Secrets functions read: versions and staging labels, sealing at rest and to cores (pure).

A secret belongs to a group and has versions; each version carries staging labels as in
AWS Secrets Manager: a new value (``secret update`` / ``secret rotate``) becomes
``AWSCURRENT``, the version that was current becomes ``AWSPREVIOUS``, and the one that was
previous keeps no label and is dropped (:func:`next_versions`).

At rest a version's value is an ``envelope`` blob under the keyring's current KEK, the
associated data naming the record (:func:`record_aad`: group, name, version id), so a blob
copied to another row does not open. For a deployment, the versions of the secrets the
group's functions declare are opened and sealed to the core's own key (``pki.seal_to``
with the core's associated data, the same text as ``hedgerow.core.secrets.secret_aad``):
only that core opens them, and the document never holds a value in clear.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from hedgerow import pki
from hedgerow.cloud import envelope
from hedgerow.cloud.errors import InvalidInput, SecretError
from hedgerow.cloud.keyring import KeyringFile

CURRENT: Final = "AWSCURRENT"
PREVIOUS: Final = "AWSPREVIOUS"
MAX_SECRET_BYTES: Final = 64 * 1024
NAME_PATTERN: Final = re.compile(r"^[A-Za-z0-9_.\-+=@]{1,128}$")


@dataclass(frozen=True)
class SecretVersionRecord:
    """One stored version (the value sealed at rest)."""

    version_id: str
    stages: tuple[str, ...]
    created_at: dt.datetime
    binary: bool
    sealed: bytes = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        """What the API shows: never the value."""
        return {
            "version_id": self.version_id,
            "stages": list(self.stages),
            "created_at": self.created_at.isoformat(),
            "binary": self.binary,
        }


def validate_secret_name(name: object) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise InvalidInput(
            f"invalid secret name {name!r}: 1-128 letters, digits and _.-+=@", field="name"
        )
    return name


def validate_value(value: object, binary: bool) -> bytes:
    """The value from a request: a string, or base64 when ``binary``."""
    if not isinstance(value, str):
        raise InvalidInput("value must be a string (base64 when binary)", field="value")
    data = base64.b64decode(value, validate=True) if binary else value.encode()
    if not data or len(data) > MAX_SECRET_BYTES:
        raise InvalidInput(f"a secret holds 1..{MAX_SECRET_BYTES} bytes", field="value")
    return data


def record_aad(group: str, name: str, version_id: str) -> bytes:
    return f"hedgerow/secret/{group}/{name}/{version_id}".encode()


def core_aad(group: str, core: str, name: str, version_id: str) -> bytes:
    """The associated data of a version sealed to a core (``core.secrets.secret_aad``)."""
    return f"hedgerow-secret/1/{group}/{core}/{name}/{version_id}".encode()


def new_version(
    keyring: KeyringFile, group: str, name: str, value: bytes, binary: bool, now: dt.datetime
) -> SecretVersionRecord:
    version_id = str(uuid.uuid4())
    sealed = envelope.encrypt(keyring.current(), value, record_aad(group, name, version_id))
    return SecretVersionRecord(version_id, (CURRENT,), now, binary, sealed)


def next_versions(
    versions: Sequence[SecretVersionRecord], new: SecretVersionRecord
) -> list[SecretVersionRecord]:
    """The versions kept after ``new`` becomes current: it and the one that was current
    (now ``AWSPREVIOUS``); any other version has no label left and is dropped."""
    kept = [new]
    for version in versions:
        if CURRENT in version.stages:
            kept.append(
                SecretVersionRecord(
                    version.version_id, (PREVIOUS,), version.created_at, version.binary,
                    version.sealed,
                )
            )  # fmt: skip
    return kept


def open_version(keyring: KeyringFile, group: str, name: str, v: SecretVersionRecord) -> bytes:
    kek = keyring.get(envelope.kek_id_of(v.sealed))
    try:
        return envelope.decrypt(kek, v.sealed, record_aad(group, name, v.version_id))
    except SecretError as exc:
        raise SecretError(f"secret {group}/{name} version {v.version_id}: {exc}") from exc


def core_public_key(cert_pem: str) -> ec.EllipticCurvePublicKey:
    key = x509.load_pem_x509_certificate(cert_pem.encode()).public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise SecretError("the core's certificate holds no EC key: re-create the core")
    return key


def sealed_for_core(
    keyring: KeyringFile,
    group: str,
    core: str,
    core_cert_pem: str,
    name: str,
    versions: Sequence[SecretVersionRecord],
) -> list[dict[str, Any]]:
    """The deployment document's entries for one secret: each version sealed to the core."""
    public_key = core_public_key(core_cert_pem)
    entries = []
    for v in versions:
        value = open_version(keyring, group, name, v)
        sealed = pki.seal_to(public_key, value, core_aad(group, core, name, v.version_id))
        entries.append(
            {
                "name": name,
                "version_id": v.version_id,
                "stages": list(v.stages),
                "created_ms": int(v.created_at.timestamp() * 1000),
                "binary": v.binary,
                "sealed": base64.b64encode(sealed).decode(),
            }
        )
    return entries
