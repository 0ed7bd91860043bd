"""Deployment documents: what a snapshot becomes, and the status a core reports (pure).

The shapes are the contract's (``hedgerow.contract.deployment``, documented in
``docs/architecture.md``, "Cloud ⇄ core"): the document is the exact JSON text the Ed25519
signature covers; ``parse_status_report`` turns a core's ``deployment-status`` message into
checked values. Contract errors become ``InvalidInput`` here, naming the field.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from hedgerow.cloud.errors import InvalidInput
from hedgerow.cloud.storage.repository import Snapshot
from hedgerow.connectors import ConnectorConfigError, ConnectorSpec, validate
from hedgerow.contract.deployment import (
    MAX_DETAIL,
    ConnectorEntry,
    CoreRelease,
    DeployedFunction,
    DeploymentDocument,
    DeploymentNotification,
    Route,
    StatusReport,
)
from hedgerow.contract.errors import ContractError

__all__ = [
    "MAX_DETAIL",
    "StatusReport",
    "build_document",
    "connector_entries",
    "new_deployment_id",
    "notification",
    "parse_status_report",
]


def new_deployment_id() -> str:
    return "d-" + secrets.token_hex(8)


def connector_entries(frozen: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A snapshot's connectors as the document carries them, validated again: one stored by
    an older release that no longer passes fails the deployment, naming it and the field."""
    entries = []
    for entry in sorted(frozen, key=lambda e: str(e.get("name"))):
        spec = ConnectorSpec.from_json(entry)
        try:
            validate(spec.kind, spec.name, spec.config)
        except ConnectorConfigError as exc:
            raise InvalidInput(
                f"connector {spec.name!r}: {exc} (fix it with hedgerow cloud connector update)",
                field=f"connectors.{spec.name}.{exc.field}",
            ) from exc
        entries.append(spec.to_json())
    return entries


def build_document(
    snapshot: Snapshot,
    deployment_id: str,
    created_at: dt.datetime,
    sealed_secrets: Sequence[Mapping[str, Any]] = (),
    core_release: CoreRelease | None = None,
) -> str:
    """``sealed_secrets``: the versions the functions declare, each sealed to the core's key;
    ``core_release``: the Hedgerow release the core should run (the group's setting)."""
    functions = []
    for version in snapshot.functions:
        try:
            functions.append(DeployedFunction.from_json(version.to_document()))
        except ContractError as exc:  # stored before the contract's limits applied
            raise InvalidInput(
                f"function {version.name!r} version {version.version} breaks a limit the "
                f"core enforces ({exc}): update the function, then deploy again",
                field=exc.field,
            ) from exc
    things = list(snapshot.things)
    document = DeploymentDocument(
        deployment_id=deployment_id,
        group=snapshot.group.name,
        core=snapshot.core,
        created_at=created_at.isoformat(),
        things=tuple(things),
        functions=tuple(functions),
        subscriptions=tuple(Route(s.source, s.topic, s.target) for s in snapshot.subscriptions),
        open_broker=bool(snapshot.group.settings.get("open_broker", False)),
        sync_shadows=tuple(
            sorted(t for t in snapshot.group.settings.get("sync_shadows", ()) if t in things)
        ),
        connectors=tuple(
            ConnectorEntry(e["kind"], e["name"], e["version"], e["config"])
            for e in connector_entries(snapshot.connectors)
        ),
        secrets=tuple(dict(entry) for entry in sealed_secrets),
        core_version=core_release,
    )
    return document.to_json()


def notification(deployment_id: str) -> bytes:
    """The payload of ``$hedgerow/cores/{core}/deployments``."""
    return DeploymentNotification(deployment_id).to_json()


def parse_status_report(payload: bytes) -> StatusReport:
    try:
        return StatusReport.from_json(payload)
    except ContractError as exc:
        raise InvalidInput(f"deployment status: {exc}", field=exc.field) from exc
