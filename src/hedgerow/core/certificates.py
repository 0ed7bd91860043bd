"""The core's server certificate: key, CSR, renewal decisions, address detection, hot swap.

The core creates its own server key (it never leaves the data directory), asks the cloud to
sign a CSR for the addresses it advertises, and serves the local endpoint with the
certificate signed by its group CA. Key and CSR are made by the short-lived ``keytool``
child process, and certificates are read with ``hedgerow.certinfo``: the daemon never loads
``cryptography``. ``renewal_reason`` (pure) says when to ask again: missing, close to
expiry, not issued by the newest group CA, advertised addresses changed, or simply older
than ``max_age``. The group CAs it compares against come from the cloud: the retained
``$hedgerow/cores/{core}/group-cas`` message (published on every rotation) and
``GET /core/v1/group-cas`` on every periodic check (a core that was offline during a
rotation catches up); the list stored with the last renewal is the fallback when the cloud
cannot be asked.

``ServerIdentity.context()`` returns one ``ssl.SSLContext``; ``install()`` loads a new chain
into that same object, so new handshakes use the new certificate while connected devices
keep their sessions.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import fnmatch
import ipaddress
import logging
import os
import socket
import ssl
import struct
from collections.abc import Sequence
from pathlib import Path

from hedgerow import certinfo
from hedgerow.certinfo import CertInfo, CertInfoError

from . import keytool
from .errors import CertificateError

log = logging.getLogger(__name__)

SIOCGIFADDR = 0x8915
#: OpenSSL's X509_V_FLAG_NO_CHECK_TIME: an expired device certificate passes the handshake
#: so that admission refuses it with a logged reason instead of a bare TLS failure.
NO_CHECK_TIME = 0x200000
#: Certificates older than this are renewed anyway (picks up group-CA rotations).
DEFAULT_MAX_AGE = dt.timedelta(days=1)


# ---- addresses ------------------------------------------------------------------------


def _excluded(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _ipv4_of(name: str) -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])


def _ipv6_addresses(exclude: Sequence[str], proc: Path = Path("/proc/net/if_inet6")) -> list[str]:
    try:
        lines = proc.read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) < 6 or _excluded(parts[5], exclude):
            continue
        address = ipaddress.IPv6Address(int(parts[0], 16))
        if address.is_loopback or address.is_link_local:
            continue
        out.append(str(address))
    return out


def detect_addresses(exclude: Sequence[str]) -> list[str]:
    """Addresses of this host's interfaces, minus excluded interfaces (lo, docker, veth …)."""
    out: list[str] = []
    try:
        interfaces = socket.if_nameindex()
    except OSError:
        interfaces = []
    for _index, name in interfaces:
        if _excluded(name, exclude):
            continue
        address = _ipv4_of(name)
        if address and not ipaddress.ip_address(address).is_loopback:
            out.append(address)
    out.extend(_ipv6_addresses(exclude))
    return list(dict.fromkeys(out))


def advertised_hosts(configured: Sequence[str], detected: Sequence[str]) -> list[str]:
    """The configured list wins; otherwise what was detected (loopback if nothing was)."""
    if configured:
        return list(dict.fromkeys(configured))
    return list(dict.fromkeys(detected)) or ["127.0.0.1"]


# ---- renewal (pure) ---------------------------------------------------------------------


def renewal_reason(
    cert: CertInfo | None,
    group_cas: Sequence[CertInfo],
    hosts: Sequence[str],
    now: dt.datetime,
    *,
    renew_fraction: float = 0.3,
    max_age: dt.timedelta = DEFAULT_MAX_AGE,
) -> str | None:
    """Why the server certificate must be renewed now, or None when it is fine.

    ``group_cas`` is the group's CA list, newest first (empty: not known). Whether the
    newest CA issued the certificate is read from the issuer name and key identifier (the
    certificate is our own, as the cloud returned it): a rotated CA has a new key.
    """
    if cert is None:
        return "no server certificate"
    lifetime = cert.not_after - cert.not_before
    left = cert.not_after - now
    if left <= lifetime * renew_fraction:
        return f"expires in {left}"
    if group_cas and not cert.issued_by(group_cas[0]):
        return "the group CA was rotated"
    if not {_normal(h) for h in hosts} <= set(cert.hosts):
        return "advertised addresses changed"
    if now - cert.not_before - certinfo.CLOCK_SKEW > max_age:
        return "older than the maximum age"
    return None


