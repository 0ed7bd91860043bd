"""The thing's credentials on disk and the TLS contexts made from them.

Every file is read and checked up front, so a wrong path or a swapped key and certificate
is reported as one clear line (``CredentialsError``) instead of a TLS traceback later.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from hedgerow import pki

from .errors import CredentialsError


def _read(path: Path, what: str, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise CredentialsError(
            f"{what} file {path} does not exist", path=str(path), hint=f"check the {flag} path"
        ) from exc
    except IsADirectoryError as exc:
        raise CredentialsError(
            f"{what} path {path} is a directory",
            path=str(path),
            hint=f"give {flag} the file itself",
        ) from exc
    except OSError as exc:
        raise CredentialsError(
            f"cannot read {what} file {path}: {exc.strerror or exc}",
            path=str(path),
            hint="check the file's permissions (run as a user that may read it)",
        ) from exc


@dataclass(frozen=True, slots=True)
class Credentials:
    """Paths of the cloud root CA, the thing's certificate and its private key."""

    root_ca: Path
    cert: Path
    key: Path

    @classmethod
    def load(cls, root_ca: str | Path, cert: str | Path, key: str | Path) -> Credentials:
        """Check that every file exists, parses, and that the key matches the certificate."""
        creds = cls(Path(root_ca), Path(cert), Path(key))
        creds.check()
        return creds

    def check(self) -> None:
        ca_data = _read(self.root_ca, "root CA", "-r")
        cert_data = _read(self.cert, "certificate", "-c")
        key_data = _read(self.key, "private key", "-k")
        try:
            pki.certs_from_pem(ca_data)
        except pki.PKIError as exc:
            raise CredentialsError(
                f"root CA file {self.root_ca} holds no PEM certificate",
                path=str(self.root_ca),
                hint="give -r the cloud's root-ca.pem",
            ) from exc
        try:
            pki.cert_from_pem(cert_data)
        except pki.PKIError as exc:
            raise CredentialsError(
                f"certificate file {self.cert} holds no PEM certificate",
                path=str(self.cert),
                hint="give -c the thing's .cert.pem (did you swap -c and -k?)",
            ) from exc
        if b"PRIVATE KEY" not in key_data:
            raise CredentialsError(
                f"private key file {self.key} holds no PEM private key",
                path=str(self.key),
                hint="give -k the thing's private key (did you swap -c and -k?)",
            )
        self.client_context(ca_file=self.root_ca)

    @property
    def thing_name(self) -> str:
        """The identity the certificate carries (its common name)."""
        try:
            return pki.name_of(pki.cert_from_pem(self.cert.read_bytes()))
        except (OSError, pki.PKIError):
            return ""

    def client_context(
        self, *, ca_file: Path | None = None, ca_data: str | None = None, resume: bool = False
    ) -> ssl.SSLContext:
        """A mutual-TLS client context trusting ``ca_file`` or ``ca_data`` (hostname checked);
        ``resume``: one that offers each server its last TLS session again."""
        try:
            return pki.client_context(
                str(ca_file) if ca_file else None,
                str(self.cert),
                str(self.key),
                ca_data=ca_data,
                resume=resume,
            )
        except ssl.SSLError as exc:
            raise CredentialsError(
                f"cannot use certificate {self.cert} with key {self.key}: {exc.reason or exc}",
                path=str(self.key),
                hint="the key must be the one the certificate was issued for",
            ) from exc
        except OSError as exc:
            raise CredentialsError(
                f"cannot load credentials: {exc}", path=str(self.cert), hint="check -r, -c and -k"
            ) from exc

    def discovery_context(self, *, resume: bool = False) -> ssl.SSLContext:
        """TLS towards the cloud: trust only the root CA the thing was given."""
        return self.client_context(ca_file=self.root_ca, resume=resume)

    def core_context(self, group_cas: tuple[str, ...], *, resume: bool = False) -> ssl.SSLContext:
        """TLS towards a core: trust only the group CA(s) discovery returned."""
        return self.client_context(ca_data="\n".join(group_cas), resume=resume)
