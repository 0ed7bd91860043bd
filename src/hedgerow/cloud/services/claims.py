"""Provisioning by claim, device CAs and just-in-time admission.

* Templates say how a claimed device is registered (``claim_rules.ClaimTemplate``).
* ``create_claim`` issues a claim credential from the claim CA and returns it as
  ``claim.tar.gz`` (``claim.cert.pem``, ``claim.key``, ``root-ca.pem``, ``claim.toml``);
  the cloud keeps the certificate, never the key.
* ``provision`` is ``POST /provision/v1/{kind}``: the claim certificate is checked (ours,
  known, of the right kind), the pre-provisioning hook is asked about the serial, one use
  is reserved atomically, the device's CSR is signed and the core or thing registered from
  the template. Every attempt, admitted or refused, is a row of the claim's audit.
* ``register_ca`` trusts a device CA for a template's group; ``admit_just_in_time`` (at
  discovery) registers a thing whose certificate that CA signed, named from the
  certificate's common name.

The hook (``[provisioning] hook`` in the cloud's ``config.toml``) is a command run without a
shell, given ``{"claim", "template", "kind", "serial", "attributes"}`` as
JSON on stdin: exit status 0 allows the device, anything else refuses it with the first
line it printed as the reason; no answer within ``HOOK_TIMEOUT`` seconds refuses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import shlex
import uuid
from dataclasses import dataclass, replace

import tomli_w
from cryptography import x509

from hedgerow import pki
from hedgerow.cloud import core_bundle
from hedgerow.cloud.claim_rules import (
    Claim,
    ClaimRefused,
    ClaimTemplate,
    ClaimUse,
    DeviceCA,
    check_claim_limits,
)
from hedgerow.cloud.domain import CertificateKind
from hedgerow.cloud.errors import (
    CloudError,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    Unauthorized,
)
from hedgerow.cloud.pki_service import PKIService
from hedgerow.cloud.services.certificates import CertificateService
from hedgerow.cloud.services.cores import CoreService
from hedgerow.cloud.services.groups import GroupService
from hedgerow.cloud.services.membership import DeviceTrust, MembershipService
from hedgerow.cloud.services.things import ThingService
from hedgerow.cloud.storage.repository import Repository
from hedgerow.contract.provisioning import (
    CLAIM_CERT,
    CLAIM_CONFIG,
    CLAIM_KEY,
    CLAIM_ROOT_CA,
    ClaimKind,
    ProvisionRequest,
    ProvisionResponse,
)

log = logging.getLogger(__name__)

HOOK_TIMEOUT = 10.0


@dataclass(frozen=True)
class CreatedClaim:
    claim: Claim
    bundle: bytes


class ClaimService:
    def __init__(
        self,
        repository: Repository,
        pki_service: PKIService,
        groups: GroupService,
        cores: CoreService,
        things: ThingService,
        certificates: CertificateService,
        membership: MembershipService,
        device_trust: DeviceTrust,
        hook: str = "",
    ) -> None:
        self.store = repository
        self.pki = pki_service
        self.groups = groups
        self.cores = cores
        self.things = things
        self.certificates = certificates
        self.membership = membership
        self.device_trust = device_trust
        self.hook = shlex.split(hook)

    # ---- templates -------------------------------------------------------------------

    async def create_template(self, template: ClaimTemplate) -> ClaimTemplate:
        created = await asyncio.to_thread(self.store.create_template, template)
        log.info(
            "claim.template_created name=%s kind=%s group=%s pattern=%s",
            template.name, template.kind.value, template.group, template.name_pattern,
        )  # fmt: skip
        return created

    async def templates(self) -> list[ClaimTemplate]:
        return await asyncio.to_thread(self.store.list_templates)

    async def template(self, name: str) -> ClaimTemplate:
        return await asyncio.to_thread(self.store.get_template, name)

    async def delete_template(self, name: str) -> None:
        await asyncio.to_thread(self.store.delete_template, name)
        log.info("claim.template_deleted name=%s", name)

    # ---- claims ----------------------------------------------------------------------

    async def create_claim(
        self, template: str, max_uses: int, lifetime: dt.timedelta
    ) -> CreatedClaim:
        check_claim_limits(max_uses, lifetime)
        found = await self.template(template)
        claim_id = "c-" + uuid.uuid4().hex[:16]
        issued = await asyncio.to_thread(
            self.pki.issue_claim, claim_id, lifetime.days + (1 if lifetime.seconds else 0)
        )
        expires_at = pki.now() + lifetime
        claim = await asyncio.to_thread(
            self.store.create_claim,
            claim_id,
            template,
            pki.fingerprint(issued.cert),
            issued.cert_pem.decode(),
            max_uses,
            expires_at,
        )
        endpoints = self.cores.endpoints()
        config = tomli_w.dumps(
            {
                "claim": {
                    "id": claim_id,
                    "kind": found.kind.value,
                    "template": template,
                    "https": endpoints.https,
                    "expires_at": expires_at.isoformat(),
                }
            }
        )
        bundle = core_bundle.build_bundle(
            {
                CLAIM_CONFIG: config.encode(),
                CLAIM_CERT: issued.cert_pem,
                CLAIM_KEY: issued.key_pem,
                CLAIM_ROOT_CA: self.pki.root_ca_pem.encode(),
            },
            private=frozenset({CLAIM_KEY}),
        )
        log.info(
            "claim.created id=%s template=%s uses=%d expires=%s",
            claim_id, template, max_uses, expires_at.isoformat(),
        )  # fmt: skip
        return CreatedClaim(claim, bundle)

    async def claims(self) -> list[Claim]:
        return await asyncio.to_thread(self.store.list_claims)

    async def claim(self, claim_id: str) -> Claim:
        return await asyncio.to_thread(self.store.get_claim, claim_id)

    async def revoke(self, claim_id: str) -> Claim:
        claim = await asyncio.to_thread(self.store.revoke_claim, claim_id)
        log.info("claim.revoked id=%s used=%d", claim_id, claim.used)
        return claim

    # ---- provisioning ----------------------------------------------------------------

    async def provision(
        self, cert: x509.Certificate, kind: ClaimKind, request: ProvisionRequest, peer: str
    ) -> ProvisionResponse:
        """Register the device ``request`` describes with the claim ``cert`` is (the
        device HTTPS server verified it against the claim CA)."""
        claim, template = await self._claim_of(cert)
        use = ClaimUse(pki.now(), request.serial, "refused", "", None, None, peer[:128])
        try:
            if template.kind is not kind:
                raise ClaimRefused(
                    "kind", f"claim {claim.id} provisions a {template.kind.value}, not a {kind}"
                )
            template.resolve(serial=request.serial, seq=0)  # a serial the patterns refuse
            await self._ask_hook(claim, template, request)
            earlier = await asyncio.to_thread(self.store.provisioned_name, claim.id, request.serial)
            if earlier is not None:
                # the same device again (it lost the answer, or was reset): not another use
                current = await asyncio.to_thread(self.store.get_claim, claim.id, with_uses=False)
                refusal = current.refusal(pki.now())
                if refusal is not None and refusal.reason != "limit":
                    raise refusal
                response = await self._register_again(template, earlier, request)
                use = replace(use, reason="again: a new certificate, the earlier ones revoked")
            else:
                response = await self._register_new(claim, template, request)
        except CloudError as exc:
            reason = exc.reason if isinstance(exc, ClaimRefused) else type(exc).__name__.lower()
            await asyncio.to_thread(
                self.store.record_use, claim.id, replace(use, reason=f"{reason}: {exc.message}")
            )
            log.info(
                "claim.refused id=%s serial=%s reason=%s detail=%s",
                claim.id, request.serial, reason, exc.message,
            )  # fmt: skip
            raise
        fingerprint = pki.fingerprint(pki.cert_from_pem(response.certificate.encode()))
        await asyncio.to_thread(
            self.store.record_use,
            claim.id,
            replace(use, outcome="ok", name=response.name, fingerprint=fingerprint),
        )
        log.info(
            "claim.provisioned id=%s serial=%s kind=%s name=%s group=%s",
            claim.id, request.serial, kind.value, response.name, response.group,
        )  # fmt: skip
        return response

    async def _register_new(
        self, claim: Claim, template: ClaimTemplate, request: ProvisionRequest
    ) -> ProvisionResponse:
        """One more use of ``claim`` (refused past its limit) and a new device."""
        seq = await asyncio.to_thread(self.store.reserve_use, claim.id, pki.now())
        if seq is None:
            current = await asyncio.to_thread(self.store.get_claim, claim.id, with_uses=False)
            refusal = current.refusal(pki.now())
            raise refusal or ClaimRefused("limit", f"claim {claim.id} cannot be used now")
        try:
            name, group = template.resolve(serial=request.serial, seq=seq)
            return await self._register(template, name, group, request)
        except BaseException:
            await asyncio.to_thread(self.store.release_use, claim.id)
            raise

    async def _claim_of(self, cert: x509.Certificate) -> tuple[Claim, ClaimTemplate]:
        if not await asyncio.to_thread(self.pki.is_claim_certificate, cert):
            raise Unauthorized(
                "provisioning needs a claim certificate (hedgerow cloud claim create)"
            )
        try:
            claim, template = await asyncio.to_thread(self.store.claim_template, pki.name_of(cert))
        except (NotFound, pki.PKIError) as exc:
            raise Unauthorized("this claim certificate is not known to this cloud") from exc
        if claim.fingerprint != pki.fingerprint(cert):
            raise Unauthorized("this claim certificate is not known to this cloud")
        return claim, template

    async def _ask_hook(
        self,
        claim: Claim,
        template: ClaimTemplate,
        request: ProvisionRequest,
    ) -> None:
        if not self.hook:
            return
        question = {
            "claim": claim.id,
            "template": template.name,
            "kind": template.kind.value,
            "serial": request.serial,
            "attributes": request.attributes,
        }
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.hook,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
        except OSError as exc:
            log.warning("claim.hook_failed command=%s error=%s", self.hook[0], exc)
            raise ClaimRefused("hook", f"the pre-provisioning hook cannot run: {exc}") from exc
        try:
            async with asyncio.timeout(HOOK_TIMEOUT):
                out, _ = await proc.communicate(json.dumps(question).encode())
        except TimeoutError as exc:
            raise ClaimRefused(
                "hook", f"the pre-provisioning hook did not answer within {HOOK_TIMEOUT:g} s"
            ) from exc
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if proc.returncode != 0:
            said = out.decode(errors="replace").strip().splitlines()
            raise ClaimRefused(
                "hook",
                f"serial {request.serial} refused by the pre-provisioning hook"
                + (f": {said[0][:200]}" if said else f" (exit status {proc.returncode})"),
            )

    def _response(
        self, kind: ClaimKind, name: str, group: str, certificate: str
    ) -> ProvisionResponse:
        """The device's new identity; a core gets the rest of a bundle with it."""
        endpoints = self.cores.endpoints()
        if kind is ClaimKind.THING:
            return ProvisionResponse(
                kind, name, group, certificate, self.pki.root_ca_pem, endpoints.https
            )
        return ProvisionResponse(
            kind,
            name,
            group,
            certificate,
            self.pki.root_ca_pem,
            endpoints.https,
            endpoints.mqtt,
            self.cores.core_config(
                name, group, pki.fingerprint(pki.cert_from_pem(certificate.encode()))
            ),
            self.pki.verify_key_pem,
        )

    async def _register(
        self, template: ClaimTemplate, name: str, group: str, request: ProvisionRequest
    ) -> ProvisionResponse:
        if template.kind is ClaimKind.THING:
            attributes = {**template.attributes, **request.attributes, "serial": request.serial}
            created = await self.things.create(name, [group], attributes, request.csr)
            return self._response(template.kind, name, group, created.certificate_pem)
        with contextlib.suppress(Conflict):  # one group per core: made on first use
            await self.groups.create(group, f"provisioned by claim ({template.name})", {}, None)
        cert_pem = await self.cores.register(name, group, request.csr)
        return self._response(template.kind, name, group, cert_pem)

    async def _register_again(
        self, template: ClaimTemplate, name: str, request: ProvisionRequest
    ) -> ProvisionResponse:
        """The same serial with the same claim again: a new certificate for the identity it
        got then (its earlier certificates revoked: one device, one live identity)."""
        if template.kind is ClaimKind.THING:
            created = await self.things.new_certificate(name, request.csr, revoke_others=True)
            group = created.thing.groups[0] if created.thing.groups else ""
            return self._response(template.kind, name, group, created.certificate_pem)
        cert_pem, group = await self.cores.register_again(name, request.csr)
        return self._response(template.kind, name, group, cert_pem)

    # ---- device CAs and just-in-time admission ---------------------------------------

    async def register_ca(self, pem: str, template: str) -> DeviceCA:
        try:
            cert = pki.cert_from_pem(pem.encode())
        except pki.PKIError as exc:
            raise InvalidInput(f"not a PEM certificate: {exc}", field="certificate") from exc
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            raise InvalidInput(
                "not a CA certificate (no basicConstraints CA:TRUE): register a device's own "
                "certificate with `hedgerow cloud thing create NAME --cert FILE`",
                field="certificate",
            )
        found = await self.template(template)
        if found.kind is not ClaimKind.THING or "{" in found.group:
            raise InvalidInput(
                f"template {template!r} must be a thing template with a fixed group "
                "(devices a CA signed join one group)",
                field="template",
            )
        await self.groups.get(found.group)
        pem = pki.cert_to_pem(cert).decode()
        ca = await asyncio.to_thread(
            self.store.add_device_ca, pki.fingerprint(cert), cert.subject.rfc4514_string(), pem,
            template,
        )  # fmt: skip
        self.device_trust.add([pem])
        await self.membership.announce([found.group])
        log.info(
            "device_ca.registered fingerprint=%s subject=%s template=%s group=%s",
            ca.fingerprint, ca.subject, template, found.group,
        )  # fmt: skip
        return ca

    async def device_cas(self) -> list[DeviceCA]:
        return await asyncio.to_thread(self.store.list_device_cas)

    async def revoke_ca(self, fingerprint: str) -> DeviceCA:
        """Stop trusting a device CA: it leaves the group's core's trust, and the devices it
        admitted lose their certificates (revoked, so the core drops them at once)."""
        ca = await asyncio.to_thread(self.store.revoke_device_ca, fingerprint)
        issuer = pki.cert_from_pem(ca.cert_pem.encode())
        owners: set[str] = set()
        for name in await self.membership.group_things(ca.group):
            for record in await self.certificates.all(name, CertificateKind.THING.value):
                if not record.revoked and pki.is_signed_by(
                    pki.cert_from_pem(record.pem.encode()), issuer
                ):
                    await self.certificates.revoke(record.fingerprint)
                    owners.add(name)
        await self.membership.announce([ca.group])
        log.info("device_ca.revoked fingerprint=%s things=%d", fingerprint, len(owners))
        return ca

    async def trusted_pems(self) -> list[str]:
        """Every certificate the device HTTPS server trusts besides the root CA: the claim
        CA, the live device CAs and the devices' own registered certificates."""

        def read() -> list[str]:
            cas = [ca.cert_pem for ca in self.store.list_device_cas(live_only=True)]
            own = self.store.external_certificates()
            return [pki.cert_to_pem(self.pki.claim_ca().cert).decode(), *cas, *own]

        return await asyncio.to_thread(read)

    async def _admit(self, cert: x509.Certificate, group: str | None) -> str | None:
        """Register the thing a live device CA (of ``group``, when given) vouches for with
        ``cert``, named by the CA's template: its name, or None when no such CA signed it."""
        cas = await asyncio.to_thread(self.store.list_device_cas, live_only=True)
        signer = next(
            (
                ca
                for ca in cas
                if (group is None or ca.group == group)
                and pki.is_signed_by(cert, pki.cert_from_pem(ca.cert_pem.encode()))
            ),
            None,
        )
        if signer is None:
            return None
        template = await self.template(signer.template)
        try:
            common_name = pki.name_of(cert)
        except pki.PKIError as exc:
            raise Unauthorized(f"the device certificate cannot be admitted: {exc}") from exc
        name, thing_group = template.resolve(serial=common_name, seq=0, cn=common_name)
        try:
            await self.things.create_with_certificate(
                name,
                [thing_group],
                {**template.attributes, "device_ca": signer.fingerprint[:16]},
                pki.cert_to_pem(cert).decode(),
                anchor=False,
            )
        except Conflict:  # another request admitted it first (or the name is taken)
            return name
        log.info(
            "device_ca.admitted thing=%s group=%s ca=%s",
            name, thing_group, signer.fingerprint[:16],
        )  # fmt: skip
        return name

    async def admit_just_in_time(self, cert: x509.Certificate, thing: str) -> bool:
        """At discovery: register ``thing`` from ``cert`` when a live device CA signed it
        and the CA's template names it so; False when no device CA signed it."""
        name = await self._admit(cert, None)
        if name is None:
            return False
        if name != thing:
            raise Unauthorized(f"the certificate is admitted as {name!r}, not as {thing!r}")
        return True

    async def admit_for_core(self, core: str, pem: str) -> dict[str, object]:
        """``POST /core/v1/things/admit``: a device connected to ``core`` without a
        discovery first; its certificate from a device CA of the core's group is admitted
        just in time. The group's membership, as ``GET /core/v1/things``."""
        try:
            cert = pki.cert_from_pem(pem.encode())
        except pki.PKIError as exc:
            raise InvalidInput(f"not a PEM certificate: {exc}", field="certificate") from exc
        group = (await self.cores.get(core)).group
        if await self._admit(cert, group) is None:
            raise Forbidden(f"no device CA registered for group {group!r} signed this certificate")
        return await self.membership.core_things(core)