def _normal(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


# ---- files and the live TLS context ------------------------------------------------------


class ServerIdentity:
    """``server.key``, ``server.cert.pem`` and ``group-cas.pem`` under ``directory``."""

    def __init__(
        self, directory: Path, root_ca_file: Path, device_trust_file: Path | None = None
    ) -> None:
        self.directory = directory
        self.root_ca_file = root_ca_file
        #: device CAs and devices' own certificates trusted besides the root CA (PEM)
        self.device_trust_file = device_trust_file
        self.key_file = directory / "server.key"
        self.cert_file = directory / "server.cert.pem"
        self.cas_file = directory / "group-cas.pem"
        self._context: ssl.SSLContext | None = None

    async def csr(self, name: str, hosts: Sequence[str]) -> bytes:
        """A CSR for ``name`` and ``hosts``, signed with ``server.key`` — made on first use.

        Key and CSR are made by the key tool's child process (``keytool``): the daemon
        never loads ``cryptography`` nor holds the private key in memory."""
        self.directory.mkdir(parents=True, exist_ok=True)
        existed = self.key_file.exists()
        csr = await keytool.make_csr(self.key_file, name, hosts)
        if not existed:
            log.info("core.certificates.key_created path=%s", self.key_file)
        return csr

    def load(self) -> tuple[CertInfo | None, list[CertInfo]]:
        cert = cas = None
        try:
            cert = certinfo.from_pem(self.cert_file.read_bytes())
            cas = certinfo.all_from_pem(self.cas_file.read_bytes())
        except (OSError, CertInfoError):
            return cert, cas or []
        return cert, cas

    def store(self, cert_pem: bytes, group_cas: Sequence[bytes]) -> None:
        """Install the certificate the cloud signed (and the group's CA list with it).

        OpenSSL checks that it is for ``server.key`` (``load_cert_chain`` refuses a key
        mismatch) before it replaces the current one."""
        try:
            cert = certinfo.from_pem(cert_pem)
        except CertInfoError as exc:
            raise CertificateError(f"the cloud returned an unusable certificate: {exc}") from exc
        if not self.key_file.exists():
            raise CertificateError(f"no server key at {self.key_file} (no CSR was made)")
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = _write_tmp(self.cert_file, cert_pem)
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(str(tmp), str(self.key_file))
        except ssl.SSLError as exc:
            tmp.unlink(missing_ok=True)
            if exc.reason == "KEY_VALUES_MISMATCH" or "key values mismatch" in str(exc):
                raise CertificateError(
                    "the cloud's certificate is not for this core's server key"
                ) from exc
            raise CertificateError(f"the cloud returned an unusable certificate: {exc}") from exc
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise CertificateError(f"cannot check the new certificate: {exc}") from exc
        _write_atomic(self.cas_file, b"".join(group_cas))
        os.replace(tmp, self.cert_file)
        if self._context is not None:
            self._load_chain(self._context)
        log.info(
            "core.certificates.installed hosts=%s expires=%s",
            ",".join(cert.hosts),
            cert.not_after.isoformat(),
        )

    def context(self) -> ssl.SSLContext:
        """The listener's context; later ``store`` calls swap the chain inside it."""
        if self._context is None:
            if not self.cert_file.exists():
                raise CertificateError("no server certificate yet (the cloud has not signed one)")
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_verify_locations(str(self.root_ca_file))
            if self.device_trust_file is not None and self.device_trust_file.exists():
                ctx.load_verify_locations(str(self.device_trust_file))
            # a device's own registered certificate is its own anchor
            ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
            ctx.verify_mode = ssl.CERT_REQUIRED
            try:
                ctx.verify_flags |= NO_CHECK_TIME  # type: ignore[assignment]
            except (ValueError, OverflowError):  # an OpenSSL without it: TLS refuses expired ones
                log.warning("core.certificates.no_check_time_unavailable")
            self._load_chain(ctx)
            self._context = ctx
        return self._context

    def add_trust(self, pems: Sequence[str]) -> None:
        """Trust these certificates for new handshakes too (the live context, if built)."""
        if self._context is None:
            return  # context() reads the device trust file when it is built
        for pem in pems:
            try:
                self._context.load_verify_locations(cadata=pem)
            except ssl.SSLError as exc:
                log.warning("core.certificates.trust_refused error=%s", exc)

    def _load_chain(self, ctx: ssl.SSLContext) -> None:
        try:
            ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        except (ssl.SSLError, OSError) as exc:
            raise CertificateError(f"cannot load the server certificate: {exc}") from exc


def _write_tmp(path: Path, data: bytes, mode: int = 0o644) -> Path:
    """``data`` written and synced next to ``path`` (``path.tmp``), ready to replace it."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return tmp


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    os.replace(_write_tmp(path, data, mode), path)


write_atomic = _write_atomic
