"""First boot from a claim (``hedgerow core provision|run --claim claim.tar.gz``).

The core makes its identity key in the data directory (by the key tool's child: 0600, never
in this process, never sent), sends a CSR with its serial number to the cloud's
``POST /provision/v1/core`` under the claim certificate (``hedgerow.claimclient``), and
writes what a provisioning bundle holds: ``core.cert.pem``, ``root-ca.pem``,
``deploy-verify.pem`` and, last, ``config.toml`` — its presence means "provisioned", so a
second boot needs no claim and a boot cut short provisions again (with the same key).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from hedgerow import claimclient
from hedgerow.contract.errors import ContractError
from hedgerow.contract.provisioning import ClaimKind, ProvisionRequest, check_serial

from . import keytool
from .certificates import write_atomic
from .config import CONFIG_FILE, CORE_CERT, CORE_KEY, DEPLOY_VERIFY, ROOT_CA
from .errors import ConfigError

log = logging.getLogger(__name__)

MACHINE_ID = Path("/etc/machine-id")

#: ``(key_file, name, hosts) -> CSR``: makes the key in ``key_file`` when missing. The key
#: tool's child by default; ``hedgerow core provision`` (a one-shot process, no memory
#: budget) runs the same code in process.
CsrMaker = Callable[[Path, str, Sequence[str]], Awaitable[bytes]]


def default_serial() -> str:
    """The machine's id (``/etc/machine-id``), else its host name."""
    try:
        serial = MACHINE_ID.read_text().strip()
    except OSError:
        serial = ""
    return serial or socket.gethostname().split(".")[0]


def provisioned(data_dir: Path) -> bool:
    return (data_dir / CONFIG_FILE).exists()


def _make_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)


async def provision_core(
    claim: Path,
    data_dir: Path,
    serial: str,
    *,
    timeout: float = 120.0,  # noqa: ASYNC109 - bounds the whole exchange with the cloud
    make_csr: CsrMaker = keytool.make_csr,
) -> Path:
    """Provision this core with ``claim``; the path of the ``config.toml`` written."""
    try:
        check_serial(serial)
        credential = claimclient.read_credential(claim)
    except (ContractError, claimclient.ClaimError) as exc:
        raise ConfigError("claim", str(exc)) from exc
    if credential.kind is not ClaimKind.CORE:
        raise ConfigError("claim", f"{claim} provisions a {credential.kind.value}, not a core")
    _make_dir(data_dir)
    csr = await make_csr(data_dir / CORE_KEY, serial, [])
    try:
        response = await claimclient.provision(
            credential, ProvisionRequest(serial, csr.decode()), timeout=timeout
        )
    except claimclient.ClaimError as exc:
        raise ConfigError("claim", str(exc)) from exc
    if response.kind is not ClaimKind.CORE:
        raise ConfigError("claim", f"the cloud registered a {response.kind.value}, not a core")
    write_atomic(data_dir / CORE_CERT, response.certificate.encode())
    write_atomic(data_dir / ROOT_CA, response.root_ca.encode())
    write_atomic(data_dir / DEPLOY_VERIFY, response.deploy_verify.encode())
    write_atomic(data_dir / CONFIG_FILE, response.config.encode(), 0o600)
    log.info(
        "core.provisioned claim=%s serial=%s name=%s group=%s",
        credential.claim_id, serial, response.name, response.group,
    )  # fmt: skip
    return data_dir / CONFIG_FILE
