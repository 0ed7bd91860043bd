"""Provisioning by claim, and the group membership message: what device and cloud agree on.

A claim credential (``hedgerow cloud claim create``) is a client certificate from the
cloud's claim CA; it opens only ``POST /provision/v1/{kind}`` on the device HTTPS server::

    PATHS          {"core": "/provision/v1/core", "thing": "/provision/v1/thing"}
    ProvisionRequest   {"schema": 1, "serial", "csr", "attributes"?}   device → cloud
    ProvisionResponse  {"schema": 1, "kind", "name", "group", "certificate", "root_ca",
                        "https", "mqtt"?, "config"?, "deploy_verify"?}  cloud → device
    Membership         {"things": [name, ..], "device_trust"?: [PEM, ..],
                        "certificate_names"?: {fingerprint: name}}        cloud → core

The private key is made on the device and never sent: the request carries a CSR, the
response the certificate the cloud signed for it (and, for a core, the rest of a normal
provisioning bundle: its ``config.toml`` text and the deployment verification key).

``Membership.device_trust`` lists the device CAs (``hedgerow cloud ca register``) and the
devices' own certificates (``thing create --cert``) the core's TLS listener trusts besides
the root CA, for the group's things that did not get their certificate from this cloud;
``certificate_names`` names the thing a registered device certificate speaks for (a V1
certificate's common name is not the thing's name: AWS wrote "AWS IoT Certificate").
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from . import _wire
from .errors import InvalidMessage

SCHEMA: Final = 1
#: A serial number: what the device says it is (1-64 letters, digits, '.', '_', ':' or '-').
SERIAL = re.compile(r"[A-Za-z0-9._:-]{1,64}")
MAX_CSR: Final = 16 * 1024


class ClaimKind(enum.StrEnum):
    CORE = "core"
    THING = "thing"


PATHS: Final = {kind: f"/provision/v1/{kind.value}" for kind in ClaimKind}


def check_serial(value: object, field_name: str = "serial") -> str:
    if not isinstance(value, str) or not SERIAL.fullmatch(value):
        raise InvalidMessage(
            field_name, f"{value!r}: use 1-64 letters, digits, '.', '_', ':' or '-'"
        )
    return value


def _attributes(data: Mapping[str, Any]) -> dict[str, str]:
    value = data.get("attributes", {})
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise InvalidMessage("attributes", "must be an object of strings")
    return dict(value)


@dataclass(frozen=True, slots=True)
class ProvisionRequest:
    """Device → cloud: who it says it is (``serial``) and the CSR of the key it made."""

    serial: str
    csr: str
    attributes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: str | bytes) -> ProvisionRequest:
        raw = _wire.load_object(data, "request")
        _wire.check_schema(raw, SCHEMA)
        csr = _wire.text(raw, "csr")
        if len(csr) > MAX_CSR or "BEGIN CERTIFICATE REQUEST" not in csr:
            raise InvalidMessage("csr", "must be one PEM certificate signing request")
        return cls(check_serial(raw.get("serial")), csr, _attributes(raw))

    def to_json(self) -> str:
        body: dict[str, Any] = {"schema": SCHEMA, "serial": self.serial, "csr": self.csr}
        if self.attributes:
            body["attributes"] = self.attributes
        return _wire.dumps(body)


@dataclass(frozen=True, slots=True)
class ProvisionResponse:
    """Cloud → device: the identity it now has. ``config`` and ``deploy_verify`` (PEM) are
    for a core (the rest of its bundle); ``https`` is where a thing discovers its core."""

    kind: ClaimKind
    name: str
    group: str
    certificate: str
    root_ca: str
    https: str
    mqtt: str = ""
    config: str = ""
    deploy_verify: str = ""

    @classmethod
    def from_json(cls, data: str | bytes) -> ProvisionResponse:
        raw = _wire.load_object(data, "response")
        _wire.check_schema(raw, SCHEMA)
        try:
            kind = ClaimKind(str(raw.get("kind")))
        except ValueError as exc:
            raise InvalidMessage("kind", f"{raw.get('kind')!r}: must be core or thing") from exc
        response = cls(
            kind=kind,
            name=_wire.text(raw, "name"),
            group=_wire.text(raw, "group"),
            certificate=_wire.text(raw, "certificate"),
            root_ca=_wire.text(raw, "root_ca"),
            https=_wire.text(raw, "https"),
            mqtt=_wire.text(raw, "mqtt", required=False),
            config=_wire.text(raw, "config", required=False),
            deploy_verify=_wire.text(raw, "deploy_verify", required=False),
        )
        if kind is ClaimKind.CORE and not (response.config and response.deploy_verify):
            raise InvalidMessage("config", "a core's response needs config and deploy_verify")
        return response

    def to_json(self) -> str:
        body: dict[str, Any] = {"schema": SCHEMA, "kind": self.kind.value}
        for key in ("name", "group", "certificate", "root_ca", "https"):
            body[key] = getattr(self, key)
        for key in ("mqtt", "config", "deploy_verify"):
            if getattr(self, key):
                body[key] = getattr(self, key)
        return _wire.dumps(body)


@dataclass(frozen=True, slots=True)
class Membership:
    """Cloud → core (retained ``$hedgerow/cores/{core}/things`` and ``GET /core/v1/things``):
    whom the core admits, and the certificates it trusts for them besides the root CA."""

    things: tuple[str, ...]
    device_trust: tuple[str, ...] = ()
    #: SHA-256 fingerprint (hex) of a registered device certificate → its thing
    certificate_names: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: str | bytes) -> Membership:
        raw = _wire.load_object(data, "membership")
        _wire.check_schema(raw, SCHEMA)
        if "things" not in raw:
            raise InvalidMessage("things", "missing")
        names = raw.get("certificate_names", {})
        if not isinstance(names, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in names.items()
        ):
            raise InvalidMessage("certificate_names", "must be an object of strings")
        return cls(_wire.strings(raw, "things"), _wire.strings(raw, "device_trust"), names)

    def to_json(self) -> str:
        body: dict[str, Any] = {"schema": SCHEMA, "things": sorted(self.things)}
        if self.device_trust:
            body["device_trust"] = list(self.device_trust)
        if self.certificate_names:
            body["certificate_names"] = dict(sorted(self.certificate_names.items()))
        return _wire.dumps(body)


#: Members of a claim credential (``claim.tar.gz``).
CLAIM_CONFIG: Final = "claim.toml"
CLAIM_CERT: Final = "claim.cert.pem"
CLAIM_KEY: Final = "claim.key"
CLAIM_ROOT_CA: Final = "root-ca.pem"
CLAIM_FILES: Final = (CLAIM_CONFIG, CLAIM_CERT, CLAIM_KEY, CLAIM_ROOT_CA)
MAX_CLAIM_MEMBER: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class ClaimCredential:
    """A claim credential as the device reads it: where to provision, what it provisions,
    the claim certificate and key, the cloud's root CA (read in memory: no file is
    written until the device is provisioned)."""

    claim_id: str
    kind: ClaimKind
    https: str
    certificate: bytes
    key: bytes
    root_ca: bytes

    @classmethod
    def from_tar(cls, data: bytes) -> ClaimCredential:
        """``claim.tar.gz`` as a credential; ``InvalidMessage`` naming what is wrong."""
        import io
        import tarfile
        import tomllib

        found: dict[str, bytes] = {}
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
                for member in tar.getmembers():
                    if member.isdir():
                        continue
                    name = member.name.rsplit("/", 1)[-1]
                    if not member.isfile() or name not in CLAIM_FILES:
                        raise InvalidMessage("claim", f"unexpected member {member.name!r}")
                    if member.size > MAX_CLAIM_MEMBER:
                        raise InvalidMessage("claim", f"{member.name!r} is too large")
                    handle = tar.extractfile(member)
                    if handle is not None:
                        found[name] = handle.read()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise InvalidMessage("claim", f"not a claim credential (tar.gz): {exc}") from exc
        missing = [n for n in CLAIM_FILES if n not in found]
        if missing:
            raise InvalidMessage("claim", f"missing {', '.join(missing)}")
        try:
            config = tomllib.loads(found[CLAIM_CONFIG].decode())["claim"]
            kind = ClaimKind(str(config["kind"]))
            return cls(
                str(config["id"]),
                kind,
                str(config["https"]),
                found[CLAIM_CERT],
                found[CLAIM_KEY],
                found[CLAIM_ROOT_CA],
            )
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise InvalidMessage(CLAIM_CONFIG, f"unreadable: {exc}") from exc
