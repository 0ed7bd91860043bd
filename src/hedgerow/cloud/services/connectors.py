"""A group's industrial connectors: validated before they are stored, kept with the group.

A connector (``hedgerow.connectors``: ``modbus-tcp``, ``modbus-rtu``, ``opcua``) belongs to
one group, like its functions. Its config is checked by ``hedgerow.connectors.validate``
(pure; the core runs the same check) before anything is stored, and a refusal names the
field (``config.tags[2].type``). Connectors are kept in the group's settings under
``connectors`` (``{name: {"kind", "name", "version", "config"}}``), which the group update
API does not accept, so nothing unvalidated gets in; a deployment freezes them like
functions (``deployments.connector_entries``).

Changes are serialized per cloud process (``asyncio.Lock``): the settings are read,
changed and written back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from hedgerow.cloud.domain import Group
from hedgerow.cloud.errors import Conflict, InvalidInput, NotFound
from hedgerow.cloud.storage.groups import GroupStore
from hedgerow.connectors import ConnectorConfigError, ConnectorSpec, spec_of

log = logging.getLogger(__name__)

SETTINGS_KEY = "connectors"


def stored(group: Group) -> dict[str, dict[str, Any]]:
    value = group.settings.get(SETTINGS_KEY) or {}
    return {str(k): dict(v) for k, v in value.items()} if isinstance(value, Mapping) else {}


def checked_spec(kind: str, name: str, config: Mapping[str, Any]) -> ConnectorSpec:
    """The spec to store; ``InvalidInput`` names the field when it is refused."""
    try:
        return spec_of(kind, name, config)
    except ConnectorConfigError as exc:
        field = exc.field if exc.field in ("kind", "name") else f"config.{exc.field}"
        raise InvalidInput(f"{field}: {exc.message}", field=field) from exc


def entry_of(group: str, spec: ConnectorSpec) -> dict[str, Any]:
    return {"group": group, **spec.to_json()}


class ConnectorService:
    def __init__(self, store: GroupStore) -> None:
        self.store = store
        self._lock = asyncio.Lock()

    async def _stored(self, group: str) -> dict[str, dict[str, Any]]:
        return stored(await asyncio.to_thread(self.store.get_group, group))

    async def _write(self, group: str, connectors: dict[str, dict[str, Any]]) -> None:
        await asyncio.to_thread(self.store.update_group, group, settings={SETTINGS_KEY: connectors})

    async def all(self, group: str) -> list[dict[str, Any]]:
        return [
            entry_of(group, ConnectorSpec.from_json(e))
            for _, e in sorted((await self._stored(group)).items())
        ]

    async def get(self, group: str, name: str) -> dict[str, Any]:
        entry = (await self._stored(group)).get(name)
        if entry is None:
            raise NotFound("connector", name)
        return entry_of(group, ConnectorSpec.from_json(entry))

    async def add(
        self, group: str, kind: str, name: str, config: Mapping[str, Any]
    ) -> dict[str, Any]:
        spec = checked_spec(kind, name, config)
        async with self._lock:
            connectors = await self._stored(group)
            if spec.name in connectors:
                raise Conflict(f"connector {spec.name!r} already exists in group {group!r}")
            connectors[spec.name] = spec.to_json()
            await self._write(group, connectors)
        log.info("connector.added group=%s name=%s kind=%s", group, spec.name, spec.kind)
        return entry_of(group, spec)

    async def update(self, group: str, name: str, config: Mapping[str, Any]) -> dict[str, Any]:
        async with self._lock:
            connectors = await self._stored(group)
            if name not in connectors:
                raise NotFound("connector", name)
            spec = checked_spec(str(connectors[name]["kind"]), name, config)
            connectors[name] = spec.to_json()
            await self._write(group, connectors)
        log.info("connector.updated group=%s name=%s", group, name)
        return entry_of(group, spec)

    async def remove(self, group: str, name: str) -> None:
        async with self._lock:
            connectors = await self._stored(group)
            if connectors.pop(name, None) is None:
                raise NotFound("connector", name)
            await self._write(group, connectors)
        log.info("connector.removed group=%s name=%s", group, name)
