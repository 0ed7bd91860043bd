"""The cloud's certificate authority: root CA on disk, group CAs in the database.

* ``create_pki(paths, hosts)`` writes the root CA, the cloud's server certificate,
  its own client identity and the Ed25519 deployment signing key (``init``).
* ``PKIService`` issues thing and core identities (from a generated key or a CSR),
  signs core server certificates with the current group CA, rotates group CAs and
  signs deployment documents.

Every file ``create_pki`` writes is owner-only (0600) when it holds a secret, in a 0700
directory. Group CA private keys are sealed (``group_ca_keys``: envelope encryption under
the keyring's key-encryption key) before they reach the database, and opened only to sign.

Group CAs are self-signed (devices trust the group CA alone, as Greengrass V1 devices
do); a new one is made every ``rotation_days`` and lives ``rotation_days + overlap_days``,
so the previous one is still listed (and its core certificates still trusted) for
``overlap_days`` while devices and the core move over. Groups this process rotated (on
demand, when due, or lazily on a request) are kept until ``take_rotated()`` collects them,
so the services can tell the group's core at once.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519

from hedgerow import pki
from hedgerow.cloud.config import DataPaths, write_private
from hedgerow.cloud.domain import CertificateKind
from hedgerow.cloud.errors import Conflict, InvalidInput
from hedgerow.cloud.group_ca_keys import GroupCAKeys
from hedgerow.cloud.keyring import KeyringFile
from hedgerow.cloud.storage.repository import GroupCA, NewCertificate, Repository

log = logging.getLogger(__name__)

ROOT_CA_DAYS = 3650
#: The claim CA signs claim certificates only; the device HTTPS server trusts it for
#: ``/provision/v1/...`` and nowhere else.
CLAIM_CA_DAYS = 3650
CLAIM_UNIT = "claim"
SERVER_CERT_DAYS = 825
IDENTITY_DAYS = 365
#: Seconds a group's CA list is cached by one process (discovery is hot).
CA_CACHE_SECONDS = 2.0
DAY = dt.timedelta(days=1)


def server_hosts(extra: Sequence[str]) -> list[str]:
    """The names the cloud's server certificate carries."""
    return list(dict.fromkeys(["localhost", "127.0.0.1", "::1", socket.gethostname(), *extra]))


def create_pki(paths: DataPaths, hosts: Sequence[str]) -> None:
    """Create the root CA, server certificate, cloud identity and signing key (once)."""
    paths.pki.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths.pki.chmod(0o700)
    if paths.root_ca_key.exists():
        raise Conflict(f"{paths.pki} already holds a root CA")
    root = pki.make_ca("Hedgerow Root CA", days=ROOT_CA_DAYS, unit="root-ca")
    paths.root_ca_cert.write_bytes(root.cert_pem)
    write_private(paths.root_ca_key, root.key_pem)
    write_server_certificate(paths, root, hosts)
    cloud = pki.issue(root, "hedgerow-cloud", unit="cloud", days=SERVER_CERT_DAYS)
    paths.cloud_client_cert.write_bytes(cloud.cert_pem)
    write_private(paths.cloud_client_key, cloud.key_pem)
    signing = pki.new_signing_key()
    write_private(paths.signing_key, pki.signing_key_to_pem(signing))
    paths.verify_key.write_bytes(pki.verify_key_to_pem(signing.public_key()))
    log.info("pki.created dir=%s", paths.pki)


def write_server_certificate(paths: DataPaths, root: pki.Issued, hosts: Sequence[str]) -> None:
    server = pki.issue(
        root,
        "hedgerow-cloud-server",
        unit="server",
        server_hosts=server_hosts(hosts),
        client=False,
        days=SERVER_CERT_DAYS,
    )
    paths.server_cert.write_bytes(server.cert_pem + root.cert_pem)
    write_private(paths.server_key, server.key_pem)


@dataclass(frozen=True)
class IssuedIdentity:
    certificate_pem: str
    private_key_pem: str | None
    record: NewCertificate


def record_of(cert: x509.Certificate, kind: str, owner: str) -> NewCertificate:
    """The registry's row for a certificate issued now: ``issued_at`` is the time of
    issue, not the certificate's not-before (backdated for clock skew)."""
    return NewCertificate(
        fingerprint=pki.fingerprint(cert),
        kind=kind,
        owner=owner,
        serial=format(cert.serial_number, "x"),
        pem=pki.cert_to_pem(cert).decode(),
        issued_at=max(pki.now(), cert.not_valid_before_utc),
        not_after=cert.not_valid_after_utc,
    )


