"""The secrets resource: create, update, rotate, list (names only), versions, delete, and
the sealed entries a deployment document carries for its core.

Values enter sealed under the keyring's KEK (``function_secrets.new_version``) and leave
only sealed to a core's key (:meth:`SecretService.document_entries`); no answer of this
service and no log line holds a value.
"""

from __future__ import annotations

import asyncio
import logging
import secrets as random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from hedgerow import pki
from hedgerow.cloud import function_secrets as fs
from hedgerow.cloud.errors import Conflict, InvalidInput
from hedgerow.cloud.keyring import KeyringFile
from hedgerow.cloud.storage.secrets import SecretStore

log = logging.getLogger(__name__)
T = TypeVar("T")
#: The length of a generated value (``secret rotate`` without a value), in URL-safe chars.
GENERATED_BYTES = 32


class SecretService:
    def __init__(self, store: SecretStore, keyring: KeyringFile) -> None:
        self.store = store
        self.keyring = keyring

    @staticmethod
    async def _run(fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    def _version(
        self, group: str, name: str, body: Mapping[str, Any], *, generate: bool = False
    ) -> fs.SecretVersionRecord:
        unknown = set(body) - {"name", "value", "binary"}
        if unknown:
            raise InvalidInput(f"unknown fields: {', '.join(sorted(unknown))}")
        binary = body.get("binary", False)
        if not isinstance(binary, bool):
            raise InvalidInput("binary must be true or false", field="binary")
        if "value" not in body and generate:
            value = random.token_urlsafe(GENERATED_BYTES).encode()
        else:
            value = fs.validate_value(body.get("value"), binary)
        return fs.new_version(self.keyring, group, name, value, binary, pki.now())

    async def create(self, group: str, body: Mapping[str, Any]) -> dict[str, Any]:
        name = fs.validate_secret_name(body.get("name"))
        version = self._version(group, name, body)
        await self._run(self.store.create, group, name, version)
        log.info("secret.created group=%s name=%s version=%s", group, name, version.version_id)
        return {"name": name, **version.to_json()}

    async def update(
        self, group: str, name: str, body: Mapping[str, Any], *, rotate: bool = False
    ) -> dict[str, Any]:
        """A new version becomes AWSCURRENT (``rotate`` generates one when no value is given)."""
        version = self._version(group, name, body, generate=rotate)
        await self._run(self.store.put_version, group, name, version)
        versions = await self._run(self.store.versions, group, name)
        previous = next((v.version_id for v in versions if fs.PREVIOUS in v.stages), None)
        log.info(
            "secret.new_version group=%s name=%s version=%s previous=%s rotate=%s",
            group, name, version.version_id, previous, rotate,
        )  # fmt: skip
        return {"name": name, **version.to_json(), "previous": previous}

    async def names(self, group: str) -> list[dict[str, str]]:
        return [{"name": n} for n in await self._run(self.store.names, group)]

    async def versions(self, group: str, name: str) -> dict[str, Any]:
        versions = await self._run(self.store.versions, group, name)
        return {"name": name, "versions": [v.to_json() for v in versions]}

    async def delete(self, group: str, name: str) -> None:
        await self._run(self.store.delete, group, name)
        log.info("secret.deleted group=%s name=%s", group, name)

    def document_entries(
        self, group: str, core: str, declared: Mapping[str, Sequence[str]]
    ) -> list[dict[str, Any]]:
        """The deployment's ``secrets``: every labelled version of each secret a function
        declares (``{function: [names]}``), sealed to ``core``'s key. Synchronous: it runs
        inside the deployment's transaction."""
        wanted = {name for names in declared.values() for name in names}
        if not wanted:
            return []
        found = self.store.for_deployment(group, wanted)
        for function, names in sorted(declared.items()):
            missing = [n for n in names if n not in found]
            if missing:
                raise Conflict(
                    f"function {function!r} declares secret {missing[0]!r}, which group "
                    f"{group!r} does not have: create it (hedgerow cloud secret create "
                    f"--group {group} {missing[0]} --from-file FILE) or remove it from the "
                    "function (function update --secret ...)"
                )
        cert = self.store.core_certificate(core)
        if cert is None:
            raise Conflict(
                f"core {core!r} has no valid identity certificate to seal secrets to: "
                "re-create the core"
            )
        entries: list[dict[str, Any]] = []
        for name in sorted(found):
            entries += fs.sealed_for_core(self.keyring, group, core, cert, name, found[name])
        return entries
