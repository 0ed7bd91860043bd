"""A device's first boot from a claim (``hedgerow thing run --claim``, or the SDK's
``provision_thing``).

The device makes its own key (ECDSA P-256, written 0600 in ``directory``; it is never sent),
sends a CSR with its serial number under the claim certificate
(``hedgerow.claimclient``), and writes what ``thing create`` would have given it:
``NAME.cert.pem``, ``NAME.key``, ``root-ca.pem`` and ``identity.json`` (its name, group and
the cloud's discovery endpoint), written last — its presence means "provisioned", so the
next boot needs no claim::

    identity = await provision_thing(Path("claim.tar.gz"), Path("/var/lib/sensor"), "SN-1234")
    credentials = Credentials.load(identity.root_ca, identity.cert, identity.key)
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from hedgerow import claimclient, pki
from hedgerow.contract.errors import ContractError
from hedgerow.contract.provisioning import ClaimKind, ProvisionRequest, check_serial

from .errors import ProvisioningError

log = logging.getLogger(__name__)

IDENTITY_FILE = "identity.json"
PENDING_KEY = "pending.key"
HINT = "check the claim on the cloud: hedgerow cloud claim show ID"


@dataclass(frozen=True)
class ClaimedIdentity:
    """Who the device is now and where its files are."""

    name: str
    group: str
    #: the cloud's discovery endpoint, ``host:port`` (the ``-e`` of ``thing run``)
    endpoint: str
    root_ca: Path
    cert: Path
    key: Path


def load_identity(directory: Path) -> ClaimedIdentity | None:
    """The identity a claim gave this device earlier, or None (not provisioned yet)."""
    try:
        data = json.loads((directory / IDENTITY_FILE).read_text())
        return ClaimedIdentity(
            data["name"],
            data["group"],
            data["endpoint"],
            directory / data["root_ca"],
            directory / data["cert"],
            directory / data["key"],
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def _key(directory: Path) -> pki.PrivateKey:
    """The pending key (kept across an interrupted first boot), made when missing."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / PENDING_KEY
    if path.exists():
        return pki.key_from_pem(path.read_bytes())
    key = pki.new_key()
    _write(path, pki.key_to_pem(key), 0o600)
    return key


async def provision_thing(
    claim: Path,
    directory: Path,
    serial: str,
    *,
    timeout: float = 120.0,  # noqa: ASYNC109 - bounds the whole exchange with the cloud
) -> ClaimedIdentity:
    """Provision this device with ``claim`` (once: an existing identity is returned)."""
    existing = load_identity(directory)
    if existing is not None:
        return existing
    try:
        check_serial(serial)
        credential = claimclient.read_credential(claim)
    except (ContractError, claimclient.ClaimError) as exc:
        raise ProvisioningError(str(exc), hint=HINT) from exc
    if credential.kind is not ClaimKind.THING:
        raise ProvisioningError(
            f"{claim} provisions a {credential.kind.value}, not a thing", hint=HINT
        )
    key = _key(directory)
    csr = pki.make_csr(key, serial).decode()
    try:
        response = await claimclient.provision(
            credential, ProvisionRequest(serial, csr), timeout=timeout
        )
    except claimclient.ClaimError as exc:
        raise ProvisioningError(str(exc), hint=HINT) from exc
    name = response.name
    cert, key_file, root_ca = f"{name}.cert.pem", f"{name}.key", "root-ca.pem"
    _write(directory / cert, response.certificate.encode())
    _write(directory / root_ca, response.root_ca.encode())
    os.replace(directory / PENDING_KEY, directory / key_file)
    url = urlsplit(response.https)
    endpoint = f"{url.hostname}:{url.port or 443}"
    identity = {
        "name": name,
        "group": response.group,
        "endpoint": endpoint,
        "root_ca": root_ca,
        "cert": cert,
        "key": key_file,
    }
    _write(directory / IDENTITY_FILE, json.dumps(identity, indent=2).encode())
    log.info(
        "thing.provisioned claim=%s serial=%s name=%s group=%s",
        credential.claim_id, serial, name, response.group,
    )  # fmt: skip
    loaded = load_identity(directory)
    assert loaded is not None
    return loaded