class PKIService:
    def __init__(
        self,
        paths: DataPaths,
        repository: Repository,
        *,
        rotation_days: int = 7,
        overlap_days: int = 1,
        keys: GroupCAKeys | None = None,
    ) -> None:
        self.paths = paths
        self.keys = keys or GroupCAKeys(KeyringFile(paths.keyring))
        self.repository = repository
        self.rotation_days = rotation_days
        self.overlap_days = overlap_days
        self.root = pki.Issued(
            pki.cert_from_pem(paths.root_ca_cert.read_bytes()),
            pki.key_from_pem(paths.root_ca_key.read_bytes()),
        )
        self.root_ca_pem = pki.cert_to_pem(self.root.cert).decode()
        self.signing_key: ed25519.Ed25519PrivateKey = pki.signing_key_from_pem(
            paths.signing_key.read_bytes()
        )
        self.verify_key_pem = paths.verify_key.read_text()
        self._ca_cache: dict[str, tuple[float, list[GroupCA]]] = {}
        #: bumped by every forget: a list read before one is not cached after it
        self._ca_generation = 0
        self._rotated: set[str] = set()
        self._lock = threading.Lock()
        self._claim_ca: pki.Issued | None = None

    # ---- identities --------------------------------------------------------------------

    def issue_identity(
        self,
        name: str,
        kind: CertificateKind,
        csr_pem: str | None = None,
        days: int = IDENTITY_DAYS,
    ) -> IssuedIdentity:
        """A client certificate for a thing or a core: from ``csr_pem``, or with a new key."""
        unit = kind.value
        if csr_pem:
            try:
                cert = pki.sign_csr(
                    self.root, csr_pem.encode(), common_name=name, unit=unit, days=days
                )
            except pki.PKIError as exc:
                raise InvalidInput(f"unusable CSR: {exc}", field="csr") from exc
            return IssuedIdentity(
                pki.cert_to_pem(cert).decode(), None, record_of(cert, kind.value, name)
            )
        issued = pki.issue(self.root, name, unit=unit, days=days)
        return IssuedIdentity(
            issued.cert_pem.decode(),
            issued.key_pem.decode(),
            record_of(issued.cert, kind.value, name),
        )

    # ---- claims ----------------------------------------------------------------------

    def claim_ca(self) -> pki.Issued:
        """The claim CA (``pki/claim-ca.pem``), made on first use."""
        with self._lock:
            if self._claim_ca is None:
                cert_file, key_file = self.paths.claim_ca_cert, self.paths.claim_ca_key
                if not key_file.exists():
                    made = pki.make_ca("Hedgerow Claim CA", days=CLAIM_CA_DAYS, unit="claim-ca")
                    write_private(key_file, made.key_pem)
                    cert_file.write_bytes(made.cert_pem)
                    log.info("pki.claim_ca_created path=%s", cert_file)
                self._claim_ca = pki.Issued(
                    pki.cert_from_pem(cert_file.read_bytes()),
                    pki.key_from_pem(key_file.read_bytes()),
                )
            return self._claim_ca

    def issue_claim(self, claim_id: str, days: int) -> pki.Issued:
        """A claim credential: a client certificate from the claim CA, with a new key."""
        return pki.issue(self.claim_ca(), claim_id, unit=CLAIM_UNIT, days=max(1, days))

    def is_claim_certificate(self, cert: x509.Certificate) -> bool:
        return pki.role_of(cert) == CLAIM_UNIT and pki.is_signed_by(cert, self.claim_ca().cert)

    # ---- group CAs -----------------------------------------------------------------------

    def _rotation_of(self, group_rotation_days: int | None) -> dt.timedelta:
        return dt.timedelta(days=group_rotation_days or self.rotation_days)

    def group_cas(
        self, group: str, group_rotation_days: int | None = None, *, at: dt.datetime | None = None
    ) -> list[GroupCA]:
        """The CAs discovery returns for ``group``, current first; rotates when due."""
        moment = at or pki.now()
        with self._lock:
            cached = self._ca_cache.get(group) if at is None else None
            generation = self._ca_generation
        if cached and cached[0] > time.monotonic():
            return cached[1]
        rotation = self._rotation_of(group_rotation_days)
        cas = self.repository.group_cas(group)
        if not cas or cas[0].created_at + rotation <= moment:
            cas = self._rotate(group, cas, rotation, moment)
        # a CA lives rotation + overlap: after its successor appears it is listed until it
        # expires, and so do the core server certificates it signed (capped at its expiry)
        listed = [cas[0], *(ca for ca in cas[1:] if ca.not_after > moment)]
        if at is None:
            with self._lock:
                # not if a rotation (here or by another replica) came while this one read
                if self._ca_generation == generation:
                    self._ca_cache[group] = (time.monotonic() + CA_CACHE_SECONDS, listed)
        return listed

    def rotate(self, group: str, group_rotation_days: int | None = None) -> list[GroupCA]:
        """Make a new group CA now (the previous one stays listed for the overlap)."""
        self._rotate(
            group,
            self.repository.group_cas(group),
            self._rotation_of(group_rotation_days),
            pki.now(),
        )
        # after the new CA is stored: a reader that cached the old list meanwhile is undone
        self.forget(group)
        return self.group_cas(group, group_rotation_days)

    def forget(self, group: str) -> None:
        with self._lock:
            self._ca_generation += 1
            self._ca_cache.pop(group, None)

    def forget_all(self) -> None:
        """Read every group's CAs from the database again (another replica made one)."""
        with self._lock:
            self._ca_generation += 1
            self._ca_cache.clear()

    def take_rotated(self) -> list[str]:
        """The groups this process made a new CA for since the last call (then forgets them)."""
        with self._lock:
            if not self._rotated:
                return []
            groups = sorted(self._rotated)
            self._rotated.clear()
        return groups

    def keep_rotated(self, group: str) -> None:
        """Give back one ``take_rotated`` returned that could not be announced yet."""
        with self._lock:
            self._rotated.add(group)

    def _rotate(
        self, group: str, cas: list[GroupCA], rotation: dt.timedelta, moment: dt.datetime
    ) -> list[GroupCA]:
        generation = cas[0].generation + 1 if cas else 1
        lifetime = rotation + self.overlap_days * DAY
        issued = pki.make_ca(
            f"{group} Group CA {generation}", days=max(1, lifetime.days), unit="group-ca"
        )
        fingerprint = pki.fingerprint(issued.cert)
        ca = GroupCA(
            group=group,
            generation=generation,
            fingerprint=fingerprint,
            cert_pem=issued.cert_pem.decode(),
            key_pem=None,
            created_at=moment,
            not_after=issued.cert.not_valid_after_utc,
            key_sealed=self.keys.seal(group, generation, fingerprint, issued.key_pem.decode()),
        )
        try:
            self.repository.add_group_ca(ca)
            log.info("pki.group_ca_rotated group=%s generation=%s", group, generation)
            with self._lock:
                self._rotated.add(group)
        except Conflict:
            log.info("pki.group_ca_rotated_elsewhere group=%s generation=%s", group, generation)
        self.forget(group)
        return self.repository.group_cas(group)

    def sign_core_server(
        self,
        core: str,
        group: str,
        csr_pem: str,
        hosts: Sequence[str],
        group_rotation_days: int | None = None,
    ) -> tuple[str, list[str]]:
        """The core's server certificate from the current group CA, and the CAs to trust."""
        if not hosts:
            raise InvalidInput(
                "no hosts: report the core's addresses (hosts or connectivity) first", field="hosts"
            )
        cas = self.group_cas(group, group_rotation_days)
        current = cas[0]
        ca = pki.Issued(
            pki.cert_from_pem(current.cert_pem.encode()),
            pki.key_from_pem(self.keys.open(current).encode()),
        )
        try:
            cert = pki.sign_csr(
                ca,
                csr_pem.encode(),
                common_name=core,
                unit="core-server",
                server_hosts=list(hosts),
                client=False,
            )
        except pki.PKIError as exc:
            raise InvalidInput(f"unusable CSR: {exc}", field="csr") from exc
        return pki.cert_to_pem(cert).decode(), [c.cert_pem for c in cas]

    # ---- deployment signatures ---------------------------------------------------------

    def sign(self, document: str) -> str:
        return base64.b64encode(self.signing_key.sign(document.encode())).decode()
